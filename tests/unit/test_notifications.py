"""The notification automations (deployments/notifications.yaml): one per event, valid for Prefect, and their messages.

The messages are rendered with the Prefect server's own template environment and filters, on the
payloads our flows emit; delivery to a real receiver is tested on the e2e stack
(tests/e2e/test_delivery_automation.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlops.config import NOTIFICATION_EVENTS, Notifications
from mlops.platform import notifications

pytestmark = pytest.mark.unit

BLOCK = "0b7c4bd4-9a3c-4c1d-9a43-5bd1a2c4e0f1"


def _render(template: str, context: dict) -> str:
    """As the Prefect server renders it; the stack's server has PREFECT_UI_URL set (mlops.platform.parts)."""
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.utilities.user_templates import register_user_template_filters, render_user_template_sync
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    register_user_template_filters(all_filters)
    with temporary_settings(updates={PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        return render_user_template_sync(template, context)


def _flow_run(**fields):
    from prefect.server.schemas.core import FlowRun

    return FlowRun(flow_id="5d2e0f6e-6a43-4bd5-9c7e-0c2a5f1c1e11", **fields)


def test_every_event_has_one_valid_automation_with_the_placeholders_filled() -> None:
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore

    found = notifications.load_notifications(BLOCK, "http://127.0.0.1:5000/", list(NOTIFICATION_EVENTS))
    assert [a["name"] for a in found] == [f"notify-{e.replace('_', '-')}" for e in NOTIFICATION_EVENTS]
    for raw in found:
        automation = AutomationCore.model_validate(raw)
        [action] = automation.actions
        assert isinstance(action, SendNotification) and str(action.block_document_id) == BLOCK
        assert "$" not in action.subject + action.body, raw["name"]
        assert automation.trigger.threshold == 1  # one event, one message


def test_a_rejection_names_the_model_version_reason_and_links() -> None:
    [raw] = notifications.load_notifications(BLOCK, "http://127.0.0.1:5000", ["cd_rejected"])
    [action] = raw["actions"]
    run = _flow_run(name="cd-flights-delay-v7")
    event = SimpleNamespace(payload={"name": "flights-delay", "version": "7", "reason": "floor roc_auc 0.50 < 0.60"})
    subject = _render(action["subject"], {"event": event, "flow_run": run})
    body = _render(action["body"], {"event": event, "flow_run": run})
    assert subject == "CD rejected flights-delay v7"
    assert "Why: floor roc_auc 0.50 < 0.60" in body
    assert "http://127.0.0.1:5000/#/models/flights-delay/versions/7" in body
    assert f"CD run: http://127.0.0.1:4200/runs/flow-run/{run.id}" in body


def test_a_drift_message_gives_the_share_and_columns() -> None:
    [raw] = notifications.load_notifications(BLOCK, "http://127.0.0.1:5000", ["drift_detected"])
    [action] = raw["actions"]
    event = SimpleNamespace(
        payload={
            "dataset": "flights",
            "window": "2013-07-01..2013-08-01",
            "drift_share": 0.5263,
            "drifted_columns": ["temp", "dewp"],
            "report": "runs:/abc/drift.html",
            "champion_version": "1",
        }
    )
    context = {"event": event, "flow_run": _flow_run(name="drift-2013-08")}
    assert _render(action["subject"], context) == "Drift in flights: 52.6% of columns"
    body = _render(action["body"], context)
    assert "Drifted: temp, dewp" in body and "v1" in body and "runs:/abc/drift.html" in body


def test_a_failed_ct_run_says_why() -> None:
    from prefect.server.schemas.states import Failed

    [raw] = notifications.load_notifications(BLOCK, "http://127.0.0.1:5000", ["ct_failed"])
    [action] = raw["actions"]
    run = _flow_run(
        name="ct-2013-08",
        state=Failed(message="validation: 2 rules broken (dep_delay: not null)"),
        parameters={"as_of": "2013-08-01"},
    )
    assert _render(action["subject"], {"flow_run": run}) == "CT failed: ct-2013-08"
    assert "Why: validation: 2 rules broken (dep_delay: not null)" in _render(action["body"], {"flow_run": run})


def test_the_url_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Notifications(webhook_url="https://example.invalid/from-config")
    monkeypatch.delenv("MLOPS_WEBHOOK_URL", raising=False)
    assert settings.url() == "https://example.invalid/from-config" and Notifications().url() is None
    monkeypatch.setenv("MLOPS_WEBHOOK_URL", "https://hooks.example.invalid/secret")
    assert settings.url() == "https://hooks.example.invalid/secret"
