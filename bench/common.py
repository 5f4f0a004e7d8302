"""What the benchmarks share: a clean environment, a quiet machine, measured subprocesses, servers, summaries.

Processes are started, waited for and stopped with the library's own helpers
(`mlops.processes`), so a benchmark stops a server the way `mlops down` does.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from mlops import processes
from mlops.config import DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the checkout's flows/ and tasks/ (not installed: pyproject.toml)
    sys.path.append(str(ROOT))
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The inherited environment without Prefect/MLflow/mlops settings that would point elsewhere, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MLOPS_"))}
    return (
        env
        | {
            "MLOPS_CONFIG": str(DEFAULT_CONFIG),
            "PYTHONUNBUFFERED": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        | dict(extra or {})
    )


def machine() -> str:
    """Cores, CPU model, memory and Python: what a reader needs to compare figures."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = (
        int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        / 2**20
    )
    return f"{os.cpu_count()} cores ({cpu}, {platform.machine()}), {mem:.0f} GiB, Python {platform.python_version()}"


def median(values: Sequence[float | None]) -> float:
    """The median of the values that are there (NaN when none is)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else math.nan


def spread(values: Sequence[float]) -> str:
    """`min–max` with one decimal, or '' for a single value."""
    return f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else ""


# --------------------------------------------------------------------------------------------
# The machine's load: other people's work competes with a run.
# --------------------------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores; /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def wait_for_quiet(max_cores: float, timeout_s: float, window_s: float = 5.0) -> float:
    """Wait until the machine's busy CPU over `window_s` is below `max_cores`; returns the last reading."""
    deadline = time.monotonic() + timeout_s
    while True:
        before = busy_cpu_seconds()
        time.sleep(window_s)
        cores = (busy_cpu_seconds() - before) / window_s
        if cores <= max_cores or time.monotonic() > deadline:
            return cores


# --------------------------------------------------------------------------------------------
# Measuring a process tree.
# --------------------------------------------------------------------------------------------


def pss_bytes(proc: Any) -> int:
    """Proportional set size: pages shared with another process (a fork not yet exec'd) count once in a sum."""
    try:
        for line in Path(f"/proc/{proc.pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return proc.memory_info().rss


class TreeSampler:
    """Samples the summed memory of a process tree every `interval` seconds: PSS, or RSS with `pss=False`."""

    def __init__(self, pid: int, interval: float = 0.1, pss: bool = True):
        import psutil

        self._psutil, self.pid, self.interval = psutil, pid, interval
        self._size = pss_bytes if pss else (lambda proc: proc.memory_info().rss)
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[Any]:
        root = self._psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def memory(self) -> int:
        """The tree's summed memory now, in bytes."""
        return sum(self._size(p) for p in self._tree())

    def cpu_seconds(self) -> float:
        """User + system CPU of the tree so far, reaped children included."""
        total = 0.0
        for proc in self._tree():
            try:
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except self._psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            with suppress(self._psutil.Error):
                self.peak = max(self.peak, self.memory())
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Measured:
    """One finished subprocess: its wall time, its tree's CPU and memory, and the machine's load meanwhile."""

    wall_s: float
    cpu_s: float  # user + system of the process and its reaped children (wait4)
    busy_s: float  # CPU seconds the whole machine was busy meanwhile, this run included
    maxrss_mib: float  # ru_maxrss: the largest single process of the tree
    tree_peak_mib: float  # the sampled peak of the tree's summed memory
    loadavg_1m: float  # before the run

    def others_cores(self, also_ours: float = 0.0) -> float:
        """Cores the rest of the machine used on average, not counting this run nor `also_ours` CPU seconds."""
        return max(0.0, self.busy_s - self.cpu_s - also_ours) / self.wall_s


def run_measured(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: Path | None = None,
    interval: float = 0.1,
    pss: bool = True,
) -> Measured:
    """Run `command` to its end (output to `log`, else inherited) while sampling its tree; raise if it fails."""
    load, busy_before, started = os.getloadavg()[0], busy_cpu_seconds(), time.perf_counter()
    with log.open("w") if log else nullcontext() as out:
        process = subprocess.Popen(
            list(command), env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT if out else None
        )
        with TreeSampler(process.pid, interval, pss) as sampler:
            _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        shown = f":\n{processes.tail(log)}" if log else ""
        raise RuntimeError(f"{' '.join(command[:4])} ... exited with {process.returncode}{shown}")
    return Measured(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        busy_s=busy_cpu_seconds() - busy_before,
        maxrss_mib=usage.ru_maxrss / 1024,
        tree_peak_mib=sampler.peak / 2**20,
        loadavg_1m=load,
    )


# --------------------------------------------------------------------------------------------
# Servers: started in their own session, awaited over HTTP, stopped with their whole tree.
# --------------------------------------------------------------------------------------------


running = processes.server  # the one owner: mlops.processes


@contextmanager
def prefect_server(home: Path, log: Path, timeout_s: float = 180) -> Iterator[tuple[str, int]]:
    """`prefect server start` on a free port of 127.0.0.1 with its own PREFECT_HOME; yields (api url, pid)."""
    port = processes.free_port(HOST)
    url = f"http://{HOST}:{port}/api"
    command = [str(VENV_BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    started = time.monotonic()
    with running(
        command,
        env=clean_env({"PREFECT_HOME": str(home)}),
        health_url=f"{url}/health",
        log=log,
        timeout_s=timeout_s,
        stop_timeout_s=30,
    ) as record:
        print(f"prefect server up at {url} after {time.monotonic() - started:.1f} s (pid {record.pid})", flush=True)
        yield url, record.pid
