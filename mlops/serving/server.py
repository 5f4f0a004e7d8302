"""The model service: one registered model behind the MLflow scoring protocol, with micro-batching.

Routes (the same as `mlflow models serve`, so either can stand behind the CD flow):

- `GET /ping`, `GET /health`: 200 once the model is loaded and the batcher runs, else 503.
- `GET /version`: JSON with `mlflow_version`, the model URI served, the registered name and
  version it resolved to, and the run id. (`mlflow models serve` answers the bare MLflow
  version string here; a client that needs it reads `mlflow_version`.)
- `GET /metrics`: Prometheus text format (`mlops/serving/metrics.py`): requests by route and
  status, latency histogram, batch sizes, and the model version and prediction path served.
- `POST /invocations`: `application/json` with `dataframe_split` or `dataframe_records`; answers
  `{"predictions": [...]}` exactly as `mlflow models serve` does for the same model. Errors answer
  `{"error_code", "message"}`: 400 for a body that is not a scoring request, 413 for a body over
  `serving.max_body_bytes`, 415 for another content type, 422 for a request that breaks the
  signature, 500 when the model fails, 503 when stopping, or (with `Retry-After`) when
  `serving.max_queue` requests already wait for the model.

Bounded by design: a body is refused as soon as it is known to exceed the limit (from its
`Content-Length`, or by counting a chunked body as it streams in), so what one request can make
the service hold is about `max_body_bytes` of bytes plus their parsed rows; and the batcher's queue
refuses work past `max_queue` instead of growing.

No Prefect import here or below: the service must start without the orchestrator.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from mlops.serving.batching import BatcherClosed, BatcherFull, MicroBatcher
from mlops.serving.bodies import ByteBudget, read_body
from mlops.serving.capture import Capture, CaptureSpec
from mlops.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mlops.serving.metrics import ServiceMetrics
from mlops.serving.model import ModelRef, ServedModel, limit_native_threads, load_served_model, resolve_model_uri
from mlops.serving.schema import RequestError, Rows, parse_request
from mlops.serving.shadow import Shadow

logger = logging.getLogger(__name__)

JSON = "application/json"
_SPEC_ENV = "MLOPS_SERVING_SPEC"  # how serve() hands its settings to uvicorn worker processes
RETRY_AFTER_S = 1  # a full queue drains in a few batches, well within a second
REQUEST_ID = "x-request-id"  # the client's id of a request, else one generated; answered in the same header
MAX_REQUEST_ID = 128


def _error(status: int, error_code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error_code": error_code, "message": message})
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def freeze_startup_heap() -> None:
    """Move what start-up made (MLflow, sklearn, pandas, the model: millions of objects) out of the
    garbage collector's sight with `gc.freeze()`, so a full collection walks only what requests
    make. Without it a gen-2 collection every few thousand requests took tens to hundreds of
    milliseconds, which was the p99 of the service (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


def create_app(
    model: ServedModel,
    *,
    max_batch_size: int,
    max_wait_ms: float,
    max_body_bytes: int,
    max_queue: int | None = None,
    max_inflight_bytes: int | None = None,
    capture: Capture | None = None,
    shadow: Shadow | None = None,
) -> Starlette:
    """A Starlette app serving `model`, batching concurrent /invocations requests.

    `max_body_bytes` bounds a request body (413 past it); `max_queue` the requests waiting for the
    model (503 + Retry-After past it; None: the batcher's default, 16 batches); `max_inflight_bytes` the
    request bytes held at once (503 + Retry-After past it; None: 16 bodies of `max_body_bytes`). With
    `capture`, every answered scoring request is handed to it after its answer is ready; with `shadow`, to the
    shadow model too (scored after the answer, off its path).
    """
    budget = ByteBudget(max_inflight_bytes or 16 * max_body_bytes)
    metrics = ServiceMetrics(model.ref.name, model.ref.version, model.path, capture, shadow)
    batcher: MicroBatcher[Rows, bytes] = MicroBatcher(
        metrics.counting_batches(model.predict, lambda rows: rows.n_rows),
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        thread_initializer=limit_native_threads,
        in_loop=model.predicts_in_loop,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        freeze_startup_heap()
        if capture is not None:
            capture.start()
        try:
            async with batcher:
                if shadow is None:
                    yield
                else:
                    async with shadow:
                        yield
        finally:  # uvicorn's shutdown (SIGTERM, SIGINT) comes here once requests are answered
            if capture is not None:
                await capture.aclose()

    async def ping(request: Request) -> Response:
        if batcher.running:
            return Response("\n", media_type=JSON)
        return _error(503, "TEMPORARILY_UNAVAILABLE", "the model service is not ready")

    async def version(request: Request) -> Response:
        described = model.describe()
        if shadow is not None:
            described["shadow"] = {k: shadow.model.describe()[k] for k in ("model_uri", "model_version", "run_id")}
        return Response(json.dumps(described), media_type=JSON)

    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID) or uuid.uuid4().hex
        if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
            response = _error(400, "BAD_REQUEST", f"X-Request-ID must be at most {MAX_REQUEST_ID} printable characters")
        else:
            response = await _invocations(request, request_id, started)
            response.headers[REQUEST_ID] = request_id
        metrics.observe("/invocations", response.status_code, started)
        return response

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    async def _invocations(request: Request, request_id: str, started: float) -> Response:
        try:
            media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != JSON:
                raise RequestError(
                    f"This service accepts Content-Type {JSON}, got {media_type or 'none'!r}",
                    status=415,
                )
            body = await read_body(request, max_body_bytes, budget)
            try:
                rows = parse_request(body, model.columns)
                answer = await batcher.submit(rows)
                if capture is not None:
                    capture.record(request_id, time.perf_counter() - started, body, answer, rows.n_rows)
                if shadow is not None:
                    shadow.score_later(request_id, body, rows)
                return Response(answer, media_type=JSON)
            finally:
                budget.give(len(body))
        except RequestError as exc:
            return Response(exc.to_json(), status_code=exc.status, media_type=JSON)
        except BatcherFull as exc:
            return _error(503, "TEMPORARILY_UNAVAILABLE", f"{exc}; retry shortly", {"Retry-After": str(RETRY_AFTER_S)})
        except ClientDisconnect:  # nobody is left to read an answer; not the model's failure
            return _error(400, "BAD_REQUEST", "the client disconnected before sending the whole body")
        except BatcherClosed as exc:
            return _error(503, "TEMPORARILY_UNAVAILABLE", str(exc))
        except Exception as exc:  # the model failed on this request; the service goes on
            logger.exception("prediction failed")
            return _error(500, "INTERNAL_ERROR", f"The model failed on this request: {type(exc).__name__}: {exc}")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR", exc.detail)

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/metrics", metrics_text, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})


def app_from_env() -> Starlette:
    """Uvicorn's app factory: loads the model named by serve() in this (worker) process."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(os.environ[_SPEC_ENV])
    model = load_served_model(
        ModelRef(**spec["model"]),
        compiled=spec.get("compiled", True),
        native=spec.get("native", True),
        predict_in=spec.get("predict_in", "auto"),
    )
    capture = shadow = None
    if spec.get("capture"):
        capture = Capture(CaptureSpec(**spec["capture"], version=model.ref.version or "none"))
    if spec.get("shadow"):
        shadow_model = load_served_model(
            ModelRef(**spec["shadow"]),
            compiled=spec.get("compiled", True),
            native=spec.get("native", True),
            predict_in=spec.get("predict_in", "auto"),
        )
        shadow_capture = None
        if spec.get("capture"):
            where = {**spec["capture"], "environment": f"{spec['capture']['environment']}-shadow"}
            shadow_capture = Capture(CaptureSpec(**where, version=shadow_model.ref.version or "none"))
        shadow = Shadow(
            shadow_model, shadow_capture, max_batch_size=spec["max_batch_size"], max_queue=spec["max_queue"]
        )
    return create_app(
        model,
        max_batch_size=spec["max_batch_size"],
        max_wait_ms=spec["max_wait_ms"],
        max_body_bytes=spec["max_body_bytes"],
        max_queue=spec["max_queue"],
        max_inflight_bytes=spec.get("max_inflight_bytes"),
        capture=capture,
        shadow=shadow,
    )


def serve(
    model_uri: str,
    *,
    host: str = "127.0.0.1",
    port: int,
    workers: int | None = None,
    use_case: str | None = None,
    environment: str | None = None,
    capture_dir: str | None = None,
    shadow_model_uri: str | None = None,
) -> None:
    """Serve a registered model over the MLflow scoring protocol until stopped.

    Args:
        model_uri: e.g. `models:/flights-delay@champion`; an alias or `latest` is pinned to one
            registry version first, so every worker serves the same version.
        host: address to bind; 127.0.0.1 unless the service must be reached from elsewhere.
        port: TCP port.
        workers: uvicorn worker processes sharing the port; None takes `serving.workers` from
            the use case's config, which also gives `serving.max_batch_size`, `serving.max_wait_ms`,
            `serving.max_body_bytes` and `serving.max_queue`.
        use_case: whose config (Config.name); None: the default config's.
        environment: the environment this service is (staging, production), as its captured traffic says.
        capture_dir: where captured traffic goes (`<state>/capture`); None, or `serving.capture.enabled`
            false: nothing is captured.
        shadow_model_uri: a second version to score every answered request with, off the answers' path
            (its answers captured under `<environment>-shadow`): a shadow challenger.
    """
    import uvicorn

    from mlops.config import config_named, load_config

    config = config_named(use_case) if use_case else load_config()
    settings = config.serving
    ref = resolve_model_uri(model_uri)
    capture = None
    if capture_dir and settings.capture.enabled:
        capture = {
            "directory": capture_dir,
            "use_case": config.name,
            "environment": environment or "none",
            **settings.capture.model_dump(exclude={"enabled"}),
        }
    os.environ[_SPEC_ENV] = json.dumps(
        {
            "model": asdict(ref),
            "compiled": settings.compiled,
            "native": settings.native,
            "predict_in": settings.predict_in,
            "max_batch_size": settings.max_batch_size,
            "max_wait_ms": settings.max_wait_ms,
            "max_body_bytes": settings.max_body_bytes,
            "max_queue": settings.max_queue,
            "max_inflight_bytes": settings.max_inflight_bytes,
            "capture": capture,
            "shadow": asdict(resolve_model_uri(shadow_model_uri)) if shadow_model_uri else None,
        }
    )
    uvicorn.run(
        f"{__name__}:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers or settings.workers,
        access_log=False,  # a log line per request costs more than the prediction itself
        log_level="info",
    )
