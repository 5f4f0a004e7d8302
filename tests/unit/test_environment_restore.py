"""What `mlops up` brings each environment back on, and how `mlops down` recognises a service started before
processes owned them (a bare pid in its pid file)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlops import processes, waiting
from mlops.adapters.environment_restore import Restore, restore_target, serving_as_applied

pytestmark = pytest.mark.unit

NAME = "flights-delay"


def served(version: str, name: str = NAME) -> dict[str, str]:
    """An environment's `service_outputs` serving `name` v`version`."""
    return {
        "endpoint": "http://127.0.0.1:5102",
        "model_version": version,
        "model_uri": f"models:/{name}/{version}",
        "pid_file": "/tmp/x.pid",
        "log_file": "/tmp/x.log",
        "environment": "production",
    }


@pytest.mark.parametrize(
    ("environment", "outputs", "champion", "expected"),
    [
        ("staging", served("4"), "3", Restore("staging", NAME, "4")),  # staging keeps its state, whatever the alias
        ("staging", {}, "3", None),
        ("production", served("3"), "3", Restore("production", NAME, "3")),
        ("production", {}, None, None),
    ],
)
def test_an_environment_comes_back_as_its_state_says(environment, outputs, champion, expected) -> None:
    assert restore_target(environment, outputs, NAME, champion) == expected


@pytest.mark.parametrize(
    ("outputs", "said"),
    [(served("2"), f"{NAME} v2"), ({}, "nothing"), (served("3", name="other-model"), "other-model v3")],
)
def test_production_follows_the_champion_alias_and_says_so(outputs, said) -> None:
    restore = restore_target("production", outputs, NAME, "3")
    assert (restore.environment, restore.model_name, restore.version) == ("production", NAME, "3")
    assert restore.reason == f"its state says {said}, alias champion says v3: the alias wins"


def test_production_without_a_champion_keeps_its_state_and_says_so() -> None:
    restore = restore_target("production", served("2"), NAME, None)
    assert (restore.version, restore.reason) == ("2", f"no champion alias on {NAME}: kept as the state says")


def test_an_unknown_environment_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown environment 'qa'"):
        restore_target("qa", served("1"), NAME, "1")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A stand-in service started as Terraform's shell used to: its own session, a bare pid written just after."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    # /proc/<pid>/cmdline can read empty for a moment after Popen returns on a busy machine (seen under
    # xdist): wait, bounded, until the stand-in shows its command line, as a real service long has.
    waiting.holds(lambda: psutil.Process(proc.pid).cmdline() == ["sleep", "60"], timeout=10, interval=0.01)
    pid_file = tmp_path / "model-service-staging.pid"
    pid_file.write_text(f"{proc.pid}\n")
    try:
        yield proc.pid, pid_file
    finally:
        proc.kill()
        proc.wait()


def test_the_service_a_bare_pid_names_is_recognised_and_stopped(service: tuple[int, Path]) -> None:
    pid, pid_file = service
    record = processes.running(pid_file)
    assert record is not None and record.pid == pid and record.command == ["sleep", "60"]

    assert processes.stop(pid_file, timeout=5)

    assert not processes.alive_pids([pid]) and not pid_file.exists()


def test_a_pid_written_long_after_the_process_started_is_not_ours(service: tuple[int, Path]) -> None:
    pid, pid_file = service
    later = time.time() + 3600  # as if the pid had been recycled by a process older than the file
    os.utime(pid_file, (later, later))
    assert processes.read_pid_file(pid_file) is None
    assert not processes.stop(pid_file) and processes.alive_pids([pid]) == {pid}  # left alone


def test_a_process_started_after_its_pid_file_was_written_is_not_ours(service: tuple[int, Path]) -> None:
    pid, pid_file = service
    earlier = psutil.Process(pid).create_time() - 60  # the pid recycled after the service it named exited
    os.utime(pid_file, (earlier, earlier))
    assert processes.read_pid_file(pid_file) is None


@pytest.mark.parametrize("content", ["", "not a pid", "999999999", "0", "-1"])
def test_a_pid_file_naming_no_live_service_is_none(tmp_path: Path, content: str) -> None:
    pid_file = tmp_path / "model-service-production.pid"
    pid_file.write_text(content)
    assert processes.read_pid_file(pid_file) is None
    assert processes.read_pid_file(tmp_path / "missing.pid") is None


def test_a_process_that_does_not_lead_its_group_is_not_ours(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])  # in pytest's group, as no setsid'ed service is
    try:
        pid_file = tmp_path / "model-service-production.pid"
        pid_file.write_text(str(proc.pid))
        assert processes.read_pid_file(pid_file) is None
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def pinging() -> Iterator[str]:
    """An endpoint whose /ping answers 200, as a model service's does."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Ping(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ping" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_up_leaves_terraform_out_only_for_a_service_applied_with_the_same_variables_that_answers(tmp_path, pinging):
    variables = {"environment": "production", "model_version": "3", "port": 5102, "workers": 1, "shadow_model_uri": ""}
    state = tmp_path / "terraform.tfstate"

    def applied(values: dict, endpoint: str = pinging) -> Path:
        values = {{"shadow_model_uri": "shadow_uri"}.get(k, k): v for k, v in values.items()}  # as the root's input
        resource = {"mode": "managed", "type": "terraform_data", "name": "service",
                    "instances": [{"attributes": {"input": {"value": values}}}]}  # fmt: skip
        state.write_text(
            json.dumps({"resources": [resource], "outputs": {"service": {"value": {"endpoint": endpoint}}}})
        )
        return state

    assert serving_as_applied(applied({**variables, "host": "127.0.0.1"}), variables) == pinging
    assert serving_as_applied(applied({**variables, "model_version": "2"}), variables) is None  # a change: plan it
    assert serving_as_applied(applied({**variables, "shadow_model_uri": "models:/m/4"}), variables) is None
    assert serving_as_applied(applied(variables, "http://127.0.0.1:9"), variables) is None  # not answering
    state.write_text("{not json")
    assert serving_as_applied(state, variables) is None
    assert serving_as_applied(tmp_path / "missing.tfstate", variables) is None
