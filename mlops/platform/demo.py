"""`mlops demo`: the whole loop on the local stack, driven only by deployments and automations.

CT on early months → (automation) CD promotes → a summer month arrives → drift monitoring detects
drift → (automation) CT retrains → (automation) CD promotes the new version. Then a second use case
(another folder of usecases/) is trained and delivered beside it, into its own environments. It prints
a timeline of what happened and why, and leaves the stack running for the UIs (`make down` stops it).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from mlops import waiting
from mlops.config import Config, load_config, stack_use_cases
from mlops.platform import automations, stack

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

CT, CD, DRIFT = "continuous-training/retrain", "continuous-delivery/deploy-model", "drift-monitoring/scheduled"
SUMMER = "2013-08-01"  # the drift check looks at the month before this: July
TIMEOUT_S = 600


class DemoError(RuntimeError):
    """The loop stopped somewhere; the message says where to look."""


class Timeline:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}", flush=True)


def _poll(condition: Any, timeout_s: float, what: str) -> Any:
    try:
        return waiting.wait_for(condition, timeout=timeout_s, what=what, interval=1.0)
    except waiting.TimedOut as exc:
        raise DemoError(str(exc)) from None


class Loop:
    """The stack's clients and the few questions the demo asks them."""

    def __init__(self, settings: stack.StackSettings, config: Config) -> None:
        from mlflow.tracking import MlflowClient
        from prefect.client.orchestration import get_client

        self.settings, self.config = settings, config
        self.mlflow = MlflowClient(settings.mlflow_uri)
        self.prefect = get_client(sync_client=True)
        self.name = config.tracking.model_name

    def runs(self, deployment: str, **parameters: Any) -> list[Any]:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        deployment_id = self.prefect.read_deployment_by_name(deployment).id
        found = self.prefect.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
        return [r for r in found if all(str(r.parameters.get(k)) == str(v) for k, v in parameters.items())]

    def finished(self, flow_run_id: Any) -> Any:
        def final() -> Any:
            run = self.prefect.read_flow_run(flow_run_id)
            return run if run.state and run.state.is_final() else None

        return _poll(final, TIMEOUT_S, f"flow run {flow_run_id} finishing")

    def run_url(self, flow_run_id: Any) -> str:
        return f"{self.settings.prefect_url}/runs/flow-run/{flow_run_id}"

    def registered_by(self, ct_run: Any) -> Any:
        found = self.mlflow.search_model_versions(f"name = '{self.name}' and tags.prefect_flow_run_id = '{ct_run.id}'")
        if not found:
            raise DemoError(f"{ct_run.name} registered nothing (a gate failed): {self.run_url(ct_run.id)}")
        return found[0]

    def train_and_deliver(self, ct_run: Any, timeline: Timeline) -> str:
        """Wait for a CT run and the CD run the automation starts for what it registered."""
        ct_run = self.finished(ct_run.id)
        if not ct_run.state.is_completed():
            raise DemoError(f"{ct_run.name} ended {ct_run.state.name}: {self.run_url(ct_run.id)}")
        version = self.registered_by(ct_run)
        metrics = self.mlflow.get_run(version.run_id).data.metrics
        metric = self.config.gates.metric
        champion = metrics.get(f"champion_test_{metric}")
        versus = f" vs champion {champion:.3f}" if champion is not None else " (no champion yet: floors only)"
        timeline.say(
            f"{ct_run.name}: registered v{version.version} as challenger — holdout {metric} "
            f"{metrics[f'test_{metric}']:.3f}{versus}, window {version.tags['data_window']}"
        )
        timeline.say("  MLflow webhook → receiver → mlops.model.registered → continuous-delivery")
        cd = _poll(
            lambda: self.runs(CD, version=version.version, model_name=self.name),
            120,
            f"the CD run for {self.name} v{version.version}",
        )[0]
        cd = self.finished(cd.id)
        tags = self.mlflow.get_model_version(self.name, version.version).tags
        timeline.say(f"{cd.name}: {tags.get('deployment', cd.state.name)}")
        for line in tags.get("deployment_gates", "").splitlines():
            timeline.say(f"  {line}")
        if tags.get("deployment") != "promoted":
            raise DemoError(f"v{version.version} was not promoted: {self.run_url(cd.id)}")
        return str(version.version)


def run_demo() -> int:
    """Bring the stack up and run the loop once; 0 when the retrained version ends up in production."""
    settings = stack.stack_settings()
    if stack.up(settings) != 0:
        return 1
    os.environ.update(settings.client_env())
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    with automations.prefect_settings(settings):  # `up` imported Prefect before the environment named this stack
        return _run_loop(settings, load_config())


def _run_loop(settings: stack.StackSettings, config: Config) -> int:
    """CT → CD, July drift → CT → CD, through deployments and automations only; prints the timeline."""
    from prefect.deployments import run_deployment

    timeline = Timeline()
    loop = Loop(settings, config)
    try:
        timeline.say(f"{CT}: training on the {config.window.months} months before {config.window.as_of}")
        first = loop.train_and_deliver(run_deployment(CT, parameters={"reason": "demo"}, timeout=0), timeline)

        timeline.say(f"new data: July 2013 arrives; {DRIFT} compares it with v{first}'s training window")
        known = {r.id for r in loop.runs(CT, reason="drift")}  # before the check: its event may start CT before it ends
        # run_deployment is typed for its async call as well (async_dispatch): here it is sync and returns the run
        started = cast("FlowRun", run_deployment(DRIFT, parameters={"as_of": SUMMER, "window_months": 1}, timeout=0))
        drift = loop.finished(started.id)
        experiment = f"{config.tracking.experiment}-monitoring"
        found = loop.mlflow.get_experiment_by_name(experiment)
        if found is None:  # the drift run ended without logging to MLflow
            raise DemoError(f"no MLflow experiment {experiment!r} after {drift.name} ended {drift.state.name}")
        monitoring = loop.mlflow.search_runs(
            [found.experiment_id],
            filter_string="tags.current_window = '2013-07-01..2013-08-01'",
            max_results=1,
        )[0]
        import mlflow.artifacts

        result = mlflow.artifacts.load_dict(f"{monitoring.info.artifact_uri}/drift/result.json")
        share = result["drift_share"]
        drifted = [c["column"] for c in result["columns"] if c["drifted"]]
        timeline.say(
            f"{drift.name}: {share:.0%} of {len(result['columns'])} monitored columns drifted "
            f"(threshold {config.drift.drift_share:.0%}): {', '.join(drifted)}"
        )
        timeline.say(f"  Evidently report: MLflow run {monitoring.info.run_id}, artifacts/drift/drift_report.html")
        if share < config.drift.drift_share:
            raise DemoError("July did not drift under this config: nothing retrains")
        timeline.say("  mlops.drift.detected → continuous-training (debounced: one run per burst)")
        retrain = _poll(
            lambda: [r for r in loop.runs(CT, reason="drift") if r.id not in known],
            120,
            "the CT run started by the drift event (a drift event in the last hour is debounced)",
        )[0]
        second = loop.train_and_deliver(retrain, timeline)
        beside = _second_use_case(settings, config, timeline)
    except DemoError as exc:
        timeline.say(f"stopped: {exc}")
        return 1
    from mlops import render
    from mlops.adapters import environments, listings

    production = environments.current_service(config, "production", state_dir=settings.state_dir)["endpoint"]
    print(
        "\nProduction history (`mlops history`; the `production-history` artifact of each CD run):\n"
        f"{render.history_table(listings.history(loop.mlflow, config.tracking.model_name))}",
        flush=True,
    )
    print(
        f"\nProduction serves v{second} (was v{first}) at {production}/invocations\n"
        f"Prefect UI   {settings.prefect_url}/runs   (flow runs, artifacts; automations under Automations)\n"
        f"MLflow UI    {settings.mlflow_uri}/#/models/{config.tracking.model_name}\n"
        f"Model card   {settings.mlflow_uri}/#/models/{config.tracking.model_name}/versions/{second}   (its description; "
        f"also model_card.md in its training run)\n"
        + (f"Beside it    {beside}\n" if beside else "")
        + "The stack keeps running: `make down` stops it; `mlops status` lists every use case's environments.",
        flush=True,
    )
    return 0


def _second_use_case(settings: stack.StackSettings, config: Config, timeline: Timeline) -> str | None:
    """Another use case of the stack trained and delivered into its own staging and production; where it serves."""
    from prefect.deployments import run_deployment

    from mlops.adapters import environments

    others = [name for name in stack_use_cases() if name != config.name]
    if not others:
        return None
    other = load_config(use_case=others[0])
    timeline.say(f"a second use case on the same stack: {other.name} ({other.task}, model {other.tracking.model_name})")
    run = run_deployment(CT, parameters={"reason": "demo", "use_case": other.name}, timeout=0)
    version = Loop(settings, other).train_and_deliver(run, timeline)
    production = environments.current_service(other, "production", state_dir=settings.state_dir)["endpoint"]
    return f"{other.name} v{version} at {production}/invocations (its own ports, Terraform state and locks)"


if __name__ == "__main__":
    sys.exit(run_demo())
