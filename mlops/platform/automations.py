"""Prefect automations kept in files (deployments/*.yaml) and applied to the stack's API by name.

`load_automation` reads one entry of a file `prefect automation create --from-file` accepts;
`stack_client` is a Prefect client on a stack's API with its credentials; `apply` creates the
automation or updates the one of that name (deleting duplicates a concurrent create left), and
`remove` deletes every automation of a name. The zombie-run automation (mlops.platform.zombies) and
the notifications (mlops.platform.notifications) are applied this way by `mlops up`.

Prefect is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

AUTH_ENV = "PREFECT_API_AUTH_STRING"


def load_automations(path: Path) -> list[dict[str, Any]]:
    """Every automation in `path` (a mapping with `automations:`, a list, or one automation), as plain data."""
    import yaml

    data = yaml.safe_load(path.read_text())
    entries = data["automations"] if isinstance(data, dict) and "automations" in data else data
    return [entry for entry in (entries if isinstance(entries, list) else [entries]) if isinstance(entry, dict)]


def load_automation(path: Path, name: str) -> dict[str, Any]:
    """The automation `name` from `path`; a ValueError unless exactly one has that name."""
    found = [entry for entry in load_automations(path) if entry.get("name") == name]
    if len(found) != 1:
        raise ValueError(f"{path}: expected one automation named {name!r}, found {len(found)}")
    return found[0]


@contextmanager
def stack_client(api_url: str, env: Mapping[str, str]) -> Iterator[Any]:
    """A sync Prefect client on `api_url`, authenticated with `env`'s PREFECT_API_AUTH_STRING / PREFECT_API_KEY when set."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    updates: dict[Any, Any] = {PREFECT_API_URL: api_url}
    if env.get(AUTH_ENV):
        updates[PREFECT_API_AUTH_STRING] = env[AUTH_ENV]
    if env.get("PREFECT_API_KEY"):
        updates[PREFECT_API_KEY] = env["PREFECT_API_KEY"]
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        yield client


def apply(client: Any, automation: Mapping[str, Any]) -> str:
    """Create `automation` (plain data, validated by Prefect's schema) or update the one of its name.

    Returns what happened, for `up`'s log: "created (id …)" or "updated (id …)".
    """
    from prefect.events.schemas.automations import AutomationCore

    core = AutomationCore.model_validate(automation)
    existing = client.read_automations_by_name(core.name)
    if not existing:
        return f"created (id {client.create_automation(core)})"
    keep, *extra = sorted(existing, key=lambda a: str(a.id))
    for duplicate in extra:
        client.delete_automation(duplicate.id)
    client.update_automation(keep.id, core)
    return f"updated (id {keep.id})"


def remove(client: Any, name: str) -> int:
    """Delete every automation named `name`; how many there were."""
    existing = client.read_automations_by_name(name)
    for automation in existing:
        client.delete_automation(automation.id)
    return len(existing)
