"""Feature engineering and estimators: sklearn objects built from the config, fitted on training data only."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops.config import BUILTIN_ESTIMATORS, Config
from mlops.domain.evaluation import compute_metrics, predict_outputs, user_metrics
from mlops.domain.record import Record
from mlops.domain.split import held_out
from mlops.usercode import UserCodeError

ESTIMATORS: dict[tuple[str, bool], type[BaseEstimator]] = {
    ("hist_gradient_boosting", True): HistGradientBoostingClassifier,
    ("hist_gradient_boosting", False): HistGradientBoostingRegressor,
    ("random_forest", True): RandomForestClassifier,
    ("random_forest", False): RandomForestRegressor,
    ("linear", True): LogisticRegression,
    ("linear", False): Ridge,
}


def is_classifier(config: Config) -> bool:
    return config.task != "regression"


def estimator_class(config: Config) -> type[BaseEstimator]:
    """The built-in estimator for the task, or the class `training.estimator` names by import path."""
    name = config.training.estimator
    if name in BUILTIN_ESTIMATORS:
        return ESTIMATORS[(name, is_classifier(config))]
    return config.resolve("training.estimator")


def native_categorical(cls: type) -> str | None:
    """Which booster family `cls` is when it splits on category codes itself (then the built-in
    preprocessing hands it ordinal codes, not one-hot columns): "sklearn", "lightgbm", "xgboost", or None."""
    root = cls.__module__.split(".")[0]
    if root == "sklearn" and cls.__name__.startswith("HistGradientBoosting"):
        return "sklearn"
    return root if root in ("lightgbm", "xgboost") and "Rank" not in cls.__name__ else None


def build_preprocessor(config: Config) -> Any:
    """What turns the input columns into the estimator's matrix, unfitted: the use case's own
    `features.transform`, or per-column transforms (boosters that split on categories natively take
    ordinal codes, the others one-hot and imputed values)."""
    if config.features.transform:
        return user_transformer(config)
    ds = config.dataset
    if native_categorical(estimator_class(config)):
        # Unknown and missing categories become NaN, which the booster routes as missing.
        categorical: Any = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            max_categories=250,
            dtype=np.float64,
        )
        numeric: Any = "passthrough"
    else:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=50)),
            ]
        )
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    return ColumnTransformer(
        [("numeric", numeric, ds.numeric), ("categorical", categorical, ds.categorical)],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def user_transformer(config: Config) -> Any:
    """A new unfitted transformer from the `features.transform` factory; an error names the key and path."""
    path = config.features.transform
    try:
        made = config.resolve("features.transform")()
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(f"features.transform: {path}() raised {type(exc).__name__}: {exc}") from exc
    if not (hasattr(made, "fit") and hasattr(made, "transform")):
        raise UserCodeError(
            f"features.transform: {path}() returned {made!r:.60} ({type(made).__name__}), not a scikit-learn transformer "
            "(an object with fit and transform)"
        )
    return made


def _codes_layout(config: Config) -> list[int] | None:
    """The categorical columns' positions in the built-in preprocessing's output; None after a user transform."""
    if config.features.transform or not config.dataset.categorical:
        return None
    first = len(config.dataset.numeric)
    return list(range(first, first + len(config.dataset.categorical)))


def build_estimator(config: Config, params: dict[str, Any]) -> BaseEstimator:
    """The configured estimator with the config's fixed params overlaid by the candidate's; a booster
    that splits on categories natively is told which columns hold category codes."""
    cls = estimator_class(config)
    merged = {**config.training.params, **params}
    family, codes = native_categorical(cls), _codes_layout(config)
    if family == "sklearn" and codes:
        merged.setdefault("categorical_features", codes)
    elif family == "xgboost" and codes:
        merged.setdefault("enable_categorical", True)
        merged.setdefault("feature_types", ["c" if i in codes else "q" for i in range(len(config.dataset.features))])
    elif family == "lightgbm":
        merged.setdefault("verbose", -1)  # else every fit prints its warnings to stdout
    try:
        return cls(**merged)
    except TypeError as exc:
        raise UserCodeError(f"training.params/search: {config.training.estimator} does not take {exc}") from exc


def fit_params(config: Config) -> dict[str, Any]:
    """What the estimator's fit takes besides X and y (LightGBM reads categorical columns there)."""
    codes = _codes_layout(config)
    return {"categorical_feature": codes} if codes and native_categorical(estimator_class(config)) == "lightgbm" else {}


def candidate_grid(config: Config) -> list[dict[str, Any]]:
    """The search space as a list of parameter dicts, capped at max_candidates."""
    space = config.training.search
    if not space:
        return [{}]
    names = sorted(space)
    grid = [dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))]
    return grid[: config.training.max_candidates]


def features_and_target(df: pd.DataFrame, config: Config) -> tuple[pd.DataFrame, pd.Series]:
    """The model's input columns (in the config's order) and the target."""
    return df[config.dataset.features], df[config.dataset.target]


def assemble_model(preprocessor: Any, estimator: BaseEstimator) -> Pipeline:
    """The served model: the fitted feature transforms and the fitted estimator, as one Pipeline."""
    return Pipeline([("features", preprocessor), ("estimator", estimator)])


def fit_estimator(config: Config, params: dict[str, Any], X: Any, y: np.ndarray) -> BaseEstimator:
    return clone(build_estimator(config, params)).fit(X, y, **fit_params(config))


def fit_features(train: pd.DataFrame, config: Config) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The feature transforms fitted on the training rows, those rows transformed, the target, and the
    search's split of them (True: the row scores candidates; False: it fits them).

    The matrix is what the transforms return: an array for the built-in ones; a user transform may
    return a DataFrame (LightGBM then sees its pandas categories) or a sparse matrix.
    """
    X, y = features_and_target(train, config)
    preprocessor = build_preprocessor(config)
    try:
        matrix = preprocessor.fit_transform(X, y)  # as Pipeline.fit does, so a target encoder cross-fits
    except Exception as exc:
        if not config.features.transform:
            raise
        raise UserCodeError(
            f"features.transform: the transformer from {config.features.transform} failed to fit on the "
            f"{len(X)} training rows: {type(exc).__name__}: {exc}"
        ) from exc
    return preprocessor, matrix, y.to_numpy(), held_out(train, config, config.split.validation_size)


def take(X: Any, rows: np.ndarray) -> Any:
    """The rows of a matrix a mask selects, whether it is an array, a sparse matrix or a DataFrame."""
    return X.iloc[rows] if isinstance(X, pd.DataFrame) else X[rows]


class Candidate(Record):
    """One point of the search space and its validation score in the gate metric."""

    params: dict[str, Any]
    metric: str
    score: float


def score_candidate(
    config: Config, params: dict[str, Any], X: np.ndarray, y: np.ndarray, scoring: np.ndarray
) -> Candidate:
    """One point of the grid fitted on the search's fitting rows and scored on its scoring rows."""
    estimator = fit_estimator(config, params, take(X, ~scoring), y[~scoring])
    outputs = predict_outputs(estimator, take(X, scoring), config.task)
    classes = getattr(estimator, "classes_", None)
    score = compute_metrics(config.task, y[scoring], outputs, classes, user_metrics(config))[config.gates.metric]
    return Candidate(params=params, metric=config.gates.metric, score=score)


def best_candidate(candidates: list[Candidate], config: Config) -> Candidate:
    """The best validation score in the gate metric's direction (NaN never wins)."""
    higher = config.metric_directions()[config.gates.metric]
    scored = [c for c in candidates if not math.isnan(c.score)] or candidates
    return (max if higher else min)(scored, key=lambda c: c.score)
