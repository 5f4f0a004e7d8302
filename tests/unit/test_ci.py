"""CI's pure parts: JUnit parsing, pytest commands and environments, verdicts, summaries; the hook installer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.models.signature import ModelSignature
from mlflow.types import Schema, TensorSpec

from mlops import ci, render, waiting
from mlops.ci import infra_check, model_check
from mlops.domain.checks import Check
from mlops.platform import hooks

pytestmark = pytest.mark.unit

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="7" time="3.250">
<testcase classname="tests.data.test_flights_data" name="test_join" time="1.500" />
<testcase classname="tests.data.test_flights_data" name="test_contract[7]" time="0.700">
  <failure message="AssertionError: temp: nulls in a non-nullable column&#10;assert [...] == []">long traceback</failure>
</testcase>
<testcase classname="tests.data.test_flights_data" name="test_skipped" time="0.000"><skipped type="pytest.skip" message="no data" /></testcase>
<testcase classname="tests.data.test_flights_data" name="test_xfail" time="0.000"><skipped type="pytest.xfail" message="" /></testcase>
<testcase classname="tests.data.test_flights_data" name="test_setup" time="0.010">
  <error message="failed on setup with &quot;RuntimeError: boom&quot;">trace</error>
</testcase>
<testcase classname="tests.data.test_flights_data.TestSplit" name="test_disjoint" time="0.900" />
<testcase classname="tests.data.test_flights_data" name="test_fast" time="0.001" />
</testsuite></testsuites>
"""


def test_junit_counts_every_outcome():
    report = ci.parse_junit(JUNIT)

    assert (report.passed, report.failed, report.skipped, report.errors) == (3, 1, 2, 1)
    assert report.total == 7 and report.seconds == 3.25 and not report.ok
    assert report.counts() == "3 passed, 1 failed, 2 skipped, 1 errors"


def test_junit_names_failures_with_their_message_on_one_line():
    failures = ci.parse_junit(JUNIT).failures

    assert [(f.name, f.outcome) for f in failures] == [
        ("tests.data.test_flights_data::test_contract[7]", "failed"),
        ("tests.data.test_flights_data::test_setup", "error"),
    ]
    assert failures[0].message == "AssertionError: temp: nulls in a non-nullable column assert [...] == []"
    assert failures[1].message == 'failed on setup with "RuntimeError: boom"'


def test_junit_slowest_are_sorted_and_leave_out_skips():
    slowest = ci.parse_junit(JUNIT, slowest=3).slowest

    assert [c.name.split("::")[1] for c in slowest] == ["test_join", "test_disjoint", "test_contract[7]"]
    assert slowest[1].name == "tests.data.test_flights_data.TestSplit::test_disjoint"


def test_junit_with_a_single_testsuite_root_a_message_in_the_text_and_a_failure_before_a_teardown_error():
    xml = """<testsuite name="pytest" time="0.5">
    <testcase classname="m" name="t1" time="0.2"><failure>E   assert 1 == 2\nm.py:3: AssertionError</failure><error message="teardown"/></testcase>
    <testcase classname="m" name="t2" time="0.1"/></testsuite>"""

    report = ci.parse_junit(xml)

    assert (report.passed, report.failed, report.errors, report.seconds) == (1, 1, 0, 0.5)
    assert report.failures[0].message == "m.py:3: AssertionError"


def test_report_rows_list_failures_first_then_the_slowest_others():
    rows = render.suite_rows(ci.parse_junit(JUNIT, slowest=2))

    assert [(r["test"].split("::")[1], r["outcome"]) for r in rows] == [
        ("test_contract[7]", "failed"),
        ("test_setup", "error"),
        ("test_join", "passed (slowest)"),
        ("test_disjoint", "passed (slowest)"),
    ]
    assert rows[0]["message"].startswith("AssertionError")


@pytest.mark.parametrize(
    ("returncode", "xml", "passed", "says"),
    [
        (0, '<testsuite><testcase classname="m" name="t"/></testsuite>', True, "1 passed, 0 failed"),
        (
            1,
            JUNIT,
            False,
            "failing: tests.data.test_flights_data::test_contract[7], tests.data.test_flights_data::test_setup",
        ),
        (5, "<testsuite/>", False, "no tests selected by marker 'data'"),
        (3, '<testsuite><testcase classname="m" name="t"/></testsuite>', False, "pytest exited 3"),
        (2, None, False, "pytest exited 2 without a report: ERROR collecting"),
    ],
)
def test_suite_verdicts(returncode, xml, passed, says):
    report = ci.parse_junit(xml) if xml else None

    result = ci.suite_result("data", returncode, report, "ERROR collecting tests/data", 1.5)

    assert (result.name, result.passed, result.seconds) == ("data tests", passed, 1.5)
    assert says in result.detail


def test_pytest_command_runs_this_interpreter_by_marker_into_a_junit_file(tmp_path):
    command = ci.pytest_command("data", tmp_path / "data.xml", extra=["--rootdir", "/repo"])

    assert command[:3] == [sys.executable, "-m", "pytest"]
    assert command[command.index("-m", 3) + 1] == "data"
    assert f"--junitxml={tmp_path / 'data.xml'}" in command
    assert "no:cacheprovider" in command and command[-2:] == ["--rootdir", "/repo"]


def test_the_e2e_suite_cannot_run_inside_ci(tmp_path):
    with pytest.raises(ValueError, match="e2e"):
        ci.pytest_command("e2e", tmp_path / "e2e.xml")


def test_suite_env_imports_the_checkout_and_forgets_the_stack(tmp_path):
    base = {
        "PATH": "/bin",
        "PREFECT_API_URL": "http://127.0.0.1:4200/api",
        "MLOPS_CONFIG": "/x.yaml",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "PYTHONPATH": "/elsewhere",
        "MLOPS_STATE_DIR": "/s",
    }

    env = ci.suite_env(base, tmp_path / "repo", tmp_path / "sandbox")

    assert env["PATH"] == "/bin" and env["PYTHONPATH"] == str(tmp_path / "repo")
    assert "PREFECT_API_URL" not in env and "MLOPS_CONFIG" not in env
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'sandbox' / 'mlflow.db'}"
    assert env["MLOPS_STATE_DIR"] == str(tmp_path / "sandbox" / "state")
    assert env["PREFECT_HOME"] == str(tmp_path / "sandbox" / "prefect")


@pytest.mark.parametrize(
    ("asked", "selected"),
    [
        (None, ["unit", "integration", "data", "model", "infra"]),
        (["infra", "data"], ["data", "infra"]),
        (["model"], ["model"]),
    ],
)
def test_checks_run_in_ci_order(asked, selected):
    assert ci.select_checks(asked) == selected


@pytest.mark.parametrize("asked", [["data", "e2e"], ["lint"], []])
def test_unknown_or_no_checks_are_refused(asked):
    with pytest.raises(ValueError, match="choose from"):
        ci.select_checks(asked)


def _check(name: str, passed: bool, seconds: float = 1.0) -> Check:
    return Check(name=name, passed=passed, seconds=seconds, detail="3 passed" if passed else "1 failed | x")


def test_the_summary_passes_only_when_every_check_passed():
    good = ci.summarize("abc123", [_check("data tests", True, 2.0), _check("infrastructure", True, 0.5)])
    bad = ci.summarize("abc123", [_check("data tests", False), _check("infrastructure", True)])

    assert good.passed and good.seconds == 2.5 and good.failed == []
    assert not bad.passed and bad.failed == ["data tests"]
    assert not ci.summarize("abc123", []).passed


def test_summary_markdown_lists_each_check_result_and_duration():
    markdown = render.ci_summary_markdown(
        ci.summarize("abc123", [_check("data tests", False, 9.87), _check("infrastructure", True)])
    )

    assert markdown.startswith("# CI FAILED: data tests")
    assert "| data tests | **FAIL** | 9.9 s | 1 failed / x |" in markdown
    assert "| infrastructure | pass | 1.0 s | 3 passed |" in markdown
    assert "No event" in markdown


def test_the_event_payload_carries_the_sha_and_the_summary():
    payload = ci.event_payload(ci.summarize("abc123", [_check("data tests", True)]))

    assert payload["sha"] == "abc123"
    assert payload["summary"]["passed"] is True
    assert payload["summary"]["checks"][0] == {
        "name": "data tests",
        "passed": True,
        "seconds": 1.0,
        "summary": "3 passed",
    }
    assert payload["summary"] == {
        "sha": "abc123",
        "passed": True,
        "seconds": 1.0,
        "checks": payload["summary"]["checks"],
    }


def test_steps_result_names_the_failing_steps():
    steps = [
        Check(name="fmt -check", passed=True, detail="formatted"),
        Check(name="validate service", passed=False, detail="Error: Unsupported argument"),
    ]

    result = ci.steps_result("infrastructure", steps, 1.2)

    assert not result.passed and result.seconds == 1.2
    assert result.detail == "1/2 passed; failing: validate service: Error: Unsupported argument"
    assert not ci.steps_result("infrastructure", [], 0.0).passed


def test_a_failing_measured_step_shows_what_was_observed_and_required():
    steps = [Check(name="floor roc_auc", passed=False, observed=0.61, required=0.7, detail=">= gates.floors.roc_auc")]

    result = ci.steps_result("model check", steps, 3.0, subject="champion v2")

    assert (
        result.detail
        == "champion v2: 0/1 passed; failing: floor roc_auc: 0.61 vs required 0.7; >= gates.floors.roc_auc"
    )


def test_terraform_tests_get_a_private_run_dir(tmp_path):
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text('serve_command = "sh -c \'sleep 300\'"\nrun_dir       = "/tmp/shared"\n')

    infra_check._private_run_dir(tfvars, tmp_path / "run")

    assert tfvars.read_text() == f'serve_command = "sh -c \'sleep 300\'"\nrun_dir = "{tmp_path / "run"}"\n'


def test_terraform_checks_validate_every_configuration_and_test_those_with_tests(tmp_path, monkeypatch):
    infra_dir = tmp_path / "infra"
    for path, text in {
        "service/main.tf": 'terraform {\n  backend "local" {}\n}\n',
        "service/env/staging.tfvars": 'environment = "staging"\n',
        "service/tests/plan.tftest.hcl": 'run "plans" {\n  command = plan\n}\n',
        "service/tests/terraform.tfvars": 'run_dir = "/tmp/shared"\n',
        "modules/helper/main.tf": "locals {}\n",
        "docs/README.md": "no Terraform here\n",
    }.items():
        (infra_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (infra_dir / path).write_text(text)
    calls = []
    report = "Success! 8 passed, 0 failed."
    monkeypatch.setattr(infra_check.infra, "fmt_check", lambda directory: [])
    monkeypatch.setattr(infra_check.infra, "validate", lambda directory: calls.append(("validate", directory)))
    monkeypatch.setattr(infra_check.infra, "test", lambda directory: calls.append(("test", directory)) or report)
    workdir = tmp_path / "work"

    steps = infra_check.terraform_checks(infra_dir, workdir)

    assert [(step.name, step.passed, step.detail) for step in steps] == [
        ("fmt -check", True, "formatted"),
        ("validate modules/helper", True, "valid"),
        ("validate service", True, "valid"),
        ("test service", True, "8 passed, 0 failed"),
    ]
    copy = workdir / "infra"
    assert calls == [
        ("validate", copy / "modules" / "helper"),
        ("validate", copy / "service"),
        ("test", copy / "service"),
    ]
    # The copy's run_dir is this run's; the repository's file is left as it is.
    assert (
        copy / "service" / "tests" / "terraform.tfvars"
    ).read_text() == f'run_dir = "{workdir / "tftest-run" / "service"}"\n'
    assert (infra_dir / "service" / "tests" / "terraform.tfvars").read_text() == 'run_dir = "/tmp/shared"\n'


@pytest.mark.parametrize(
    ("outputs", "problem"),
    [
        (np.array([[0.2, 0.8], [0.5, 0.5]]), None),
        (np.array([[0.2, 0.9], [0.5, 0.5]]), "do not sum to 1"),
        (np.array([[-0.1, 1.1], [0.5, 0.5]]), "outside [0, 1]"),
        (np.array([0.2, 0.5]), "expected (2, n_classes)"),
    ],
)
def test_class_probabilities_are_checked_without_a_signature(outputs, problem, flights_config):
    found = model_check._shape_problems(outputs, 2, flights_config)

    assert found == [] if problem is None else problem in found[0]


@pytest.mark.parametrize(
    ("outputs", "problem"),
    [
        (np.array([[0.2, 0.8]]), None),
        (np.array([[0.2, 0.3, 0.5]]), "output shape (1, 3)"),
        (np.array([[0.2, 0.8]], dtype=np.float32).astype(np.int64), "output dtype int64"),
    ],
)
def test_outputs_are_checked_against_a_tensor_signature(outputs, problem):
    schema = ModelSignature(inputs=None, outputs=Schema([TensorSpec(np.dtype("float64"), (-1, 2))])).outputs

    found = model_check._output_problems(outputs, schema)

    assert found == [] if problem is None else problem in found[0]


def test_latency_is_the_median_of_timed_calls_after_a_warm_up():
    calls = []

    def predict(frame):  # 2 ms of work
        calls.append(len(frame))
        until = time.perf_counter() + 0.002
        while time.perf_counter() < until:
            pass

    latency = ci.measure_latency(predict, pd.DataFrame({"a": range(10)}), rows=4, repeats=5)

    assert calls == [4] * 6  # one warm-up, then five timed
    assert (latency.rows, latency.repeats) == (4, 5)
    assert 0.0 < latency.median_ms <= latency.p95_ms
    assert latency.rows_per_s == pytest.approx(4 / (latency.median_ms / 1000), rel=0.01)


SUITE = """
import signal

import pytest

pytestmark = pytest.mark.smoke


def test_ok():
    pass


def test_bad():
    assert 1 == 2, "one is not two"


@pytest.mark.slow
def test_hangs():
    signal.pause()  # until the suite's timeout stops the process
"""


@pytest.fixture
def suite_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "suite"
    repo.mkdir()
    (repo / "pytest.ini").write_text("[pytest]\nmarkers =\n    smoke: a tiny suite\n    slow: hangs\n")
    (repo / "test_suite.py").write_text(SUITE)
    return repo


def test_a_suite_runs_by_marker_into_a_junit_report_and_a_log(suite_repo: Path, tmp_path: Path):
    junit_xml = tmp_path / "reports" / "smoke.xml"
    env = ci.suite_env(os.environ, suite_repo, tmp_path / "sandbox")

    returncode, output = ci.run_suite(suite_repo, "smoke and not slow", junit_xml, env)

    report = ci.parse_junit(junit_xml.read_bytes())
    assert returncode == 1 and "1 failed, 1 passed" in output
    assert (report.passed, report.failed) == (1, 1)
    assert report.failures[0].name == "test_suite::test_bad" and "one is not two" in report.failures[0].message
    assert junit_xml.with_suffix(".log").read_text().endswith(output[-200:])


def test_a_suite_past_its_timeout_is_stopped(suite_repo: Path, tmp_path: Path):
    returncode, output = ci.run_suite(
        suite_repo, "slow", tmp_path / "slow.xml", ci.suite_env(os.environ, suite_repo, tmp_path), timeout_s=3
    )

    # Stopped, not finished: the 60 s test never reported (a suite that ran out its sleep would pass it).
    assert returncode == -1 and output.startswith("timed out after 3 s")
    assert "1 passed" not in output and not (tmp_path / "slow.xml").exists()


# --- the commit under test ---


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("first\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-qm", "first")
    return repo


def test_checkout_holds_the_commit_not_the_working_tree(repo: Path, tmp_path: Path):
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "a.txt").write_text("second\n")
    _git(repo, "commit", "-qam", "second")
    (repo / "a.txt").write_text("uncommitted\n")

    older = ci.checkout(repo, first[:8], tmp_path / "old")
    head = ci.checkout(repo, None, tmp_path / "head")

    assert older.sha == first and (older.path / "a.txt").read_text() == "first\n"
    assert head.sha == _git(repo, "rev-parse", "HEAD") and (head.path / "a.txt").read_text() == "second\n"
    assert (repo / "a.txt").read_text() == "uncommitted\n"


def test_checkout_refuses_what_is_not_a_commit(repo: Path, tmp_path: Path):
    with pytest.raises(ci.CheckoutError, match="not a git checkout"):
        ci.checkout(tmp_path, None, tmp_path / "x")
    with pytest.raises(ci.CheckoutError, match="rev-parse"):
        ci.checkout(repo, "no-such-revision", tmp_path / "x")


# --- the post-commit hook installer ---


@pytest.mark.parametrize(
    ("hook", "appendable"),
    [
        ("#!/bin/sh\necho hi\n", True),
        ("#!/usr/bin/env bash\n# nothing yet\n", True),
        ("#!/bin/sh\nrun-linters\nexit 0\n", False),
        ('#!/bin/sh\nexec other-hook "$@"\n# done\n', False),
        ("#!/usr/bin/env python3\nprint('hi')\n", False),
        ("echo no shebang\n", False),
    ],
)
def test_a_line_is_appended_only_where_it_would_run(hook, appendable):
    assert hooks.can_append(hook) is appendable


def test_install_is_idempotent(repo: Path, tmp_path: Path):
    first = hooks.install(repo, bin_dir=tmp_path / "bin")
    again = hooks.install(repo, bin_dir=tmp_path / "bin")
    moved = hooks.install(repo, bin_dir=tmp_path / "other-bin")

    hook = repo / ".git" / "hooks" / "post-commit"
    assert (first.action, again.action, moved.action) == ("installed", "unchanged", "updated")
    assert hook.stat().st_mode & 0o111
    assert f'mlops_bin="{tmp_path / "other-bin"}"' in hook.read_text()
    assert subprocess.run(["sh", "-n", str(hook)]).returncode == 0


def test_a_foreign_shell_hook_is_kept_and_calls_ours(repo: Path, tmp_path: Path):
    hook = repo / ".git" / "hooks" / "post-commit"
    hook.write_text("#!/bin/sh\necho theirs\n")
    hook.chmod(0o755)

    first = hooks.install(repo, bin_dir=tmp_path)
    again = hooks.install(repo, bin_dir=tmp_path)

    assert (first.action, again.action) == ("appended", "unchanged")
    assert hook.read_text() == f"#!/bin/sh\necho theirs\n\n{hooks.CALL}\n"
    assert hooks.MARKER in (hook.parent / hooks.OURS).read_text()


def test_a_foreign_hook_that_exits_is_left_alone(repo: Path, tmp_path: Path):
    hook = repo / ".git" / "hooks" / "post-commit"
    hook.write_text("#!/bin/sh\necho theirs\nexit 0\n")

    with pytest.raises(hooks.HookError, match="not ours") as refused:
        hooks.install(repo, bin_dir=tmp_path)

    assert hook.read_text() == "#!/bin/sh\necho theirs\nexit 0\n"
    assert hooks.CALL in str(refused.value) and hooks.MARKER in (hook.parent / hooks.OURS).read_text()


def test_the_hook_never_blocks_and_logs_when_the_stack_is_down(repo: Path, tmp_path: Path):
    hooks.install(repo, bin_dir=Path(sys.executable).parent)
    state = tmp_path / "state"
    state.mkdir()
    (state / "env").write_text("export PREFECT_API_URL=http://127.0.0.1:9/api\n")  # discard port: nothing answers

    (repo / "a.txt").write_text("changed\n")
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "change"],
        cwd=repo,
        check=True,
        env={**_env_without_state(), "MLOPS_STATE_DIR": str(state)},
    )

    sha = _git(repo, "rev-parse", "HEAD")
    log = state / "logs" / "post-commit.log"
    assert _wait_for(lambda: log.exists() and "not up" in log.read_text()), log
    assert f"{sha}: CI not started: the stack is not up (no answer from http://127.0.0.1:9/api)" in log.read_text()


def _env_without_state() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MLOPS_STATE_DIR", "PREFECT_API_URL", "MLOPS_CI_CHECKS")}


def _wait_for(condition, timeout: float = 20.0) -> bool:
    return waiting.holds(condition, timeout=timeout, interval=0.1)
