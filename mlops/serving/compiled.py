"""The compiled prediction path: numpy feature encoding, and the trees as C (tl2cgen) or treelite's GTIL.

Boosters read: scikit-learn's HistGradientBoosting, LightGBM and XGBoost (treelite's frontend for
each). Behind the built-in preprocessing the features are encoded here; behind a use case's own
feature transform, that transform runs in Python on the request's frame and the trees stay compiled.

For a fitted `Pipeline(ColumnTransformer(passthrough | OrdinalEncoder), HistGradientBoosting*)`
(the default `mlops.yaml` model), one request row costs the sklearn path a DataFrame, the
ColumnTransformer and one Python call per tree (about 10 ms for 150–200 trees on this machine);
here it is a few list-to-array copies, a dict lookup per category and one C++ call over every tree
(about 0.2 ms; `docs/benchmarks.md`). Where a C compiler is found, the forest is then compiled
to a native library by tl2cgen (treelite's own code generator) when the service starts, once
per machine (built libraries are kept in a per-user cache, mlops.serving.forest_cache): 6× faster
than GTIL from a 64-row batch up (`bench/tree_engines.py`); GTIL serves when there is no
compiler. Chosen by measurement: calling sklearn's own compiled tree predictors directly still
pays a Python call per tree (2.6 ms a row), and skl2onnx does not convert HistGradientBoosting's
native categorical splits (sklearn-onnx issue 1051), which treelite 4's sklearn importer does.

The category codes are not re-implemented: each categorical column's table is made by asking
the fitted OrdinalEncoder itself to encode every category it knows (infrequent-category grouping
included); anything else is the encoder's `unknown_value`, and null its `encoded_missing_value`.

It is used only when it reproduces the registered model: `verify` compares it with the sklearn
path on real rows (the holdout rows CT logged with the version) and `compile_for_serving` returns
None, with the reason, when the pipeline is of another shape or any prediction differs by more
than `TOLERANCE` (classes: any difference). The service then serves the sklearn path and says so.
The native library is verified the same way; when it differs (or cannot be built), GTIL is
verified and serves, and the note says why.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.serving import forest_cache
from mlops.serving.schema import DTYPES, Column, Rows, to_frame

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9  # largest |compiled - sklearn| accepted on the verification rows (float64 both ways)
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


def tolerance(expected: np.ndarray) -> tuple[np.ndarray | float, str]:
    """The largest |compiled - model| accepted for each of the model's own outputs, and its statement.

    Float64 outputs (scikit-learn's and LightGBM's boosters): TOLERANCE. A float32 model (XGBoost sums
    its margins in float32) cannot be reproduced closer than its own rounding, so its bound is a few
    float32 ulps of each value: 8 * eps32 * max(1, |value|) (≈ 1e-6 for a probability).
    """
    if expected.dtype == np.float32:
        return FLOAT32_ULPS * np.finfo(np.float32).eps * np.maximum(1.0, np.abs(expected)), "float32 model: 8 ulps"
    return TOLERANCE, f"{TOLERANCE}"


FLOAT32_ULPS = 8


# gcc/clang flag for the forest's C, after tl2cgen's own -O3: builds 3-4x faster, predicts a batch as fast here
# (the call's fixed cost dominates; bench/tree_engines.py), and a service start waits for the build.
OPTIMIZE = "-O0"


def native_library(forest: Any, optimize: str = OPTIMIZE, *, cached: bool = True) -> tuple[Any, str]:
    """The forest compiled to C by tl2cgen and loaded (one thread), or None; and what was done.

    With `cached`, a library built earlier for the same forest, compiler and flags is loaded from
    the per-user cache (mlops.serving.forest_cache); otherwise it is built with the first of gcc,
    clang on PATH (`optimize`: its -O flag) in a private temp dir, loaded from there, and then
    moved into the cache. `cached=False` builds afresh (and replaces the entry).
    """
    compiler = next((c for c in ("gcc", "clang") if shutil.which(c)), None)
    if compiler is None:
        return None, "no C compiler (gcc or clang) on PATH"
    started = time.perf_counter()
    try:
        import tl2cgen

        directory, why_not = forest_cache.private_dir()
        entry = forest_cache.key(forest, compiler, optimize)
        hit = forest_cache.lookup(directory, entry) if directory is not None and cached else None
        if hit is not None:
            try:
                predictor = tl2cgen.Predictor(hit, nthread=1)
                return predictor, f"{CACHED} {hit.parent} in {time.perf_counter() - started:.2f} s"
            except Exception:  # intact, yet it does not load here (a missing symbol, another libc): build it again
                logger.warning("the cached library %s did not load; building it again", hit, exc_info=True)
                forest_cache.discard(hit.parent, entry)
        # Loaded from the unique temp path, not the cache's: a process that loaded a library of that
        # name before (a hit that failed verification) would otherwise be handed the old one again.
        with tempfile.TemporaryDirectory(prefix="mlops-tl2cgen-", dir=directory) as tmp:
            library = Path(tmp) / "forest.so"
            tl2cgen.export_lib(
                forest, toolchain=compiler, libpath=library, params={"parallel_comp": 0}, nthread=1, options=[optimize]
            )
            predictor = tl2cgen.Predictor(library, nthread=1)
            where = f"cached in {forest_cache.store(directory, entry, library).parent}" if directory else why_not
    except Exception as exc:  # any failure leaves GTIL to serve
        logger.warning("compiling the forest to C failed", exc_info=True)
        return None, f"tl2cgen failed: {type(exc).__name__}: {exc}"
    return predictor, f"built by {compiler} {optimize} in {time.perf_counter() - started:.1f} s, {where}"


CACHED = "loaded from the cache"  # how native_library's note starts for a hit


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


def rows_of(frame: pd.DataFrame, columns: Sequence[Column]) -> Rows:
    """A frame as the service's parsed request: lists per column, null as None (strings) or NaN."""
    values = {}
    for c in columns:
        series = frame[c.name]
        if c.kind == "string":
            values[c.name] = [None if pd.isna(v) else v for v in series.tolist()]
        else:
            values[c.name] = series.tolist()  # NaN stays NaN
    return Rows(values, len(frame))


@dataclass(frozen=True)
class Verification:
    """How the compiled path compared with the sklearn path."""

    rows: int
    source: str
    max_abs_diff: float | None  # None for class labels
    passed: bool
    reason: str = ""


def verify(
    compiled: CompiledPredictor,
    predict_fn: Callable[[pd.DataFrame], Any],
    frame: pd.DataFrame,
    columns: Sequence[Column],
    source: str,
) -> Verification:
    """Compiled vs sklearn predictions on `frame` (typed as the service types requests)."""
    rows = rows_of(frame, columns)
    expected = np.asarray(predict_fn(to_frame([rows], columns)))
    got = compiled.predict([rows])
    if expected.shape != got.shape:
        return Verification(len(frame), source, None, False, f"shape {got.shape} instead of {expected.shape}")
    if expected.dtype.kind in "fc":
        differences = np.abs(expected.astype(np.float64) - got)
        bound, stated = tolerance(expected)
        diff = float(np.max(differences, initial=0.0))
        ok = bool((differences <= bound).all()) and bool((np.isnan(expected) == np.isnan(got)).all())
        return Verification(
            len(frame), source, diff, ok, f"bound {stated}" if ok else f"max |difference| {diff:.3g} > {stated}"
        )
    same = bool((expected == got).all())
    return Verification(len(frame), source, None, same, "" if same else f"{int((expected != got).sum())} labels differ")


def compile_for_serving(
    model: Any,
    output: str,
    columns: Sequence[Column],
    predict_fn: Callable[[pd.DataFrame], Any],
    rows: pd.DataFrame,
    source: str,
    native: bool = True,
) -> tuple[CompiledPredictor | None, str]:
    """The compiled predictor when it reproduces `predict_fn` on `rows`, else None; and what was found.

    With `native`, the forest is compiled to C first (native_library) and that library serves when
    it reproduces the model; otherwise GTIL does, under the same check.
    """
    try:
        compiled = compile_pipeline(model, output, columns)
    except NotImplementedError as exc:
        return None, f"not compiled: {exc}"
    except Exception as exc:  # a treelite import or conversion failure: the sklearn path still serves
        logger.warning("compiling the model failed", exc_info=True)
        return None, f"not compiled: {type(exc).__name__}: {exc}"
    if rows.empty:
        return None, "not compiled: no rows to verify it on"
    engine = "treelite GTIL (native off: serving.native false)"
    if native:
        library, how = native_library(compiled.forest)
        while library is not None:
            in_c = replace(compiled, native=library)
            check = verify(in_c, predict_fn, rows, columns, source)
            if check.passed:
                return in_c, _verified(check, f"tl2cgen C library ({how})", in_c)
            if how.startswith(CACHED):  # a cached library is checked like a new one: on a difference, built again
                logger.warning("the cached C library differs from the model (%s); building it again", check.reason)
                library, how = native_library(compiled.forest, cached=False)
                continue
            library, how = None, f"its C library differs: {check.reason}"
        engine = f"treelite GTIL (not tl2cgen: {how})"
    check = verify(compiled, predict_fn, rows, columns, source)
    if not check.passed:
        return None, f"compiled but not used: on {check.rows} {source} rows, {check.reason}"
    return compiled, _verified(check, engine, compiled)


def _verified(check: Verification, engine: str, compiled: CompiledPredictor) -> str:
    if compiled.transform is not None:
        engine += f"; features by the model's own {type(compiled.transform).__name__} in Python"
    shown = (
        "equal labels" if check.max_abs_diff is None else f"max |difference| {check.max_abs_diff:.1e} ({check.reason})"
    )
    return f"verified on {check.rows} {check.source} rows: {shown}; trees by {engine}"
