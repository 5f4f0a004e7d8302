"""The MLflow webhook receiver's own logic; the real MLflow → Prefect path is covered in tests/e2e."""

import json
import time

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature
from starlette.testclient import TestClient

from deployments.mlflow_events import create_app, registered_event, signature, verify
from mlops.config.stack import private_secret

pytestmark = pytest.mark.unit

SECRET = "s3cret"
BODY = {
    "entity": "model_version",
    "action": "created",
    "timestamp": "2026-11-26T00:00:00Z",
    "data": {"name": "flights-delay", "version": "3", "run_id": "abc", "source": "models:/m-1", "tags": {}},
}


def _headers(body: bytes, delivery_id: str = "d-1", secret: str = SECRET, timestamp: int | str | None = None) -> dict:
    ts = str(timestamp or int(time.time()))
    return {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": signature(secret, delivery_id, ts, body),
        "Content-Type": "application/json",
    }


def test_signature_matches_mlflows_own():
    payload = json.dumps(BODY)
    assert signature(SECRET, "d-1", "1700000000", payload.encode()) == _generate_hmac_signature(
        SECRET, "d-1", "1700000000", payload
    )


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "missing"),
        ({"secret": "other"}, "signature does not match"),
        ({"timestamp": 1_000_000_000}, "replay"),
        ({"timestamp": int(time.time()) + 3600}, "replay"),  # from the future: as suspicious
        ({"timestamp": "\u00b2\u00b3"}, "replay"),  # str.isdigit() says yes, int() says no
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
    assert (
        client.post("/mlflow/webhook", content=body, headers=_headers(body, "d-2", secret="forged")).status_code == 401
    )
    assert client.post("/mlflow/webhook", content=b"{", headers=_headers(b"{", "d-3")).status_code == 400
    assert len(emitted) == 1 and emitted[0][0]["payload"]["name"] == "flights-delay"


def test_secret_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "secrets" / "webhook_secret"
    first = private_secret(path)
    assert len(first) >= 32 and (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert private_secret(path) == first


def test_verify_compares_a_non_ascii_signature_without_raising():
    body = json.dumps(BODY).encode()
    given = {k.lower(): v for k, v in _headers(body).items()} | {"x-mlflow-signature": "v1,\u00e9t\u00e9"}
    assert verify(SECRET, given, body) == "signature does not match"


def _recording_client():
    emitted = []

    async def record(event, event_id):
        emitted.append((event, event_id))

    return TestClient(create_app(SECRET, emit=record)), emitted


def test_receiver_refuses_a_replayed_delivery():
    """A captured delivery sent again, byte for byte, within the clock-skew window emits nothing."""
    client, emitted = _recording_client()
    body = json.dumps(BODY).encode()
    captured = _headers(body, "d-replayed")
    assert client.post("/mlflow/webhook", content=body, headers=captured).json()["status"] == "emitted"
    for _ in range(3):
        replayed = client.post("/mlflow/webhook", content=body, headers=captured)
        assert replayed.status_code == 200 and replayed.json()["status"] == "duplicate"
    # Re-signing the same id with a fresh timestamp needs the secret; without it the forgery is refused.
    forged = _headers(body, "d-replayed", secret="guess", timestamp=int(time.time()) + 1)
    assert client.post("/mlflow/webhook", content=body, headers=forged).status_code == 401
    assert len(emitted) == 1


def test_receiver_refuses_a_stale_delivery_even_with_a_valid_signature():
    client, emitted = _recording_client()
    body = json.dumps(BODY).encode()
    stale = _headers(body, "d-stale", timestamp=int(time.time()) - 3600)  # signed with the real secret
    refused = client.post("/mlflow/webhook", content=body, headers=stale)
    assert refused.status_code == 401 and "replay" in refused.json()["error"]
    assert emitted == []


def test_a_delivery_whose_event_was_not_sent_can_be_retried():
    attempts = []

    async def flaky(event, event_id):
        attempts.append(event_id)
        if len(attempts) == 1:
            raise ConnectionError("Prefect is down")

    client = TestClient(create_app(SECRET, emit=flaky), raise_server_exceptions=False)
    body = json.dumps(BODY).encode()
    headers = _headers(body, "d-retried")
    assert client.post("/mlflow/webhook", content=body, headers=headers).status_code == 500  # MLflow retries a 5xx
    assert client.post("/mlflow/webhook", content=body, headers=headers).json()["status"] == "emitted"
    assert len(attempts) == 2 and attempts[0] == attempts[1], "one delivery, one event id"


def test_refusals_never_echo_the_secret(caplog):
    client, _ = _recording_client()
    body = json.dumps(BODY).encode()
    with caplog.at_level("DEBUG", logger="mlops.webhooks"):
        answer = client.post("/mlflow/webhook", content=body, headers=_headers(body, "d-x", secret="forged"))
    assert SECRET not in answer.text and SECRET not in caplog.text
