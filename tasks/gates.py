"""The gates a model version passes on a live service: contract, live performance, load test, production watch.

Each gate task returns a `Check`; `Gates` keeps them for CD's transaction and raises when one failed, so the
transaction's rollback hooks run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from mlops import render
from mlops.adapters import loadtest, registry, service_checks
from mlops.config import Config
from mlops.domain import modeling
from mlops.domain.checks import Check, all_passed, failures
from mlops.domain.evaluation import evaluate, predict_outputs
from mlops.domain.gates import comparable_rows, compare_with_champion, decide

MAX_SKEW = 1e-6  # live predictions must equal the offline model's (train/serve skew)


class GatesFailed(RuntimeError):
    """A staging gate failed: raised inside the delivery transaction so its rollback hooks run."""

    def __init__(self, gates: list[Check]):
        self.gates = gates
        super().__init__("; ".join(failures(gates)))


class ProductionBreached(RuntimeError):
    """Production broke the SLOs while CD watched it after the promotion: raised so the delivery rolls back."""


class Gates:
    """A delivery's verdicts so far. Until a `require()` first passes, the staging gates have not passed: a step
    that breaks before that is a failed gate (the version is rejected), one that breaks after it a rollback."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.passed = False

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    def require(self) -> None:
        """GatesFailed when a verdict failed."""
        if not all_passed(self.checks):
            raise GatesFailed(self.checks)
        self.passed = True

    def require_healthy(self, watch: Check) -> None:
        """The production watch's verdict; ProductionBreached when it failed (production and the alias go back)."""
        self.checks.append(watch)
        if not watch.passed:
            raise ProductionBreached(f"production watch: {watch.detail}")


@task
def verify_contract(config: Config, endpoint: str, holdout: Path) -> Check:
    """Input-schema tests on the live service: valid rows answered, bad requests refused, service up."""
    cases = service_checks.run_contract_tests(endpoint, pd.read_parquet(holdout), config)
    create_table_artifact(key="contract-tests", table=render.check_rows(cases), description="Live input-schema tests")
    failed = [c.name for c in cases if not c.passed]
    return Check(
        name="contract",
        passed=not failed,
        observed=len(cases) - len(failed),
        required=len(cases),
        detail=f"{len(cases) - len(failed)}/{len(cases)} cases passed"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
    )


@task
def verify_live_performance(
    config: Config, endpoint: str, holdout: Path, candidate: registry.VersionRef, champion: registry.VersionRef | None
) -> Check:
    """The holdout through the live endpoint: equal to offline predictions, and the gates pass against the champion."""
    test = pd.read_parquet(holdout)
    X, _ = modeling.features_and_target(test, config)
    registry.connect(config)
    offline_model = registry.load_model(candidate)
    offline = predict_outputs(offline_model, X, config.task)
    live = service_checks.predict_live(endpoint, X)
    if np.shape(live) != np.shape(offline):  # e.g. labels where the model's class probabilities were expected
        detail = (
            f"the service answers predictions of shape {np.shape(live)}, the registered model's are {np.shape(offline)}"
        )
        return Check(name="live performance", passed=False, observed=float("inf"), required=MAX_SKEW, detail=detail)
    skew = float(np.max(np.abs(live - offline)))
    classes = getattr(offline_model, "classes_", None)
    comparison = None
    if champion is not None and champion.version != candidate.version:
        rows, note = comparable_rows(
            test, config, champion.trained_on, champion.tags.get("data_hash"), candidate.tags.get("data_hash")
        )
        champion_outputs = (
            predict_outputs(registry.load_model(champion), X.loc[rows], config.task) if rows.any() else None
        )
        comparison = compare_with_champion(test, live, champion_outputs, classes, rows, note, champion.version, config)
    live_eval = evaluate(test, live, classes, config)
    decision = decide(live_eval, config, comparison)
    checks = [
        *decision.checks,
        Check(
            name="train/serve skew",
            passed=skew <= MAX_SKEW,
            observed=skew,
            required=MAX_SKEW,
            detail=f"max |live - offline| over {len(test)} rows",
        ),
    ]
    create_table_artifact(
        key="live-metrics", table=render.evaluation_rows(live_eval), description="Metrics of the live staging service"
    )
    create_markdown_artifact(
        key="live-performance",
        markdown=render.decision_markdown(decision.model_copy(update={"checks": checks}), "live staging service"),
    )
    reasons = failures(checks)
    detail = f"{decision.metric} {decision.candidate:.4f} live, skew {skew:.1e}" + (
        f"; {'; '.join(reasons)}" if reasons else ""
    )
    return Check(name="live performance", passed=not reasons, observed=decision.candidate, detail=detail)


@task
def run_load_test(config: Config, endpoint: str, holdout: Path, run_id: str | None) -> Check:
    """Locust against the live service; latency, throughput and errors against the SLOs; logged to MLflow."""
    features = modeling.features_and_target(pd.read_parquet(holdout), config)[0]
    payloads = loadtest.write_payloads(
        features.sample(min(500, len(features)), random_state=0), holdout.with_name("payloads.jsonl")
    )
    get_run_logger().info(
        "load test: %d users for %d s against %s", config.load_test.users, config.load_test.seconds, endpoint
    )
    result = loadtest.run_locust(endpoint, payloads, config.load_test, holdout.parent / "locust")
    if result.requests == 0:  # nothing finished: no measurement at all (seen once under a saturated machine)
        get_run_logger().warning(
            "load test: no request finished in %d s; running it once more", config.load_test.seconds
        )
        result = loadtest.run_locust(endpoint, payloads, config.load_test, holdout.parent / "locust")
    checks = loadtest.check_slos(result, config.slo)
    create_table_artifact(key="load-test", table=render.check_rows(checks), description=f"{result.requests} requests")
    if run_id:
        client = registry.connect(config)
        for key, value in {
            "load_rps": result.rps,
            "load_p50_ms": result.p50_ms,
            "load_p95_ms": result.p95_ms,
            "load_p99_ms": result.p99_ms,
            "load_error_rate": result.error_rate,
        }.items():
            client.log_metric(run_id, key, value)
        client.log_dict(run_id, result.model_dump(), "delivery/load_test.json")
    failed = [f"{c.name} {c.observed:.4g} vs {c.required:.4g}" for c in checks if not c.passed]
    summary = f"{result.rps:.0f} req/s, p95 {result.p95_ms:.0f} ms, p99 {result.p99_ms:.0f} ms, errors {result.error_rate:.2%}"
    return Check(
        name="load test", passed=not failed, detail=summary + (f"; failed: {', '.join(failed)}" if failed else "")
    )


@task  # no retries: inside CD's transaction a failed attempt rolls the whole delivery back (Prefect 3.9)
def watch_production(config: Config, endpoint: str, holdout: Path) -> Check:
    """Probe production with holdout rows for `delivery.watch_seconds` and read its /metrics against the SLOs."""
    seconds = config.delivery.watch_seconds
    if seconds <= 0:
        return Check(name="production watch", passed=True, detail="off (delivery.watch_seconds: 0)")
    get_run_logger().info("watching production at %s for %.0f s", endpoint, seconds)
    features = modeling.features_and_target(pd.read_parquet(holdout), config)[0]
    sample = features.sample(min(200, len(features)), random_state=1)
    check = service_checks.watch_check(
        service_checks.watch_service(endpoint, sample, seconds, config.delivery.watch_rps), config
    )
    get_run_logger().info("production watch: %s", check.detail)
    return check
