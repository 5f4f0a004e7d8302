"""Warm processes: the worker's flow runs, and the model services Terraform starts, begin as forks of a process
that has already imported Prefect's engine, the flows and the model service's stack (MLflow, scikit-learn, skops),
instead of a fresh interpreter: ≈ 8-10 s of imports on 2 cores for a flow run, the bulk of event → Running
(docs/benchmarks.md, "Registration → CD"), and ≈ 3.5 s of CPU for a model service (`mlops serve`, through
`--module mlops.platform.cli`; mlops/adapters/environments.py's `serve_command`).

One module, two halves, stdlib only at import so that the client starts in milliseconds:

- **the server** (`python -m mlops.platform.warmstart serve SOCKET`), a part of the stack: imports
  `prefect.engine` and every flow prefect.yaml deploys once, listens on a Unix socket (0600, in the state dir) and, per
  request, forks a child that becomes the flow-run process: the client's stdin/stdout/stderr, environment
  and working directory, Prefect's settings re-read from that environment, then `python -m prefect.engine`'s
  own code, or the module the client names (runpy). The server never starts a thread, so a fork copies no held
  lock.
- **the client** (`python -m mlops.platform.warmstart`), the `local` work pool's command: what the process
  worker starts for each run (its pid is the run's `infrastructure_pid`). It hands over its stdio
  (SCM_RIGHTS), environment and cwd, forwards SIGTERM/SIGINT to the child and exits with its exit code.
  The child dies with the client: when the connection closes without an exit (the client was SIGKILLed),
  the child SIGKILLs itself, as the flow-run process would have died.

A warm start is an optimisation, never a dependency: without `MLOPS_WARM_SOCKET`, when the server does not
answer, or when a preloaded project file changed since the server started (it then restarts itself to load
the new code), the client execs the usual `python -m prefect.engine`.

Written here rather than taken from a library: Prefect's process worker and Runner both spawn a fresh
interpreter per run (`prefect.runner._starter_engine`), and a fork server must hand a run's stdio and
signals to the worker's own process, which general pre-fork servers (gunicorn) do not do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

SOCKET_ENV = "MLOPS_WARM_SOCKET"
ENGINE = "prefect.engine"  # what the process worker would run: `python -m prefect.engine`
# The model service's start (`mlops serve`, started by Terraform through this module's client): MLflow's model
# loading, skops (whose import walks every scikit-learn module) and the service's own modules.
# (`mlops.platform.cli` itself is left to runpy, which runs it as __main__.)
SERVICE_MODULES = ("mlops.serving.server", "mlflow.pyfunc", "mlflow.sklearn", "skops.io", "uvicorn")
CONNECT_TIMEOUT_S = 5.0
_LENGTH = struct.Struct("!I")


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _receive(sock: socket.socket) -> dict[str, Any] | None:
    """One length-prefixed JSON message; None when the peer closed the connection first."""
    header = _read_exactly(sock, _LENGTH.size)
    if header is None:
        return None
    body = _read_exactly(sock, _LENGTH.unpack(header)[0])
    return None if body is None else json.loads(body)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# --- the client: what the worker starts for a flow run -------------------------------------------------


def _cold(module: str, argv: list[str], reason: str) -> NoReturn:
    print(f"warm start: {reason}; starting a fresh interpreter", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", module, *argv])


def client(argv: list[str]) -> NoReturn:
    """Become this flow run's process by proxy: a warm child runs `python -m prefect.engine` (or `--module M`) with
    `argv`; this process relays signals to it and exits with its exit code."""
    module, argv = (argv[1], argv[2:]) if argv[:1] == ["--module"] else (ENGINE, argv)
    path = os.environ.get(SOCKET_ENV)
    if not path:
        _cold(module, argv, f"{SOCKET_ENV} is not set")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(path)
        socket.send_fds(sock, [b"R"], [0, 1, 2])
        _send(sock, {"env": dict(os.environ), "cwd": os.getcwd(), "module": module, "argv": argv})
        first = _receive(sock)
    except OSError as exc:
        _cold(module, argv, f"the warm server at {path} does not answer ({exc})")
    if first is None or "pid" not in first:
        _cold(module, argv, (first or {}).get("cold", "the warm server closed the connection"))
    sock.settimeout(None)
    child = int(first["pid"])

    def relay(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, relay)
    outcome = _receive(sock)  # blocks for the run's life; signals are relayed meanwhile (PEP 475 retries)
    sys.exit(1 if outcome is None else int(outcome.get("exit", 1)))


# --- the server: preloaded, forks a child per run ------------------------------------------------------


def _preload(root: Path) -> dict[str, float]:
    """Import the engine and the flows; the project files now loaded, with their modification times."""
    import importlib

    from mlops.platform.deploy import flow_modules  # the flows prefect.yaml deploys

    sys.path.insert(0, str(root))
    for name in (ENGINE, "prefect.flow_engine", *flow_modules(root), *SERVICE_MODULES):
        importlib.import_module(name)
    loaded = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(root) and Path(file).exists():
            loaded[file] = os.stat(file).st_mtime
    return loaded


def _changed(loaded: dict[str, float]) -> str | None:
    for file, mtime in loaded.items():
        try:
            if os.stat(file).st_mtime != mtime:
                return file
        except FileNotFoundError:
            return file
    return None


def _become_flow_run(conn: socket.socket, fds: list[int], request: dict[str, Any]) -> NoReturn:
    """In the forked child: take the client's stdio, environment and cwd, and run the engine as `python -m` would."""
    code, finished = 1, threading.Event()
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the run waits for its own subprocesses
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        _send(conn, {"pid": os.getpid()})

        def die_with_the_client() -> None:
            with contextlib.suppress(OSError):
                conn.recv(1)  # the client never sends more: this returns when it is gone
            if not finished.is_set():
                os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=die_with_the_client, name="warmstart-client-watch", daemon=True).start()
        import runpy

        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()  # the settings the server imported with, re-read from the run's environment
        sys.argv = [request["module"], *request["argv"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            finished.set()
            _send(conn, {"exit": code})
        except Exception:
            pass
        os._exit(code)


def serve(path: Path, root: Path) -> NoReturn:
    """Preload, then fork a flow-run process per request until stopped; restart to reload when a project file changed."""
    signal.signal(
        signal.SIGCHLD, signal.SIG_DFL
    )  # an exec'd restart inherits SIG_IGN: the imports may run subprocesses
    loaded = _preload(root)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; their exit goes to the client
    print(f"warm start: {len(loaded)} project files and the engine loaded; serving on {path}", flush=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # the socket file is 0600: only this user may start runs through it
    try:
        listener.bind(str(path))
    finally:
        os.umask(previous)
    listener.listen(64)
    while True:
        conn, _ = listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(CONNECT_TIMEOUT_S)
            _, fds, _, _ = socket.recv_fds(conn, 1, 3)
            request = _receive(conn)
            if request is None or len(fds) != 3:
                raise OSError("an incomplete request")
            if request.get("ping"):
                _send(conn, {"pong": os.getpid()})
                continue
            stale = _changed(loaded)
            if stale:
                _send(conn, {"cold": f"{stale} changed since the warm server started (it restarts to load it)"})
                conn.close()
                listener.close()
                print(f"warm start: {stale} changed: restarting", flush=True)
                os.execv(
                    sys.executable, [sys.executable, "-m", "mlops.platform.warmstart", "serve", str(path), str(root)]
                )
            conn.settimeout(None)
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                _become_flow_run(conn, fds, request)
        except OSError as exc:
            print(f"warm start: a request failed: {exc}", flush=True)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()


def ping(path: Path, timeout: float = 2.0) -> bool:
    """True when a warm server answers on `path` (the stack's health probe)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        with open(os.devnull, "rb") as null:
            socket.send_fds(sock, [b"P"], [null.fileno()] * 3)
        _send(sock, {"ping": True})
        return bool((_receive(sock) or {}).get("pong"))
    except OSError:
        return False
    finally:
        sock.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(Path(sys.argv[2]), Path(sys.argv[3]).resolve())
    client(sys.argv[1:])
