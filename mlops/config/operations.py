"""How a use case runs and the bar it must clear: mlops.yaml's SLO, load test, serving, delivery, feedback,
notifications, model card and tracking sections; and the names of the columns captured traffic is kept under."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from mlops.config.sections import Gates, Strict

CAPTURE_DIR = "capture"  # under the state dir: captured traffic, partitioned by use case, environment, version, hour
# A captured row's own columns (mlops/serving/capture.py writes them, monitoring and feedback read them); then the
# model's inputs and key columns by name (captured_column), and the partition keys read back from the path.
REQUEST_ID, ROW, CAPTURED_AT, LATENCY_MS, PREDICTION = "request_id", "row", "captured_at", "latency_ms", "prediction"
CAPTURE_PARTITIONS = ("use_case", "environment", "version", "hour")


def captured_column(name: str) -> str:
    """The captured column of an input column: its name, prefixed "input_" only if a captured row's own collides."""
    own = (REQUEST_ID, ROW, CAPTURED_AT, LATENCY_MS, PREDICTION, *CAPTURE_PARTITIONS)
    return f"input_{name}" if name in own else name


class Slo(Strict):
    p95_ms: float = 100.0
    p99_ms: float = 200.0
    max_error_rate: float = 0.01
    min_rps: float = 100.0


class LoadTest(Strict):
    users: int = Field(default=32, ge=1)
    spawn_rate: float = Field(default=32.0, gt=0)
    seconds: int = Field(default=20, ge=1)


class CaptureSettings(Strict):
    """What the service keeps of the traffic it answered (mlops/serving/capture.py), under `<state>/capture/`."""

    enabled: bool = True
    sample_rate: float = Field(default=1.0, gt=0.0, le=1.0)  # the share of answered requests kept
    # Requests (and their bytes) held in memory before they are written; past either a request is answered and
    # not kept (counted in /metrics).
    buffer_requests: int = Field(default=20_000, ge=1)
    buffer_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    flush_requests: int = Field(default=5_000, ge=1)  # a write starts when this many wait...
    flush_seconds: float = Field(default=5.0, gt=0.0)  # ...or this long after the last (a SIGKILL loses these)


class Serving(Strict):
    """The model service (mlops/serving/); the limits keep its memory bounded whatever clients send."""

    workers: int = Field(default=1, ge=1)
    # Serve a verified compiled predictor when the model allows (mlops/serving/compiled.py); false: sklearn.
    compiled: bool = True
    # On the compiled path, compile the trees to C with tl2cgen when a C compiler is found (verified like
    # the rest, ≈ 1.5 s at start-up); false, or no compiler: treelite's GTIL interpreter, ≈ 6× slower a batch.
    native: bool = True
    # Where batches are scored: auto = on the event loop for C trees (µs a batch: the hand-off to a thread
    # cost more than it freed, docs/benchmarks.md), in the batcher's thread for slower paths; or force one.
    predict_in: Literal["auto", "loop", "thread"] = "auto"
    max_batch_size: int = Field(default=64, ge=1)
    # 0: a batch is whatever waits when the model is free (batches grow with the load); > 0 also waits
    # that long for company, which only adds latency here (docs/benchmarks.md).
    max_wait_ms: float = Field(default=0.0, ge=0.0)
    # A bigger /invocations body gets 413 before it is read past this. The CD checks send 2,000 rows
    # per request: ≈ 0.3 MB for the default dataset's 17 columns. Raise it for much wider rows.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Requests waiting for a batch; past it /invocations answers 503 + Retry-After. None: 16 × max_batch_size.
    max_queue: int | None = Field(default=None, ge=1)
    # The request bytes held at once (being read, parsed or queued); past it 503. None: 16 x max_body_bytes.
    max_inflight_bytes: int | None = Field(default=None, ge=1024)
    host: str = "127.0.0.1"
    staging_port: int = 5101
    production_port: int = 5102
    capture: CaptureSettings = CaptureSettings()


class Delivery(Strict):
    """How a version that passed the staging gates reaches production."""

    # manual: CD pauses for a person's decision (a form in the Prefect UI, `mlops approve`, or the API)
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout_s: int = Field(default=3600, ge=10)  # no answer by then rejects the version
    # After the promotion CD watches production this long (a light probe of holdout rows, the service's
    # /metrics); a breach of the SLOs' error rate or p99 rolls production back. 0: no watch.
    watch_seconds: float = Field(default=0.0, ge=0.0)
    watch_rps: float = Field(default=10.0, gt=0.0)  # the probe's requests per second
    # swap: production is replaced by the candidate once staging's gates pass. shadow: first production serves the
    # champion with the candidate scoring every request unseen (both answers captured); after shadow_requests rows
    # (or shadow_seconds) the shadow gate (agreement, the candidate's latency, and where labels came back, the
    # metric on the same rows) promotes or rejects. A first version (no champion) is always swapped in.
    strategy: Literal["swap", "shadow"] = "swap"
    shadow_requests: int = Field(default=500, ge=1)
    shadow_seconds: float = Field(default=3600.0, gt=0.0)
    shadow_min_agreement: float = Field(default=0.8, ge=0.0, le=1.0)


class Feedback(Strict):
    """Late labels joined to the traffic production answered (flows/feedback.py, `mlops labels`)."""

    # The realized gates.metric of the version in production past this fires mlops.performance.degraded (and CT
    # through its trigger); None: the gates' floor for that metric. No floor at all: nothing fires.
    floor: float | None = None
    min_rows: int = Field(default=200, ge=1)  # labelled rows of a version before its realized metric is judged
    # Estimate the metric from served probabilities (CBPE) only for a version whose calibration error on its own
    # holdout (test_calibration_error in its MLflow run) is within this; else the estimate says "not estimable".
    max_calibration_error: float = Field(default=0.05, gt=0.0, le=1.0)

    def floor_for(self, gates: Gates) -> float | None:
        return self.floor if self.floor is not None else gates.floors.get(gates.metric)


NOTIFICATION_EVENTS = ("cd_rejected", "cd_rolled_back", "ct_failed", "drift_detected")
WEBHOOK_URL_ENV = "MLOPS_WEBHOOK_URL"


class Notifications(Strict):
    """Messages to a webhook (Slack-compatible JSON) from Prefect automations (deployments/notifications.yaml)."""

    # MLOPS_WEBHOOK_URL wins when set: a Slack webhook URL is a secret, keep it out of the repo.
    # No URL (the default): `mlops up` removes the automations and nothing is sent.
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    events: list[Literal[NOTIFICATION_EVENTS]] = Field(default_factory=lambda: list(NOTIFICATION_EVENTS))  # type: ignore[valid-type]

    def url(self) -> str | None:
        return os.environ.get(WEBHOOK_URL_ENV) or self.webhook_url


class ModelCard(Strict):
    """What every version's model card says about the use case (mlops.adapters.cards.set_model_card)."""

    use_case: str = ""
    intended_use: str = ""
    limitations: str = ""
    owner: str = ""


class Tracking(Strict):
    experiment: str
    model_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # MLFLOW_TRACKING_URI wins when set; this is the local stack's default.
    tracking_uri: str = "http://127.0.0.1:5000"
