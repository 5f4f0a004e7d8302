"""The zombie-run automation file: what Prefect's schema makes of it, and the window override."""

from datetime import timedelta
from pathlib import Path

import pytest

from mlops.platform import zombies

pytestmark = pytest.mark.unit


def test_the_file_is_prefects_documented_zombie_automation() -> None:
    from prefect.client.schemas.objects import StateType
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    automation = AutomationCore.model_validate(zombies.load_automation())
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger) and trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Completed",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Cancelled",
        "prefect.flow-run.Crashed",
    } <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.within == timedelta(seconds=90)
    assert trigger.within > timedelta(seconds=2 * zombies.HEARTBEAT_SECONDS)  # a late heartbeat is no zombie
    [action] = automation.actions
    assert action.type == "change-flow-run-state" and action.state == StateType.CRASHED


def test_within_overrides_the_window_only() -> None:
    base, short = zombies.load_automation(), zombies.load_automation(within=45)
    assert short["trigger"]["within"] == 45 and base["trigger"]["within"] == 90
    assert {k: v for k, v in short["trigger"].items() if k != "within"} == {
        k: v for k, v in base["trigger"].items() if k != "within"
    }
    with pytest.raises(ValueError, match="at least 10 s"):
        zombies.load_automation(within=5)


def test_an_unknown_name_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "automations.yaml"
    path.write_text("name: other\ntrigger: {}\nactions: []\n")
    with pytest.raises(ValueError, match="found 0"):
        zombies.load_automation(path)


def test_importing_the_module_does_not_import_prefect() -> None:
    import subprocess
    import sys

    code = "import sys, mlops.platform.zombies; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
