"""MLflow registry webhooks → Prefect events: every new model version, however it was registered, fires CD.

MLflow (3.3+) calls this receiver on `model_version.created` with an HMAC-signed body. The receiver
checks the signature and the timestamp, drops repeated deliveries, and emits the Prefect event
`mlops.model.registered` (resource `mlflow.model.<name>.<version>`), which the `deploy-model`
deployment's trigger in prefect.yaml turns into a `continuous-delivery` run.

Run by the local stack: `python -m deployments.mlflow_events --port 5005 --secret-file .mlops/secrets/webhook_secret`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlops.config import USE_CASE_LABEL
from mlops.config.stack import private_secret

REGISTERED_EVENT = "mlops.model.registered"
MAX_CLOCK_SKEW_S = 300
logger = logging.getLogger("mlops.webhooks")


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's webhook signature: `v1,` + base64 HMAC-SHA256 of `<delivery id>.<timestamp>.<body>`."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> str | None:
    """None when the delivery is authentic and fresh; otherwise what is wrong with it (never the secret)."""
    delivery_id, timestamp = headers.get("x-mlflow-delivery-id"), headers.get("x-mlflow-timestamp")
    given = headers.get("x-mlflow-signature")
    if not (delivery_id and timestamp and given):
        return "missing X-MLflow-Delivery-Id, X-MLflow-Timestamp or X-MLflow-Signature header"
    # isascii: str.isdigit() accepts digits such as "²" that int() refuses.
    now = time.time() if now is None else now
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(now - int(timestamp)) > MAX_CLOCK_SKEW_S:
        return "timestamp missing or more than 5 minutes off: possible replay"
    # Constant time, on bytes: compare_digest refuses non-ASCII str, which a forged header may hold.
    expected = signature(secret, delivery_id, timestamp, body).encode()
    if not hmac.compare_digest(given.encode(), expected):
        return "signature does not match"
    return None


def registered_event(body: dict[str, Any]) -> dict[str, Any] | None:
    """The Prefect event for a `model_version.created` delivery; None for any other delivery."""
    if (body.get("entity"), body.get("action")) != ("model_version", "created"):
        return None
    data = body.get("data", {})
    name, version = data["name"], str(data["version"])
    tags = data.get("tags") or {}
    # CT tags a use case's versions with its folder's name; CD's deployment trigger passes it on as `use_case`
    # (None: CD finds the use case that registers the model, as for a version registered by hand).
    use_case = tags.get("use_case") or None
    return {
        "event": REGISTERED_EVENT,
        "resource": {
            "prefect.resource.id": f"mlflow.model.{name}.{version}",
            "prefect.resource.name": f"{name} v{version}",
            **({USE_CASE_LABEL: use_case} if use_case else {}),
        },
        "payload": {
            "name": name,
            "version": version,
            "use_case": use_case,
            "run_id": data.get("run_id"),
            "source": data.get("source"),
            "tags": tags,
        },
    }


Emitter = Callable[[dict[str, Any], uuid.UUID], Awaitable[None]]


async def emit_to_prefect(event: dict[str, Any], event_id: uuid.UUID) -> None:
    """Send one event to the Prefect API that PREFECT_API_URL names, and wait until it is sent."""
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    async with get_events_client() as client:
        await client.emit(Event(id=event_id, **event))


def create_app(secret: str, emit: Emitter = emit_to_prefect) -> Starlette:
    """The receiver: POST /mlflow/webhook (signed deliveries), GET /health."""
    # Delivery ids handled or being handled, with their signed timestamps: MLflow retries, and a
    # captured delivery can be replayed. An id is kept while its timestamp is fresh: after that
    # `verify` refuses the replay, and the signature binds id and timestamp together.
    seen: OrderedDict[str, int] = OrderedDict()

    def forget_stale(now: float) -> None:
        while seen and (now - next(iter(seen.values())) > 2 * MAX_CLOCK_SKEW_S or len(seen) > 100_000):
            seen.popitem(last=False)

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        problem = verify(secret, {k.lower(): v for k, v in request.headers.items()}, body)
        if problem:
            logger.warning("refused a delivery: %s", problem)
            return JSONResponse({"error": problem}, status_code=401)
        delivery_id = request.headers["x-mlflow-delivery-id"]
        forget_stale(time.time())
        if delivery_id in seen:
            logger.info("ignored a repeated delivery %s", delivery_id)
            return JSONResponse({"status": "duplicate", "delivery_id": delivery_id})
        try:
            event = registered_event(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"not an MLflow webhook body: {exc}"}, status_code=400)
        if event is None:
            return JSONResponse({"status": "ignored"})
        # One delivery, one event id: a retried delivery cannot start a second CD run.
        event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"mlflow-delivery:{delivery_id}")
        seen[delivery_id] = int(
            request.headers["x-mlflow-timestamp"]
        )  # before the await: a concurrent copy is a duplicate
        try:
            await emit(event, event_id)
        except BaseException:
            seen.pop(delivery_id, None)  # not delivered: MLflow's retry (on the 500) may try again
            raise
        logger.info("emitted %s for %s", event["event"], event["resource"]["prefect.resource.id"])
        return JSONResponse(
            {"status": "emitted", "event_id": str(event_id), "resource": event["resource"]["prefect.resource.id"]}
        )

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/mlflow/webhook", webhook, methods=["POST"]), Route("/health", health)])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(create_app(private_secret(args.secret_file)), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
