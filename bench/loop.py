"""Benchmark: registration → CD latency and the full CT → promoted loop on the embedded local stack.

Starts a real stack (Prefect server, worker, MLflow server, webhook receiver) on free ports in a
temporary state dir. First, `--events` times each trigger alone: it emits `mlops.model.registered`
(for a version that does not exist, so CD fails at once after starting) and `mlops.drift.detected`
(for a window before the data, so CT fails at its extract) N times each, one at a time, and splits
event → Running into what the automation, the worker's poll and the flow process take. The drift
trigger's debounce (`within: 3600`) is set to 0 for this, so that each event starts a run.
Then it runs `continuous-training/retrain` through its deployment for a few training windows, and
for each registered version times what the automation does:

  registered → CD flow run created (webhook → receiver → event → trigger)
  registered → CD flow run Running (+ worker poll and the flow process starting)
  CT start → CD finished (the whole loop)

    .venv/bin/python bench/loop.py [--events 10] [--starts warm cold] [--windows 2013-04-01 2013-05-01 2013-06-01] [--load-seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from mlops import processes
from mlops.config import DEFAULT_CONFIG
from mlops.config.stack import StackSettings
from mlops.platform.automations import prefect_settings
from mlops.platform.stack import down, up

CT, CD = "continuous-training/retrain", "continuous-delivery/deploy-model"


def _bench_config(directory: Path, load_seconds: int) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["serving"].update(staging_port=processes.free_port(), production_port=processes.free_port())
    raw["load_test"]["seconds"] = load_seconds
    path = directory / "mlops.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _wait_final(client, flow_run_id, timeout: float = 900.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.is_final():
            return run
        time.sleep(0.5)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout:.0f} s")


def _cd_run(client, deployment_id, version: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = [r for r in _runs(client, deployment_id) if str(r.parameters.get("version")) == version]
        if mine:
            return mine[0]
        time.sleep(0.2)
    raise TimeoutError(f"no CD run for version {version}")


def _breakdown(client, run) -> dict[str, float]:
    """When the run was created, picked by the worker (Pending), Running, and its first task started (epoch s)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    states = {state.type.value: state.timestamp.timestamp() for state in client.read_flow_run_states(run.id)}
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    first_task = min((t.start_time.timestamp() for t in tasks if t.start_time), default=float("nan"))
    return {
        "created": run.created.timestamp(),
        "pending": states.get("PENDING", float("nan")),
        "running": states.get("RUNNING", float("nan")),
        "first_task": first_task,
    }


def _set_start(client, deployment_ids: list, start: str) -> None:
    """Warm: the flow-run process forks from the warm starter (the stack's way); cold: the client is told no server is
    there (an empty MLOPS_WARM_SOCKET in the runs' job variables), so it execs `python -m prefect.engine`, as before."""
    from prefect.client.schemas.actions import DeploymentUpdate

    from mlops.platform.warmstart import SOCKET_ENV

    for deployment_id in deployment_ids:
        variables = dict(client.read_deployment(deployment_id).job_variables or {})
        env = {k: v for k, v in (variables.get("env") or {}).items() if k != SOCKET_ENV}
        variables["env"] = env | ({SOCKET_ENV: ""} if start == "cold" else {})
        client.update_deployment(deployment_id, DeploymentUpdate(job_variables=variables))


def _time_triggers(client, count: int, starts: list[str]) -> list[dict]:
    """Each trigger `count` times alone per start (warm, cold; interleaved): event → created → Pending → Running → first task."""
    from prefect.events import emit_event
    from prefect.events.schemas.automations import AutomationCore

    retrain = client.read_deployment_by_name(CT).id
    for automation in client.read_automations():  # the drift trigger's debounce off: one run per event here
        trigger = automation.trigger
        if getattr(trigger, "expect", None) == {"mlops.drift.detected"} and str(
            getattr(automation.actions[0], "deployment_id", "")
        ) == str(retrain):
            kept = (
                "name",
                "description",
                "enabled",
                "actions",
                "actions_on_trigger",
                "actions_on_resolve",
            )  # what an update takes
            core = AutomationCore(**{k: getattr(automation, k) for k in kept}, trigger=trigger)
            client.update_automation(
                automation.id, core.model_copy(update={"trigger": trigger.model_copy(update={"within": 0})})
            )
    rows = []
    deployments = {CD: client.read_deployment_by_name(CD).id, CT: retrain}
    for i, start in ((i, start) for i in range(count) for start in starts):
        _set_start(client, list(deployments.values()), start)
        for deployment, event, resource, payload in [
            (
                CD,
                "mlops.model.registered",
                f"mlflow.model.bench.{900 + i}",
                {"name": "bench-missing", "version": str(900 + i)},
            ),
            (CT, "mlops.drift.detected", "mlops.dataset.bench", {"as_of": "2012-01-01", "window_months": 1}),
        ]:
            known = {r.id for r in _runs(client, deployments[deployment])}
            sent = emit_event(event=event, resource={"prefect.resource.id": resource}, payload=payload)
            deadline = time.monotonic() + 120
            while not (new := [r for r in _runs(client, deployments[deployment]) if r.id not in known]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {deployment} run for {event} #{i}")
                time.sleep(0.1)
            run = _wait_final(client, new[0].id)
            at = _breakdown(client, run)
            row = {
                "trigger": event,
                "start": start,
                "i": i,
                "to_created_s": at["created"] - sent.occurred.timestamp(),
                "to_pending_s": at["pending"] - sent.occurred.timestamp(),
                "to_running_s": at["running"] - sent.occurred.timestamp(),
                "to_first_task_s": at["first_task"] - sent.occurred.timestamp(),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    _set_start(client, list(deployments.values()), "warm")
    return rows


def _runs(client, deployment_id):
    """Every flow run of the deployment."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def _trigger_table(rows: list[dict]) -> None:
    print(
        "\n| trigger | start | runs | → created (automation) | → Pending (worker poll) | → Running (process start) | → first task |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for event, start in dict.fromkeys((r["trigger"], r["start"]) for r in rows):
        mine = [r for r in rows if r["trigger"] == event and r["start"] == start]
        med = {
            k: statistics.median(r[k] for r in mine)
            for k in ("to_created_s", "to_pending_s", "to_running_s", "to_first_task_s")
        }
        top = max(r["to_running_s"] for r in mine)
        print(
            f"| `{event}` | {start} | {len(mine)} | {med['to_created_s']:.2f} | {med['to_pending_s']:.2f} | "
            f"{med['to_running_s']:.2f} (max {top:.2f}) | {med['to_first_task_s']:.2f} |"
        )
    print("(medians, seconds from the event)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10, help="events per trigger for the trigger timings (0: none)")
    parser.add_argument(
        "--starts",
        nargs="+",
        choices=["warm", "cold"],
        default=["warm", "cold"],
        help="how flow-run processes start, interleaved event by event",
    )
    parser.add_argument("--windows", nargs="*", default=["2013-04-01", "2013-05-01", "2013-06-01"])
    parser.add_argument("--load-seconds", type=int, default=20)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    os.environ["MLOPS_CONFIG"] = str(_bench_config(workdir, args.load_seconds))
    ports = sorted({processes.free_port() for _ in range(8)})[:4]
    settings = StackSettings(
        state_dir=workdir / "state",
        prefect_port=ports[0],
        mlflow_port=ports[1],
        worker_port=ports[2],
        receiver_port=ports[3],
    )
    started = time.monotonic()
    if up(settings) != 0:
        raise SystemExit("stack did not come up")
    stack_up_s = time.monotonic() - started
    os.environ.update(settings.client_env())
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    rows, triggers = [], []
    try:
        mlflow = MlflowClient(settings.mlflow_uri, registry_uri=settings.mlflow_uri)
        with (
            prefect_settings(settings),
            get_client(sync_client=True) as client,
        ):  # `up` imported Prefect before the env
            triggers = _time_triggers(client, args.events, args.starts) if args.events else []
            cd_deployment = client.read_deployment_by_name(CD).id
            for as_of in args.windows:
                t0 = time.time()
                ct = run_deployment(CT, parameters={"as_of": as_of, "reason": "bench"}, timeout=0)
                ct = _wait_final(client, ct.id)
                found = mlflow.search_model_versions(f"name = 'flights-delay' and tags.prefect_flow_run_id = '{ct.id}'")
                row = {"as_of": as_of, "ct_s": (ct.end_time - ct.start_time).total_seconds(), "registered": bool(found)}
                if found:
                    registered = found[0].creation_timestamp / 1000
                    cd = _cd_run(client, cd_deployment, str(found[0].version))
                    cd = _wait_final(client, cd.id)
                    row |= {
                        "version": str(found[0].version),
                        "to_created_s": cd.created.timestamp() - registered,
                        "to_running_s": cd.start_time.timestamp() - registered,
                        "cd_s": (cd.end_time - cd.start_time).total_seconds(),
                        "outcome": cd.state.name,
                        "loop_s": cd.end_time.timestamp() - t0,
                    }
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        down(settings)

    print(f"\nstack up: {stack_up_s:.1f} s (cold)\n")
    if triggers:
        _trigger_table(triggers)
    print(
        "| CT window (before) | CT s | version | registered → CD created s | registered → CD running s | CD s | outcome | CT start → CD end s |"
    )
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for r in rows:
        if r["registered"]:
            print(
                f"| {r['as_of']} | {r['ct_s']:.1f} | v{r['version']} | {r['to_created_s']:.1f} | {r['to_running_s']:.1f} | "
                f"{r['cd_s']:.1f} | {r['outcome']} | {r['loop_s']:.1f} |"
            )
        else:
            print(f"| {r['as_of']} | {r['ct_s']:.1f} | not registered (gates) | | | | | |")
    running = [r["to_running_s"] for r in rows if r["registered"]]
    created = [r["to_created_s"] for r in rows if r["registered"]]
    if running:
        print(
            f"\nmedian registered → CD created {statistics.median(created):.1f} s, → CD running {statistics.median(running):.1f} s"
        )


if __name__ == "__main__":
    main()
