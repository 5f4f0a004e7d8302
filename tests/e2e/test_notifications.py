"""The notification automations `mlops up` applies: present with a webhook URL, gone without one, the URL kept secret.

What they send is tested where it happens: a rejection in test_delivery_automation.py.
"""

from __future__ import annotations

import pytest

from mlops.config import NOTIFICATION_EVENTS, WEBHOOK_URL_ENV, Notifications, load_config
from mlops.platform import notifications

pytestmark = pytest.mark.e2e

NAMES = [notifications.automation_name(event) for event in NOTIFICATION_EVENTS]


def _present(prefect_client) -> dict[str, int]:
    return {name: len(prefect_client.read_automations_by_name(name)) for name in NAMES}


def test_without_a_url_nothing_is_left_to_send_and_with_one_each_event_has_one_automation(
    stack, prefect_client, notification_receiver, monkeypatch
):
    assert _present(prefect_client) == dict.fromkeys(NAMES, 1)  # `up` applied them: the e2e config names the receiver
    block = prefect_client.read_block_document_by_name(
        notifications.BLOCK_NAME, "custom-webhook", include_secrets=False
    )
    assert notification_receiver.url not in str(block.data), "the webhook URL is a secret: the API must not show it"

    monkeypatch.delenv(WEBHOOK_URL_ENV, raising=False)
    try:
        outcome = notifications.ensure_notifications(stack, Notifications())
        assert outcome == f"off (no webhook URL; {len(NAMES)} removed)", outcome
        assert _present(prefect_client) == dict.fromkeys(NAMES, 0)
        only = Notifications(webhook_url=notification_receiver.url, events=["cd_rejected"])
        notifications.ensure_notifications(stack, only)
        assert _present(prefect_client) == {name: int(name == "notify-cd-rejected") for name in NAMES}
    finally:  # the session's stack as `up` left it
        notifications.ensure_notifications(stack, load_config().notifications)
    assert _present(prefect_client) == dict.fromkeys(NAMES, 1)  # applied twice: still one each
