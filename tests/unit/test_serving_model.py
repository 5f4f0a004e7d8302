"""Model-side pieces of the service, on in-memory sklearn models (no MLflow store)."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.pyfunc.scoring_server import predictions_to_json
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from mlops.serving.model import (
    ModelRef,
    ServedModel,
    columns_from_signature,
    probe_nullable,
    resolve_model_uri,
    split_predictions,
)
from mlops.serving.schema import Column

pytestmark = pytest.mark.unit

FRAME = pd.DataFrame(
    {
        "distance": [100.0, 250.0, np.nan, 400.0, 800.0, 1200.0],
        "hour": [5, 9, 13, 17, 20, 22],
        "carrier": ["AA", "UA", "AA", "DL", "UA", "AA"],
    }
)
TARGET = [0, 0, 1, 1, 1, 0]


def mlflow_body(output: object) -> bytes:
    buffer = StringIO()
    predictions_to_json(output, buffer)
    return buffer.getvalue().encode()


@pytest.mark.parametrize(
    "output",
    [
        np.array([[0.25, 0.75], [0.5, 0.5], [0.125, 0.875]]),
        np.array([1.5, 2.5, np.nan]),
        pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}),
        pd.Series([0.1, 0.2, 0.3], name="score"),
    ],
)
def test_split_predictions_matches_mlflow_serialisation_per_request(output: object) -> None:
    """The same JSON values (floats exactly, NaN as MLflow writes it); orjson's bytes have no spaces."""
    bodies = split_predictions(output, [1, 2])
    first, rest = (output.iloc[:1], output.iloc[1:]) if hasattr(output, "iloc") else (output[:1], output[1:])
    assert len(bodies) == 2
    for body, expected in zip(bodies, [mlflow_body(first), mlflow_body(rest)], strict=True):
        np.testing.assert_equal(json.loads(body), json.loads(expected))


def test_split_predictions_refuses_a_length_mismatch() -> None:
    with pytest.raises(RuntimeError, match="2 predictions for 3 rows"):
        split_predictions(np.zeros((2, 2)), [1, 2])


def test_columns_from_signature() -> None:
    schema = infer_signature(FRAME.assign(ok=True, day=np.int32(1))).inputs
    assert columns_from_signature(schema) == (
        Column("distance", "double"),
        Column("hour", "long"),
        Column("carrier", "string"),
        Column("ok", "boolean"),
        Column("day", "integer"),
    )


def test_columns_from_signature_refuses_what_it_cannot_enforce() -> None:
    with pytest.raises(ValueError, match="signature"):
        columns_from_signature(None)
    with pytest.raises(ValueError, match="'when' has type datetime"):
        columns_from_signature(infer_signature(pd.DataFrame({"when": pd.to_datetime(["2013-01-01"])})).inputs)


def _pipeline(estimator: object) -> Pipeline:
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    features = ColumnTransformer(
        [("numeric", "passthrough", ["distance", "hour"]), ("categorical", encoder, ["carrier"])]
    )
    return Pipeline([("features", features), ("estimator", estimator)]).fit(FRAME, TARGET)


COLUMNS = (Column("distance", "double"), Column("hour", "long"), Column("carrier", "string"))


def test_probe_allows_nulls_where_hist_gradient_boosting_handles_them() -> None:
    model = _pipeline(HistGradientBoostingClassifier(max_iter=5, min_samples_leaf=1))
    probed = probe_nullable(COLUMNS, model.predict_proba)
    assert {c.name: c.nullable for c in probed} == {"distance": True, "hour": False, "carrier": True}


def test_probe_refuses_nulls_a_model_cannot_take() -> None:
    model = Pipeline([("estimator", LogisticRegression())]).fit(FRAME[["distance"]].fillna(0), TARGET)
    probed = probe_nullable((Column("distance", "double"),), model.predict_proba)
    assert probed == (Column("distance", "double", nullable=False),)


def test_resolve_leaves_non_registry_uris_alone() -> None:
    for uri in ["runs:/abc/model", "/tmp/model", "models:/m-0123abcd"]:
        ref = resolve_model_uri(uri)
        assert (ref.resolved_uri, ref.name, ref.version) == (uri, None, None)


def test_the_service_imports_no_prefect() -> None:
    code = (
        "import sys, mlops.platform.cli, mlops.serving.server, mlflow.pyfunc, mlflow.sklearn;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().replace("'", '"')) == []


@pytest.mark.parametrize(("predict_in", "in_loop"), [("auto", False), ("loop", True), ("thread", False)])
def test_where_batches_are_scored_follows_serving_predict_in(predict_in: str, in_loop: bool) -> None:
    # auto scores on the loop only for C trees (tests/integration/test_compiled_path.py); sklearn is in a thread
    model = ServedModel(ModelRef("test:/m", "test:/m"), (), lambda frame: [], predict_in=predict_in)
    assert model.predicts_in_loop is in_loop
    assert model.describe()["predicts_in"] == ("event loop" if in_loop else "thread")
