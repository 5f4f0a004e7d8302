"""Detached processes tracked by pid files: start, check, stop (with their children), wait until healthy.

The stack's parts and the model services alike: Terraform's provisioners start and stop those with
`python -m mlops.processes` (`__main__.py`), which runs at every apply, so this package imports
only the stdlib and psutil at the top.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from mlops import waiting
from mlops.waiting import tail

BARE_PID_SLACK = 30.0  # seconds a process may have started before the bare pid file naming it was written


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds: the pid plus its start time, so a recycled pid is never mistaken for ours."""

    pid: int
    create_time: float
    command: list[str]


def start_detached(
    command: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str],
    cwd: Path,
) -> PidRecord:
    """Start `command` in its own session (so its whole process group can be signalled), logging to `log_file`."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log, open(os.devnull, "rb") as devnull:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(command),
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    record = PidRecord(pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(), command=list(command))
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.__dict__))
    tmp.replace(pid_file)
    return record


def read_pid_file(pid_file: Path) -> PidRecord | None:
    """The record in `pid_file`, or None when there is none or it cannot be read (a bare pid: `_bare_pid_record`)."""
    try:
        text = pid_file.read_text()
    except FileNotFoundError:
        return None
    try:
        return PidRecord(**json.loads(text))
    except (ValueError, TypeError):
        return _bare_pid_record(pid_file, text)


def _bare_pid_record(pid_file: Path, text: str) -> PidRecord | None:
    """The live process a bare pid names (Terraform's shell wrote model services' pid files so, `setsid ... & echo $!`,
    and a stack upgraded while running keeps them): only if it leads its group and started just before the file."""
    try:
        pid = int(text.strip())
        if pid <= 0:
            return None
        proc = psutil.Process(pid)
        started, written = proc.create_time(), pid_file.stat().st_mtime
        leads_group = os.getpgid(pid) == pid
        command = proc.cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    if not leads_group or not written - BARE_PID_SLACK <= started <= written + 1.0:
        return None
    return PidRecord(pid=pid, create_time=started, command=command)


def _process(record: PidRecord) -> psutil.Process | None:
    """The live process the record names, or None if it exited or the pid now belongs to another process."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 1.0:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(record.pid)
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _reap(pid: int) -> None:
    """Collect an exited child of this process (tests start the stack from the pytest process)."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def running(pid_file: Path) -> PidRecord | None:
    """The record of a process from `pid_file` that is still alive, else None."""
    record = read_pid_file(pid_file)
    return record if record and _process(record) else None


def tree_pids(pid_file: Path) -> set[int]:
    """The live process of `pid_file` and all its descendants (empty when it does not run)."""
    record = read_pid_file(pid_file)
    proc = _process(record) if record else None
    if proc is None:
        return set()
    try:
        return {proc.pid, *(child.pid for child in proc.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def alive_pids(pids: Iterable[int]) -> set[int]:
    """The pids that still run (zombies count as gone)."""
    living = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.add(pid)
        except psutil.NoSuchProcess:
            pass
    return living


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def stop(pid_file: Path, *, timeout: float = 15.0) -> bool:
    """Stop the process in `pid_file` with its process group and descendants: TERM, wait, then KILL.

    Returns True when something was running. The pid file is removed either way.
    """
    record = read_pid_file(pid_file)
    if record is None:
        pid_file.unlink(missing_ok=True)
        return False
    leader = _process(record)
    if leader is None:
        # The leader died. Members left in its group are its orphans: Linux does not hand out a pid
        # while a process group of that id exists. A live process on that pid is someone else's.
        orphans = [] if psutil.pid_exists(record.pid) else _group_members(record.pid)
        if orphans:
            _signal(record.pid, [], signal.SIGTERM)
            _, alive = psutil.wait_procs(orphans, timeout=timeout)
            if alive:
                _signal(record.pid, alive, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        return bool(orphans)
    try:
        descendants = leader.children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    # start_new_session made the leader its own process group: one killpg reaches the group,
    # and descendants that left it (their own session) are signalled one by one. Nobody gets two TERMs.
    group = {p.pid: p for p in [leader, *_group_members(record.pid)]}
    outsiders = [p for p in descendants if p.pid not in group]
    targets = [*group.values(), *outsiders]
    _signal(record.pid, outsiders, signal.SIGTERM)
    _, alive = psutil.wait_procs(targets, timeout=timeout)
    if alive:
        _signal(record.pid, alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5.0)
    _reap(record.pid)
    pid_file.unlink(missing_ok=True)
    return True


def _signal(pgid: int, others: Iterable[psutil.Process], sig: signal.Signals) -> None:
    """Send `sig` to process group `pgid` and to each of `others`."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for proc in others:
        with suppress(psutil.Error):
            proc.send_signal(sig)


def http_ok(url: str, *, timeout: float = 2.0) -> bool:
    """True when GET `url` answers 2xx."""
    import httpx  # here, not at the top: the command line never needs it (≈ 95 ms of its start)

    try:
        return httpx.get(url, timeout=timeout).is_success
    except httpx.HTTPError:
        return False


class NotHealthy(RuntimeError):
    """A started process exited, or did not pass its health check in time; the message ends with its log's last lines."""


def await_healthy(pid_file: Path, healthy: Callable[[], bool], *, timeout: float, what: str, log: Path) -> float:
    """Wait until `healthy()` holds while the process of `pid_file` runs; the seconds it took.

    Raises NotHealthy naming `what` as soon as the process exits, or at the deadline."""
    started = time.monotonic()

    def alive() -> bool:
        return running(pid_file) is not None

    if waiting.holds(healthy, timeout=timeout, still_alive=alive, interval=0.25):
        return time.monotonic() - started
    why = "exited" if not alive() else f"did not answer within {timeout:.0f} s"
    raise NotHealthy(f"{what} {why}\n--- last lines of {log}:\n{tail(log)}")


@contextmanager
def server(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    health_url: str | None = None,
    healthy: Callable[[], bool] | None = None,
    timeout_s: float = 120,
    stop_timeout_s: float = 20,
) -> Iterator[PidRecord]:
    """Start a server detached (pid file beside `log`), wait until it is healthy (`healthy()`, else GET `health_url`
    answers 2xx), stop it with its group afterwards.

    For tests and benchmarks that need a real server for a while; fails naming the log's last lines when it exits or
    does not answer in time.
    """
    check = healthy or (lambda: http_ok(str(health_url)))
    pid_file = log.with_suffix(".pid")
    record = start_detached(command, pid_file=pid_file, log_file=log, env=env, cwd=log.parent)
    try:
        await_healthy(
            pid_file, check, timeout=timeout_s, what=f"{command[0]} ({health_url or 'health check'})", log=log
        )
        yield record
    finally:
        stop(pid_file, timeout=stop_timeout_s)


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
