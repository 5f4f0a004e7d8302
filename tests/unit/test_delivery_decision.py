"""CD's decision from how its transaction ended (tasks/decision.py `judge`), and the run's final state."""

from __future__ import annotations

from contextlib import suppress

import pytest

from mlops.domain.checks import Check
from tasks.decision import judge
from tasks.gates import Gates, GatesFailed, ProductionBreached
from tasks.runs import run_name

pytestmark = pytest.mark.unit

PASS, FAIL = Check(name="contract", passed=True), Check(name="load test", passed=False, detail="p95 900 ms")


def staged(*checks: Check) -> Gates:
    """Gates that saw `checks` and were required (GatesFailed swallowed, as the transaction's end catches it)."""
    gates = Gates()
    gates.add(*checks)
    with suppress(GatesFailed):
        gates.require()
    return gates


def test_no_error_promotes_with_the_endpoint_and_the_gates() -> None:
    decision = judge(staged(PASS), None, "m", "3", "2", "http://p")
    assert (decision.status, decision.outcome, decision.message) == (
        "promoted",
        "promoted, serving at http://p",
        "promoted v3",
    )
    state = decision.state()
    assert state.is_completed() and state.name == "Completed"
    assert state.data == {"status": "promoted", "version": "3", "endpoint": "http://p", "gates": [PASS.model_dump()]}


@pytest.mark.parametrize(
    "champion, where", [("2", "rejected; staging back to v2"), (None, "rejected; staging destroyed (no champion yet)")]
)
def test_a_failed_gate_rejects_with_its_reason_and_ends_the_run_rejected(champion: str | None, where: str) -> None:
    gates = staged(PASS, FAIL)
    decision = judge(gates, GatesFailed(gates.checks), "m", "3", champion, None)
    assert (decision.status, decision.outcome, decision.reason) == ("rejected", where, "load test: p95 900 ms")
    state = decision.state()
    assert state.is_completed() and state.name == "Rejected" and state.message == "load test: p95 900 ms"
    assert state.data == {
        "status": "rejected",
        "version": "3",
        "reason": "load test: p95 900 ms",
        "gates": [PASS.model_dump(), FAIL.model_dump()],
    }
    assert "| load test | **FAIL** | p95 900 ms |" in decision.markdown()


def test_a_step_that_breaks_before_the_gates_passed_is_a_failed_staging_deployment() -> None:
    gates = Gates()
    gates.add(PASS)  # the contract passed, then the live-performance step raised
    decision = judge(gates, RuntimeError("service exited"), "m", "3", "2", None)
    assert decision.status == "rejected" and decision.reason == "staging deployment: RuntimeError: service exited"
    assert [g.name for g in decision.gates] == ["contract", "staging deployment"] and gates.checks == [PASS]


def test_a_step_that_breaks_after_the_gates_passed_rolls_back() -> None:
    gates = staged(PASS)
    with pytest.raises(ProductionBreached) as breach:
        gates.require_healthy(Check(name="production watch", passed=False, detail="error rate 100.00%"))
    decision = judge(gates, breach.value, "m", "3", None, "http://p")
    assert decision.status == "rolled_back" and decision.endpoint is None
    assert (
        decision.reason
        == "rolled back after the gates passed: ProductionBreached: production watch: error rate 100.00%"
    )
    assert decision.outcome == "rolled back; production back on nothing"
    assert [g.name for g in decision.gates] == ["contract", "production watch"]


@pytest.mark.parametrize(
    "prefix, parts, name",
    [
        ("cd", ("flights-delay", "v3"), "cd-flights-delay-v3"),
        ("ci", ("abc",), "ci-abc"),
        ("labels", ("demand",), "labels-demand"),
    ],
)
def test_run_names_join_their_parts(prefix: str, parts: tuple[str, ...], name: str) -> None:
    assert run_name(prefix, *parts) == name
