"""Production history from the decision tags CD writes: order, served periods, reasons."""

from __future__ import annotations

import pytest

from mlops import render
from mlops.domain.history import production_history

pytestmark = pytest.mark.unit


def _promoted(at: str, **more: str) -> dict[str, str]:
    return {"deployment": "promoted", "deployment_at": at, **more}


def test_each_promotion_serves_until_the_next_one_and_the_champion_serves_now():
    versions = [
        ("1", _promoted("2026-01-01T00:00:00+00:00")),
        (
            "2",
            {
                "deployment": "rejected",
                "deployment_at": "2026-01-02T00:00:00+00:00",
                "rejected": "load test: p99 300 vs 200",
            },
        ),
        ("3", _promoted("2026-01-03T00:00:00+00:00", approval="approved", approval_by="alice")),
        ("4", {"data_window": "2013-01-01..2013-02-01"}),  # registered, not decided yet: not history
        (
            "5",
            {
                "deployment": "rolled_back",
                "deployment_at": "2026-01-04T00:00:00+00:00",
                "rolled_back": "alias move failed",
            },
        ),
    ]
    changes = production_history(versions, champion="3")

    assert [(c.version, c.decision) for c in changes] == [
        ("1", "promoted"),
        ("2", "rejected"),
        ("3", "promoted"),
        ("5", "rolled_back"),
    ]
    first, rejected, current, rolled_back = changes
    assert (first.served_from, first.served_until, first.serving) == (
        "2026-01-01T00:00:00+00:00",
        "2026-01-03T00:00:00+00:00",
        False,
    )
    assert (current.served_until, current.serving, current.why) == (None, True, "gates passed; approved by alice")
    assert rejected.why == "load test: p99 300 vs 200" and rejected.served_from is None
    assert rolled_back.why == "alias move failed"

    rows = render.history_rows(changes)
    assert rows[0]["version"] == "v5" and rows[-1]["version"] == "v1"  # newest first
    assert [r["served production"] for r in rows if r["decision"] == "promoted"] == [
        "2026-01-03T00:00:00+00:00 → now",
        "2026-01-01T00:00:00+00:00 → 2026-01-03T00:00:00+00:00",
    ]
    assert rows[1]["version"] == "v3 (serving)"


def test_decisions_recorded_before_their_time_was_come_first_in_version_order():
    changes = production_history(
        [
            ("2", {"deployment": "promoted"}),
            ("1", {"deployment": "promoted"}),
            ("3", _promoted("2026-01-03T00:00:00+00:00")),
        ],
        champion="3",
    )
    assert [c.version for c in changes] == ["1", "2", "3"]
    assert changes[0].served_until is None and not changes[0].serving  # when it stopped serving is unknown
    assert render.history_rows(changes)[-1]["served production"] == "? → ?"


def test_a_rollback_by_hand_ends_the_bad_versions_period_and_serves_the_old_one_again():
    versions = [
        (
            "1",
            _promoted("2026-01-01T00:00:00+00:00", restored_at="2026-01-05T00:00:00+00:00", restored="by bob: errors"),
        ),
        (
            "2",
            _promoted(
                "2026-01-03T00:00:00+00:00", rolled_back_at="2026-01-05T00:00:00+00:00", rolled_back="by bob: errors"
            ),
        ),
    ]
    changes = production_history(versions, champion="1")

    assert [(c.version, c.decision) for c in changes] == [("1", "promoted"), ("2", "promoted"), ("1", "restored")]
    first, bad, back = changes
    assert (first.served_until, first.serving) == ("2026-01-03T00:00:00+00:00", False)
    assert (bad.served_from, bad.served_until, bad.serving) == (
        "2026-01-03T00:00:00+00:00",
        "2026-01-05T00:00:00+00:00",
        False,
    )
    assert bad.why == "gates passed; rolled back by hand at 2026-01-05T00:00:00+00:00: by bob: errors"
    assert (back.served_from, back.served_until, back.serving) == ("2026-01-05T00:00:00+00:00", None, True)
    assert back.why == "back in production by hand: by bob: errors"
    rows = render.history_rows(changes)
    assert (rows[0]["version"], rows[0]["served production"]) == ("v1 (serving)", "2026-01-05T00:00:00+00:00 → now")
    assert rows[-1]["version"] == "v1"  # its first period is no longer the serving one


def test_a_rollback_by_hand_is_told_on_the_period_it_ended():
    """v1 promoted, v2 promoted, back to v1 by hand, then forward to v2 by hand: v1's second period was ended."""
    t = [f"2026-01-0{d}T00:00:00+00:00" for d in range(1, 5)]
    versions = [
        (
            "1",
            _promoted(
                t[0], restored_at=t[2], restored="by bob: errors", rolled_back_at=t[3], rolled_back="by bob: fixed"
            ),
        ),
        (
            "2",
            _promoted(
                t[1], rolled_back_at=t[2], rolled_back="by bob: errors", restored_at=t[3], restored="by bob: fixed"
            ),
        ),
    ]
    changes = production_history(versions, champion="2")
    assert [(c.version, c.decision, c.served_from, c.served_until, c.serving) for c in changes] == [
        ("1", "promoted", t[0], t[1], False),
        ("2", "promoted", t[1], t[2], False),
        ("1", "restored", t[2], t[3], False),
        ("2", "restored", t[3], None, True),
    ]
    assert [c.why for c in changes] == [
        "gates passed",
        f"gates passed; rolled back by hand at {t[2]}: by bob: errors",
        f"back in production by hand: by bob: errors; rolled back by hand at {t[3]}: by bob: fixed",
        "back in production by hand: by bob: fixed",
    ]
