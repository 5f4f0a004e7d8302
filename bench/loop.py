"""Benchmark: registration → CD latency and the full CT → promoted loop on the embedded local stack.

Starts a real stack (Prefect server, worker, MLflow server, webhook receiver) on free ports in a
temporary state dir, runs `continuous-training/retrain` through its deployment for a few training
windows, and for each registered version times what the automation does:

  registered → CD flow run created (webhook → receiver → event → trigger)
  registered → CD flow run Running (+ worker poll and the flow process starting)
  CT start → CD finished (the whole loop)

    .venv/bin/python bench/loop.py [--windows 2013-04-01 2013-05-01 2013-06-01] [--load-seconds 20]
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

from mlops.config import PROJECT_ROOT
from mlops.platform import processes
from mlops.platform.stack import StackSettings, down, up

CT, CD = "continuous-training/retrain", "continuous-delivery/deploy-model"


def _bench_config(directory: Path, load_seconds: int) -> Path:
    raw = yaml.safe_load((PROJECT_ROOT / "mlops.yaml").read_text())
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
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        mine = [r for r in runs if str(r.parameters.get("version")) == version]
        if mine:
            return mine[0]
        time.sleep(0.2)
    raise TimeoutError(f"no CD run for version {version}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", nargs="+", default=["2013-04-01", "2013-05-01", "2013-06-01"])
    parser.add_argument("--load-seconds", type=int, default=20)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    os.environ["MLOPS_CONFIG"] = str(_bench_config(workdir, args.load_seconds))
    ports = sorted({processes.free_port() for _ in range(8)})[:4]
    settings = StackSettings(state_dir=workdir / "state", prefect_port=ports[0], mlflow_port=ports[1],
                             worker_port=ports[2], receiver_port=ports[3])
    started = time.monotonic()
    if up(settings) != 0:
        raise SystemExit("stack did not come up")
    stack_up_s = time.monotonic() - started
    os.environ.update(settings.client_env())
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    rows = []
    try:
        mlflow = MlflowClient(settings.mlflow_uri, registry_uri=settings.mlflow_uri)
        with get_client(sync_client=True) as client:
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
    print("| CT window (before) | CT s | version | registered → CD created s | registered → CD running s | CD s | outcome | CT start → CD end s |")
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for r in rows:
        if r["registered"]:
            print(f"| {r['as_of']} | {r['ct_s']:.1f} | v{r['version']} | {r['to_created_s']:.1f} | {r['to_running_s']:.1f} | "
                  f"{r['cd_s']:.1f} | {r['outcome']} | {r['loop_s']:.1f} |")
        else:
            print(f"| {r['as_of']} | {r['ct_s']:.1f} | not registered (gates) | | | | | |")
    running = [r["to_running_s"] for r in rows if r["registered"]]
    created = [r["to_created_s"] for r in rows if r["registered"]]
    if running:
        print(f"\nmedian registered → CD created {statistics.median(created):.1f} s, → CD running {statistics.median(running):.1f} s")


if __name__ == "__main__":
    main()
