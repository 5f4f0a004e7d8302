"""A flow run whose worker died is marked Crashed by Prefect's zombie detection, and the worker runs flows again.

The real stack: the flow-run process heartbeats (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, inherited from
the worker's environment), the worker and its flow run are SIGKILLed together, so nothing reports
the run's end, and the `crash-zombie-flow-runs` automation (deployments/automations.yaml) must
crash it once its heartbeats stop. `up` then restarts the worker and a run on it completes (a quick
reconciliation: another CT run would register a version and start a delivery after the test).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from uuid import UUID

import psutil
import pytest

from flows.reconciliation import RECONCILE_DEPLOYMENT
from mlops import processes, waiting
from mlops.platform import zombies
from mlops.platform.stack import parts, up
from tests.e2e.conftest import CT_DEPLOYMENT, explain, finished, settle

pytestmark = pytest.mark.e2e

HEARTBEAT = str(zombies.HEARTBEAT_SECONDS)  # 30 s, Prefect's minimum
WITHIN_S = 45  # the test's window: one and a half missed heartbeats (the stack's file says 90 s)
CRASH_TIMEOUT_S = WITHIN_S + 90  # the window, plus the triggers service's evaluation and some slack


def _log(message: str, started: float) -> None:
    print(f"  [zombie e2e +{time.monotonic() - started:5.1f} s] {message}", flush=True)


def _poll(stack, prefect_client, what: str, timeout: float, check):
    return waiting.wait_for(check, timeout=timeout, what=what, seen=lambda: explain(stack, prefect_client))


def _flow_run_processes(worker_pid: int) -> dict[str, psutil.Process]:
    """The worker's descendants that run flow runs, by flow-run id (the process worker starts one per run)."""
    found = {}
    for child in psutil.Process(worker_pid).children(recursive=True):
        try:
            run_id = child.environ().get("PREFECT__FLOW_RUN_ID")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if run_id:
            found.setdefault(run_id, child)
    return found


def _runs_under_worker(stack) -> list[str]:
    """The flow runs whose processes run under the stack's worker: killing the worker kills them too."""
    record = processes.running(parts(stack)["worker"].pid_file)
    return [] if record is None else sorted(_flow_run_processes(record.pid))


def _worker_env(stack) -> dict[str, str]:
    record = processes.running(parts(stack)["worker"].pid_file)
    assert record is not None, "the worker is not running"
    return psutil.Process(record.pid).environ()


def _heartbeats(prefect_client, flow_run_id: UUID) -> int:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    page = prefect_client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        ),
        limit=50,
    )  # the client's default, 100, is over the server's maximum
    return len(page.events)


@pytest.fixture
def zombie_automation(stack, prefect_client) -> Iterator[str]:
    """The zombie automation on the stack with the test's window; afterwards as the stack had it (or none)."""
    outcome = zombies.ensure_zombie_automation(stack, within=WITHIN_S)
    yield outcome
    if outcome.startswith("created"):  # `up` does not apply it (yet): leave the session's stack as it was
        for automation in prefect_client.read_automations_by_name(zombies.AUTOMATION_NAME):
            prefect_client.delete_automation(automation.id)
    else:
        zombies.ensure_zombie_automation(stack)  # back to the file's window


@pytest.fixture
def heartbeating_worker(stack, prefect_client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker runs with PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30: restarted with it when `up` did not set it."""
    monkeypatch.setenv(zombies.HEARTBEAT_ENV, HEARTBEAT)  # every part `up` starts inherits os.environ
    if _worker_env(stack).get(zombies.HEARTBEAT_ENV) == HEARTBEAT:
        return
    # Restarting the worker kills its flow runs: the stack is idle between tests (idle_stack_after).
    settle(stack, prefect_client, "before restarting the worker")
    assert processes.stop(parts(stack)["worker"].pid_file)
    assert up(stack) == 0, "mlops up could not restart the worker; its output is above"
    assert _worker_env(stack).get(zombies.HEARTBEAT_ENV) == HEARTBEAT


def test_a_run_whose_worker_died_is_crashed_by_its_missing_heartbeats_and_the_next_run_completes(
    stack, prefect_client, zombie_automation, heartbeating_worker
):
    from prefect.deployments import run_deployment

    started = time.monotonic()
    _log(f"automation {zombies.AUTOMATION_NAME}: {zombie_automation}, window {WITHIN_S} s", started)
    settle(stack, prefect_client, "before the worker is killed: no other run may die with it")

    # A long-ish CT run (six months of data), Running on the worker and heartbeating.
    run = run_deployment(
        CT_DEPLOYMENT, parameters={"as_of": "2013-07-01", "window_months": 6, "reason": "e2e-zombie"}, timeout=0
    )
    _poll(
        stack,
        prefect_client,
        "the CT run Running",
        120,
        lambda: prefect_client.read_flow_run(run.id).state.is_running(),
    )
    _log(f"flow run {run.id} Running", started)
    worker = processes.read_pid_file(stack.run_dir / "worker.pid")
    assert worker is not None
    flow_process = _poll(
        stack,
        prefect_client,
        "the flow run's process under the worker",
        30,
        lambda: _flow_run_processes(worker.pid).get(str(run.id)),
    )
    assert flow_process.environ().get(zombies.HEARTBEAT_ENV) == HEARTBEAT, (
        "the flow run did not inherit the worker's heartbeat setting"
    )
    _poll(stack, prefect_client, "a first heartbeat of the run", 45, lambda: _heartbeats(prefect_client, run.id))
    _log(f"first heartbeat received; flow-run process pid {flow_process.pid}", started)

    # The worker dies with its flow run: SIGKILL, the worker first so it reports nothing.
    victims = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    psutil.wait_procs(victims, timeout=10)
    processes.running(stack.run_dir / "worker.pid")  # reaps the worker (a child of this process)
    killed = time.monotonic()
    state = prefect_client.read_flow_run(run.id).state
    assert state.is_running(), f"the run ended before its worker was killed ({state.name}): make it longer"
    _log(f"worker {worker.pid} and {len(victims) - 1} descendant(s) SIGKILLed", started)

    # Nothing reports the run's end: only the automation can. Bounded poll, no fixed sleep.
    crashed = _poll(
        stack,
        prefect_client,
        "the zombie run Crashed by the automation",
        CRASH_TIMEOUT_S,
        lambda: (s := prefect_client.read_flow_run(run.id).state).is_final() and s,
    )
    _log(f"run {crashed.name} {time.monotonic() - killed:.1f} s after the kill: {crashed.message}", started)
    assert crashed.is_crashed(), f"{crashed.name}: {crashed.message}"
    assert time.monotonic() - killed >= WITHIN_S - 5, "crashed before its window passed: not by missing heartbeats?"

    # `up` restarts what died, and the worker runs flows again (a quick one: a reconciliation of nothing).
    step = time.monotonic()
    assert up(stack) == 0, "mlops up could not restart the worker; its output is above"
    _log(f"up restarted the worker in {time.monotonic() - step:.1f} s", started)
    again = run_deployment(RECONCILE_DEPLOYMENT, parameters={"min_age_seconds": 0}, timeout=0)
    state = finished(stack, again.id, "a run on the restarted worker").state
    assert state.is_completed(), f"the run after the crash: {state.name}: {state.message}"
    _log(f"next run {again.id} Completed", started)
