"""Continuous-delivery checks against a live model service: plain Python and HTTP, no Prefect."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from mlops import processes, waiting
from mlops.adapters.service_contract import contract_cases, prediction_shape_ok, split_payload
from mlops.config import Config
from mlops.domain.checks import Check


class ServiceUnavailable(RuntimeError):
    """The service did not answer /ping before the deadline."""


def is_healthy(endpoint: str) -> bool:
    """True when GET /ping answers 200 now."""
    try:
        return httpx.get(f"{endpoint}/ping", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_healthy(
    endpoint: str,
    timeout_s: float = 120.0,
    interval_s: float = 0.5,
    pid_file: Path | None = None,
    log_file: Path | None = None,
) -> float:
    """Poll GET /ping until 200; returns the seconds it took.

    With the service's `pid_file`, a service that exits (a version whose code or types cannot be
    loaded) fails the wait at once instead of at the deadline; the error then ends with the last
    lines of its `log_file`, which say why.
    """
    start = time.monotonic()
    last = ["no answer"]

    def answers() -> bool:
        try:
            response = httpx.get(f"{endpoint}/ping", timeout=2.0)
        except httpx.HTTPError as exc:
            last[0] = type(exc).__name__
            return False
        last[0] = f"HTTP {response.status_code}"
        return response.status_code == 200

    def running() -> bool:
        assert pid_file is not None  # not written yet, or the process it names still runs
        return processes.read_pid_file(pid_file) is None or processes.running(pid_file) is not None

    def seen() -> str:
        logged = [line for line in waiting.tail(log_file, 60).splitlines() if line.strip()] if log_file else []
        # The last lines first: an error message must survive a caller's truncation of this text.
        return last[0] + (f"; its log ends: {' | '.join(reversed(logged[-3:]))}" if logged else "")

    try:
        waiting.wait_for(
            answers,
            timeout=timeout_s,
            interval=interval_s,
            what=f"{endpoint}/ping answering 200",
            seen=seen,
            still_alive=running if pid_file is not None else None,
        )
    except waiting.TimedOut as exc:
        raise ServiceUnavailable(str(exc)) from None
    return time.monotonic() - start


def require_serving(endpoint: str, model_uri: str) -> None:
    """The service at `endpoint` serves `model_uri` (its /version says so); else a RuntimeError naming what answers.

    Another process on the port (a stack's service of another use case, anything a user runs) answers /ping
    too: without this check CD would test and promote the wrong model.
    """
    try:
        served = httpx.get(f"{endpoint}/version", timeout=5.0).json().get("model_uri")
    except (httpx.HTTPError, ValueError, AttributeError):
        served = None
    if served != model_uri:
        raise RuntimeError(
            f"{endpoint} answers, but not with {model_uri} (its /version says {served!r}): another process holds "
            "the port; free it, or set another serving.<environment>_port"
        )


def predict_live(endpoint: str, frame: pd.DataFrame, chunk_rows: int = 2000) -> np.ndarray:
    """Send `frame` through POST /invocations in chunks and return the predictions in order."""
    parts = []
    with httpx.Client(timeout=60.0) as client:
        for start in range(0, len(frame), chunk_rows):
            body = split_payload(frame.iloc[start : start + chunk_rows])
            response = client.post(
                f"{endpoint}/invocations", content=body, headers={"Content-Type": "application/json"}
            )
            response.raise_for_status()
            parts.append(np.asarray(response.json()["predictions"], dtype=float))
    return np.concatenate(parts)


def run_contract_tests(endpoint: str, sample: pd.DataFrame, config: Config) -> list[Check]:
    """Valid rows get predictions of the declared shape; bad requests get a 4xx; the service stays up.

    Each case is a Check: observed is the HTTP status (0: no answer), required the accepted ones.
    """
    results = []
    with httpx.Client(timeout=30.0) as client:
        for case in contract_cases(sample, config):
            accepted = ", ".join(map(str, case.accepted))
            try:
                response = client.post(
                    f"{endpoint}/invocations", content=case.body, headers={"Content-Type": "application/json"}
                )
            except httpx.HTTPError as exc:
                results.append(Check(name=case.name, passed=False, observed=0, required=accepted, detail=repr(exc)))
                continue
            passed, detail = response.status_code in case.accepted, response.text[:160]
            if passed and response.status_code == 200 and case.rows is not None:
                passed = prediction_shape_ok(response.json().get("predictions"), case.rows, config)
                detail = "predictions of the declared shape" if passed else f"unexpected predictions: {detail}"
            results.append(
                Check(name=case.name, passed=passed, observed=response.status_code, required=accepted, detail=detail)
            )
        alive = client.get(f"{endpoint}/ping").status_code == 200
    results.append(
        Check(name="service still up after bad input", passed=alive, observed=200 if alive else 0, required="200")
    )
    return results


# --- the watch after a promotion -------------------------------------------------------------------

ROUTE = "/invocations"


@dataclass(frozen=True)
class Watch:
    """What a light probe saw of a live service for a while, and what the service's /metrics counted."""

    seconds: float
    probes: int
    probes_failed: int  # no 200 with predictions: an error status, a refused connection, a timeout
    answered: int  # /invocations requests the service counted meanwhile (its /metrics)
    answered_failed: int  # of those, not 200
    p99_ms: float | None  # upper bound of the latency bucket holding the 99th percentile; None: no metrics

    @property
    def error_rate(self) -> float:
        rates = [self.probes_failed / self.probes if self.probes else 1.0]
        rates += [self.answered_failed / self.answered] if self.answered else []
        return max(rates)


def scrape(endpoint: str) -> dict[str, dict[str, float]] | None:
    """/invocations counts by status and latency bucket counts from GET /metrics; None when it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = httpx.get(f"{endpoint}/metrics", timeout=5.0)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    found: dict[str, dict[str, float]] = {"status": {}, "le": {}}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.labels.get("route") != ROUTE:
                continue
            if sample.name == "mlops_requests_total":
                found["status"][sample.labels["status"]] = sample.value
            elif sample.name == "mlops_request_seconds_bucket":
                found["le"][sample.labels["le"]] = sample.value
    return found


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    moved = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return moved if all(v >= 0 for v in moved.values()) else dict(after)  # counters reset: a new process


def watch_service(endpoint: str, frame: pd.DataFrame, seconds: float, rate_per_s: float) -> Watch:
    """Send rows of `frame` one per request at `rate_per_s` for `seconds`; compare /metrics before and after."""
    before = scrape(endpoint)
    bodies = [split_payload(frame.iloc[[i]]) for i in range(len(frame))] or ['{"dataframe_split": {}}']
    probes = failed = 0
    started = time.monotonic()
    with httpx.Client(timeout=5.0) as client:
        while (now := time.monotonic()) - started < seconds:
            try:
                answer = client.post(
                    f"{endpoint}{ROUTE}",
                    content=bodies[probes % len(bodies)],
                    headers={"Content-Type": "application/json"},
                )
                ok = answer.status_code == 200 and "predictions" in answer.json()
            except (httpx.HTTPError, ValueError):
                ok = False
            probes, failed = probes + 1, failed + (not ok)
            time.sleep(max(0.0, started + probes / rate_per_s - now))  # pacing: a light, steady probe
    after = scrape(endpoint)
    if before is None or after is None:
        return Watch(time.monotonic() - started, probes, failed, 0, 0, None)
    status = _delta(after["status"], before["status"])
    buckets = _delta(after["le"], before["le"])
    total = buckets.get("+Inf", 0.0)
    bounds = sorted((float(le), n) for le, n in buckets.items())
    p99 = next((le * 1000 for le, n in bounds if total and n >= 0.99 * total), None)
    answered = int(sum(status.values()))
    return Watch(time.monotonic() - started, probes, failed, answered, answered - int(status.get("200", 0)), p99)


def watch_check(watch: Watch, config: Config) -> Check:
    """The watch against the SLOs: error rate (probe's or the service's, the worse) and p99."""
    slo = config.slo
    breaches = []
    if watch.error_rate > slo.max_error_rate:
        breaches.append(f"error rate {watch.error_rate:.2%} > {slo.max_error_rate:.2%}")
    if watch.p99_ms is None or watch.p99_ms > slo.p99_ms:
        breaches.append(
            "no /metrics from the service" if watch.p99_ms is None else f"p99 {watch.p99_ms:.0f} ms > {slo.p99_ms} ms"
        )
    detail = (
        f"{watch.probes} probes in {watch.seconds:.0f} s, {watch.probes_failed} failed; the service counted "
        f"{watch.answered} answers, {watch.answered_failed} not 200, p99 ≤ "
        + ("?" if watch.p99_ms is None else f"{watch.p99_ms:.0f} ms")
        + (f"; breached: {', '.join(breaches)}" if breaches else "")
    )
    return Check(
        name="production watch",
        passed=not breaches,
        observed=watch.error_rate,
        required=slo.max_error_rate,
        detail=detail,
    )
