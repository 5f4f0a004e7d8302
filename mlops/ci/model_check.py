"""The model check: gate floors, output schema, determinism and in-process latency on a holdout."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mlops.ci.verdict import one_line
from mlops.config import Config
from mlops.domain import modeling
from mlops.domain.checks import Check, at_most
from mlops.domain.evaluation import evaluate, predict_outputs
from mlops.domain.gates import decide
from mlops.domain.record import Record


class Latency(Record):
    """Prediction time for one batch size, in process, over several repeats."""

    rows: int
    repeats: int
    median_ms: float
    p95_ms: float
    rows_per_s: float  # rows / median time


def fit_small_model(train: pd.DataFrame, config: Config) -> Any:
    """A model trained the way CT trains it (first candidate of the grid), for when there is no champion."""
    preprocessor, X, y, _ = modeling.fit_features(train, config)
    estimator = modeling.fit_estimator(config, modeling.candidate_grid(config)[0], X, y)
    return modeling.assemble_model(preprocessor, estimator)


def measure_latency(predict: Callable[[pd.DataFrame], Any], X: pd.DataFrame, rows: int, repeats: int) -> Latency:
    """Time `predict` on `rows`-row batches taken in turn from `X` (one warm-up call first)."""
    rows = min(rows, len(X))
    batches = [X.iloc[(i * rows) % max(1, len(X) - rows + 1) :][:rows] for i in range(repeats + 1)]
    predict(batches[0])
    times = []
    for batch in batches[1:]:
        started = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return Latency(
        rows=rows,
        repeats=repeats,
        median_ms=round(median * 1000, 3),
        p95_ms=round(float(np.percentile(times, 95)) * 1000, 3),
        rows_per_s=round(rows / median, 1),
    )


def schema_problems(X: pd.DataFrame, outputs: np.ndarray, config: Config, signature: Any | None) -> list[str]:
    """How the model's inputs and outputs differ from its MLflow signature; with no signature, from the task's shape."""
    problems = []
    if signature is not None and signature.inputs is not None:
        declared = signature.inputs.input_names()
        missing, extra = (
            sorted(set(config.dataset.features) - set(declared)),
            sorted(set(declared) - set(config.dataset.features)),
        )
        if missing or extra:
            problems.append(f"signature inputs differ from the config's features: missing {missing}, extra {extra}")
        else:
            from mlflow.models import validate_schema

            try:  # as the service sees a request: numeric columns arrive as doubles
                validate_schema(X.astype(dict.fromkeys(config.dataset.numeric, "float64")), signature.inputs)
            except Exception as exc:  # MlflowException names the column and the type
                problems.append(f"inputs break the signature: {one_line(str(exc))}")
    if signature is not None and signature.outputs is not None:
        problems += _output_problems(outputs, signature.outputs)
    problems += _shape_problems(outputs, len(X), config)
    return problems


def _output_problems(outputs: np.ndarray, schema: Any) -> list[str]:
    if schema.is_tensor_spec():
        spec = schema.inputs[0]
        shape = tuple(spec.shape)
        if len(shape) != outputs.ndim or any(
            want not in (-1, got) for want, got in zip(shape, outputs.shape, strict=True)
        ):
            return [f"output shape {outputs.shape} does not match the signature's {shape}"]
        if spec.type.kind != outputs.dtype.kind:
            return [f"output dtype {outputs.dtype} does not match the signature's {spec.type}"]
        return []
    width = 1 if outputs.ndim == 1 else outputs.shape[1]
    if len(schema.inputs) != width:
        return [f"{width} output columns, the signature declares {len(schema.inputs)}"]
    return []


def _shape_problems(outputs: np.ndarray, rows: int, config: Config) -> list[str]:
    if config.task == "regression":
        if outputs.shape != (rows,):
            return [f"regression output shape {outputs.shape}, expected ({rows},)"]
        return [] if np.isfinite(outputs).all() else ["non-finite predictions"]
    if outputs.ndim != 2 or outputs.shape[0] != rows or outputs.shape[1] < 2:
        return [f"class-probability output shape {outputs.shape}, expected ({rows}, n_classes)"]
    if not (np.isfinite(outputs).all() and (outputs >= 0).all() and (outputs <= 1).all()):
        return ["probabilities outside [0, 1]"]
    if not np.allclose(outputs.sum(axis=1), 1.0, atol=1e-6):
        return ["class probabilities do not sum to 1"]
    return []


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def model_checks(
    model: Any,
    test: pd.DataFrame,
    config: Config,
    signature: Any | None = None,
    repeats: tuple[int, int] = (30, 10),
) -> tuple[list[Check], dict[str, Latency]]:
    """The model on a holdout: gate floors, schema, determinism, and in-process latency vs the SLO.

    Args:
        model: A fitted pipeline (features + estimator) as CT registers it.
        test: Holdout rows with the target.
        config: Floors come from `gates.floors`, the latency bound from `slo.p95_ms`.
        signature: The registered version's MLflow signature; None for a model never logged.
        repeats: How many timed calls for 1-row and for 1,000-row batches.

    Returns:
        The checks (each with what was observed and what was required) and the latency per batch size.
    """
    X, _ = modeling.features_and_target(test, config)
    directions = config.metric_directions()

    started = time.perf_counter()
    outputs = predict_outputs(model, X, config.task)
    decision = decide(
        evaluate(test, outputs, getattr(model, "classes_", None), config), config
    )  # no comparison: floors only
    seconds = _since(started)
    checks: list[Check] = []
    for floor in decision.checks:  # named "floor <metric>"
        metric = floor.name.removeprefix("floor ")
        bound = ">=" if directions[metric] else "<="
        checks.append(floor.model_copy(update={"seconds": seconds, "detail": f"{bound} gates.floors.{metric}"}))
    if not checks:
        checks.append(
            Check(name="floors", passed=True, required="gates.floors", detail="no floors configured", seconds=seconds)
        )

    started = time.perf_counter()
    problems = schema_problems(X, outputs, config, signature)
    checks.append(
        Check(
            name="output schema",
            passed=not problems,
            seconds=_since(started),
            required="MLflow signature" if signature is not None else f"{config.task} output shape",
            detail="; ".join(problems) or f"{outputs.shape} matches",
        )
    )

    started = time.perf_counter()
    again = predict_outputs(model, X, config.task)
    same = again.shape == outputs.shape and bool(np.array_equal(again, outputs))
    checks.append(
        Check(
            name="deterministic predictions",
            passed=same,
            required="identical on the same input",
            detail=f"{len(X)} rows " + ("identical" if same else "DIFFER"),
            seconds=_since(started),
        )
    )

    predict = lambda frame: predict_outputs(model, frame, config.task)  # noqa: E731
    started = time.perf_counter()
    latency = {
        "1 row": measure_latency(predict, X, 1, repeats[0]),
        "1000 rows": measure_latency(predict, X, 1000, repeats[1]),
    }
    seconds = _since(started)  # one measurement gives the latency and both throughputs
    # The median, not the tail, is compared: in-process timing on a shared machine has a noisy tail,
    # and a model whose typical single prediction already exceeds the p95 budget cannot meet it served.
    one = latency["1 row"]
    median = at_most(
        "latency 1 row (median)",
        one.median_ms,
        config.slo.p95_ms,
        detail=f"ms, vs slo.p95_ms; p95 {one.p95_ms:.2f} ms over {one.repeats} calls",
    )
    checks.append(median.model_copy(update={"seconds": seconds}))
    for label, found in latency.items():
        checks.append(
            Check(
                name=f"throughput {label}",
                passed=True,
                observed=found.rows_per_s,
                seconds=seconds,
                detail=f"rows/s, reported (slo.min_rps {config.slo.min_rps:g} req/s applies to the service)",
            )
        )
    return checks, latency
