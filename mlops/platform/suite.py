"""`mlops test` (and `make test`): ruff and mypy, then the whole suite as two pytest runs side by side.

The e2e tests share one real stack and spend much of their time waiting on it (flow runs on its
worker, automations, services starting): they run in a pytest process of their own, one test after
another. The rest of the suite runs meanwhile in a second pytest process, spread by file over two
xdist workers (`--dist loadfile`: a module's fixtures are built once), the slowest files first so
no long one starts last. Three processes on two cores keep both busy: measured, two left them 43%
idle. Each run's lines are printed as they come, prefixed with its name; the exit status is the
first failure's. Arguments given to `mlops test` run one pytest with them instead.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mlops.config import PROJECT_ROOT

# The slowest files of the rest, handed out first (a path given twice is collected once).
SLOWEST_FIRST = [
    "tests/integration/test_delivery_failures.py",
    "tests/scale",
    "tests/integration/test_mlflow_faults.py",
    "tests/integration/test_continuous_delivery.py",
    "tests/integration/test_continuous_training.py",
    "tests/integration/test_delivery_concurrency.py",
]
# Each a list of pytest arguments; together the whole of pyproject's testpaths.
RUNS: dict[str, list[str]] = {
    "e2e": ["tests/e2e"],
    "rest": [
        *("-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"),
        *SLOWEST_FIRST,
        *("tests/integration", "tests/unit", "tests/data", "tests/model", "usecases"),
    ],
}
STATIC = [  # first: a lint or type error is reported in seconds, not after the suite
    ["ruff", "check", "."],
    ["ruff", "format", "--check", "."],
    ["mypy"],  # the library, as [tool.mypy] in pyproject.toml says (≈ 20 s of CPU without its cache)
]


def run(pytest_args: Sequence[str] = ()) -> int:
    """The static checks, then the suite (or one pytest with `pytest_args`); 0 when everything passed."""
    if pytest_args:
        return subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=PROJECT_ROOT)
    for command in STATIC:
        print(f"$ {' '.join(command)}", flush=True)
        if code := subprocess.call([_tool(command[0]), *command[1:]], cwd=PROJECT_ROOT):
            return code
    return side_by_side(RUNS)


def side_by_side(runs: dict[str, list[str]], cwd: Path = PROJECT_ROOT) -> int:
    """Run one pytest per entry at once, print their lines prefixed with the entry's name; the worst exit code."""
    started = time.monotonic()
    width = max(map(len, runs))
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        for name, args in runs.items()
    }
    printing = threading.Lock()

    def relay(name: str, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with printing:
                sys.stdout.write(f"{name:>{width}} | {line}")
                sys.stdout.flush()

    relays = [threading.Thread(target=relay, args=item, daemon=True) for item in processes.items()]
    for thread in relays:
        thread.start()
    try:
        codes = {name: process.wait() for name, process in processes.items()}
    except KeyboardInterrupt:  # pytest stops its own fixtures (the e2e stack) on SIGINT: let it
        for process in processes.values():
            process.wait()
        raise
    for thread in relays:
        thread.join()
    summary = ", ".join(f"{name} {'passed' if code == 0 else f'FAILED ({code})'}" for name, code in codes.items())
    print(f"mlops test: {summary} in {time.monotonic() - started:.0f} s", flush=True)
    return next((code for code in codes.values() if code), 0)


def _tool(name: str) -> str:
    """A console script of this environment (the venv's ruff, not another on PATH)."""
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else name
