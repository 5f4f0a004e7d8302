"""The one wait helper: returns what the condition found, or fails naming what it waited for and what it saw."""

from __future__ import annotations

import itertools

import pytest

from mlops import waiting

pytestmark = pytest.mark.unit


def test_returns_the_first_truthy_answer():
    answers = iter([None, [], {"run": "done"}])
    assert waiting.wait_for(lambda: next(answers), timeout=5, what="a run", interval=0) == {"run": "done"}


def test_a_timeout_names_what_it_waited_for_and_the_state_it_saw():
    calls = itertools.count()
    with pytest.raises(
        waiting.TimedOut, match=r"CD of v3 finishing: not within 0 s .*last seen: Running after \d+ reads"
    ):
        waiting.wait_for(
            lambda: next(calls) < 0,
            timeout=0.05,
            what="CD of v3 finishing",
            interval=0.01,
            seen=lambda: f"Running after {next(calls)} reads",
        )


def test_a_dead_process_ends_the_wait_at_once_after_one_last_check():
    checks = []
    with pytest.raises(waiting.TimedOut, match="the server answering: what it waited on exited"):
        waiting.wait_for(lambda: checks.append(1), timeout=60, what="the server answering", still_alive=lambda: False)
    assert len(checks) == 2


def test_an_unreadable_state_does_not_hide_the_timeout():
    def broken() -> str:
        raise ConnectionError("server gone")

    with pytest.raises(waiting.TimedOut, match=r"last state unreadable \(ConnectionError: server gone\)"):
        waiting.wait_for(lambda: False, timeout=0, what="x", seen=broken)


def test_holds_is_the_boolean_form():
    assert waiting.holds(lambda: True, timeout=0)
    assert not waiting.holds(lambda: False, timeout=0.02, interval=0.01)
