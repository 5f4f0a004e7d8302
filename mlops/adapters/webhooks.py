"""MLflow's registry webhook that fires CD: `model_version.created` → the stack's receiver (deployments/mlflow_events.py)."""

from __future__ import annotations

from typing import Any

WEBHOOK_NAME = "mlops-model-registered"


def ensure_webhook(client: Any, url: str, secret: str) -> str:
    """Register (or repoint) the MLflow webhook that calls the receiver at `url`, HMAC-signed with `secret`; its id."""
    for hook in client.list_webhooks():
        if hook.name == WEBHOOK_NAME:
            client.update_webhook(hook.webhook_id, url=url, secret=secret, status="ACTIVE")
            return hook.webhook_id
    return client.create_webhook(
        WEBHOOK_NAME,
        url,
        events=["model_version.created"],
        secret=secret,
        description="Fires continuous delivery for every new model version",
    ).webhook_id
