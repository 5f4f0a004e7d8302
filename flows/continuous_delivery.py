"""Continuous delivery: staging via Terraform → contract, live-performance and load gates → promote or roll back."""

from __future__ import annotations

from typing import Any

from prefect import flow, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.states import Completed, State

from mlops.config import load_config
from tasks.delivery import (
    Gate,
    champion_version,
    gates_markdown,
    load_holdout,
    promote,
    run_load_test,
    tag_rejected,
    verify_contract,
    verify_live_performance,
    wait_for_version,
)
from tasks.infra import current_outputs, deploy_environment, destroy_environment


@flow(name="continuous-delivery", flow_run_name="cd-{model_name}-v{version}")
def continuous_delivery(version: str, model_name: str | None = None) -> State:
    """Deliver one registered model version to production, or reject it with reasons.

    Staging is planned and applied with Terraform (the saved plan is what gets applied), then the
    live service must pass the input-schema contract tests, the per-segment performance gates with
    predictions equal to the offline model's, and a locust load test against the SLOs in mlops.yaml.
    All pass: production is applied with this version and the `champion` alias moves to it. Any
    fails: the version is tagged `rejected` with the reason, staging goes back to the champion (or is
    destroyed when there is none), and production is untouched. Re-running for the version that is
    already the serving champion is a no-op.

    Args:
        version: The MLflow model version to deliver (e.g. "3").
        model_name: The registered model; default: `tracking.model_name` in the config.
    """
    logger = get_run_logger()
    config = load_config()
    name, version = model_name or config.tracking.model_name, str(version)
    tags = wait_for_version(config, name, version)
    champion = champion_version(config, name)
    if champion == version and current_outputs(config, "production").get("model_version") == version:
        create_markdown_artifact(key="cd-decision", markdown=f"# {name} v{version} already serves production: nothing to do")
        return Completed(message=f"{name} v{version} already serves production", data={"status": "noop", "version": version})

    workdir = config.state_dir / "runs" / str(runtime.flow_run.id)
    gates: list[Gate] = []
    try:
        endpoint = deploy_environment(config, "staging", name, version)
        holdout = load_holdout(config, tags.get("data_window"), workdir)
        gates.append(verify_contract(config, endpoint, holdout))
        gates.append(verify_live_performance(config, endpoint, holdout, name, version, champion))
        gates.append(run_load_test(config, endpoint, holdout, tags["run_id"]))
    except Exception as exc:  # a broken deployment is a failed gate too: roll back, then fail the run
        gates.append(Gate(name="staging deployment", passed=False, summary=f"{type(exc).__name__}: {exc}"[:500]))
        _reject(config, name, version, champion, gates)
        raise

    if all(g.passed for g in gates):
        production = deploy_environment(config, "production", name, version)
        promote(config, name, version, gates)
        create_markdown_artifact(key="cd-decision", markdown=gates_markdown(name, version, f"promoted, serving at {production}", gates))
        logger.info("promoted %s v%s: production at %s", name, version, production)
        return Completed(message=f"promoted v{version}", data={"status": "promoted", "version": version, "endpoint": production,
                                                                "gates": [g.model_dump() for g in gates]})
    reason = _reject(config, name, version, champion, gates)
    return Completed(name="Rejected", message=reason, data={"status": "rejected", "version": version, "reason": reason,
                                                           "gates": [g.model_dump() for g in gates]})


def _reject(config: Any, name: str, version: str, champion: str | None, gates: list[Gate]) -> str:
    """Tag the version rejected, put staging back to the champion (or destroy it), say why."""
    reason = "; ".join(f"{g.name}: {g.summary}" for g in gates if not g.passed)
    tag_rejected(config, name, version, gates, reason)
    if champion:
        deploy_environment(config, "staging", name, champion)
    else:
        destroy_environment(config, "staging")
    rolled_back = f"staging back to v{champion}" if champion else "staging destroyed (no champion yet)"
    create_markdown_artifact(key="cd-decision", markdown=gates_markdown(name, version, f"rejected; {rolled_back}", gates))
    get_run_logger().warning("rejected %s v%s: %s; %s", name, version, reason, rolled_back)
    return reason
