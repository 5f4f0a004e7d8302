"""The MLflow webhook receiver's own logic; the real MLflow → Prefect path is covered in tests/e2e."""

import json
import time

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature
from starlette.testclient import TestClient

from deployments.mlflow_events import create_app, read_or_create_secret, registered_event, signature, verify

pytestmark = pytest.mark.unit

SECRET = "s3cret"
BODY = {"entity": "model_version", "action": "created", "timestamp": "2026-11-26T00:00:00Z",
        "data": {"name": "flights-delay", "version": "3", "run_id": "abc", "source": "models:/m-1", "tags": {}}}


def _headers(body: bytes, delivery_id: str = "d-1", secret: str = SECRET, timestamp: int | None = None) -> dict:
    ts = str(timestamp or int(time.time()))
    return {"X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": ts,
            "X-MLflow-Signature": signature(secret, delivery_id, ts, body), "Content-Type": "application/json"}


def test_signature_matches_mlflows_own():
    payload = json.dumps(BODY)
    assert signature(SECRET, "d-1", "1700000000", payload.encode()) == _generate_hmac_signature(SECRET, "d-1", "1700000000", payload)


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "missing"),
        ({"secret": "other"}, "signature does not match"),
        ({"timestamp": 1_000_000_000}, "replay"),
    ],
)
def test_verify_refuses_unsigned_forged_and_stale_deliveries(headers, problem):
    body = json.dumps(BODY).encode()
    given = {} if not headers else {k.lower(): v for k, v in _headers(body, **headers).items()}
    assert problem in verify(SECRET, given, body)


def test_only_new_model_versions_become_events():
    event = registered_event(BODY)
    assert event["event"] == "mlops.model.registered"
    assert event["resource"]["prefect.resource.id"] == "mlflow.model.flights-delay.3"
    assert event["payload"]["version"] == "3"
    assert registered_event({**BODY, "action": "updated"}) is None


def test_receiver_emits_once_per_delivery_and_refuses_forgeries():
    emitted = []

    async def record(event, event_id):
        emitted.append((event, event_id))

    client = TestClient(create_app(SECRET, emit=record))
    body = json.dumps(BODY).encode()
    assert client.post("/mlflow/webhook", content=body, headers=_headers(body)).json()["status"] == "emitted"
    assert client.post("/mlflow/webhook", content=body, headers=_headers(body)).json()["status"] == "duplicate"
    assert client.post("/mlflow/webhook", content=body, headers=_headers(body, "d-2", secret="forged")).status_code == 401
    assert client.post("/mlflow/webhook", content=b"{", headers=_headers(b"{", "d-3")).status_code == 400
    assert len(emitted) == 1 and emitted[0][0]["payload"]["name"] == "flights-delay"


def test_secret_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "secrets" / "webhook_secret"
    first = read_or_create_secret(path)
    assert len(first) >= 32 and (path.stat().st_mode & 0o777) == 0o600
    assert read_or_create_secret(path) == first
