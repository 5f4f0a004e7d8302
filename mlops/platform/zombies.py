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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops.platform.settings import HEARTBEAT_ENV, HEARTBEAT_SECONDS  # noqa: F401 - re-exported for callers

AUTOMATION_FILE = Path(__file__).resolve().parents[2] / "deployments" / "automations.yaml"
AUTOMATION_NAME = "crash-zombie-flow-runs"
AUTH_ENV = "PREFECT_API_AUTH_STRING"


def load_automation(path: Path = AUTOMATION_FILE, name: str = AUTOMATION_NAME, within: float | None = None) -> dict[str, Any]:
    """The automation `name` from `path` (a file `prefect automation create --from-file` accepts), as plain data.

    `within` (seconds) overrides the trigger's window, e.g. a shorter one for a test; it must exceed
    the heartbeat period, and Prefect refuses less than 10 s for a proactive trigger.
    """
    import yaml

    data = yaml.safe_load(path.read_text())
    entries = data["automations"] if isinstance(data, dict) and "automations" in data else data
    entries = entries if isinstance(entries, list) else [entries]
    found = [entry for entry in entries if isinstance(entry, dict) and entry.get("name") == name]
    if len(found) != 1:
        raise ValueError(f"{path}: expected one automation named {name!r}, found {len(found)}")
    automation = found[0]
    if within is not None:
        if within < 10:
            raise ValueError(f"within={within}: a proactive trigger's window is at least 10 s")
        automation = {**automation, "trigger": {**automation["trigger"], "within": within}}
    return automation


def ensure_zombie_automation(
    api_url: str,
    env: Mapping[str, str],
    *,
    path: Path = AUTOMATION_FILE,
    name: str = AUTOMATION_NAME,
    within: float | None = None,
) -> str:
    """Create the zombie-run automation on the Prefect API at `api_url`, or update it when one has that name.

    `env` is a client environment of the stack: its PREFECT_API_AUTH_STRING (when set) authenticates.
    Returns what happened, for `up`'s log line: "created (id …)" or "updated (id …)".
    Extra automations of the same name (left by a concurrent create) are deleted.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_KEY,
        PREFECT_API_URL,
        temporary_settings,
    )

    automation = AutomationCore.model_validate(load_automation(path, name, within))
    updates: dict[Any, Any] = {PREFECT_API_URL: api_url}
    if env.get(AUTH_ENV):
        updates[PREFECT_API_AUTH_STRING] = env[AUTH_ENV]
    if env.get("PREFECT_API_KEY"):
        updates[PREFECT_API_KEY] = env["PREFECT_API_KEY"]
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(name)
        if not existing:
            return f"created (id {client.create_automation(automation)})"
        keep, *extra = sorted(existing, key=lambda a: str(a.id))
        for duplicate in extra:
            client.delete_automation(duplicate.id)
        client.update_automation(keep.id, automation)
        return f"updated (id {keep.id})"
