"""Notifications: Prefect automations that post CD rejections, rollbacks, CT failures and drift to a webhook.

The automations live in deployments/notifications.yaml; Prefect's server renders their Jinja and
sends through a notification block, so a message goes out even when the flow that caused it died.
`ensure_notifications` (called by `mlops up`) saves the URL in a "custom-webhook" block that posts
Slack-compatible JSON (`{"text": subject + body}`; Slack, Mattermost, Rocket.Chat and Teams'
incoming webhooks take it), fills the file's placeholders and applies one automation per selected
event. Without a URL it removes them: nothing is sent.

Prefect is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any

from mlops.config import NOTIFICATION_EVENTS, Notifications
from mlops.config.stack import StackSettings
from mlops.platform import automations

NOTIFICATIONS_FILE = Path(__file__).resolve().parents[2] / "deployments" / "notifications.yaml"
BLOCK_NAME = "mlops-notifications"
SLACK_JSON = {"text": "*{{subject}}*\n{{body}}"}  # the block's own placeholders: subject, body, name, secrets


def automation_name(event: str) -> str:
    """notify-cd-rejected for cd_rejected, and so on: the name in deployments/notifications.yaml."""
    return "notify-" + event.replace("_", "-")


def load_notifications(
    block_id: str, mlflow_url: str, events: list[str], path: Path = NOTIFICATIONS_FILE
) -> list[dict[str, Any]]:
    """The automations for `events`, with `${block}` and `${mlflow_url}` filled in (Jinja's `{{ }}` left to Prefect)."""
    values = {"block": block_id, "mlflow_url": mlflow_url.rstrip("/")}

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return Template(value).substitute(values)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return [fill(automations.load_automation(path, automation_name(event))) for event in events]


def ensure_notifications(s: StackSettings, settings: Notifications) -> str:
    """Apply the notification automations for `settings.events` to the stack's Prefect API, or remove them
    all when no URL is configured (or an event is no longer selected). Returns a line for `up`'s log; the URL
    itself is never printed (a Slack URL is a secret)."""
    url = settings.url()
    with automations.stack_client(s) as client:
        wanted = list(settings.events) if url else []
        removed = sum(automations.remove(client, automation_name(e)) for e in NOTIFICATION_EVENTS if e not in wanted)
        if not url:
            return f"off (no webhook URL; {removed} removed)" if removed else "off (no webhook URL)"
        block_id = _save_block(url)
        for automation in load_notifications(block_id, s.mlflow_uri, wanted):
            automations.apply(client, automation)
        return f"{', '.join(wanted)} → webhook (block {BLOCK_NAME})"


def _save_block(url: str) -> str:
    """The webhook block (created or overwritten), its URL kept as a block secret; returns its document id.
    Saved with the current Prefect settings (inside `stack_client`: the stack's API)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.types import SecretDict

    block = CustomWebhookNotificationBlock(
        name=BLOCK_NAME,
        url="{{url}}",
        method="POST",
        json_data=SLACK_JSON,
        secrets=SecretDict({"url": url}),
        timeout=10,
        headers=None,  # the block's defaults, given: mypy does not see a positional Field(None) as a default
        cookies=None,
    )
    return str(block.save(BLOCK_NAME, overwrite=True))
