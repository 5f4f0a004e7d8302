"""Many use cases on one stack: each its own ports, state, locks and events; a commit retrains what it changed."""

from __future__ import annotations

import json
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deployments.mlflow_events import registered_event
from mlops import ci
from mlops.adapters import environments
from mlops.config import (
    DEFAULT_CONFIG,
    USE_CASE_LABEL,
    config_for_model,
    config_named,
    load_config,
    stack_use_cases,
    use_cases,
)
from mlops.platform import locks
from tests.conftest import write_config

pytestmark = pytest.mark.unit


@pytest.fixture
def two(tmp_path: Path) -> tuple:
    """The flights and diabetes configs, both asking for the default ports 5101/5102, on one state dir."""
    flights, diabetes = load_config(use_case="flights"), load_config(use_case="diabetes")
    assert flights.serving.staging_port == diabetes.serving.staging_port
    return flights, diabetes, tmp_path


def test_the_first_use_case_gets_its_configured_port_the_next_one_the_next_free_and_both_are_kept(two, monkeypatch):
    flights, diabetes, state = two
    # Whatever listens on 5101..5104 on this machine, the ports below are the ones found free in order.
    monkeypatch.setattr(environments, "_free", lambda host, port: True)
    assert environments.service_port(flights, "staging", state) == 5101
    assert environments.service_port(diabetes, "staging", state) == 5102  # 5101 is flights'
    assert environments.service_port(flights, "production", state) == 5103  # its config says 5102: diabetes has it
    assert environments.service_port(diabetes, "staging", state) == 5102  # recorded: the same every time
    assert environments.recorded_ports(state) == {
        "flights/staging": 5101,
        "diabetes/staging": 5102,
        "flights/production": 5103,
    }


def test_a_taken_port_is_given_around_what_listens_and_a_config_edit_applies(two):
    flights, diabetes, state = two

    def on(config, port):
        return config.model_copy(update={"serving": config.serving.model_copy(update={"staging_port": port})})

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert environments.service_port(on(flights, port - 1), "staging", state) == port - 1
        got = environments.service_port(on(diabetes, port - 1), "staging", state)  # flights has it; `port` listens
    assert got > port
    # The team moves flights' staging: the record follows the config, and the old port is free for others.
    assert environments.service_port(on(flights, port + 500), "staging", state) == port + 500
    assert environments.recorded_ports(state)["flights/staging"] == port + 500


def test_concurrent_deliveries_of_many_use_cases_never_get_one_port_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(environments, "_free", lambda host, port: True)
    base = load_config(use_case="diabetes")
    configs = []
    for i in range(12):
        config = base.model_copy(update={"dataset": base.dataset.model_copy(update={"name": f"uc{i}"})})
        config._use_case = None  # named by its dataset, as a config outside usecases/ is
        configs.append(config)
    with ThreadPoolExecutor(6) as pool:
        ports = list(pool.map(lambda c: environments.service_port(c, "production", tmp_path), configs))
    assert len(set(ports)) == 12 and set(environments.recorded_ports(tmp_path).values()) == set(ports)


def test_each_use_case_has_its_own_state_services_dir_and_locks(two):
    flights, diabetes, state = two
    assert environments.work_dir(flights, "staging", state) == state / "terraform" / "flights" / "staging"
    assert environments.work_dir(diabetes, "staging", state) == state / "terraform" / "diabetes" / "staging"
    variables = environments.service_variables(diabetes, "production", "diabetes-progression", "2", state_dir=state)
    assert variables["run_dir"] == str(state / "services" / "diabetes")
    assert locks.use_case_locks("diabetes") == [
        "mlops-environment-diabetes-staging",
        "mlops-environment-diabetes-production",
    ]
    assert set(locks.use_case_locks("flights")).isdisjoint(locks.use_case_locks("diabetes"))


def test_a_one_use_case_state_moves_under_the_default_use_case_keeping_its_port(tmp_path):
    old = tmp_path / "terraform" / "production"
    old.mkdir(parents=True)
    state = {"outputs": {"service": {"value": {"endpoint": "http://127.0.0.1:5102", "model_version": "4"}}}}
    (old / "terraform.tfstate").write_text(json.dumps(state))

    assert environments.adopt_single_use_case_layout(tmp_path, "flights") == ["production"]
    assert not old.exists()
    assert (tmp_path / "terraform" / "flights" / "production" / "terraform.tfstate").exists()
    assert environments.applied_use_cases(tmp_path) == ["flights"]
    assert environments.recorded_ports(tmp_path) == {"flights/production": 5102}
    assert environments.adopt_single_use_case_layout(tmp_path, "flights") == []  # once


def test_a_model_is_found_in_the_use_case_that_registers_it():
    assert config_for_model("diabetes-progression").use_case == "diabetes"
    assert config_for_model(None).name == load_config().name
    assert config_for_model("nobody-registers-this") is None
    assert config_named("returns").tracking.model_name == "returns"
    with pytest.raises(ValueError, match="no use case named 'nope'"):
        config_named("nope")


def test_the_stack_runs_every_folder_or_only_the_file_mlops_config_names(tmp_path, monkeypatch):
    assert stack_use_cases() == use_cases() and {"flights", "diabetes", "returns"} <= set(use_cases())
    elsewhere = write_config(DEFAULT_CONFIG, tmp_path, {})
    monkeypatch.setenv("MLOPS_CONFIG", str(elsewhere))
    assert stack_use_cases() == ["nycflights13"]  # named by its dataset: it is no folder's
    assert config_named("nycflights13").tracking.model_name == "flights-delay"


def test_a_registration_names_its_use_case_from_the_version_tag():
    body = {
        "entity": "model_version",
        "action": "created",
        "data": {"name": "returns", "version": "2", "tags": {"use_case": "returns", "git_commit": "abc"}},
    }
    event = registered_event(body)
    assert event["resource"][USE_CASE_LABEL] == "returns" and event["payload"]["use_case"] == "returns"
    by_hand = registered_event({**body, "data": {"name": "returns", "version": "3"}})
    assert USE_CASE_LABEL not in by_hand["resource"] and by_hand["payload"]["use_case"] is None


@pytest.mark.parametrize(
    ("changed", "retrained"),
    [
        (["usecases/returns/model.py"], ["returns"]),
        (["usecases/returns/model.py", "usecases/diabetes/mlops.yaml"], ["diabetes", "returns"]),
        (["usecases/returns/tests/test_model.py", "README.md", "docs/benchmarks.md"], ["returns"]),
        (["mlops/domain/modeling.py"], ["diabetes", "flights", "returns"]),  # the shared library
        (["usecases/__init__.py"], ["diabetes", "flights", "returns"]),
        (["pyproject.toml", "usecases/returns/model.py"], ["diabetes", "flights", "returns"]),
        (["docs/architecture.md", "tests/unit/test_ci.py", "bench/serving.py"], []),
        (["usecases/someone_elses/model.py"], []),  # not a use case this stack runs
    ],
)
def test_a_commit_retrains_the_use_cases_whose_folder_or_the_shared_code_changed(changed, retrained):
    assert ci.use_cases_to_retrain(changed, ["diabetes", "flights", "returns"]) == retrained


def test_the_paths_a_commit_changed_come_from_git_including_a_first_commit(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "--quiet")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "usecases" / "returns").mkdir(parents=True)
    (tmp_path / "usecases" / "returns" / "model.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("hi\n")
    git("add", ".")
    git("commit", "--quiet", "-m", "first")
    first = ci.Checkout(sha=git("rev-parse", "HEAD"), path=tmp_path, source=tmp_path)
    assert ci.changed_paths(first) == ["README.md", "usecases/returns/model.py"]
    (tmp_path / "usecases" / "returns" / "model.py").write_text("x = 2\n")
    git("commit", "--quiet", "-am", "second")
    second = ci.Checkout(sha=git("rev-parse", "HEAD"), path=tmp_path, source=tmp_path)
    assert ci.changed_paths(second) == ["usecases/returns/model.py"]


def test_a_configured_port_something_else_listens_on_is_not_taken_by_a_new_use_case(two):
    flights, _, state = two
    with socket.socket() as foreign:  # a process of somebody else's on the port mlops.yaml names
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        config = flights.model_copy(update={"serving": flights.serving.model_copy(update={"production_port": port})})
        got = environments.service_port(config, "production", state)
        assert got > port
        assert environments.service_port(config, "production", state) == got  # kept, not retried each time
