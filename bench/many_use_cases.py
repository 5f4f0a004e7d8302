"""Benchmark: N use cases on one local stack (N = 1, 5, 10): all trained at once, each delivered to its own production.

For each N: a throwaway clone of the repo's committed HEAD gets N use case folders `usecases/uc01..ucNN/`,
each a copy of `usecases/diabetes/` with its own dataset name, experiment and model name. A real stack
(Prefect server, worker, warm starter, MLflow server, webhook receiver) is started from the clone
(`PYTHONPATH=<clone>`, cwd the clone, MLOPS_CONFIG unset) on free ports in a fresh state dir. Then
`continuous-training/retrain` is started for all N use cases at once, and the bench waits until each
one's registration (MLflow webhook → receiver → `mlops.model.registered` → automation) has a
`continuous-delivery/deploy-model` run that completed and left the version tagged `deployment=promoted`.
It reports per N:

  delivered                  use cases whose version was promoted, of N
  wall to last promotion     the N CT runs requested → the last version's `deployment_at` (its promotion)
  registration → CD start    the version's `creation_timestamp` → its CD run's `start_time` (median, max)
  trigger latency            the version's `creation_timestamp` → its CD run's `created` (median, max)
  RSS of the model services  every staging and production service (process tree), total and per service
  RSS of the stack's parts   each part's process tree (`part_pids`), idle after the last delivery
  status                     `status_report`: every environment of the N use cases applied and healthy
  CD one after another       CD's total time, the time between one CD's end and the next waiting one's start,
                             each CD run's AwaitingConcurrencySlot states; PSS beside RSS; peaks during the run

then stops the stack, checks that no process of it (parts and model services, by pid) is left, and
deletes the clone and the state dir (kept, with the path printed, when something failed).
Before each N it waits until no test suite runs on the machine (`pgrep -f pytest` or `.ci/run`, every 30 s)
and the machine is nearly idle (under 0.5 cores busy over 10 s); an N during which a test suite was seen is
measured again (`--retries`).

    .venv/bin/python bench/many_use_cases.py [--counts 1 5 10] [--timeout-min-per-use-case 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from datetime import datetime
from itertools import pairwise
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CT, CD = "continuous-training/retrain", "continuous-delivery/deploy-model"
TEMPLATE = "diabetes"  # the use case each uc<NN> copies
FILES = ("mlops.yaml", "contract.json", "diabetes.csv", "__init__.py")
MIB = 2**20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# The driver: one clone, state dir and stack per N, measured by a child process run from the clone.
# --------------------------------------------------------------------------------------------


def test_suites() -> list[str]:
    """The pids of a test suite running on this machine: `pgrep -f pytest` (the suite, its stacks under
    /tmp/pytest-of-*), and `.ci/run` (CI's install, before its pytest starts)."""
    found = []
    for pattern in ("pytest", r"\.ci/run"):
        found += subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return found


def busy_cores(window_s: float = 10.0) -> float:
    """Cores the whole machine kept busy over `window_s` (/proc/stat: all but idle and iowait)."""

    def busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")

    before = busy()
    time.sleep(window_s)
    return (busy() - before) / window_s


def wait_for_quiet(max_cores: float = 0.5, timeout_s: float = 600.0) -> float:
    """Wait (up to `timeout_s`) until the machine is nearly idle: under `max_cores` busy over 10 s; the last reading."""
    deadline = time.monotonic() + timeout_s
    while (cores := busy_cores()) > max_cores and time.monotonic() < deadline:
        log(f"the machine is busy ({cores:.2f} cores over 10 s); waiting")
    return cores


def wait_for_no_tests(interval_s: float = 30.0) -> float:
    """Wait until no test suite runs on this machine (`pgrep -f pytest` finds nothing); returns the seconds waited."""
    started = time.monotonic()
    while True:
        found = test_suites()
        if not found:
            return time.monotonic() - started
        log(f"a test suite runs (pids {' '.join(found[:6])}); checking again in {interval_s:.0f} s")
        time.sleep(interval_s)


def use_case_names(count: int) -> list[str]:
    return [f"uc{i:02d}" for i in range(1, count + 1)]


def make_clone(directory: Path, count: int) -> Path:
    """A clone of the committed HEAD with `count` copies of usecases/diabetes/ as usecases/uc01..; returns its path."""
    import yaml

    clone = directory / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=300)
    template = clone / "usecases" / TEMPLATE
    for name in use_case_names(count):
        folder = clone / "usecases" / name
        folder.mkdir()
        for file in FILES:
            shutil.copy2(template / file, folder / file)
        raw = yaml.safe_load((folder / "mlops.yaml").read_text())
        raw["dataset"]["name"] = name
        raw["tracking"] = {"experiment": name, "model_name": name}
        (folder / "mlops.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        contract = json.loads((folder / "contract.json").read_text())
        contract["dataset"] = name
        (folder / "contract.json").write_text(json.dumps(contract, indent=2) + "\n")
    return clone


def child_env(clone: Path) -> dict[str, str]:
    """This environment without settings that point at another stack or config, importing from `clone` first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MLOPS_"))}
    return env | {"PYTHONPATH": str(clone), "PYTHONUNBUFFERED": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def check_imports(clone: Path) -> None:
    """mlops, flows, deployments and usecases must import from the clone, not from this checkout."""
    code = "import deployments, flows, mlops, usecases; print(mlops.__file__, usecases.__file__, flows.__file__, deployments.__file__)"
    found = subprocess.run(
        [sys.executable, "-c", code], env=child_env(clone), cwd=clone, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = [path for path in found if not Path(path).resolve().is_relative_to(clone.resolve())]
    if outside:
        raise SystemExit(f"imports outside the clone {clone}: {outside}")
    log(f"imports from the clone: {' '.join(found)}")


def run_one(count: int, timeout_s: float, keep: bool) -> dict:
    """One N: clone, child measuring on a stack of its own, clean-up; the child's result (or the failure)."""
    waited = wait_for_no_tests()
    cores = wait_for_quiet()
    log(f"N={count}: no test suite running (waited {waited:.0f} s), {cores:.2f} cores busy before the start")
    directory = Path(tempfile.mkdtemp(prefix=f"bench-many-{count}-"))
    result_file, state = directory / "result.json", directory / "state"
    failed = True
    try:
        clone = make_clone(directory, count)
        check_imports(clone)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--measure",
            str(count),
            "--clone",
            str(clone),
            "--state",
            str(state),
            "--result",
            str(result_file),
            "--timeout-s",
            str(timeout_s),
        ]
        code = subprocess.run(command, env=child_env(clone), cwd=clone, check=False).returncode
        result = json.loads(result_file.read_text()) if result_file.exists() else {"count": count, "error": "no result"}
        result["child_exit"] = code
        result["commit"] = subprocess.run(
            ["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        failed = code != 0 or result.get("error") or result.get("left_after_down")
        return result
    finally:
        if failed or keep:
            log(f"N={count}: kept {directory} (state dir, logs under {state / 'logs'})")
        else:
            shutil.rmtree(directory, ignore_errors=True)
            log(f"N={count}: removed {directory}")


# --------------------------------------------------------------------------------------------
# The child: runs from the clone, owns the stack for one N.
# --------------------------------------------------------------------------------------------


def tree_rss(pid: int) -> tuple[int, set[int]]:
    """The summed RSS of a process and its descendants, and their pids (0, {} when it is gone)."""
    rss, _, pids = tree_memory(pid)
    return rss, pids


def pss(pid: int) -> int:
    """Proportional set size (pages shared with other processes counted in shares), from smaps_rollup; 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_memory(pid: int) -> tuple[int, int, set[int]]:
    """The summed RSS and PSS of a process and its descendants, and their pids (0, 0, {} when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0, set()
    rss, shared, pids = 0, 0, set()
    for proc in procs:
        try:
            rss += proc.memory_info().rss
            shared += pss(proc.pid)
            pids.add(proc.pid)
        except psutil.Error:
            pass
    return rss, shared, pids


def service_pids(state: Path) -> dict[str, int]:
    """Each live model service, "<use case>/<environment>" → pid, from the pid files its process owner writes."""
    from mlops.processes import running

    found = {}
    for pid_file in sorted((state / "services").glob("*/model-service-*.pid")):
        record = running(pid_file)
        if record:
            found[f"{pid_file.parent.name}/{pid_file.stem.removeprefix('model-service-')}"] = record.pid
    return found


def listening_ports(pids: set[int]) -> set[int]:
    import psutil

    ports = set()
    for pid in pids:
        with suppress(psutil.Error):
            ports |= {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == "LISTEN"}
    return ports


class PeakSampler(threading.Thread):
    """The peak summed RSS of the stack's parts (their trees: flow-run processes included) and model services."""

    def __init__(self, settings, interval_s: float = 3.0):
        super().__init__(daemon=True)
        self.settings, self.interval_s = settings, interval_s
        self.peak_parts = self.peak_services = self.peak_total = 0
        self.tests_seen: set[str] = set()  # `pgrep -f pytest` during the run: a test suite started meanwhile
        self.loads: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from mlops.platform.stack import part_pids

        while not self.stop.is_set():
            try:
                parts = sum(tree_rss(pid)[0] for pids in part_pids(self.settings).values() for pid in pids_roots(pids))
                services = sum(tree_rss(pid)[0] for pid in service_pids(self.settings.state_dir).values())
                self.peak_parts = max(self.peak_parts, parts)
                self.peak_services = max(self.peak_services, services)
                self.peak_total = max(self.peak_total, parts + services)
            except Exception as exc:  # a process gone between two reads: next sample
                print(f"sampler: {exc}", file=sys.stderr)
            self.tests_seen |= set(test_suites())
            self.loads.append(os.getloadavg()[0])
            self.stop.wait(self.interval_s)


def pids_roots(pids: set[int]) -> list[int]:
    """The pids of a tree whose parent is not in it (so a tree's RSS is summed once)."""
    import psutil

    roots = []
    for pid in pids:
        try:
            if psutil.Process(pid).ppid() not in pids:
                roots.append(pid)
        except psutil.Error:
            pass
    return roots


def parts_rss(settings) -> dict[str, dict]:
    from mlops.platform.stack import part_pids

    found = {}
    for key, pids in part_pids(settings).items():
        measured = [tree_memory(pid) for pid in pids_roots(pids)]
        found[key] = {
            "rss_mib": sum(m[0] for m in measured) / MIB,
            "pss_mib": sum(m[1] for m in measured) / MIB,
            "processes": len(pids),
        }
    return found


def flow_run_processes(settings) -> int:
    """Processes of the worker's and the warm starter's trees beyond their own: flow runs in flight."""
    from mlops.platform.stack import part_pids

    found = part_pids(settings)
    return sum(max(0, len(found.get(key, set())) - 1) for key in ("worker", "warm"))


def flow_runs(client, deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment_id = client.read_deployment_by_name(deployment).id
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def busy_runs(client) -> list:
    """The flow runs pending, running or cancelling now."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType

    busy = FlowRunFilterStateType(any_=["PENDING", "RUNNING", "CANCELLING"])
    return client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=busy)))


def runs_started_since(client, t0: float) -> dict[str, int]:
    """How many flow runs of each deployment started running after `t0` (epoch s): what else the stack ran meanwhile.

    Read page by page and checked here: the API's start-time filter also matches runs scheduled for later."""
    names = {d.id: d.name for d in client.read_deployments()}
    flows = {f.id: f.name for f in client.read_flows()}
    counts: dict[str, int] = {}
    offset = 0
    while page := client.read_flow_runs(limit=200, offset=offset):  # the API's page limit
        for run in page:
            if (
                run.start_time
                and run.start_time.timestamp() >= t0
                and run.state
                and run.state.type.value != "SCHEDULED"
            ):
                key = f"{flows.get(run.flow_id, '?')}/{names.get(run.deployment_id, '-')}"
                counts[key] = counts.get(key, 0) + 1
        offset += len(page)
    return dict(sorted(counts.items()))


def automation_made(run) -> bool:
    created_by = getattr(run, "created_by", None)
    return bool(created_by and str(getattr(created_by, "type", "")).upper() == "AUTOMATION")


def measure(count: int, clone: Path, state: Path, result_file: Path, timeout_s: float) -> int:
    """Bring the stack up from the clone, deliver N use cases at once, measure, bring it down; write the result."""
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != HERE]  # bench/'s modules shadow nothing
    import mlops

    if not Path(mlops.__file__).resolve().is_relative_to(clone.resolve()):
        raise SystemExit(f"mlops imports from {mlops.__file__}, not from the clone {clone}")
    from mlops import processes
    from mlops.config import load_config
    from mlops.config.stack import StackSettings
    from mlops.platform.automations import prefect_settings
    from mlops.platform.stack import down, part_pids, up
    from mlops.platform.status import status_report

    names = use_case_names(count)
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(processes.free_port())
    prefect_port, mlflow_port, worker_port, receiver_port = sorted(ports)
    settings = StackSettings(
        state_dir=state,
        prefect_port=prefect_port,
        mlflow_port=mlflow_port,
        worker_port=worker_port,
        receiver_port=receiver_port,
    )
    assert settings.project_root.resolve() == clone.resolve(), settings.project_root
    result: dict = {"count": count, "use_cases": {}, "state_dir": str(state)}
    started_pids: set[int] = set()
    t_up = time.monotonic()
    code = up(settings)
    result["stack_up_s"] = time.monotonic() - t_up
    try:
        if code != 0:
            result["error"] = f"mlops up exited {code}"
            return 1
        started_pids |= set().union(*part_pids(settings).values())
        os.environ.update(settings.client_env())
        from mlflow.tracking import MlflowClient
        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment

        models = {name: load_config(use_case=name).tracking.model_name for name in names}
        registry = MlflowClient(settings.mlflow_uri, registry_uri=settings.mlflow_uri)
        sampler = PeakSampler(settings)
        sampler.start()
        with prefect_settings(settings), get_client(sync_client=True) as client:
            t0 = time.time()
            ct = {
                name: run_deployment(CT, parameters={"use_case": name, "reason": "bench"}, timeout=0).id
                for name in names
            }
            result["ct_started_s"] = time.time() - t0
            log(f"N={count}: {count} CT runs started in {result['ct_started_s']:.1f} s")
            status: dict[str, str] = {}
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and len(status) < count:
                cd_runs = flow_runs(client, CD)
                for name in names:
                    if name in status:
                        continue
                    run = client.read_flow_run(ct[name])
                    if run.state and run.state.is_final() and not run.state.is_completed():
                        status[name] = f"CT {run.state.name}: {run.state.message}"
                        continue
                    found = registry.search_model_versions(
                        f"name = '{models[name]}' and tags.prefect_flow_run_id = '{ct[name]}'"
                    )
                    if not found:
                        if run.state and run.state.is_completed():
                            status[name] = "CT completed without registering a version"
                        continue
                    version = str(found[0].version)
                    tag = registry.get_model_version(models[name], version).tags.get("deployment")
                    mine = [
                        r
                        for r in cd_runs
                        if r.parameters.get("model_name") == models[name]
                        and str(r.parameters.get("version")) == version
                    ]
                    if tag == "promoted" and any(r.state and r.state.is_completed() for r in mine):
                        status[name] = "promoted"
                    elif tag in ("rejected", "rolled_back"):
                        status[name] = f"CD decided {tag}"
                    elif mine and all(r.state and r.state.is_final() and not r.state.is_completed() for r in mine):
                        status[name] = f"CD {mine[-1].state.name}: {mine[-1].state.message}"
                    if name in status:
                        log(f"N={count}: {name} v{version}: {status[name]} ({len(status)}/{count})")
                time.sleep(3)
            result["waited_s"] = time.time() - t0
            for name in names:
                status.setdefault(name, f"not delivered within {timeout_s:.0f} s")
            sampler.stop.set()
            sampler.join()
            result["tests_seen_during_run"] = sorted(sampler.tests_seen)
            result["loadavg_1m"] = {
                "median": statistics.median(sampler.loads) if sampler.loads else None,
                "max": max(sampler.loads, default=None),
            }
            result["peak_rss_mib"] = {
                "parts": sampler.peak_parts / MIB,
                "services": sampler.peak_services / MIB,
                "total": sampler.peak_total / MIB,
            }

            # What each registration's automation did, read once everything is final.
            cd_runs = flow_runs(client, CD)
            for name in names:
                row: dict = {"status": status[name]}
                run = client.read_flow_run(ct[name])
                row["ct_state"] = run.state.name if run.state else None
                if run.start_time and run.end_time:
                    row["ct_start"], row["ct_s"] = (
                        run.start_time.timestamp(),
                        (run.end_time - run.start_time).total_seconds(),
                    )
                found = registry.search_model_versions(
                    f"name = '{models[name]}' and tags.prefect_flow_run_id = '{ct[name]}'"
                )
                if found:
                    version = registry.get_model_version(models[name], str(found[0].version))
                    registered = version.creation_timestamp / 1000
                    row |= {"version": str(version.version), "registered": registered, "tags": dict(version.tags)}
                    if at := version.tags.get("deployment_at"):
                        row["promoted_at"] = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
                    mine = sorted(
                        (
                            r
                            for r in cd_runs
                            if r.parameters.get("model_name") == models[name]
                            and str(r.parameters.get("version")) == str(version.version)
                        ),
                        key=lambda r: r.created,
                    )
                    row["cd_runs"] = len(mine)
                    row["cd_runs_by_automation"] = sum(automation_made(r) for r in mine)
                    cd = next((r for r in mine if automation_made(r)), mine[0] if mine else None)
                    if cd:
                        states = client.read_flow_run_states(cd.id)
                        row["slot_waits"] = sum(st.name == "AwaitingConcurrencySlot" for st in states)
                        row |= {
                            "cd_state": cd.state.name if cd.state else None,
                            "cd_created_by": str(getattr(cd.created_by, "type", None)),
                            "trigger_s": cd.created.timestamp() - registered,
                            "to_cd_start_s": cd.start_time.timestamp() - registered if cd.start_time else None,
                            "cd_s": (cd.end_time - cd.start_time).total_seconds()
                            if cd.start_time and cd.end_time
                            else None,
                            "cd_start": cd.start_time.timestamp() if cd.start_time else None,
                            "cd_end": cd.end_time.timestamp() if cd.end_time else None,
                        }
                result["use_cases"][name] = row
            result["t0"] = t0
            result["flow_runs_since_start"] = runs_started_since(client, t0)

            # Idle: no flow run pending or running (a scheduled reconciliation may be finishing) and no flow-run
            # process under the worker or the warm starter, twice 3 s apart; then memory.
            idle_deadline, quiet = time.monotonic() + 300, 0
            while time.monotonic() < idle_deadline and quiet < 2:
                quiet = quiet + 1 if not busy_runs(client) and not flow_run_processes(settings) else 0
                time.sleep(3)
            result["idle_for_memory"] = quiet >= 2

        result["tests_at_memory"] = test_suites()
        services = service_pids(state)
        recorded = (
            json.loads((state / "services" / "ports.json").read_text())
            if (state / "services" / "ports.json").exists()
            else {}
        )
        result["services"] = {}
        for key, pid in services.items():
            rss, shared, pids = tree_memory(pid)
            started_pids |= pids
            result["services"][key] = {
                "pid": pid,
                "processes": len(pids),
                "rss_mib": rss / MIB,
                "pss_mib": shared / MIB,
                "port": recorded.get(key),
                "listens_on_recorded_port": recorded.get(key) in listening_ports(pids),
            }
        result["services_recorded"] = len(recorded)
        result["parts"] = parts_rss(settings)
        report = status_report(settings)
        mine = {u: report["use_cases"].get(u, {}).get("environments", {}) for u in names}
        result["status"] = {
            "healthy": report["healthy"],
            "parts_healthy": all(p["healthy"] for p in report["parts"].values()),
            "environments": sum(len(e) for e in mine.values()),
            "applied": sum(bool(env.get("applied")) for e in mine.values() for env in e.values()),
            "applied_healthy": sum(env.get("healthy") is True for e in mine.values() for env in e.values()),
            "production_versions": {u: e.get("production", {}).get("version") for u, e in mine.items()},
        }
        return 0 if all(s == "promoted" for s in status.values()) else 1
    except Exception as exc:
        import traceback

        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
        return 1
    finally:
        started_pids |= set().union(*part_pids(settings).values())
        for pid in service_pids(state).values():
            started_pids |= tree_rss(pid)[1]
        t_down = time.monotonic()
        down(settings)
        result["stack_down_s"] = time.monotonic() - t_down
        time.sleep(1)
        result["left_after_down"] = sorted(processes.alive_pids(started_pids))
        result["pids_checked"] = len(started_pids)
        result_file.write_text(json.dumps(result, indent=2, default=str))


# --------------------------------------------------------------------------------------------
# The table.
# --------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def summarise(result: dict) -> dict:
    rows = list(result.get("use_cases", {}).values())
    promoted = [r for r in rows if r.get("status") == "promoted"]
    to_start = [r["to_cd_start_s"] for r in rows if r.get("to_cd_start_s") is not None]
    trigger = [r["trigger_s"] for r in rows if r.get("trigger_s") is not None]
    last = max((r["promoted_at"] for r in promoted if "promoted_at" in r), default=None)
    services = list(result.get("services", {}).values())
    rss = [s["rss_mib"] for s in services]
    parts = result.get("parts", {})
    # The time between one CD run's end and the next one's start, when the next one's version was waiting by then.
    ran = sorted((r for r in rows if r.get("cd_start") and r.get("cd_end")), key=lambda r: r["cd_start"])
    gaps = [b["cd_start"] - a["cd_end"] for a, b in pairwise(ran) if b["registered"] < a["cd_end"]]
    return {
        "gap_median": statistics.median(gaps) if gaps else None,
        "gap_max": max(gaps) if gaps else None,
        "gaps_total": sum(gaps),
        "cd_total": sum(r["cd_end"] - r["cd_start"] for r in ran),
        "slot_waits": [r.get("slot_waits") for r in rows],
        "services_pss": sum(s.get("pss_mib", 0) for s in services),
        "parts_pss": sum(p.get("pss_mib", 0) for p in parts.values()),
        "n": result["count"],
        "delivered": f"{len(promoted)}/{result['count']}",
        "wall_s": last - result["t0"] if last and "t0" in result else None,
        "to_start_median": statistics.median(to_start) if to_start else None,
        "to_start_max": max(to_start) if to_start else None,
        "trigger_median": statistics.median(trigger) if trigger else None,
        "trigger_max": max(trigger) if trigger else None,
        "ct_median": statistics.median([r["ct_s"] for r in rows if "ct_s" in r]) if rows else None,
        "cd_median": statistics.median([r["cd_s"] for r in rows if r.get("cd_s")])
        if any(r.get("cd_s") for r in rows)
        else None,
        "services": len(services),
        "services_total": sum(rss),
        "services_each": statistics.median(rss) if rss else None,
        "services_range": (min(rss), max(rss)) if rss else None,
        "parts_total": sum(p["rss_mib"] for p in parts.values()),
        "parts": parts,
        "status": result.get("status", {}),
        "peak": result.get("peak_rss_mib", {}),
    }


def print_tables(results: list[dict]) -> None:
    summaries = [summarise(r) for r in results]
    print(
        "\n| N | delivered | wall, CT starts → last promotion | registration → CD start, median / max s "
        "| trigger (→ CD created), median / max s | model services | RSS of the services, total MiB "
        "| per service, median (min–max) MiB | RSS of the stack's parts, total MiB | status |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in summaries:
        st = s["status"]
        healthy = (
            f"{st.get('applied_healthy', 0)}/{st.get('environments', 0)} environments healthy"
            + ("" if st.get("parts_healthy") else ", a part unhealthy")
            if st
            else "–"
        )
        lo, hi = s["services_range"] or (None, None)
        print(
            f"| {s['n']} | {s['delivered']} | {_minutes(s['wall_s'])} | {_fmt(s['to_start_median'])} / {_fmt(s['to_start_max'])} "
            f"| {_fmt(s['trigger_median'], 2)} / {_fmt(s['trigger_max'], 2)} | {s['services']} | {_fmt(s['services_total'], 0)} "
            f"| {_fmt(s['services_each'], 0)} ({_fmt(lo, 0)}–{_fmt(hi, 0)}) | {_fmt(s['parts_total'], 0)} | {healthy} |"
        )
    keys = ["prefect", "mlflow", "warm", "worker", "receiver"]
    print(
        "\nRSS of the stack's parts, idle after the last delivery (MiB, each part's process tree), and peaks during the run:\n"
    )
    print(
        "| N | "
        + " | ".join(keys)
        + " | parts total | peak parts (flow runs included) | peak services | peak total | CT median s | CD median s |"
    )
    print("|---:|" + "---:|" * (len(keys) + 6))
    for s in summaries:
        cells = [_fmt(s["parts"].get(k, {}).get("rss_mib"), 0) for k in keys]
        peak = s["peak"]
        print(
            f"| {s['n']} | " + " | ".join(cells) + f" | {_fmt(s['parts_total'], 0)} | {_fmt(peak.get('parts'), 0)} "
            f"| {_fmt(peak.get('services'), 0)} | {_fmt(peak.get('total'), 0)} | {_fmt(s['ct_median'])} | {_fmt(s['cd_median'])} |"
        )
    print("\nCD runs one after another (the deployment's concurrency limit 1):\n")
    print(
        "| N | CD s, all runs | idle slot between a CD's end and the next waiting one's start, total / median / max s "
        "| AwaitingConcurrencySlot per CD run | PSS of the services / the parts, MiB |"
    )
    print("|---:|---:|---:|---|---:|")
    for s in summaries:
        print(
            f"| {s['n']} | {_fmt(s['cd_total'], 0)} | {_fmt(s['gaps_total'], 0)} / {_fmt(s['gap_median'])} / {_fmt(s['gap_max'])} "
            f"| {s['slot_waits']} | {_fmt(s['services_pss'], 0)} / {_fmt(s['parts_pss'], 0)} |"
        )
    for r in results:
        problems = {u: row["status"] for u, row in r.get("use_cases", {}).items() if row.get("status") != "promoted"}
        extra = {u: row["cd_runs"] for u, row in r.get("use_cases", {}).items() if row.get("cd_runs", 1) != 1}
        notes = [
            f"stack up {_fmt(r.get('stack_up_s'))} s, down {_fmt(r.get('stack_down_s'))} s",
            f"{r.get('pids_checked', 0)} pids checked after down, left: {r.get('left_after_down')}",
            f"flow runs started since the CT starts: {r.get('flow_runs_since_start')}",
            f"load average (1 min) during the run: {r.get('loadavg_1m')}",
            f"attempts: {r.get('attempt', 1)}, code {r.get('commit')}",
        ]
        if not r.get("idle_for_memory", True):
            notes.append("memory read while a flow run was still in flight (no idle moment within 300 s)")
        if r.get("tests_at_memory"):
            notes.append(f"a test suite ran while memory was read (pgrep -f pytest: {r['tests_at_memory']})")
        if r.get("tests_seen_during_run"):
            notes.append(f"a test suite ran during the measurement (pgrep -f pytest: {r['tests_seen_during_run']})")
        if problems:
            notes.append(f"not delivered: {problems}")
        if extra:
            notes.append(f"use cases with other than one CD run for their version: {extra}")
        if r.get("error"):
            notes.append(f"error: {r['error']}")
        bad = {k: v for k, v in r.get("services", {}).items() if not v.get("listens_on_recorded_port")}
        if bad:
            notes.append(f"services not listening on their recorded port: {bad}")
        print(f"\nN={r['count']}: " + "; ".join(notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 5, 10], help="use cases per stack, one run each")
    parser.add_argument(
        "--timeout-min-per-use-case", type=float, default=3.0, help="minutes allowed per use case, plus 10 (N=10: 40)"
    )
    parser.add_argument("--keep", action="store_true", help="keep each clone and state dir")
    parser.add_argument(
        "--retries", type=int, default=2, help="times an N is measured again when a test suite ran during it"
    )
    parser.add_argument("--json", type=Path, help="also write every N's raw result to this file")
    # The child's options (the driver runs this file again, from the clone).
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clone", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timeout-s", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        raise SystemExit(measure(args.measure, args.clone, args.state, args.result, args.timeout_s))

    started = time.monotonic()
    results = []
    for count in args.counts:
        timeout_s = 60 * (10 + args.timeout_min_per_use_case * count)
        for attempt in range(1, args.retries + 2):
            result = run_one(count, timeout_s, args.keep) | {"attempt": attempt}
            disturbed = result.get("tests_seen_during_run") or result.get("tests_at_memory")
            if not disturbed or attempt > args.retries:
                break
            log(f"N={count}: a test suite ran during the measurement ({disturbed}); measuring again")
        results.append(result)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{os.cpu_count()} cores; whole run {time.monotonic() - started:.0f} s")
    print_tables(results)
    failed = [r["count"] for r in results if r.get("child_exit") != 0 or r.get("error") or r.get("left_after_down")]
    if failed:
        raise SystemExit(f"failed for N = {failed}")


if __name__ == "__main__":
    main()
