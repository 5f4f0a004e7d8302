"""Prefect automations kept in files (deployments/*.yaml) and applied to the stack's API by name.

`prefect_settings` points this process's Prefect client at a stack's API with its credentials and
`stack_client` is such a client (the one way the platform talks to the stack's Prefect);
`load_automation` reads one entry of a file `prefect automation create --from-file` accepts; `apply` creates the
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

from mlops.config.stack import PREFECT_AUTH_ENV, StackNotSetUp, StackSettings


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


def prefect_settings(s: StackSettings) -> Any:
    """A context in which this process's Prefect client talks to the stack `s`, authenticated.

    Prefect reads its settings from the environment once, when it is first imported: a process that imported
    Prefect before it knew the stack (as `up` does) must use this, not os.environ.
    """
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    credentials = s.credential_env()
    if not credentials:
        raise StackNotSetUp(f"no stack credentials under {s.secrets_dir}: start the local stack with `make up`")
    return temporary_settings(
        updates={PREFECT_API_URL: s.prefect_api_url, PREFECT_API_AUTH_STRING: credentials[PREFECT_AUTH_ENV]}
    )


@contextmanager
def stack_client(s: StackSettings) -> Iterator[Any]:
    """A sync Prefect client on the stack `s`'s API, with its credentials."""
    from prefect.client.orchestration import get_client

    with prefect_settings(s), get_client(sync_client=True) as client:
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
