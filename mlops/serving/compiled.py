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

Here: the check and the choice. The predictor is mlops.serving.trees, the C library mlops.serving.native.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from mlops.serving.native import CACHED, native_library
from mlops.serving.schema import Column, Rows, to_frame
from mlops.serving.trees import CompiledPredictor, compile_pipeline

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9  # largest |compiled - sklearn| accepted on the verification rows (float64 both ways)


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
