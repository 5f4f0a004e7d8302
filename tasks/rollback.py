"""Tasks of the rollback by hand (flows/rollback.py): move the aliases and record who, when and why."""

from __future__ import annotations

import contextlib

from prefect import runtime, task
from prefect.logging import get_run_logger

from mlops.adapters import registry
from mlops.config import Config
from mlops.domain.history import RESTORED_AT, RESTORED_WHY, ROLLED_BACK_AT, ROLLED_BACK_WHY
from tasks.delivery import now_utc


class RollbackRefused(ValueError):
    """A rollback that cannot be done as asked: no champion, no target, or a target that never served production."""


@task
def rollback_target(
    config: Config, model_name: str, to_version: str | None
) -> tuple[registry.VersionRef, registry.VersionRef]:
    """The champion and the version production goes back to: `to_version`, else `previous_champion`.

    The target must be READY and must have served production before (CD promoted it): a rollback
    skips the staging gates, so it only goes back to a version that passed them.
    """
    client = registry.connect(config)
    champion = registry.champion(client, model_name)
    if champion is None:
        raise RollbackRefused(f"{model_name} has no champion: nothing serves production to roll back from")
    target = (
        registry.version(client, model_name, to_version)
        if to_version
        else registry.aliased(client, model_name, registry.PREVIOUS_CHAMPION)
    )
    if target is None:
        raise RollbackRefused(
            f"{model_name} has no {'version ' + to_version if to_version else registry.PREVIOUS_CHAMPION}: "
            "give the version to go back to (to_version)"
        )
    if target.version == champion.version:
        raise RollbackRefused(f"{model_name} v{target.version} is the champion already")
    if target.status != "READY" or target.tags.get("deployment") != "promoted":
        raise RollbackRefused(
            f"{model_name} v{target.version} never served production (deployment tag: "
            f"{target.tags.get('deployment', 'none')}): a rollback only goes back to a version CD promoted"
        )
    return champion, target


@task
def reinstate(config: Config, model_name: str, champion: str, target: str, why: str) -> None:
    """`champion` → the target (no `previous_champion` after), both versions tagged with when and why.

    The last step of the rollback: when it fails part-way it puts the aliases back and removes what it
    tagged, and the flow's transaction puts production back on the champion.
    """
    client = registry.connect(config)
    at = now_utc()
    run = str(runtime.flow_run.id)
    tags = [
        (champion, {ROLLED_BACK_AT: at, ROLLED_BACK_WHY: why, "rolled_back_run": run}),
        (target, {RESTORED_AT: at, RESTORED_WHY: why, "restored_run": run}),
    ]
    try:
        registry.reinstate(client, model_name, target)
        for version, values in tags:
            registry.tag_version(client, model_name, version, {key: value[:4000] for key, value in values.items()})
    except Exception:
        registry.promote(client, model_name, champion)  # champion back; previous_champion on the target again
        for version, values in tags:
            for key in values:
                with contextlib.suppress(Exception):
                    client.delete_model_version_tag(model_name, version, key)
        get_run_logger().warning("rollback undone: %s of %s is v%s again", registry.CHAMPION, model_name, champion)
        raise
