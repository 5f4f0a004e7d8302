"""The local stack: `up` brings up healthy, deployed parts and the model services; `up` again changes nothing;
`down` stops every process and keeps what the services served."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient

from mlops import processes, waiting
from mlops.adapters import environments
from mlops.config import PROJECT_ROOT, load_config
from mlops.config.stack import StackSettings
from mlops.platform import stack as local_stack
from mlops.platform.deploy import warm_command
from mlops.platform.parts import parts
from mlops.platform.stack import part_pids
from tests.e2e.conftest import WebhookReceiver, served_version

pytestmark = pytest.mark.e2e


@flow(name="stack-smoke")
def stack_smoke(expected_cwd: str, expected_tracking_uri: str, expected_parent: int) -> str:
    """Fail unless the worker runs this flow from the repo root with the stack's environment, in a process
    forked by the warm starter (not a fresh interpreter)."""
    seen = (os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI"), os.getppid())
    if seen != (expected_cwd, expected_tracking_uri, expected_parent):
        raise RuntimeError(
            f"flow run saw cwd/tracking URI/parent {seen}, expected "
            f"{(expected_cwd, expected_tracking_uri, expected_parent)}"
        )
    return "ok"


def test_status_reports_every_part_up(stack: StackSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert local_stack.status(stack) == 0
    lines = capsys.readouterr().out.splitlines()
    name = load_config().name
    shown = [line.split("  ")[0] for line in lines]
    assert shown[:5] == ["prefect server", "mlflow server", "warm starter", "worker", "webhook receiver"], lines
    # Then each use case's environments: the stack's own, and any other use case delivered on it.
    assert {f"{name} staging", f"{name} production"} <= set(shown[5:]), lines
    assert all(line.rsplit(" ", 1)[-1] in {"staging", "production"} for line in shown[5:]), lines
    # The same as JSON (`mlops status --json`): per use case, each environment's version, URL and health.
    assert local_stack.status(stack, as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is True and set(report["parts"]) == {p.name for p in parts(stack).values()}
    found = report["use_cases"][name]
    assert found["model"] == load_config().tracking.model_name and set(found["environments"]) == {
        "staging",
        "production",
    }
    for env in found["environments"].values():
        assert not env["applied"] or (env["healthy"] is True and env["url"].startswith("http") and env["version"])


def test_prefect_has_the_local_pool_and_the_retrain_deployment(prefect_client: SyncPrefectClient) -> None:
    pool = prefect_client.read_work_pool("local")
    deployment = prefect_client.read_deployment_by_name("continuous-training/retrain")
    assert pool.type == "process"
    assert deployment.work_pool_name == "local"
    assert deployment.entrypoint == "flows/continuous_training.py:continuous_training"
    assert deployment.job_variables["env"]["MALLOC_ARENA_MAX"] == "2"  # prefect.yaml's pool job variables
    # Runs start through warmstart's client, which hands them to the warm starter's preloaded process.
    assert pool.base_job_template["variables"]["properties"]["command"]["default"] == warm_command()
    # prefect.yaml's `{{ $MLOPS_PROJECT_ROOT }}` was resolved at deploy time to this clone.
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}
    ]


def test_prefect_ui_talks_to_this_stack(stack: StackSettings) -> None:
    assert httpx.get(f"{stack.prefect_url}/ui-settings", timeout=5).json()["api_url"] == stack.prefect_api_url


def test_mlflow_serves_tracking_and_artifacts(stack: StackSettings) -> None:
    from mlflow import MlflowClient

    assert httpx.get(f"{stack.mlflow_uri}/health", timeout=5).text.strip() == "OK"
    client = MlflowClient(tracking_uri=stack.mlflow_uri)
    experiment = client.get_experiment(client.create_experiment("stack-e2e"))
    assert experiment.artifact_location.startswith("mlflow-artifacts:")


def test_mlflow_delivers_registry_webhooks_to_a_local_http_receiver(stack: StackSettings) -> None:
    from mlflow import MlflowClient

    receiver = WebhookReceiver()
    client = MlflowClient(tracking_uri=stack.mlflow_uri)
    # Accepted only with the stack's private-IP, http and secret-encryption settings.
    webhook = client.create_webhook(
        name="stack-e2e",
        url=receiver.url,
        events=["registered_model.created"],
        secret="e2e-secret",
    )
    try:
        client.create_registered_model("stack-e2e-model")
        waiting.wait_for(lambda: receiver.posts, timeout=30, what="MLflow's webhook for a new registered model")
        headers, body = receiver.posts[0]
    finally:  # later e2e tests share this stack and its registry
        client.delete_webhook(webhook.webhook_id)
        client.delete_registered_model("stack-e2e-model")
        receiver.stop()
    assert json.loads(body)["data"]["name"] == "stack-e2e-model"
    assert headers["X-MLflow-Signature"].startswith("v1,")


def test_state_files_are_in_the_state_dir(stack: StackSettings) -> None:
    key = stack.secrets_dir / "mlflow-webhook-fernet.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (stack.prefect_home / "prefect.db").exists()
    assert (stack.mlflow_dir / "mlflow.db").exists()
    env_file = stack.env_file.read_text()
    assert f"export PREFECT_API_URL={stack.prefect_api_url}\n" in env_file
    assert f"export MLFLOW_TRACKING_URI={stack.mlflow_uri}\n" in env_file
    # It carries the clients' credentials, so only its owner may read it.
    assert all(f"export {name}=" in env_file for name in stack.credential_env())
    assert stat.S_IMODE(stack.env_file.stat().st_mode) == 0o600


def _schedule(prefect_client: SyncPrefectClient, deployment: str, slug: str) -> Any:
    found = {s.slug: s for s in prefect_client.read_deployment_by_name(deployment).schedules}
    return found[slug]


def test_up_again_leaves_running_parts_alone_and_the_schedules_as_the_user_set_them(
    stack: StackSettings, prefect_client: SyncPrefectClient, capsys: pytest.CaptureFixture[str]
) -> None:
    retrain, score, drift = (
        ("continuous-training/retrain", "monthly"),
        ("batch-scoring/score", "daily"),
        ("drift-monitoring/scheduled", "monthly"),
    )
    # As prefect.yaml has them: retraining and scoring off (the user turns them on), drift monitoring on.
    assert [_schedule(prefect_client, *d).active for d in (retrain, score, drift)] == [False, False, True]
    assert _schedule(prefect_client, *retrain).parameters == {"as_of": "latest", "reason": "schedule"}
    assert _schedule(prefect_client, *score).parameters == {"as_of": "latest", "window_months": 1}

    # The pid-file processes, not their children: the worker's flow-run children come and go.
    leaders = {key: part.running() for key, part in local_stack.parts(stack).items()}
    assert all(leaders.values())
    for (deployment, slug), active in [(retrain, True), (drift, False)]:  # as a user would in the UI
        prefect_client.update_deployment_schedule(
            prefect_client.read_deployment_by_name(deployment).id,
            _schedule(prefect_client, deployment, slug).id,
            active=active,
        )
    try:
        capsys.readouterr()
        assert local_stack.up(stack) == 0  # nothing changed: nothing deployed again
        assert "deployments: unchanged since the last `up`" in capsys.readouterr().out
        assert {key: part.running() for key, part in local_stack.parts(stack).items()} == leaders
        assert [_schedule(prefect_client, *d).active for d in (retrain, score, drift)] == [True, False, False]

        (stack.prefect_home / "deployed.sha256").write_text("another prefect.yaml")  # as after a `git pull`
        assert local_stack.up(stack) == 0  # deployed again: the file's flags, then the user's put back
        shown = capsys.readouterr().out
        assert "deployments: applied from prefect.yaml; kept as set in the UI: " in shown, shown
        assert [_schedule(prefect_client, *d).active for d in (retrain, score, drift)] == [True, False, False]
    finally:  # later tests share this stack
        for (deployment, slug), active in [(retrain, False), (drift, True)]:
            prefect_client.update_deployment_schedule(
                prefect_client.read_deployment_by_name(deployment).id,
                _schedule(prefect_client, deployment, slug).id,
                active=active,
            )


def test_worker_runs_a_flow_from_the_repo(
    stack: StackSettings, prefect_client: SyncPrefectClient, wait_for_flow_run: Callable
) -> None:
    from prefect.deployments import run_deployment

    smoke = flow.from_source(source=str(PROJECT_ROOT), entrypoint="tests/e2e/test_stack.py:stack_smoke")
    smoke.deploy(name="smoke", work_pool_name="local", build=False, push=False, print_next_steps=False)
    run = run_deployment(
        "stack-smoke/smoke",
        parameters={
            "expected_cwd": str(PROJECT_ROOT),
            "expected_tracking_uri": stack.mlflow_uri,
            "expected_parent": local_stack.parts(stack)["warm"].running().pid,
        },
        timeout=0,
    )
    state = wait_for_flow_run(run.id, timeout=120)
    assert state.is_completed(), f"{state.name}: {state.message}"


def _services(stack: StackSettings) -> dict[str, dict]:
    """What each environment's state says it serves."""
    return {
        env: environments.current_service(load_config(), env, state_dir=stack.state_dir) for env in environments.NAMES
    }


def _service_pid(outputs: dict) -> int:
    record = processes.running(Path(outputs["pid_file"]))
    assert record is not None, f"no live service behind {outputs['pid_file']}"
    return record.pid


def test_down_stops_every_process_and_keeps_the_data_and_up_brings_it_all_back_on_the_champion(
    stack: StackSettings, champion: str, prefect_client: SyncPrefectClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """One down and one up (each costs a restart of every server): leaves the stack up again, as it was."""
    config = load_config()
    port = config.serving.production_port
    deployment_id = prefect_client.read_deployment_by_name("continuous-training/retrain").id
    before = _services(stack)
    assert before["production"]["model_version"] == champion and before["staging"], (
        "CD applied staging, then production"
    )
    leaders = {env: _service_pid(outputs) for env, outputs in before.items()}
    # The pid Terraform recorded is warmstart's client; the process that answers is a fork of the warm starter.
    listening = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
        and c.laddr.port in {int(o["endpoint"].rsplit(":", 1)[1]) for o in before.values()}
    }
    assert listening and not listening & set(leaders.values()), "the services answer from warm forks"
    service_pids = (
        set(leaders.values())
        | listening
        | {c.pid for pid in leaders.values() for c in psutil.Process(pid).children(recursive=True)}
    )
    pids = part_pids(stack)
    assert all(pids.values())
    restarted = False
    try:
        assert local_stack.down(stack) == 0
        assert processes.alive_pids(set().union(*pids.values())) == set(), "down stops every part by pid"
        assert processes.alive_pids(service_pids) == set(), "down stops each service with its children, by pid"
        assert served_version(port) is None
        assert local_stack.status(stack) == 1
        assert local_stack.down(stack) == 0  # harmless when nothing runs
        assert (stack.prefect_home / "prefect.db").exists() and (stack.mlflow_dir / "mlflow.db").exists()
        assert _services(stack) == before, "down keeps the Terraform state"
        capsys.readouterr()

        assert local_stack.up(stack) == 0
        restarted = True
    finally:
        if not restarted:
            local_stack.up(stack)  # later e2e tests share this stack
    shown = capsys.readouterr().out
    assert f"{config.name} production model service: {config.tracking.model_name} v{champion} healthy" in shown, shown
    assert prefect_client.read_deployment_by_name("continuous-training/retrain").id == deployment_id

    assert served_version(port) == champion
    after = _services(stack)
    assert {env: out["model_version"] for env, out in after.items()} == {
        env: out["model_version"] for env, out in before.items()
    }
    restored = {env: _service_pid(outputs) for env, outputs in after.items()}
    assert not set(restored.values()) & service_pids

    assert local_stack.status(stack) == 0
    lines = {line.split("  ")[0]: line for line in capsys.readouterr().out.splitlines()}
    production, staging = lines[f"{config.name} production"], lines[f"{config.name} staging"]
    assert f"version {champion} " in production and f"health ok   http://127.0.0.1:{port}" in production
    assert f"version {before['staging']['model_version']} " in staging and "health ok" in staging

    assert local_stack.up(stack) == 0  # twice: the services that answer are left alone
    assert {env: _service_pid(outputs) for env, outputs in _services(stack).items()} == restored


def test_up_leaves_an_environment_whose_lock_a_delivery_holds_to_that_delivery(
    stack: StackSettings,
    champion: str,
    prefect_client: SyncPrefectClient,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Production and staging applied (`champion`), production's lock held as a delivery would hold it."""
    from mlops.platform import locks, services

    monkeypatch.setattr(services, "LOCK_WAIT", 2.0)  # how long `up` waits for a holder; a delivery holds it for minutes
    name = load_config().name
    lock = locks.lock_name(name, "production")
    lease = prefect_client.increment_concurrency_slots_with_lease([lock], 1, "concurrency", 120).json()["lease_id"]
    try:
        capsys.readouterr()
        assert local_stack.up(stack) == 0
    finally:
        prefect_client.release_concurrency_slots_with_lease(lease)
    shown = capsys.readouterr().out
    assert f"{name} production model service: left to the run holding {lock}" in shown, shown
    assert (
        f"{name} staging model service: " in shown
        and "healthy" in shown.split(f"{name} staging model service: ")[1].splitlines()[0]
    ), shown

    staging = locks.lock_name(name, "staging")  # `up` released the lease it took on staging: free at once
    lease = prefect_client.increment_concurrency_slots_with_lease([staging], 1, "concurrency", 60).json()["lease_id"]
    prefect_client.release_concurrency_slots_with_lease(lease)
