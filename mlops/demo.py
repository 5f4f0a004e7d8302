"""`mlops demo`: bring the local stack up, retrain through the deployment, and watch the automation deliver."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from mlops import stack
from mlops.config import load_config

CT_DEPLOYMENT = "continuous-training/retrain"
CD_DEPLOYMENT = "continuous-delivery/deploy-model"
TIMEOUT_S = 900


def _say(started: float, text: str) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {text}", flush=True)


async def _wait_for_cd_run(version: str, timeout_s: float) -> Any:
    """The continuous-delivery run the automation starts for `version`, once it is finished."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(CD_DEPLOYMENT)
        while time.monotonic() < deadline:
            runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
            mine = [r for r in runs if str(r.parameters.get("version")) == version]
            if mine and mine[0].state and mine[0].state.is_final():
                return mine[0]
            await asyncio.sleep(2)
    raise TimeoutError(f"no finished {CD_DEPLOYMENT} run for version {version} within {timeout_s:.0f} s")


def run_demo() -> int:
    """CT through its deployment → registration → (automation) CD → promoted; prints what happened."""
    started = time.monotonic()
    settings = stack.stack_settings()
    if stack.up(settings) != 0:
        return 1
    os.environ.update(settings.client_env())
    config = load_config()

    from mlflow.tracking import MlflowClient
    from prefect.deployments import run_deployment

    _say(started, f"running {CT_DEPLOYMENT} on the worker (window: {config.window.months} months before {config.window.as_of})")
    ct = run_deployment(CT_DEPLOYMENT, parameters={"reason": "demo"}, timeout=TIMEOUT_S)
    if not (ct.state and ct.state.is_completed()):
        print(f"continuous training ended {ct.state.name if ct.state else 'unknown'}: see {settings.prefect_url}/runs/flow-run/{ct.id}")
        return 1
    client = MlflowClient(settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    name = config.tracking.model_name
    found = client.search_model_versions(f"name = '{name}' and tags.prefect_flow_run_id = '{ct.id}'")
    if not found:
        _say(started, f"CT run {ct.name} registered nothing (gates failed): see {settings.prefect_url}/runs/flow-run/{ct.id}")
        return 1
    version = found[0]
    run = client.get_run(version.run_id)
    metrics = ", ".join(f"{k.removeprefix('test_')} {v:.3f}" for k, v in sorted(run.data.metrics.items()) if k.startswith("test_"))
    _say(started, f"CT registered {name} v{version.version} as challenger ({metrics})")

    _say(started, "waiting for the automation: MLflow webhook → mlops.model.registered → continuous-delivery")
    cd = asyncio.run(_wait_for_cd_run(str(version.version), TIMEOUT_S))
    outcome = client.get_model_version(name, version.version).tags.get("deployment", "unknown")
    run = client.get_run(version.run_id)
    load = {k: v for k, v in run.data.metrics.items() if k.startswith("load_")}
    _say(started, f"CD run {cd.name} finished: {cd.state.name}; version {version.version} {outcome}")
    if load:
        _say(started, "load test: {:.0f} req/s, p50 {:.0f} ms, p95 {:.0f} ms, p99 {:.0f} ms, errors {:.2%}".format(
            load.get("load_rps", 0), load.get("load_p50_ms", 0), load.get("load_p95_ms", 0),
            load.get("load_p99_ms", 0), load.get("load_error_rate", 0)))
    production = f"http://{config.serving.host}:{config.serving.production_port}"
    print(
        f"\nPrefect UI      {settings.prefect_url}/runs  (flow runs, artifacts, automations)\n"
        f"MLflow UI       {settings.mlflow_uri}/#/models/{name}\n"
        f"Production      {production}/invocations  (MLflow scoring protocol; serving v{version.version if outcome == 'promoted' else '?'})\n"
        f"The stack keeps running: `make down` stops it.",
        flush=True,
    )
    return 0 if outcome == "promoted" else 1


if __name__ == "__main__":
    sys.exit(run_demo())
