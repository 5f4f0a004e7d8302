"""prefect.yaml onto the stack: the `local` work pool, `prefect deploy --all`, and each use case's schedules.

The work pool's command is the warm starter's client (mlops/platform/warmstart.py), so its runs start from the
preloaded process. `up` deploys only what changed, and keeps the UI's schedule switches:

`prefect deploy` replaces a deployment's schedules with the file's, `active` flags included, so a
schedule turned on in the UI would be off again after the next `mlops up` (after a reboot, say).
`up` reads the flags of the schedules that have a `slug` before it deploys and sets them back after;
a schedule new in the file, or without a slug, takes the file's `active`. It deploys at all only
when what it would apply changed since the last `up` (`deployed_digest`) or a deployment is missing.

Prefect is imported by the callers' client: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from mlops.config import load_config, stack_use_cases, use_cases
from mlops.config.stack import StackSettings
from mlops.platform import automations
from mlops.platform.parts import StackError, bin_path

WORK_POOL = "local"
CLI_TIMEOUT = 300.0

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
    deployments = load_prefect_yaml(project_root)["deployments"]
    return {(d["entrypoint"], d["name"]) for d in deployments} <= {
        (d.entrypoint, d.name) for d in client.read_deployments()
    }


def load_prefect_yaml(project_root: Path) -> dict[str, Any]:
    """prefect.yaml, the one place the deployments are described."""
    return yaml.safe_load((project_root / "prefect.yaml").read_text())


def flow_modules(project_root: Path) -> list[str]:
    """The modules of the flows prefect.yaml deploys (`flows/x.py:f` → `flows.x`): what the warm starter preloads."""
    entrypoints = {d["entrypoint"].partition(":")[0] for d in load_prefect_yaml(project_root)["deployments"]}
    return sorted(path.removesuffix(".py").replace("/", ".") for path in entrypoints)


def pool_env(project_root: Path) -> dict[str, str]:
    """The `local` work pool's job environment, from prefect.yaml (its `definitions`)."""
    pool = load_prefect_yaml(project_root)["definitions"]["work_pools"][WORK_POOL]
    return dict(pool["job_variables"].get("env", {}))


def warm_command() -> str:
    """The `local` pool's command: warmstart's client, which falls back to `python -m prefect.engine` by itself."""
    return f"{sys.executable} -m mlops.platform.warmstart"


def _prefect_cli(s: StackSettings, env: dict[str, str], *args: str, ok_if: str | None = None) -> str:
    """Run a `prefect` command against this stack from the repo root; output is appended to logs/cli.log."""
    cmd = [bin_path("prefect"), "--no-prompt", *args]
    proc = subprocess.run(
        cmd, env=env, cwd=s.project_root, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    output = proc.stdout + proc.stderr
    s.log_dir.mkdir(parents=True, exist_ok=True)
    with open(s.log_dir / "cli.log", "a") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)} (exit {proc.returncode})\n{output}")
    if proc.returncode != 0 and not (ok_if and ok_if in output):
        raise StackError(f"`prefect {' '.join(args)}` failed (exit {proc.returncode}):\n{output[-4000:]}")
    return output


def ensure_work_pool(s: StackSettings, env: dict[str, str]) -> str:
    """The process work pool, created unless it exists (by the CLI, which knows the process type's job template), with
    warmstart's client as its command (the runs start from the warm starter's preloaded process)."""
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        with automations.stack_client(s) as client:
            try:
                pool, outcome = client.read_work_pool(WORK_POOL), "exists"
            except ObjectNotFound:
                _prefect_cli(s, env, "work-pool", "create", WORK_POOL, "--type", "process", ok_if="already exists")
                pool, outcome = client.read_work_pool(WORK_POOL), "created"
            template = pool.base_job_template
            command = template["variables"]["properties"]["command"]
            if command.get("default") != warm_command():
                command["default"] = warm_command()
                client.update_work_pool(WORK_POOL, WorkPoolUpdate(base_job_template=template))
                outcome += ", command: warm start"
    except StackError:
        raise
    except Exception as exc:  # Prefect's client raises several types; any of them stops `up`
        raise StackError(f"work pool {WORK_POOL!r}: cannot read or set it at {s.prefect_api_url}: {exc}") from None
    return outcome


def deploy_all(s: StackSettings, env: dict[str, str]) -> str:
    """`prefect deploy --all`, keeping each schedule on or off as the user left it in the UI (`remember`, `restore`).

    Skipped when what it would apply is what the last `up` applied (prefect.yaml, the flows' code
    that gives each deployment its parameter form, this checkout's path) and every deployment is
    still on the server: `prefect deploy` costs ≈ 8 s of CPU, and `up` runs after every restart.
    """
    applied, digest = s.prefect_home / "deployed.sha256", deployed_digest(s.project_root)
    others = [name for name in stack_use_cases() if name != load_config().name]  # the file's schedules run the default
    try:
        with automations.stack_client(s) as client:
            if applied.exists() and applied.read_text() == digest and all_deployed(s.project_root, client):
                return "unchanged since the last `up`"
            flags = remember(client)
            _prefect_cli(s, env, "deploy", "--all", "--prefect-file", str(s.project_root / "prefect.yaml"))
            copy_for_use_cases(client, others)
            kept = restore(client, flags)
    except StackError:
        raise
    except Exception as exc:  # Prefect's client raises several types; any of them stops `up`
        raise StackError(f"cannot read or restore the deployments' schedules at {s.prefect_api_url}: {exc}") from None
    applied.write_text(digest)
    return "applied from prefect.yaml" + (f"; kept as set in the UI: {', '.join(kept)}" if kept else "")
