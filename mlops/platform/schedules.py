"""What `mlops up` does around `prefect deploy`: nothing when nothing changed, and the UI's schedule switches kept.

`prefect deploy` replaces a deployment's schedules with the file's, `active` flags included, so a
schedule turned on in the UI would be off again after the next `mlops up` (after a reboot, say).
`up` reads the flags of the schedules that have a `slug` before it deploys and sets them back after;
a schedule new in the file, or without a slug, takes the file's `active`. It deploys at all only
when what it would apply changed since the last `up` (`deployed_digest`) or a deployment is missing.

Prefect is imported by the callers' client: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from mlops.config import use_cases

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
                # Its parameters sent again: Prefect's server empties them on an update that leaves them out.
                client.update_deployment_schedule(
                    deployment.id, schedule.id, active=wanted, parameters=dict(schedule.parameters or {})
                )
                restored.append(f"{deployment.name}/{schedule.slug} {'on' if wanted else 'off'}")
    return restored


def copy_for_use_cases(client: Any, names: list[str]) -> list[str]:
    """Each schedule of prefect.yaml with a slug, once more for each use case in `names`: slug `<slug>-<use case>`,
    its parameters plus `use_case`, on or off as the file's. Makes the missing copies and repairs the parameters of
    the others; returns what it made or repaired.

    prefect.yaml's schedules run the stack's default use case; every other use case gets its own, which the
    UI shows and switches one by one (and `up` keeps as the user left them, like the file's). Repairs, because
    Prefect 3.9.1's server empties a schedule's parameters when only its `active` switch is updated (its
    DeploymentScheduleUpdate defaults `parameters` to {}): a copy switched in the UI would run the default use case.
    """
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    changed = []
    for deployment in client.read_deployments():
        found = {schedule.slug: schedule for schedule in deployment.schedules if schedule.slug}
        bases = [s for slug, s in found.items() if not any(slug.endswith(f"-{name}") for name in names)]
        missing = []
        for base, name in ((base, name) for base in bases for name in names):
            slug, parameters = f"{base.slug}-{name}", {**(base.parameters or {}), "use_case": name}
            copy = found.get(slug)
            if copy is None:
                missing.append(
                    DeploymentScheduleCreate(
                        schedule=base.schedule, active=base.active, slug=slug, parameters=parameters
                    )
                )
            elif (copy.parameters or {}) != parameters:
                client.update_deployment_schedule(deployment.id, copy.id, parameters=parameters)
                changed.append(f"{deployment.name}/{slug} (parameters repaired)")
        if missing:
            client.create_deployment_schedules(deployment.id, missing)
            changed += [f"{deployment.name}/{copy.slug}" for copy in missing]
    return changed


def deployed_digest(project_root: Path) -> str:
    """What `prefect deploy --all` turns into deployments: prefect.yaml, the flows' source (each deployment's
    parameter form comes from its flow's signature, the use cases' names included), and the checkout's path
    (the runs' working directory)."""
    digest = hashlib.sha256(str(project_root).encode() + b"\0" + " ".join(use_cases(project_root)).encode())
    for path in [project_root / "prefect.yaml", *sorted((project_root / "flows").glob("*.py"))]:
        digest.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def all_deployed(project_root: Path, client: Any) -> bool:
    """Every deployment prefect.yaml names exists on the server (its database may be new)."""
    deployments = yaml.safe_load((project_root / "prefect.yaml").read_text())["deployments"]
    return {(d["entrypoint"], d["name"]) for d in deployments} <= {
        (d.entrypoint, d.name) for d in client.read_deployments()
    }
