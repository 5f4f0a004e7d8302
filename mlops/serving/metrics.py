"""Prometheus metrics of one model service, in the text format at `GET /metrics` (prometheus-client).

Each app gets its own registry, so several apps in one process (tests) never share counters. With
`serving.workers > 1` every uvicorn worker process counts its own requests: scrape through one
worker per port, or run one worker per port, as KServe and MLServer do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mlops.serving.capture import Capture
    from mlops.serving.shadow import Shadow

T = TypeVar("T")
R = TypeVar("R")

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    """Requests by route and status, request latency, batch sizes, and which model (and path) is served."""

    def __init__(
        self,
        model_name: str | None,
        model_version: str | None,
        path: str,
        capture: Capture | None = None,
        shadow: Shadow | None = None,
    ):
        self.registry = CollectorRegistry(auto_describe=True)
        if capture is not None:
            self.registry.register(_CaptureCounts(capture, "mlops_capture"))
        if shadow is not None:
            shadow.outcomes = Counter(
                "mlops_shadow_requests",
                "Answered requests the shadow model scored, dropped (its queue full) or failed on.",
                ["outcome"],
                registry=self.registry,
            )
            Gauge(
                "mlops_shadow_model_info",
                "The shadow model version (always 1).",
                ["model_version"],
                registry=self.registry,
            ).labels(model_version=shadow.model.ref.version or "").set(1)
            if shadow.capture is not None:
                self.registry.register(_CaptureCounts(shadow.capture, "mlops_shadow_capture"))
        self.requests = Counter(
            "mlops_requests",
            "Requests answered, by route and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlops_request_seconds",
            "Time from the request's arrival to its answer.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "mlops_batch_requests", "Requests scored by one model call.", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.batch_rows = Histogram(
            "mlops_batch_rows",
            "Rows scored by one model call.",
            buckets=(*BATCH_BUCKETS, 1024, 2048, 4096),
            registry=self.registry,
        )
        self.model = Gauge(
            "mlops_model_info",
            "The model version served (always 1), and the prediction path.",
            ["model_name", "model_version", "path"],
            registry=self.registry,
        )
        self.model.labels(model_name=model_name or "", model_version=model_version or "", path=path).set(1)
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, status: int, started: float) -> None:
        """One answered request (`started` from time.perf_counter())."""
        key = (route, status)
        children = self._children.get(key)
        if children is None:  # prometheus-client's labels() costs a lock and a lookup: once per route and status
            children = self._children[key] = (
                self.requests.labels(route=route, status=str(status)),
                self.latency.labels(route=route),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    def counting_batches(
        self, process: Callable[[list[T]], Sequence[R]], rows: Callable[[T], int]
    ) -> Callable[[list[T]], Sequence[R]]:
        """`process` that also records the size of each batch it is handed."""

        def counted(batch: list[T]) -> Sequence[R]:
            self.batch_requests.observe(len(batch))
            self.batch_rows.observe(sum(rows(item) for item in batch))
            return process(batch)

        return counted

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _CaptureCounts(Collector):
    """The capture's own counters, read at each scrape (the hot path only adds to plain ints)."""

    COUNTS = (
        ("captured", "Answered requests put in the capture buffer."),
        ("dropped", "Answered requests not captured because the capture buffer was full."),
        ("sampled_out", "Answered requests left out by serving.capture.sample_rate."),
        ("rows_written", "Captured rows written to Parquet."),
        ("write_errors", "Capture writes that failed (their rows are lost; the log says why)."),
    )

    def __init__(self, capture: Capture, prefix: str) -> None:
        self.capture, self.prefix = capture, prefix

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, documentation in self.COUNTS:
            yield CounterMetricFamily(f"{self.prefix}_{name}", documentation, value=getattr(self.capture, name))
