"""`python -m mlops.processes start|stop`: what Terraform's provisioners run to start and stop a model service.

One line says what happened; the exit code is 0, or 1 when the action failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mlops.processes import alive_pids, read_pid_file, start_detached, stop


def main(argv: Sequence[str] | None = None) -> int:
    """`start` or `stop` one process by its pid file, as Terraform's provisioners do; exit 0 or 1, saying why in a line.

    `start --pid-file F --log-file L [--cwd D] -- COMMAND...` is `start_detached` with this environment;
    `stop --pid-file F [--timeout S]` is `stop` (a missing or stale pid file stops nothing).
    """
    parser = argparse.ArgumentParser(prog="python -m mlops.processes", description=main.__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    start, halt = actions.add_parser("start"), actions.add_parser("stop")
    for action in (start, halt):
        action.add_argument("--pid-file", type=Path, required=True)
    start.add_argument("--log-file", type=Path, required=True)
    start.add_argument("--cwd", type=Path, default=Path.cwd())
    start.add_argument("command", nargs="+", help="after --: the command and its arguments")
    halt.add_argument("--timeout", type=float, default=15.0, help="seconds from TERM to KILL")
    args = parser.parse_args(argv)
    try:
        ok, message = _start(args) if args.action == "start" else _stop(args.pid_file, args.timeout)
    except OSError as exc:  # a command or file that cannot be opened fails the action, named
        ok, message = False, f"{args.action} failed: {exc}"
    print(message, file=sys.stdout if ok else sys.stderr, flush=True)
    return 0 if ok else 1


def _start(args: argparse.Namespace) -> tuple[bool, str]:
    record = start_detached(args.command, pid_file=args.pid_file, log_file=args.log_file, env=os.environ, cwd=args.cwd)
    return True, f"started pid {record.pid} ({args.pid_file}; output appended to {args.log_file})"


def _stop(pid_file: Path, timeout: float) -> tuple[bool, str]:
    record = read_pid_file(pid_file)
    if not stop(pid_file, timeout=timeout) or record is None:
        return True, f"nothing running in {pid_file}: nothing to stop"
    if alive_pids([record.pid]):  # it outlived KILL (stuck in the kernel): Terraform must not forget it
        return False, f"pid {record.pid} ({pid_file}) still runs after KILL"
    return True, f"stopped pid {record.pid} with its process group and descendants"


if __name__ == "__main__":
    sys.exit(main())
