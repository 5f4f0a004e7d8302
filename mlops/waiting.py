"""One way to wait: poll a condition until it holds or a deadline passes, and say what was seen.

Every wait of the library and of the tests goes through `wait_for`, so each has a deadline, and
one that times out names what it waited for, how long, and the last state it observed (the runs,
versions or log lines `seen` returns), instead of a bare "timed out". No other module sleeps to
wait for something.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class TimedOut(TimeoutError):
    """A wait's deadline passed (or what it waited on died) before its condition held."""


def wait_for(
    check: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    seen: Callable[[], object] | None = None,
    still_alive: Callable[[], bool] | None = None,
) -> T:
    """Call `check()` every `interval` s until it returns something truthy, and return that.

    Raises TimedOut naming `what` at the deadline, or as soon as `still_alive()` turns False (after
    one last check); the message ends with `seen()`, the state last observed, when given.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        found = check()
        if found:
            return found
        dead = still_alive is not None and not still_alive()
        if dead and (found := check()):
            return found
        if dead or time.monotonic() >= deadline:
            why = "what it waited on exited" if dead else f"not within {timeout:.0f} s"
            raise TimedOut(f"{what}: {why} (waited {time.monotonic() - started:.1f} s){_observed(seen)}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def holds(
    check: Callable[[], object], *, timeout: float, interval: float = 0.5, still_alive: Callable[[], bool] | None = None
) -> bool:
    """`wait_for` as a boolean: True once `check()` holds, False at the deadline (for callers that report it)."""
    try:
        wait_for(check, timeout=timeout, what="", interval=interval, still_alive=still_alive)
    except TimedOut:
        return False
    return True


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file ('' when it does not exist): what a wait that failed saw there."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _observed(seen: Callable[[], object] | None) -> str:
    if seen is None:
        return ""
    try:
        return f"; last seen: {seen()}"
    except Exception as exc:  # the description must not hide the timeout it explains
        return f"; last state unreadable ({type(exc).__name__}: {exc})"
