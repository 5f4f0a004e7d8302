"""Benchmark: the embedded stack (SQLite) against the scale profile (PostgreSQL, Dask), measured in one run.

For each profile in turn, on a real stack on free ports in a temporary state dir:

  triggers  bench/loop.py's trigger timings, `--events` per trigger, first (on a quiet stack):
            mlops.model.registered → CD Running and mlops.drift.detected → CT Running.
  burst     `--burst` runs of a light flow (bench/burst_flow.py, five task runs each) submitted at
            once from as many threads: how many completed, failed, crashed; submissions the API
            refused; time until every run is final; "database is locked" lines in the server log.

Then, in-process, CT's candidate search on the full year's features (the default grid) in this
process's threads, and on a Dask LocalCluster of 1 and of 2 worker processes (cluster start
included in its time).

    .venv/bin/python bench/scaling.py [--burst 50] [--events 5] [--profiles embedded scale] [--search]
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loop import _bench_config, _runs, _time_triggers  # bench/ is the script's dir, on sys.path

from mlops import processes
from mlops.config import DEFAULT_CONFIG, PROJECT_ROOT
from mlops.config.stack import StackSettings
from mlops.platform.automations import prefect_settings
from mlops.platform.stack import down, up

BURST_DEPLOYMENT = "bench-burst/burst"


def _stack(profile: str, root: Path) -> StackSettings:
    ports = sorted({processes.free_port() for _ in range(10)})[:5]
    return StackSettings(
        state_dir=root / profile,
        prefect_port=ports[0],
        mlflow_port=ports[1],
        worker_port=ports[2],
        receiver_port=ports[3],
        postgres_port=ports[4],
        profile=profile,
    )


def _burst(client, count: int) -> dict:
    """`count` runs of the burst flow at once; wait until all are final."""
    from prefect.deployments import run_deployment
    from prefect.flows import Flow

    Flow.from_source(str(PROJECT_ROOT), "bench/burst_flow.py:burst").deploy(
        name="burst", work_pool_name="local", print_next_steps=False, ignore_warnings=True
    )
    deployment = client.read_deployment_by_name(BURST_DEPLOYMENT).id
    refused: list[str] = []

    def submit(i: int):
        try:
            return run_deployment(BURST_DEPLOYMENT, parameters={"i": i}, timeout=0).id
        except Exception as exc:
            refused.append(f"{type(exc).__name__}: {exc}"[:200])
            return None

    # Each thread submits in a copy of this thread's context: Prefect's settings (the stack's API) live there.
    contexts = [contextvars.copy_context() for _ in range(count)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        ids = [i for i in pool.map(lambda ctx, i: ctx.run(submit, i), contexts, range(count)) if i]
    submitted_s = time.monotonic() - started
    deadline = time.monotonic() + 900  # runs still not final then are counted by their state
    while True:
        runs = [r for r in _runs(client, deployment) if r.id in set(ids)]
        if len(runs) == len(ids) and all(r.state and r.state.is_final() for r in runs):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    drained_s = time.monotonic() - started
    states = [r.state.name if r.state else "none" for r in runs]
    return {
        "submitted": len(ids),
        "refused": len(refused),
        "refusals": refused[:3],
        "submit_s": submitted_s,
        "drain_s": drained_s,
        **{name: states.count(name) for name in sorted(set(states))},
    }


def _locked_lines(settings: StackSettings) -> int:
    log = settings.log_dir / "prefect-server.log"
    return log.read_text(errors="replace").count("database is locked") if log.exists() else 0


def _profile(profile: str, root: Path, burst: int, events: int) -> dict:
    settings = _stack(profile, root)
    os.environ["MLOPS_CONFIG"] = str(_bench_config(root, 3))
    started = time.monotonic()
    if up(settings) != 0:
        raise SystemExit(f"the {profile} stack did not come up")
    result: dict = {"profile": profile, "up_s": time.monotonic() - started}
    from prefect.client.orchestration import get_client

    try:
        with prefect_settings(settings), get_client(sync_client=True) as client:
            if events:  # first, on a quiet stack
                rows = _time_triggers(client, events)
                result["triggers"] = {
                    event: statistics.median(r["to_running_s"] for r in rows if r["trigger"] == event)
                    for event in dict.fromkeys(r["trigger"] for r in rows)
                }
            if burst:
                result["burst"] = _burst(client, burst)
                print(json.dumps({profile: result["burst"]}), flush=True)
        result["locked_lines"] = _locked_lines(settings)
    finally:
        down(settings)
    return result


def _search() -> list[dict]:
    """The default grid on the full year's features: threads, then Dask with 1 and 2 workers."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.continuous_training import CORES, candidate_search
    from mlops.config import Compute, load_config
    from mlops.domain import modeling
    from tasks.compute import dask_task_runner, search_compute
    from tasks.data import extract_window, split_data
    from tasks.training import engineer_features, train_candidate

    config = load_config(DEFAULT_CONFIG)
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    rows = []
    with prefect_test_harness(server_startup_timeout=120):
        features = engineer_features(config, split_data(config, extract_window(config, "2014-01-01", 12, work)))
        grid = modeling.candidate_grid(config)
        threads = max(1, CORES // min(len(grid), CORES))
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=CORES) as pool:
            baseline = list(pool.map(lambda p: train_candidate(config, features, p, threads), grid))
        rows.append({"runner": f"threads ({CORES}, {threads} OpenMP each)", "search_s": time.monotonic() - started})
        for workers in (1, 2):
            compute = search_compute(
                config.model_copy(update={"compute": Compute(search_runner="dask", dask_workers=workers)}), {}
            )
            started = time.monotonic()
            found = candidate_search.with_options(task_runner=dask_task_runner(compute))(config, features, grid, 1)
            rows.append(
                {
                    "runner": f"Dask LocalCluster, {workers} worker(s)",
                    "search_s": time.monotonic() - started,
                    "equal": found == baseline,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--profiles", nargs="*", default=["embedded", "scale"])
    parser.add_argument("--search", action="store_true", help="also time the candidate search on threads vs Dask")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped bench still stops its stack (finally: down)

    root = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    root.chmod(0o711)  # the scale profile's server runs as `postgres` when this runs as root
    if args.one:  # a child: one profile, its result as JSON in the file named
        Path(args.one).write_text(json.dumps(_profile(args.profiles[0], root, args.burst, args.events)))
        return
    results = []
    for profile in args.profiles:  # each in a process of its own: Prefect keeps one events client per process
        out = root / f"{profile}.json"
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--profiles",
                profile,
                "--burst",
                str(args.burst),
                "--events",
                str(args.events),
                "--one",
                str(out),
            ],
            check=True,
        )
        results.append(json.loads(out.read_text()))
    print(
        '\n| profile | stack up s | burst: submitted | refused | completed | failed | crashed | drain s | "database is locked" lines | registered → CD Running s | drift → CT Running s |'
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        b, t = r.get("burst", {}), r.get("triggers", {})
        print(
            f"| {r['profile']} | {r['up_s']:.0f} | {b.get('submitted', '')} | {b.get('refused', '')} | {b.get('Completed', 0)} | "
            f"{b.get('Failed', 0)} | {b.get('Crashed', 0)} | {b.get('drain_s', float('nan')):.0f} | {r['locked_lines']} | "
            f"{t.get('mlops.model.registered', float('nan')):.2f} | {t.get('mlops.drift.detected', float('nan')):.2f} |"
        )
    if args.search:
        rows = _search()
        print("\n| search runner | search s (incl. cluster start) | candidates equal threads' |\n|---|---:|---|")
        for row in rows:
            print(f"| {row['runner']} | {row['search_s']:.1f} | {row.get('equal', '—')} |")


if __name__ == "__main__":
    main()
