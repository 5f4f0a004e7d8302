"""Production rollback by hand: put production back on the previous champion (or a chosen version), now."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.states import Completed, State
from prefect.transactions import transaction

from mlops.config import config_for_model, load_config
from tasks.decision import ROLLED_BACK, emit_decision, publish_records
from tasks.infra import deploy_environment
from tasks.rollback import RollbackRefused, reinstate, rollback_target
from tasks.runs import UseCase, holding_environments, require_servers, run_model_name, run_name, tag_this_run


def _run_name() -> str:
    return run_name("rollback", run_model_name())


@flow(name="production-rollback", flow_run_name=_run_name)
def production_rollback(
    reason: str,
    by: str,
    to_version: int | str | None = None,
    model_name: str | None = None,
    use_case: UseCase | None = None,  # type: ignore[valid-type]
) -> State:
    """Take the champion out of production and serve an earlier version again, without the staging gates.

    The emergency lever next to CD's automatic rollback: production is applied with Terraform on
    the target (`to_version`, else the `previous_champion` alias), which must be a version CD
    promoted before; `champion` moves to it and `previous_champion` is removed, so a second
    rollback names its target. The version taken out is tagged `rolled_back_at` with who and why
    (it keeps `deployment=promoted`: it did serve, until now), the target `restored_at`; the
    production history, the model card and a `mlops.deployment.rolled_back` event (and its
    notification) say so. It waits for any running delivery: both hold the environments' locks.
    Staging is left as it is. `mlops rollback --reason ...` runs this deployment.

    Args:
        reason: Why production goes back, for the record: tags, history, notification.
        by: Who decided, e.g. a name or an e-mail address.
        to_version: The version to serve again. Default: the `previous_champion` alias.
        model_name: The registered model; default: the use case's `tracking.model_name`.
        use_case: Whose production goes back (a folder `usecases/<name>/`); default: the use case that registers
            `model_name`, else the stack's default. Every other use case's environments are left alone.
    """
    config = load_config(use_case=use_case) if use_case else config_for_model(model_name)
    if config is None:
        raise RollbackRefused(f"no use case of this project registers {model_name}: name its use_case")
    name = model_name or config.tracking.model_name
    require_servers(config)
    tag_this_run([f"use-case:{config.name}"])
    with holding_environments(config):  # never beside a delivery
        champion, target = rollback_target(config, name, None if to_version is None else str(to_version))
        why = f"by {by}: {reason}"
        get_run_logger().warning(
            "rolling %s production back from v%s to v%s (%s)", name, champion.version, target.version, why
        )
        with transaction():  # a failure after the apply puts production back on the champion
            endpoint = deploy_environment(config, "production", name, target.version, champion.version)
            reinstate(config, name, champion.version, target.version, why)
    emit_decision(
        ROLLED_BACK,
        "production",
        name,
        champion.version,
        [],
        f"rolled back by hand to v{target.version} {why}",
        use_case=config.name,
    )
    outcome = f"rolled back by hand {why}; production back on v{target.version}"
    create_markdown_artifact(
        key="rollback",
        markdown=f"# {name}: production back on v{target.version}\n\n"
        f"v{champion.version} taken out {why}. Serving at {endpoint}.",
    )
    publish_records(config, name, champion.version, outcome, [])
    return Completed(
        message=outcome,
        data={"status": "rolled_back", "from": champion.version, "to": target.version, "endpoint": endpoint},
    )
