"""Load a registered model for serving and predict a batch of validated requests.

The service enforces the signature itself (mlops.serving.schema) and then calls the function
the pyfunc flavour would call — for an `mlflow.sklearn` model, the raw estimator's
`predict_proba`/`predict` as named by `pyfunc_predict_fn` — on one frame built with the dtypes
MLflow's schema enforcement produces. That skips MLflow's per-call enforcement (milliseconds per
request) and gives the same numbers. Other flavours go through `PyFuncModel.predict`.

Missing values: a `double`, `float` or `string` column accepts null exactly when the loaded
model, probed once at start-up, returns a finite prediction for a row with that column missing.
HistGradientBoosting (and an OrdinalEncoder in front of it) handles them, so all such columns
accept null there; a linear model without an imputer refuses them with a 422 instead of failing
inside the model. `long`, `integer` and `boolean` columns cannot hold a missing value and never
accept null (MLflow refuses those too).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson
import pandas as pd

from mlops.serving.compiled import compile_for_serving
from mlops.serving.schema import KINDS, Column, Rows, to_frame
from mlops.serving.trees import CompiledPredictor

logger = logging.getLogger(__name__)

PredictFn = Callable[[pd.DataFrame], Any]
_NULLABLE_KINDS = ("double", "float", "string")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True)
class ModelRef:
    """Which model is served: the URI asked for and the registry version it resolved to."""

    uri: str
    resolved_uri: str
    name: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class ServedModel:
    """A loaded model with its input columns and the function that scores a frame."""

    ref: ModelRef
    columns: tuple[Column, ...]
    predict_fn: PredictFn
    run_id: str | None = None
    path: str = "sklearn"  # compiled (mlops.serving.compiled), sklearn (the raw estimator) or pyfunc
    path_note: str = ""  # why this path: what the compiled path was verified on, or why it is not used
    compiled: CompiledPredictor | None = None
    predict_in: str = "auto"  # serving.predict_in: auto, loop or thread

    def predict(self, batch: Sequence[Rows]) -> list[bytes]:
        """Score all requests of `batch` in one call; one JSON answer body per request."""
        if self.compiled is not None:
            output = self.compiled.predict(batch)
        else:
            output = self.predict_fn(to_frame(batch, self.columns))
        return split_predictions(output, [rows.n_rows for rows in batch])

    @property
    def predicts_in_loop(self) -> bool:
        """Whether batches are scored on the event loop. With `predict_in` auto: when the trees run as
        C (tens of µs a batch), where the hand-off to a thread cost more than it freed
        (docs/benchmarks.md); slower paths keep the loop free by scoring in the batcher's thread."""
        if self.predict_in != "auto":
            return self.predict_in == "loop"
        return self.compiled is not None and self.compiled.native is not None

    def describe(self) -> dict[str, Any]:
        """What /version answers."""
        from mlflow.version import VERSION

        return {
            "mlflow_version": VERSION,
            "model_uri": self.ref.uri,
            "resolved_uri": self.ref.resolved_uri,
            "model_name": self.ref.name,
            "model_version": self.ref.version,
            "run_id": self.run_id,
            "nullable_columns": [c.name for c in self.columns if c.nullable],
            "prediction_path": self.path,
            "prediction_engine": None if self.compiled is None else self.compiled.engine,
            "predicts_in": "event loop" if self.predicts_in_loop else "thread",
            "prediction_path_note": self.path_note,
        }


def split_predictions(output: Any, sizes: Sequence[int]) -> list[bytes]:
    """Cut a batch's predictions back into per-request bodies, serialised as MLflow serves them.

    A finite float or integer ndarray is written by orjson (the same numbers MLflow's NumpyEncoder
    writes, without the Python float per value); anything else goes through MLflow's own encoder.
    """
    from mlflow.utils.proto_json_utils import NumpyEncoder, _get_jsonable_obj

    if len(output) != sum(sizes):
        raise RuntimeError(f"the model returned {len(output)} predictions for {sum(sizes)} rows")
    fast = isinstance(output, np.ndarray) and output.dtype.kind in "fiu" and bool(np.isfinite(output).all())
    bodies, start = [], 0
    for size in sizes:
        rows = slice(start, start + size)
        if fast:
            bodies.append(orjson.dumps({"predictions": np.ascontiguousarray(output[rows])}, option=_NUMPY))
        else:
            part = output.iloc[rows] if isinstance(output, pd.DataFrame | pd.Series) else output[rows]
            predictions = _get_jsonable_obj(part, pandas_orient="records")
            bodies.append(json.dumps({"predictions": predictions}, cls=NumpyEncoder).encode())
        start += size
    return bodies


def resolve_model_uri(model_uri: str) -> ModelRef:
    """Pin `models:/name@alias`, `models:/name/latest` or `models:/name/N` to one registry version."""
    prefix = "models:/"
    path = model_uri[len(prefix) :] if model_uri.startswith(prefix) else ""
    name, alias, version = path, None, None
    if "@" in path:
        name, alias = path.split("@", 1)
    elif "/" in path:
        name, version = path.split("/", 1)
    if not path or (alias is None and version is None) or "/" in (version or "") or "/" in name:
        return ModelRef(model_uri, model_uri)  # runs:/, file paths, logged-model ids: load as given
    from mlflow import MlflowClient

    from mlops.adapters import registry

    client = MlflowClient()
    if alias is not None:
        found = registry.aliased(client, name, alias)
        if found is None:
            raise LookupError(f"registered model {name!r} has no version behind alias @{alias}: nothing to serve")
        version = found.version
    elif version == "latest":
        version = max((mv.version for mv in client.search_model_versions(f"name='{name}'")), key=int)
    elif version is not None and not version.isdigit():
        return ModelRef(model_uri, model_uri)  # a stage name: leave it to MLflow
    return ModelRef(model_uri, f"{prefix}{name}/{version}", name, str(version))


def columns_from_signature(schema: Any) -> tuple[Column, ...]:
    """The input columns of an MLflow column-based signature of scalar types."""
    from mlflow.types import DataType

    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        raise ValueError("the model needs a column-based input signature with named columns to be served")
    columns = []
    for spec in schema.inputs:
        kind = spec.type.name if isinstance(spec.type, DataType) else str(spec.type)
        if kind not in KINDS:
            raise ValueError(f"input column {spec.name!r} has type {kind}; the service serves {list(KINDS)}")
        columns.append(Column(spec.name, kind))
    return tuple(columns)


def probe_nullable(columns: Sequence[Column], predict_fn: PredictFn) -> tuple[Column, ...]:
    """Mark the columns in which the model returns a finite prediction for a missing value."""
    if not _predicts(predict_fn, columns, missing=()):
        logger.warning("the model fails on a row of zeros and unknown categories; nulls will be refused")
        return tuple(columns)
    candidates = [c.name for c in columns if c.kind in _NULLABLE_KINDS]
    if _predicts(predict_fn, columns, missing=candidates):
        nullable = set(candidates)
    else:
        nullable = {name for name in candidates if _predicts(predict_fn, columns, missing=[name])}
    return tuple(replace(c, nullable=c.name in nullable) for c in columns)


def _predicts(predict_fn: PredictFn, columns: Sequence[Column], missing: Sequence[str]) -> bool:
    """True when the model scores one synthetic row (zeros, an unknown category, `missing` as null)."""
    defaults = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "string": "", "boolean": False}
    values = {c.name: [None if c.name in missing else defaults[c.kind]] for c in columns}
    frame = to_frame([Rows(values, 1)], columns)
    try:
        output = np.asarray(predict_fn(frame))
    except Exception:
        return False
    return output.dtype.kind not in "fc" or bool(np.isfinite(output).all())


def limit_native_threads() -> None:
    """Give the calling thread's OpenMP/BLAS one thread: a batch of a few dozen rows gains nothing
    from a second one, which only spins at barriers on the core the event loop needs (measured:
    a one-row predict_proba went from 12 ms to 150+ ms on this 2-core machine under load)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def fast_predict_fn(pyfunc_model: Any) -> PredictFn:
    """The function `PyFuncModel.predict` ends up calling, without its per-call schema enforcement."""
    if pyfunc_model.loader_module == "mlflow.sklearn":
        name = pyfunc_model.metadata.flavors["python_function"].get("predict_fn", "predict")
        return getattr(pyfunc_model.get_raw_model(), name)
    return pyfunc_model.predict


def load_served_model(
    model: str | ModelRef, compiled: bool = True, native: bool = True, predict_in: str = "auto"
) -> ServedModel:
    """Load a model from MLflow (MLFLOW_TRACKING_URI is honoured) and get it ready to serve.

    With `compiled`, a pipeline mlops.serving.compiled supports is served by the compiled path
    when it reproduces the model on the version's verification rows; otherwise by the sklearn path.
    `native` lets that path compile the trees to C (native.native_library); `predict_in` is
    ServedModel.predict_in.
    """
    import mlflow.pyfunc

    ref = model if isinstance(model, ModelRef) else resolve_model_uri(model)
    pyfunc_model = mlflow.pyfunc.load_model(ref.resolved_uri)
    predict_fn = fast_predict_fn(pyfunc_model)
    columns = probe_nullable(columns_from_signature(pyfunc_model.metadata.get_input_schema()), predict_fn)
    path, note, fast = "pyfunc", "", None
    if pyfunc_model.loader_module == "mlflow.sklearn" and not compiled:
        path, note = "sklearn", "compiled path off (serving.compiled: false)"
    elif pyfunc_model.loader_module == "mlflow.sklearn":
        source, rows = verification_rows(pyfunc_model)
        output = pyfunc_model.metadata.flavors["python_function"].get("predict_fn", "predict")
        fast, note = compile_for_serving(
            pyfunc_model.get_raw_model(), output, columns, predict_fn, rows, source, native=native
        )
        path = "sklearn" if fast is None else "compiled"
    served = ServedModel(
        ref,
        columns,
        predict_fn,
        run_id=pyfunc_model.metadata.run_id,
        path=path,
        path_note=note,
        compiled=fast,
        predict_in=predict_in,
    )
    logger.info(
        "serving %s (%s) on the %s path%s, scored %s, %d input columns, null accepted in %s",
        ref.resolved_uri,
        ref.uri,
        path,
        f" ({note})" if note else "",
        "on the event loop" if served.predicts_in_loop else "in the batcher's thread",
        len(columns),
        [c.name for c in columns if c.nullable],
    )
    return served


def verification_rows(pyfunc_model: Any) -> tuple[str, pd.DataFrame]:
    """The rows the compiled path is checked on: the holdout rows CT logged in the version's run
    (model_files.VERIFICATION_ROWS), or else the model's input example; and what they are."""
    run_id = pyfunc_model.metadata.run_id
    if run_id:
        import io

        from mlflow import MlflowClient

        from mlops.adapters.model_files import VERIFICATION_ROWS, read_run_artifact

        found = read_run_artifact(MlflowClient(), run_id, VERIFICATION_ROWS)
        if found is not None:
            return "holdout", pd.read_parquet(io.BytesIO(found))
    example = pyfunc_model.input_example
    return "input-example", example if isinstance(example, pd.DataFrame) else pd.DataFrame()
