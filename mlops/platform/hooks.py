"""`mlops hooks`: install the git post-commit hook that starts CI for each new commit. No Prefect here.

The hook (`mlops/post-commit.sh`) asks the local stack to run `continuous-integration/on-commit`
with the new sha, in the background: the commit never waits for it or fails because of it.
Installing is idempotent. A post-commit hook that is not ours is never overwritten: ours goes
next to it as `mlops-post-commit` and one line calling it is appended to it, or, when a line
appended at the end could not run (the hook ends with `exit`/`exec`, or is not a shell script),
that hook is left as it is and the message gives the line to add by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlops.config import PROJECT_ROOT

SCRIPT = Path(__file__).with_name("post-commit.sh")
MARKER = "Installed by `mlops hooks`"
OURS = "mlops-post-commit"  # our script's name when another post-commit hook is already there
CALL = f'"$(dirname "$0")/{OURS}"  # mlops: start CI for this commit (`mlops hooks`)'


class HookError(RuntimeError):
    """The hook could not be installed without touching a hook that is not ours; says what to do instead."""


Action = Literal["installed", "updated", "unchanged", "appended"]


@dataclass(frozen=True)
class Installed:
    action: Action
    path: Path
    message: str


def render(bin_dir: Path) -> str:
    """The hook script, remembering where prefect was found at install time."""
    return SCRIPT.read_text().replace("@MLOPS_BIN@", str(bin_dir))


def hooks_dir(repo: Path) -> Path:
    """The repository's hooks directory (honours core.hooksPath and worktrees)."""
    proc = subprocess.run(
        ["git", "rev-parse", "--git-path", "hooks"], cwd=repo, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise HookError(f"{repo} is not a git repository: {proc.stderr.strip()}")
    path = Path(proc.stdout.strip())
    return path if path.is_absolute() else Path(repo) / path


def can_append(hook: str) -> bool:
    """Whether a line appended to this hook would run: a shell script that does not end by exiting."""
    lines = hook.splitlines()
    if (
        not lines
        or not lines[0].startswith("#!")
        or not any(shell in lines[0] for shell in ("sh", "bash", "zsh", "dash"))
    ):
        return False
    code = [line.strip() for line in lines[1:] if line.strip() and not line.strip().startswith("#")]
    return not code or code[-1].split()[0] not in ("exit", "exec")


def install(repo: Path = PROJECT_ROOT, bin_dir: Path | None = None) -> Installed:
    """Install (or refresh) the post-commit hook of `repo`.

    Args:
        repo: A git work tree.
        bin_dir: Where the hook finds `prefect` when the repo has no `.venv/bin/prefect`.
            Default: this interpreter's bin directory (not resolved: that would leave the venv).

    Returns:
        What was done, with a message for the user.

    Raises:
        HookError: `repo` is not a git repository, or a foreign hook cannot take our line.
    """
    directory = hooks_dir(Path(repo))
    directory.mkdir(parents=True, exist_ok=True)
    script = render(bin_dir or Path(sys.executable).parent)
    hook = directory / "post-commit"
    existing = hook.read_text() if hook.exists() else None
    action: Action
    if existing is None or MARKER in existing:
        action = "installed" if existing is None else ("unchanged" if existing == script else "updated")
        _write_executable(hook, script)
        return Installed(action, hook, f"post-commit hook {action}: {hook} (log: <state dir>/logs/post-commit.log)")
    ours = directory / OURS
    if CALL in existing:
        action = "unchanged" if ours.exists() and ours.read_text() == script else "updated"
        _write_executable(ours, script)
        return Installed(action, ours, f"{hook} already calls {ours}; {ours.name} {action}")
    _write_executable(ours, script)
    if not can_append(existing):
        raise HookError(
            f"{hook} is not ours and a line appended to it would not run, so it was left as it is. "
            f"The mlops hook is ready as {ours}: to start CI on each commit, call it from yours "
            f"(before it exits), e.g. with this line:\n  {CALL}"
        )
    hook.write_text(existing.rstrip("\n") + "\n\n" + CALL + "\n")
    return Installed("appended", hook, f"{hook} was not ours: kept it, and appended a call to {ours}")


def _write_executable(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)
