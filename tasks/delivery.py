"""Delivery tasks: the gates a model version passes on a live staging service, and what follows them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict

from mlops import delivery, loadtest, modeling, registry
from mlops.config import Config
from mlops.evaluation import GateDecision, decide, evaluate, predict_outputs
from tasks.training import decision_markdown, evaluation_rows


class Gate(BaseModel):
    """One CD gate's verdict, with the numbers behind it."""

    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    summary: str


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def wait_for_version(config: Config, model_name: str, version: str, timeout_s: float = 300.0) -> dict[str, str]:
    """Wait until the registered version is READY (a webhook can arrive first); returns its tags."""
    client = registry.connect(config)
    deadline = time.monotonic() + timeout_s
    while True:
        found = client.get_model_version(model_name, version)
        if found.status == "READY":
            return {**found.tags, "run_id": found.run_id}
        if found.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RuntimeError(f"{model_name} version {version} is {found.status}, not READY")
        time.sleep(1.0)


@task
def champion_version(config: Config, model_name: str) -> str | None:
    """The version behind the `champion` alias, or None."""
    client = registry.connect(config)
    try:
        return str(client.get_model_version_by_alias(model_name, registry.CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


@task
def load_holdout(config: Config, data_window: str | None, workdir: Path) -> Path:
    """Rebuild the holdout the version was evaluated on in CT, from its lineage tag."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "holdout.parquet"
    delivery.holdout_for_window(config, data_window).to_parquet(path)
    return path


@task
def verify_contract(config: Config, endpoint: str, holdout: Path) -> Gate:
    """Input-schema tests on the live service: valid rows answered, bad requests refused, service up."""
    cases = delivery.run_contract_tests(endpoint, pd.read_parquet(holdout), config)
    create_table_artifact(key="contract-tests", table=[c.model_dump() for c in cases], description="Live input-schema tests")
    failed = [c.name for c in cases if not c.passed]
    return Gate(name="contract", passed=not failed, summary=f"{len(cases) - len(failed)}/{len(cases)} cases passed"
                + (f"; failed: {', '.join(failed)}" if failed else ""))


@task
def verify_live_performance(
    config: Config, endpoint: str, holdout: Path, model_name: str, version: str, champion: str | None
) -> Gate:
    """The holdout through the live endpoint: equal to offline predictions, and per-segment gates pass."""
    test = pd.read_parquet(holdout)
    X, _ = modeling.features_and_target(test, config)
    registry.connect(config)
    offline_model = mlflow.sklearn.load_model(f"models:/{model_name}/{version}")
    offline = predict_outputs(offline_model, X, config.task)
    live = delivery.predict_live(endpoint, X)
    skew = float(np.max(np.abs(live - offline))) if len(live) == len(offline) else float("inf")
    classes = getattr(offline_model, "classes_", None)
    live_eval = evaluate(test, live, classes, config)
    champion_eval = None
    if champion and champion != version:
        champion_model = mlflow.sklearn.load_model(f"models:/{model_name}/{champion}")
        champion_eval = evaluate(test, predict_outputs(champion_model, X, config.task), classes, config)
    decision: GateDecision = decide(live_eval, champion_eval, config, champion)
    create_table_artifact(key="live-metrics", table=evaluation_rows(live_eval), description="Metrics of the live staging service")
    create_markdown_artifact(
        key="live-performance",
        markdown=decision_markdown(decision) + f"\n\nTrain/serve skew: max |live - offline| = {skew:.2e} over {len(test)} rows.",
    )
    passed = decision.passed and skew <= 1e-6
    reasons = decision.reasons + ([f"train/serve skew {skew:.2e} > 1e-6"] if skew > 1e-6 else [])
    summary = f"{decision.metric} {decision.candidate:.4f} live, skew {skew:.1e}" + (f"; {'; '.join(reasons)}" if reasons else "")
    return Gate(name="live performance", passed=passed, summary=summary)


@task
def run_load_test(config: Config, endpoint: str, holdout: Path, run_id: str) -> Gate:
    """Locust against the live service; latency, throughput and errors against the SLOs; logged to MLflow."""
    features = modeling.features_and_target(pd.read_parquet(holdout), config)[0]
    payloads = loadtest.write_payloads(features.sample(min(500, len(features)), random_state=0), holdout.with_name("payloads.jsonl"))
    get_run_logger().info("load test: %d users for %d s against %s", config.load_test.users, config.load_test.seconds, endpoint)
    result = loadtest.run_locust(endpoint, payloads, config.load_test, holdout.parent / "locust")
    checks = loadtest.check_slos(result, config.slo)
    create_table_artifact(key="load-test", table=[c.model_dump() for c in checks], description=f"{result.requests} requests")
    client = registry.connect(config)
    for key, value in {"load_rps": result.rps, "load_p50_ms": result.p50_ms, "load_p95_ms": result.p95_ms,
                       "load_p99_ms": result.p99_ms, "load_error_rate": result.error_rate}.items():
        client.log_metric(run_id, key, value)
    client.log_dict(run_id, result.model_dump(), "delivery/load_test.json")
    failed = [f"{c.name} {c.observed:.4g} vs {c.required:.4g}" for c in checks if not c.passed]
    summary = f"{result.rps:.0f} req/s, p95 {result.p95_ms:.0f} ms, p99 {result.p99_ms:.0f} ms, errors {result.error_rate:.2%}"
    return Gate(name="load test", passed=not failed, summary=summary + (f"; failed: {', '.join(failed)}" if failed else ""))


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def promote(config: Config, model_name: str, version: str, gates: list[Gate]) -> None:
    """Point `champion` at the version and tag it; production already serves it."""
    client = registry.connect(config)
    client.set_registered_model_alias(model_name, registry.CHAMPION, version)
    client.set_model_version_tag(model_name, version, "deployment", "promoted")
    client.set_model_version_tag(model_name, version, "deployment_gates", gates_summary(gates))
    _emit("mlops.deployment.promoted", "production", model_name, version, gates)


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def tag_rejected(config: Config, model_name: str, version: str, gates: list[Gate], reason: str) -> None:
    """Tag the version rejected with the reason; the champion and production are untouched."""
    client = registry.connect(config)
    client.set_model_version_tag(model_name, version, "deployment", "rejected")
    client.set_model_version_tag(model_name, version, "rejected", reason[:4000])
    client.set_model_version_tag(model_name, version, "deployment_gates", gates_summary(gates))
    _emit("mlops.deployment.rejected", "staging", model_name, version, gates, reason)


def _emit(event: str, environment: str, model_name: str, version: str, gates: list[Gate], reason: str | None = None) -> None:
    payload: dict[str, Any] = {"name": model_name, "version": version, "gates": [g.model_dump() for g in gates]}
    if reason:
        payload["reason"] = reason
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"mlops.service.{environment}"},
        related=[{"prefect.resource.id": f"mlflow.model.{model_name}.{version}", "prefect.resource.role": "model"}],
        payload=payload,
    )


def gates_summary(gates: list[Gate]) -> str:
    """One line per gate, kept as a tag on the model version so the registry shows why."""
    return "\n".join(f"{g.name}: {'pass' if g.passed else 'FAIL'} ({g.summary})" for g in gates)[:4000]


def gates_markdown(model_name: str, version: str, verdict: str, gates: list[Gate]) -> str:
    rows = "\n".join(f"| {g.name} | {'pass' if g.passed else '**FAIL**'} | {g.summary} |" for g in gates)
    return f"# {model_name} v{version}: {verdict}\n\n| gate | result | numbers |\n|---|---|---|\n{rows}\n"
