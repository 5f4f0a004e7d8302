"""The model services of the stack (each use case's staging and production): stopped by pid file on `down`, restored on `up`.

`down` keeps their Terraform state; `up` brings each back on what its state says, production on the
`champion` version (the alias wins when they disagree, and `up` says so). `up` holds an
environment's lock while it restores it, so it never applies beside a delivery or a rollback; an
environment whose lock stays taken is left to the run holding it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from mlops import processes
from mlops.config import Config, config_named, load_config, stack_use_cases, use_cases
from mlops.config.stack import StackSettings
from mlops.platform import automations, locks
from mlops.platform.parts import STOP_TIMEOUT, StackError

LOCK_WAIT = 30.0  # seconds `up` waits for an environment's lock before leaving the environment to its holder
RESTORE_WORKERS = 4  # services started at once by `up` (each mostly waits for its model to load)
LOCK_LEASE = 900.0  # seconds `up`'s hold lasts if `up` dies holding it (released as soon as the restore ends)


def stop_model_services(s: StackSettings) -> None:
    """Stop every use case's staging/production services by pid; their Terraform state stays, so `up` brings them back."""
    from mlops.adapters import environments

    for use_case in environments.applied_use_cases(s.state_dir):
        for name in environments.NAMES:
            try:
                served = environments.served_by(s.state_dir, use_case, name)
            except Exception as exc:  # an unreadable state must not keep the rest of the stack running
                print(f"  {use_case} {name} model service: cannot read its state: {exc}", file=sys.stderr, flush=True)
                continue
            if served:
                # Terraform started it through processes, which wrote the pid file (its destroy stops it the same way).
                pid_file = Path(served["pid_file"])
                record = processes.running(pid_file)
                stopped = processes.stop(pid_file, timeout=STOP_TIMEOUT)
                what = f"stopped (pid {record.pid})" if stopped and record is not None else "not running"
                print(
                    f"  {use_case} {name} model service: {what}; v{served['model_version']} kept in its state",
                    flush=True,
                )


def restore_model_services(s: StackSettings) -> None:
    """Bring every use case's staging and production back on what their state says, production on its `champion`."""
    from mlops.adapters import environment_restore, environments

    default = load_config()
    moved = environments.adopt_single_use_case_layout(s.state_dir, default.name)
    if moved:
        print(f"  model services: {', '.join(moved)} state moved under use case {default.name}", flush=True)
    targets: list[tuple[Config, environment_restore.Restore]] = []
    failures = []
    known = {*use_cases(), default.name}
    for use_case in environments.applied_use_cases(s.state_dir):
        if use_case not in known:  # its folder was removed: nothing says what it should serve
            print(
                f"  {use_case} model services: no folder usecases/{use_case}/ any more: left stopped; "
                f"remove {s.state_dir / 'terraform' / use_case} to forget them",
                flush=True,
            )
            continue
        try:
            targets += _restore_targets(s, config_named(use_case))
        except Exception as exc:  # a config, MLflow or Terraform error stops this use case, not the others
            failures.append(f"{use_case}: cannot read what it serves: {exc}")

    def restore(found: tuple[Config, environment_restore.Restore]) -> str | None:
        config, target = found
        where = f"{config.name} {target.environment}"
        if target.reason:
            print(f"  {where} model service: {target.reason}", flush=True)
        try:
            endpoint, seconds = environment_restore.restore_service(
                config, target, state_dir=s.state_dir, tracking_uri=s.mlflow_uri
            )
        except Exception as exc:  # Terraform and the health wait raise several types; report them all
            return f"{where} v{target.version}: {exc}"
        print(
            f"  {where} model service: {target.model_name} v{target.version} healthy at {endpoint} ({seconds:.1f} s)",
            flush=True,
        )
        return None

    planned = [(config, target, locks.lock_name(config.name, target.environment)) for config, target in targets]
    with _holding_locks(s, [lock for *_, lock in planned]) as held:
        for config, target, lock in planned:
            if lock not in held:
                print(
                    f"  {config.name} {target.environment} model service: left to the run holding {lock} (a delivery "
                    f"or rollback in flight, or one that died less than its lease ago); `mlops up` again restores it",
                    flush=True,
                )
        with ThreadPoolExecutor(max_workers=RESTORE_WORKERS) as pool:  # each waits seconds for its model to load
            failures += [f for f in pool.map(restore, [(c, t) for c, t, lock in planned if lock in held]) if f]
    if failures:
        raise StackError("model services did not come back:\n  " + "\n  ".join(failures))


def _restore_targets(s: StackSettings, config: Config) -> list[tuple[Config, Any]]:
    """What each environment of one use case comes back on (`environment_restore.restore_target`), with its config."""
    from mlflow.tracking import MlflowClient

    from mlops.adapters import environment_restore, environments, registry

    name = config.tracking.model_name
    champion = registry.champion(MlflowClient(s.mlflow_uri, registry_uri=s.mlflow_uri), name)
    version = champion.version if champion else None
    found = []
    for env in environments.NAMES:
        served = environments.served_by(s.state_dir, config.name, env)
        if target := environment_restore.restore_target(env, served, name, version):
            found.append((config, target))
    return found


@contextmanager
def _holding_locks(s: StackSettings, wanted: list[str]) -> Iterator[set[str]]:
    """Hold the lock of each environment in `wanted` that is free within LOCK_WAIT; yields the environments held."""
    with automations.stack_client(s) as client, ExitStack() as holding:
        try:
            held = holding.enter_context(locks.holding_free(client, wanted, wait=LOCK_WAIT, lease=LOCK_LEASE))
        except Exception as exc:  # the Prefect client raises several types; without the locks nothing is restored
            raise StackError(f"model services: cannot take the environments' locks: {exc}") from None
        yield held


def environments_report(s: StackSettings) -> dict[str, dict[str, Any]]:
    """Each use case (those of this stack and any with a state): its model and, per environment, what its state
    says it serves (version, URL), whether it answers, or why unknown."""
    from mlops.adapters import environments, service_checks

    report: dict[str, dict[str, Any]] = {}
    for use_case in sorted(set(stack_use_cases()) | set(environments.applied_use_cases(s.state_dir))):
        try:
            model: str | None = config_named(use_case).tracking.model_name
        except Exception:  # its folder is gone or broken; its environments are still reported
            model = None
        found: dict[str, dict[str, Any]] = {}
        for name in environments.NAMES:
            try:
                served = environments.served_by(s.state_dir, use_case, name)
            except Exception as exc:  # Terraform raises several types; the report says why
                found[name] = {
                    "applied": None,
                    "error": f"state unreadable: {str(exc).splitlines()[0]}",
                    "healthy": False,
                }
                continue
            if not served:
                found[name] = {"applied": False, "version": None, "url": None, "healthy": None}
                continue
            found[name] = {
                "applied": True,
                "version": str(served["model_version"]),
                "url": served["endpoint"],
                "healthy": service_checks.is_healthy(served["endpoint"]),
            }
        report[use_case] = {"model": model, "environments": found}
    return report


def environment_line(name: str, env: dict[str, Any]) -> str:
    if env["applied"] is None:
        return f"{name:<24} {env['error']}"
    if not env["applied"]:
        return f"{name:<24} not applied"
    return f"{name:<24} version {env['version']:<4} health {'ok  ' if env['healthy'] else 'FAIL'} {env['url']}"
