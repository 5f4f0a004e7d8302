"""The commit under test: a private checkout, the environment its suites run in, and one pytest run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlops.config.stack import FOREIGN_ENV
from mlops.domain.record import Record

SUITE_TIMEOUT_S = 3600.0
GIT_TIMEOUT_S = 120.0

# Settings that would point a suite at a running stack, a user's profile or another config:
# the suites must behave as they do in a fresh shell (`make test`), whoever starts CI.
_STACK_ENV = (*FOREIGN_ENV, "MLOPS_CONFIG", "PYTHONPATH")


class CheckoutError(RuntimeError):
    """The commit to test could not be checked out; the message says why."""


class Checkout(Record):
    """A private checkout of one commit, where the suites run."""

    sha: str
    path: Path
    source: Path  # the repository it was made from


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise CheckoutError(f"`git {' '.join(args)}` in {repo} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip()


def resolve_commit(repo: Path, sha: str | None) -> str:
    """The full sha of `sha` (any revision git understands) in `repo`; HEAD when None."""
    if not (Path(repo) / ".git").exists() and not _inside_work_tree(repo):
        raise CheckoutError(f"{repo} is not a git checkout: CI tests commits")
    return _git(repo, "rev-parse", "--verify", "--end-of-options", f"{sha or 'HEAD'}^{{commit}}")


def _inside_work_tree(repo: Path) -> bool:
    try:
        return _git(repo, "rev-parse", "--is-inside-work-tree") == "true"
    except (CheckoutError, OSError):
        return False


def checkout(repo: Path, sha: str | None, dest: Path) -> Checkout:
    """Check the commit out into `dest`, a fresh directory sharing `repo`'s objects.

    The checkout holds exactly what was committed: uncommitted edits in `repo` are not tested,
    and `repo` itself is never modified.
    """
    repo = Path(repo).resolve()
    full = resolve_commit(repo, sha)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _git(dest.parent, "clone", "--quiet", "--shared", "--no-checkout", str(repo), str(dest))
    _git(dest, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", full)
    return Checkout(sha=full, path=dest, source=repo)


def changed_paths(checkout: Checkout) -> list[str]:
    """The paths the commit changed against its first parent (every path of a root commit)."""
    out = _git(
        checkout.path,
        "diff-tree",
        "--no-commit-id",
        "--name-only",
        "-r",
        "--root",
        "-m",
        "--first-parent",
        checkout.sha,
    )
    return sorted(set(out.splitlines()))


def pytest_command(marker: str, junit_xml: Path, python: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """`python -m pytest -m <marker> --junitxml <file>`, with no cache written into the checkout."""
    if marker == "e2e":
        raise ValueError("the e2e suite starts its own stack and runs CI itself: it cannot run inside CI")
    return [
        python or sys.executable, "-m", "pytest", "-m", marker, f"--junitxml={junit_xml}",
        "-o", "junit_family=xunit2", "-p", "no:cacheprovider", "-q", *extra,
    ]  # fmt: skip


def suite_env(base: Mapping[str, str], repo: Path, sandbox: Path) -> dict[str, str]:
    """The environment of a suite run: the checkout's code first, no stack, private stores under `sandbox`."""
    env = {k: v for k, v in base.items() if k not in _STACK_ENV}
    env.update(
        PYTHONPATH=str(repo),  # the checkout's packages win over the installed (editable) project
        PREFECT_HOME=str(sandbox / "prefect"),
        MLFLOW_TRACKING_URI=f"sqlite:///{sandbox / 'mlflow.db'}",
        MLOPS_STATE_DIR=str(sandbox / "state"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def import_root(repo: Path, env: Mapping[str, str], package: str = "mlops", python: str | None = None) -> Path:
    """Where `package` is imported from when code runs in `repo` with `env` (it must be the checkout)."""
    code = f"import {package}, pathlib; print(pathlib.Path({package}.__file__).resolve().parent.parent)"
    proc = subprocess.run(
        [python or sys.executable, "-c", code], cwd=repo, env=dict(env), capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise CheckoutError(f"cannot import {package} in {repo}: {proc.stderr.strip()[-2000:]}")
    return Path(proc.stdout.strip())


def run_suite(
    repo: Path, marker: str, junit_xml: Path, env: Mapping[str, str], timeout_s: float = SUITE_TIMEOUT_S
) -> tuple[int, str]:
    """Run one suite in `repo`; returns pytest's exit code (-1 on timeout) and the tail of its output.

    The whole output goes to `<junit_xml>.log`. The suite runs in its own session, so a timeout
    stops it together with every server its tests started.
    """
    junit_xml.parent.mkdir(parents=True, exist_ok=True)
    junit_xml.unlink(missing_ok=True)
    log_path = junit_xml.with_suffix(".log")
    command = pytest_command(marker, junit_xml, extra=["--rootdir", str(repo)])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=repo,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = -1
    output = log_path.read_text(errors="replace")[-4000:]
    return returncode, (f"timed out after {timeout_s:.0f} s\n" if returncode == -1 else "") + output
