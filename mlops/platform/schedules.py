"""Schedules a user switched on or off in the Prefect UI stay so when `mlops up` deploys prefect.yaml again.

`prefect deploy` replaces a deployment's schedules with the file's, `active` flags included, so a
schedule turned on in the UI would be off again after the next `mlops up` (after a reboot, say).
`up` reads the flags of the schedules that have a `slug` before it deploys and sets them back after;
a schedule new in the file, or without a slug, takes the file's `active`.

Prefect is imported by the callers' client: importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

Flags = dict[tuple[str, str], bool]  # (deployment id, schedule slug) -> active


def remember(client: Any) -> Flags:
    """The `active` flag of every schedule with a slug, by deployment and slug."""
    return {(str(d.id), s.slug): bool(s.active) for d in client.read_deployments() for s in d.schedules if s.slug}


def restore(client: Any, flags: Flags) -> list[str]:
    """Set remembered flags back where the deploy changed them; one line per schedule set back."""
    restored = []
    for deployment in client.read_deployments():
        for schedule in deployment.schedules:
            wanted = flags.get((str(deployment.id), schedule.slug or ""))
            if wanted is not None and wanted != bool(schedule.active):
                client.update_deployment_schedule(deployment.id, schedule.id, active=wanted)
                restored.append(f"{deployment.name}/{schedule.slug} {'on' if wanted else 'off'}")
    return restored
