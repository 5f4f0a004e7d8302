"""The local stack's security: both servers refuse a caller without the stack's credentials, the
credentials live in private files, and no secret value shows up in a log or a Terraform state."""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient

from mlops.config.stack import MLFLOW_PASSWORD_ENV, MLFLOW_USERNAME_ENV, PREFECT_AUTH_ENV, StackSettings

pytestmark = pytest.mark.e2e

REGISTRY = "/api/2.0/mlflow/registered-models"


def _prefect_auth(stack: StackSettings) -> httpx.BasicAuth:
    user, _, password = stack.credential_env()[PREFECT_AUTH_ENV].partition(":")
    return httpx.BasicAuth(user, password)


def _mlflow_auth(stack: StackSettings) -> httpx.BasicAuth:
    env = stack.credential_env()
    return httpx.BasicAuth(env[MLFLOW_USERNAME_ENV], env[MLFLOW_PASSWORD_ENV])


def _stranger() -> httpx.BasicAuth:
    """Another local user who guessed the user names but not the passwords."""
    return httpx.BasicAuth("mlops-admin", "not-the-password-at-all")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/flows/filter", {}),
        ("POST", "/deployments/filter", {}),
        ("POST", "/events", []),  # emitting mlops.model.registered would start CD
    ],
)
def test_prefect_api_refuses_callers_without_the_stack_credentials(
    stack: StackSettings, method: str, path: str, body: object
) -> None:
    url = f"{stack.prefect_api_url}{path}"
    assert httpx.request(method, url, json=body, timeout=10).status_code == 401
    assert httpx.request(method, url, json=body, auth=_stranger(), timeout=10).status_code == 401
    assert httpx.request(method, url, json=body, auth=_prefect_auth(stack), timeout=10).status_code in (200, 204)


def test_nobody_without_credentials_starts_a_deployment(stack: StackSettings) -> None:
    found = httpx.post(f"{stack.prefect_api_url}/deployments/filter", json={}, auth=_prefect_auth(stack), timeout=10)
    deployment_id = next(d["id"] for d in found.json() if d["name"] == "deploy-model")
    start = f"{stack.prefect_api_url}/deployments/{deployment_id}/create_flow_run"
    assert httpx.post(start, json={"parameters": {"version": "1"}}, timeout=10).status_code == 401
    assert httpx.post(start, json={"parameters": {"version": "1"}}, auth=_stranger(), timeout=10).status_code == 401


def test_prefect_health_stays_open_for_probes(stack: StackSettings) -> None:
    assert httpx.get(f"{stack.prefect_api_url}/health", timeout=10).status_code == 200


def test_mlflow_refuses_registry_and_artifact_calls_without_the_stack_credentials(stack: StackSettings) -> None:
    create = f"{stack.mlflow_uri}{REGISTRY}/create"
    for auth in (None, _stranger()):
        assert httpx.post(create, json={"name": "security-e2e"}, auth=auth, timeout=10).status_code in (401, 403)
        listed = httpx.get(f"{stack.mlflow_uri}/api/2.0/mlflow-artifacts/artifacts", auth=auth, timeout=10)
        assert listed.status_code in (401, 403)
    assert httpx.get(f"{stack.mlflow_uri}/health", timeout=10).status_code == 200

    created = httpx.post(create, json={"name": "security-e2e"}, auth=_mlflow_auth(stack), timeout=10)
    assert created.status_code == 200, created.text
    deleted = httpx.request(
        "DELETE",
        f"{stack.mlflow_uri}{REGISTRY}/delete",
        json={"name": "security-e2e"},
        auth=_mlflow_auth(stack),
        timeout=10,
    )  # later e2e tests share this registry
    assert deleted.status_code == 200, deleted.text


def test_credentials_are_private_files(stack: StackSettings) -> None:
    assert stat.S_IMODE(stack.secrets_dir.stat().st_mode) == 0o700
    secret_files = sorted(p for p in stack.secrets_dir.iterdir())
    assert {p.name for p in secret_files} >= {
        stack.prefect_password_file.name,
        stack.mlflow_password_file.name,
        stack.mlflow_auth_config.name,
        stack.webhook_secret_file.name,
    }
    for path in [*secret_files, stack.env_file]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _secret_values(stack: StackSettings) -> set[str]:
    """Every secret the stack holds, also as the basic-auth header a client would send."""
    values = {p.read_text().strip() for p in stack.secrets_dir.iterdir() if p.suffix != ".ini"}
    env = stack.credential_env()
    values |= {env[PREFECT_AUTH_ENV], env[MLFLOW_PASSWORD_ENV]}
    for pair in (env[PREFECT_AUTH_ENV], f"{env[MLFLOW_USERNAME_ENV]}:{env[MLFLOW_PASSWORD_ENV]}"):
        values.add(base64.b64encode(pair.encode()).decode())
    assert all(len(value) >= 16 for value in values), "a secret this short would match by chance"
    return values


def _flow_run_logs(client: SyncPrefectClient) -> Iterator[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    offset = 0
    while page := client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(is_null_=False)), limit=200, offset=offset
    ):
        yield from (log.message for log in page)
        offset += len(page)


def _stack_files(stack: StackSettings) -> list[Path]:
    """The stack's own logs, the model services' logs and every environment's Terraform state."""
    found = [
        *stack.log_dir.rglob("*"),
        *(stack.state_dir / "services").glob("*/*.log"),  # services/<use case>/
        *(stack.state_dir / "terraform").glob("*/*/terraform.tfstate*"),  # terraform/<use case>/<environment>/
    ]
    assert any(path.name.startswith("terraform.tfstate") for path in found), "no state found: the globs are stale"
    return [path for path in found if path.is_file()]


def test_no_secret_in_the_logs_or_terraform_state(
    stack: StackSettings, champion: str, prefect_client: SyncPrefectClient
) -> None:
    """After a full CT → CD delivery (`champion`), so the flow runs and the model services have logged."""
    secrets = _secret_values(stack)
    files = _stack_files(stack)
    assert any(p.name == "mlflow-server.log" for p in files) and any(p.name == "terraform.tfstate" for p in files)
    leaks = [str(path) for path in files for value in secrets if value in path.read_text(errors="replace")]
    logs = list(_flow_run_logs(prefect_client))
    assert logs, "the delivery's flow runs logged nothing"
    leaks += [f"flow-run log: {message[:80]}" for message in logs for value in secrets if value in message]
    assert not leaks, f"secret values found in: {leaks}"
