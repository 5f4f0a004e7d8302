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
                client.update_deployment_schedule(deployment.id, schedule.id, active=wanted)
                restored.append(f"{deployment.name}/{schedule.slug} {'on' if wanted else 'off'}")
    return restored


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
