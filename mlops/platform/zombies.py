"""Zombie flow runs: the automation that marks a run Crashed once its heartbeats stop.

A flow run whose process or worker died (a SIGKILL, an OOM kill, a machine that went away) stays
Running, since nothing is left to report its end. Prefect's answer (docs: "detect zombie flows")
is two halves: every flow-run process emits `prefect.flow-run.heartbeat` every
PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (set on the worker, whose flow runs inherit its
environment), and a proactive automation crashes a run that misses them for `within` seconds.
The automation lives in deployments/automations.yaml (also usable with `prefect automation create
--from-file`); `ensure_zombie_automation` applies it to a Prefect API, idempotently by name.

Prefect is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops.config.stack import HEARTBEAT_ENV, HEARTBEAT_SECONDS, StackSettings  # noqa: F401 - re-exported for callers
from mlops.platform import automations

AUTOMATION_FILE = Path(__file__).resolve().parents[2] / "deployments" / "automations.yaml"
AUTOMATION_NAME = "crash-zombie-flow-runs"


def load_automation(
    path: Path = AUTOMATION_FILE, name: str = AUTOMATION_NAME, within: float | None = None
) -> dict[str, Any]:
    """The automation `name` from `path` (a file `prefect automation create --from-file` accepts), as plain data.

    `within` (seconds) overrides the trigger's window, e.g. a shorter one for a test; it must exceed
    the heartbeat period, and Prefect refuses less than 10 s for a proactive trigger.
    """
    automation = automations.load_automation(path, name)
    if within is not None:
        if within < 10:
            raise ValueError(f"within={within}: a proactive trigger's window is at least 10 s")
        automation = {**automation, "trigger": {**automation["trigger"], "within": within}}
    return automation


def ensure_zombie_automation(
    s: StackSettings,
    *,
    path: Path = AUTOMATION_FILE,
    name: str = AUTOMATION_NAME,
    within: float | None = None,
) -> str:
    """Create the zombie-run automation on the stack's Prefect API, or update it when one has that name.

    Returns what happened, for `up`'s log line: "created (id …)" or "updated (id …)".
    """
    with automations.stack_client(s) as client:
        return automations.apply(client, load_automation(path, name, within))
