"""Delivery tasks around the gates: the version to deliver once it is READY, the champion, the holdout it was
evaluated on, and the alias move that promotes it (with its rollback hook)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import runtime, task
from prefect.logging import get_run_logger
from prefect.transactions import Transaction

from mlops import render
from mlops.adapters import registry, sources
from mlops.config import Config
from mlops.domain.checks import Check
from mlops.domain.split import split_frame
from tasks.retries import IO_RETRIES, retry_unless
from tasks.runs import remember_for_rollback


class VersionNotReady(RuntimeError):
    """The version is still being registered (a webhook can arrive before it is READY); retried."""


class VersionUnusable(LookupError):
    """The version does not exist or failed to register; no retry can fix it."""


@task(retries=30, retry_delay_seconds=1, retry_condition_fn=retry_unless(VersionUnusable))
def wait_for_version(config: Config, model_name: str, version: str) -> registry.VersionRef:
    """The registered version once it is READY (a bounded wait: 30 tries a second apart)."""
    found = registry.version(registry.connect(config), model_name, version)
    if found is None:
        raise VersionUnusable(f"{model_name} has no version {version}")
    if found.status == "FAILED_REGISTRATION":
        raise VersionUnusable(f"{model_name} version {version} failed to register")
    if found.status != "READY":
        raise VersionNotReady(f"{model_name} version {version} is {found.status}, not READY yet")
    return found


@task(**IO_RETRIES)
def find_champion(config: Config, model_name: str) -> registry.VersionRef | None:
    """The version behind `champion`; None before the first promotion (a registry error raises)."""
    return registry.champion(registry.connect(config), model_name)


@task
def load_holdout(config: Config, data_window: str | None, workdir: Path) -> Path:
    """Rebuild the holdout the version was evaluated on in CT, from its lineage tag (the config's window without one)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "holdout.parquet"
    split_frame(sources.load_labelled_window(config, data_window).frame, config)[1].to_parquet(path)
    return path


@task  # no retries: inside CD's transaction a failed attempt rolls the whole delivery back (Prefect 3.9)
def promote(config: Config, model_name: str, version: str, previous: str | None, gates: list[Check]) -> None:
    """Point `champion` at the version (the one before becomes `previous_champion`) and tag it; production serves it."""
    remember_for_rollback(config=config, model_name=model_name, previous=previous)
    client = registry.connect(config)
    try:
        registry.promote(client, model_name, version)
        client.set_model_version_tag(model_name, version, "deployment_at", now_utc())
        client.set_model_version_tag(model_name, version, "deployment", "promoted")
        client.set_model_version_tag(model_name, version, "deployment_run", str(runtime.flow_run.id))
        client.set_model_version_tag(model_name, version, "deployment_gates", render.checks_summary(gates))
    except Exception:
        # A failed step is not compensated by its own hook (only completed ones are): undo the alias here.
        _put_alias_back(config, model_name, previous)
        raise


def _put_alias_back(config: Config, model_name: str, previous: str | None) -> None:
    registry.restore_champion(registry.connect(config), model_name, previous)
    get_run_logger().warning(
        "rolled back the %s alias of %s to %s", registry.CHAMPION, model_name, f"v{previous}" if previous else "nothing"
    )


@promote.on_rollback
def _restore_alias(txn: Transaction) -> None:
    """Rollback hook (a later step failed): `champion` back on the version it named before (removed when none)."""
    _put_alias_back(txn.get("config"), txn.get("model_name"), txn.get("previous"))


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
