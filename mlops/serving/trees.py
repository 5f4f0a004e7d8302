"""The compiled predictor: the features encoded with numpy, the trees as a treelite model (GTIL or a C library)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops.serving.schema import DTYPES, Column, Rows, to_frame

_NUMERIC_KINDS = ("double", "float", "long", "integer", "boolean")


@dataclass(frozen=True)
class Feature:
    """One column of the matrix the booster takes: a numeric input, or a category's code table."""

    name: str
    codes: dict[Any, float] | None = None  # None: a numeric column passed through
    unknown: float = np.nan
    missing: float = np.nan
    dtype: Any = np.float64  # a passed-through column's dtype in the sklearn path (float32 rounds)

    def encode(self, values: list[Any]) -> np.ndarray:
        if self.codes is None:  # NaN stands for null already (schema.parse_request)
            return np.asarray(values, dtype=self.dtype).astype(np.float64, copy=False)
        codes, unknown, missing = self.codes, self.unknown, self.missing
        return np.fromiter(
            (missing if v is None else codes.get(v, unknown) for v in values), dtype=np.float64, count=len(values)
        )


@dataclass(frozen=True)
class CompiledPredictor:
    """Scores validated requests without pandas: a float64 matrix, then one call over every tree."""

    features: tuple[Feature, ...]
    forest: Any  # treelite.Model
    output: str  # "predict_proba", "predict" (classes) or "predict" (values, regression)
    classes: np.ndarray | None  # a classifier's classes_, else None
    native: Any = None  # a tl2cgen.Predictor of `forest` (native_library), else GTIL scores
    # A feature step the numpy encoding does not cover (a use case's own transform): run by Python on
    # the request's frame, the trees after it still compiled. None: `features` encode the matrix.
    transform: Any = None
    columns: tuple[Column, ...] = ()  # the signature's columns, to build that frame

    @property
    def engine(self) -> str:
        return "gtil" if self.native is None else "tl2cgen"

    def matrix(self, batch: Sequence[Rows]) -> np.ndarray:
        if self.transform is not None:
            return np.asarray(self.transform.transform(to_frame(batch, self.columns)), dtype=np.float64)
        n = sum(rows.n_rows for rows in batch)
        X = np.empty((n, len(self.features)), dtype=np.float64)
        for j, feature in enumerate(self.features):
            values = (
                batch[0].values[feature.name]
                if len(batch) == 1
                else [v for rows in batch for v in rows.values[feature.name]]
            )
            X[:, j] = feature.encode(values)
        return X

    def scores(self, X: np.ndarray) -> np.ndarray:
        """The forest's transformed outputs for a float64 matrix: (rows, targets, classes)."""
        if self.native is not None:
            import tl2cgen

            return self.native.predict(tl2cgen.DMatrix(X))  # float64 in and out, NaN as missing
        from treelite import gtil

        return gtil.predict(self.forest, X, nthread=1)

    def predict(self, batch: Sequence[Rows]) -> np.ndarray:
        scores = self.scores(self.matrix(batch))
        scores = scores.reshape(scores.shape[0], -1)
        if self.classes is None:  # regression
            return scores[:, 0]
        proba = np.column_stack([1.0 - scores[:, 0], scores[:, 0]]) if scores.shape[1] == 1 else scores
        if self.output == "predict_proba":
            return proba
        return self.classes[np.argmax(proba, axis=1)]


def compile_pipeline(model: Any, output: str, columns: Sequence[Column]) -> CompiledPredictor:
    """A CompiledPredictor for `model`, or NotImplementedError naming what is not supported."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    if not (isinstance(model, Pipeline) and len(model.steps) == 2):
        raise NotImplementedError(f"a {type(model).__name__}, not a two-step Pipeline (features, booster)")
    transform, booster = model.steps[0][1], model.steps[1][1]
    family = booster_family(booster)
    if family is None:
        raise NotImplementedError(
            f"the estimator is a {type(booster).__name__}, not a HistGradientBoosting, LightGBM or XGBoost booster"
        )
    if output not in ("predict", "predict_proba"):
        raise NotImplementedError(f"the model is served through {output}")
    classes = getattr(booster, "classes_", None)
    classes = None if classes is None else np.asarray(classes)
    if not isinstance(transform, ColumnTransformer):  # the use case's own: Python runs it, the trees stay compiled
        return CompiledPredictor(
            (), forest_of(booster, family), output, classes, transform=transform, columns=tuple(columns)
        )
    kinds = {c.name: c.kind for c in columns}
    features: list[Feature] = []
    for name, step, selected in transform.transformers_:
        if step == "drop":
            continue
        if not (isinstance(selected, list) and all(isinstance(s, str) and s in kinds for s in selected)):
            raise NotImplementedError(f"transformer {name!r} selects columns by {selected!r}, not signature names")
        if step == "passthrough" or (isinstance(step, FunctionTransformer) and step.func is None):  # fitted passthrough
            if any(kinds[s] not in _NUMERIC_KINDS for s in selected):
                raise NotImplementedError(f"transformer {name!r} passes a string column through")
            features.extend(Feature(s, dtype=DTYPES[kinds[s]]) for s in selected)
        elif isinstance(step, OrdinalEncoder) and step.handle_unknown == "use_encoded_value":
            features.extend(_code_tables(step, selected))
        else:
            raise NotImplementedError(f"transformer {name!r} is a {type(step).__name__}")
    if len(features) != booster.n_features_in_:
        raise NotImplementedError(f"{len(features)} encoded features for a booster of {booster.n_features_in_}")
    return CompiledPredictor(tuple(features), forest_of(booster, family), output, classes)


def booster_family(booster: Any) -> str | None:
    """ "sklearn" (HistGradientBoosting), "lightgbm" or "xgboost" for a fitted booster treelite reads, else None."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if isinstance(booster, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return "sklearn"
    kind = type(booster)
    root = kind.__module__.split(".")[0]
    # Ranking objectives and random-forest modes aside, the sklearn wrappers of both hold one booster.
    if root == "lightgbm" and hasattr(booster, "booster_") and "Rank" not in kind.__name__:
        return "lightgbm"
    if root == "xgboost" and hasattr(booster, "get_booster") and "Rank" not in kind.__name__:
        return "xgboost"
    return None


def forest_of(booster: Any, family: str) -> Any:
    """The fitted booster's trees as a treelite model, read by treelite's own frontend for its library."""
    import treelite

    if family == "lightgbm":
        return treelite.frontend.from_lightgbm(booster.booster_)
    if family == "xgboost":
        return treelite.frontend.from_xgboost(booster.get_booster())
    return treelite.sklearn.import_model(booster)


def _code_tables(encoder: Any, selected: list[str]) -> list[Feature]:
    """Each column's category → code table, made by the fitted encoder itself."""
    known = [[c for c in cats if not pd.isna(c)] for cats in encoder.categories_]
    longest = max(len(k) for k in known)
    # Every known category of every column, padded with that column's first one: one transform call.
    frame = pd.DataFrame({s: [k[i % len(k)] for i in range(longest)] for s, k in zip(selected, known, strict=True)})
    frame = frame.astype({s: encoder.categories_[j].dtype for j, s in enumerate(selected)})
    codes = encoder.transform(frame)
    return [
        Feature(
            s,
            {k[i]: float(codes[i, j]) for i in range(len(k))},
            unknown=float(encoder.unknown_value),
            missing=float(encoder.encoded_missing_value),
        )
        for j, (s, k) in enumerate(zip(selected, known, strict=True))
    ]
