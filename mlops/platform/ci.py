"""Continuous integration checks: test suites by marker, Terraform, and the model. No Prefect here.

`tasks/ci.py` wraps these functions as tasks and `flows/continuous_integration.py` composes them.
CI tests a commit, not a working tree: `checkout` makes a private checkout of the commit, and each
pytest suite runs there as a subprocess of this interpreter, importing that checkout's code, in an
environment cut off from any local stack (its own MLflow file, Prefect home and state dir).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlops import data, infra, modeling, validation
from mlops.config import METRICS, Config
from mlops.evaluation import decide, evaluate, predict_outputs

Check = Literal["unit", "integration", "data", "model", "infra"]  # `model` also checks the champion in the flow
CHECKS: tuple[Check, ...] = get_args(Check)
TEST_SUITES = ("unit", "integration", "data", "model")  # pytest markers; `e2e` needs its own stack
SUITE_TIMEOUT_S = 3600.0
GIT_TIMEOUT_S = 120.0

# Settings that would point a suite at a running stack, a user's profile or another config:
# the suites must behave as they do in a fresh shell (`make test`), whoever starts CI.
_STACK_ENV = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_PROFILE",
    "PREFECT_PROFILES_PATH",
    "PREFECT_HOME",
    "PREFECT_UI_URL",
    "PREFECT_UI_API_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLOPS_CONFIG",
    "MLOPS_STATE_DIR",
    "MLOPS_PROJECT_ROOT",
    "MLOPS_PREFECT_PORT",
    "MLOPS_MLFLOW_PORT",
    "MLOPS_WORKER_PORT",
    "MLOPS_RECEIVER_PORT",
    "PYTHONPATH",
)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class CheckoutError(RuntimeError):
    """The commit to test could not be checked out; the message says why."""


class CIFailed(RuntimeError):
    """Raised at the end of a CI run, after every check ran and the summary was published."""


class Checkout(Frozen):
    """A private checkout of one commit, where the suites run."""

    sha: str
    path: Path
    source: Path  # the repository it was made from


class TestCase(Frozen):
    __test__ = False  # not a pytest test class

    name: str  # <module path>[.<class>]::<test>[params]
    outcome: Literal["passed", "failed", "error", "skipped"]
    seconds: float
    message: str = ""


class TestReport(Frozen):
    """What a JUnit XML report says: counts, the slowest tests, and every failure with its message."""

    __test__ = False

    passed: int
    failed: int
    skipped: int
    errors: int
    seconds: float
    slowest: list[TestCase]
    failures: list[TestCase]  # failed and errored tests, in report order

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped + self.errors

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0

    def counts(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped, {self.errors} errors"


class Step(Frozen):
    """One measured part of a check (a Terraform command, a model property), for its artifact."""

    name: str
    passed: bool
    observed: str = ""
    required: str = ""
    seconds: float = 0.0


class CheckResult(Frozen):
    """One CI check's verdict: what the summary artifact and the `mlops.ci.passed` payload list."""

    name: str
    passed: bool
    seconds: float
    summary: str


class Summary(Frozen):
    sha: str
    passed: bool
    seconds: float
    checks: list[CheckResult]

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]


def select_checks(checks: Sequence[str] | None) -> list[Check]:
    """The checks to run, in CI order; None means all of them. Unknown names raise with the known ones."""
    if checks is None:
        return list(CHECKS)
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown CI checks {unknown}; choose from {list(CHECKS)}")
    if not checks:
        raise ValueError(f"no CI checks selected; choose from {list(CHECKS)}")
    return [c for c in CHECKS if c in checks]


# --- the commit ---------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise CheckoutError(f"`git {' '.join(args)}` in {repo} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip()


def resolve_commit(repo: Path, sha: str | None) -> str:
    """The full sha of `sha` (any revision git understands) in `repo`; HEAD when None."""
    if not (Path(repo) / ".git").exists() and not _inside_work_tree(repo):
        raise CheckoutError(f"{repo} is not a git checkout: CI tests commits")
    return _git(repo, "rev-parse", "--verify", "--end-of-options", f"{sha or 'HEAD'}^{{commit}}")


def _inside_work_tree(repo: Path) -> bool:
    try:
        return _git(repo, "rev-parse", "--is-inside-work-tree") == "true"
    except (CheckoutError, OSError):
        return False


def checkout(repo: Path, sha: str | None, dest: Path) -> Checkout:
    """Check the commit out into `dest`, a fresh directory sharing `repo`'s objects.

    The checkout holds exactly what was committed: uncommitted edits in `repo` are not tested,
    and `repo` itself is never modified.
    """
    repo = Path(repo).resolve()
    full = resolve_commit(repo, sha)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _git(dest.parent, "clone", "--quiet", "--shared", "--no-checkout", str(repo), str(dest))
    _git(dest, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", full)
    return Checkout(sha=full, path=dest, source=repo)


# --- test suites ---------------------------------------------------------------------------------


def pytest_command(marker: str, junit_xml: Path, python: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """`python -m pytest -m <marker> --junitxml <file>`, with no cache written into the checkout."""
    if marker == "e2e":
        raise ValueError("the e2e suite starts its own stack and runs CI itself: it cannot run inside CI")
    return [
        python or sys.executable, "-m", "pytest", "-m", marker, f"--junitxml={junit_xml}",
        "-o", "junit_family=xunit2", "-p", "no:cacheprovider", "-q", *extra,
    ]  # fmt: skip


def suite_env(base: Mapping[str, str], repo: Path, sandbox: Path) -> dict[str, str]:
    """The environment of a suite run: the checkout's code first, no stack, private stores under `sandbox`."""
    env = {k: v for k, v in base.items() if k not in _STACK_ENV}
    env.update(
        PYTHONPATH=str(repo),  # the checkout's packages win over the installed (editable) project
        PREFECT_HOME=str(sandbox / "prefect"),
        MLFLOW_TRACKING_URI=f"sqlite:///{sandbox / 'mlflow.db'}",
        MLOPS_STATE_DIR=str(sandbox / "state"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def import_root(repo: Path, env: Mapping[str, str], package: str = "mlops", python: str | None = None) -> Path:
    """Where `package` is imported from when code runs in `repo` with `env` (it must be the checkout)."""
    code = f"import {package}, pathlib; print(pathlib.Path({package}.__file__).resolve().parent.parent)"
    proc = subprocess.run(
        [python or sys.executable, "-c", code], cwd=repo, env=dict(env), capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise CheckoutError(f"cannot import {package} in {repo}: {proc.stderr.strip()[-2000:]}")
    return Path(proc.stdout.strip())


def run_suite(repo: Path, marker: str, junit_xml: Path, env: Mapping[str, str], timeout_s: float = SUITE_TIMEOUT_S) -> tuple[int, str]:
    """Run one suite in `repo`; returns pytest's exit code (-1 on timeout) and the tail of its output.

    The whole output goes to `<junit_xml>.log`. The suite runs in its own session, so a timeout
    stops it together with every server its tests started.
    """
    junit_xml.parent.mkdir(parents=True, exist_ok=True)
    junit_xml.unlink(missing_ok=True)
    log_path = junit_xml.with_suffix(".log")
    command = pytest_command(marker, junit_xml, extra=["--rootdir", str(repo)])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=repo, env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = -1
    output = log_path.read_text(errors="replace")[-4000:]
    return returncode, (f"timed out after {timeout_s:.0f} s\n" if returncode == -1 else "") + output


def parse_junit(xml: str | bytes, slowest: int = 5) -> TestReport:
    """Read a pytest JUnit XML report (a <testsuites> or a single <testsuite> root) by element, never by position."""
    root = ET.fromstring(xml)
    cases = [_case(element) for element in root.iter("testcase")]
    seconds = sum(_seconds(s.get("time")) for s in root.iter("testsuite")) if root.tag == "testsuites" else _seconds(root.get("time"))
    by_outcome = {o: sum(1 for c in cases if c.outcome == o) for o in ("passed", "failed", "error", "skipped")}
    ran = [c for c in cases if c.outcome != "skipped"]
    return TestReport(
        passed=by_outcome["passed"],
        failed=by_outcome["failed"],
        skipped=by_outcome["skipped"],
        errors=by_outcome["error"],
        seconds=round(seconds or sum(c.seconds for c in cases), 3),
        slowest=sorted(ran, key=lambda c: c.seconds, reverse=True)[:slowest],
        failures=[c for c in cases if c.outcome in ("failed", "error")],
    )


def _seconds(text: str | None) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


def _case(element: ET.Element) -> TestCase:
    classname, name = element.get("classname", ""), element.get("name", "?")
    full_name, seconds = (f"{classname}::{name}" if classname else name), _seconds(element.get("time"))
    # A failure outranks a later teardown error on the same test; a skip is only a skip.
    for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        found = element.find(tag)
        if found is not None:
            lines = (found.text or "").strip().splitlines()
            message = found.get("message") or (lines[-1] if lines else "")
            return TestCase(name=full_name, outcome=outcome, seconds=seconds, message=_one_line(message))
    return TestCase(name=full_name, outcome="passed", seconds=seconds)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def suite_result(marker: str, returncode: int, report: TestReport | None, output: str, seconds: float) -> CheckResult:
    """A suite's verdict: passed only when pytest exited 0 and the report shows tests and no failure."""
    if report is None:
        reason = "no tests selected" if returncode == 5 else f"pytest exited {returncode} without a report"
        return CheckResult(name=f"{marker} tests", passed=False, seconds=seconds,
                           summary=f"{reason}: {_one_line(output[-600:], 600)}")
    summary = report.counts()
    if report.failures:
        summary += "; failing: " + ", ".join(c.name for c in report.failures[:10])
        summary += f" (+{len(report.failures) - 10} more)" if len(report.failures) > 10 else ""
    passed = returncode == 0 and report.ok and report.total > 0
    if returncode == 5 or report.total == 0:
        summary = f"no tests selected by marker {marker!r}"
    elif returncode != 0 and report.ok:
        summary += f"; pytest exited {returncode}: {_one_line(output[-300:])}"
    return CheckResult(name=f"{marker} tests", passed=passed, seconds=seconds, summary=summary)


def report_rows(report: TestReport) -> list[dict[str, Any]]:
    """The artifact table: every failure (with its message), then the slowest tests."""
    rows = [{"test": c.name, "outcome": c.outcome, "seconds": round(c.seconds, 3), "message": c.message} for c in report.failures]
    failing = {c.name for c in report.failures}
    rows += [
        {"test": c.name, "outcome": f"{c.outcome} (slowest)", "seconds": round(c.seconds, 3), "message": ""}
        for c in report.slowest
        if c.name not in failing
    ]
    return rows


# --- infrastructure ------------------------------------------------------------------------------


def terraform_checks(infra_dir: Path, workdir: Path) -> list[Step]:
    """`fmt -check` on infra/, `validate` for every environment and module, `terraform test` for every tested module.

    Terraform runs in a copy of `infra_dir` under `workdir`, so `.terraform/` never lands in the
    repository; a failing step does not stop the others.
    """
    copy = Path(workdir) / "infra"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(infra_dir, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfplan"))
    steps = [_step("fmt -check", lambda: _unformatted(copy))]
    for env_dir in sorted(p for p in (copy / "envs").glob("*") if p.is_dir()):
        steps.append(_step(f"validate envs/{env_dir.name}", lambda d=env_dir: infra.validate(d) or "valid"))
    for module in sorted({p.parent.parent for p in (copy / "modules").glob("*/tests/*.tftest.hcl")}):
        steps.append(_step(f"validate modules/{module.name}", lambda m=module: infra.validate(m) or "valid"))
        _private_run_dir(module / "tests" / "terraform.tfvars", Path(workdir) / "tftest-run" / module.name)
        steps.append(_step(f"test modules/{module.name}", lambda m=module: _test_report(infra.test(m))))
    return steps


def _unformatted(directory: Path) -> str:
    files = infra.fmt_check(directory)
    if files:
        raise ValueError("not formatted (run `mlops-terraform fmt -recursive infra`): "
                         + ", ".join(str(f.relative_to(directory)) for f in files))
    return "formatted"


def _test_report(output: str) -> str:
    found = re.search(r"(\d+) passed, (\d+) failed(?:, (\d+) skipped)?", output)
    return found.group(0) if found else _one_line(output[-200:])


def _private_run_dir(tfvars: Path, run_dir: Path) -> None:
    """Point a module test's `run_dir` at this run's directory, so two CI runs never share a pid file."""
    if tfvars.exists() and re.search(r"(?m)^run_dir\s*=", tfvars.read_text()):
        tfvars.write_text(re.sub(r'(?m)^run_dir\s*=.*$', f'run_dir = "{run_dir}"', tfvars.read_text()))


def _step(name: str, action: Callable[[], str]) -> Step:
    started = time.perf_counter()
    try:
        observed, passed = action(), True
    except Exception as exc:  # a Terraform or file error is this step's failure, not the check's end
        observed, passed = _one_line(f"{type(exc).__name__}: {exc}", 1000), False
    return Step(name=name, passed=passed, observed=observed, seconds=round(time.perf_counter() - started, 3))


def steps_result(name: str, steps: Sequence[Step], seconds: float, subject: str = "") -> CheckResult:
    """A check made of steps passes when it has steps and none failed; the summary names the failing ones."""
    failed = [s for s in steps if not s.passed]
    summary = (f"{subject}: " if subject else "") + f"{len(steps) - len(failed)}/{len(steps)} passed"
    if failed:
        summary += "; failing: " + "; ".join(f"{s.name}: {s.observed}" for s in failed)
    return CheckResult(name=name, passed=bool(steps) and not failed, seconds=seconds, summary=_one_line(summary, 1500))


# --- the model -----------------------------------------------------------------------------------


class Latency(Frozen):
    """Prediction time for one batch size, in process, over several repeats."""

    rows: int
    repeats: int
    median_ms: float
    p95_ms: float
    rows_per_s: float  # rows / median time


def one_month_split(full: pd.DataFrame, config: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test rows of one month ending at `window.as_of` (the latest month by default); all rows without a time column."""
    bounds = data.window_bounds(full, config.dataset.time_column, config.window.as_of, 1)
    window = data.select_columns(data.cut_window(full, config.dataset.time_column, bounds), config)
    return validation.split_frame(window, config)


def fit_small_model(train: pd.DataFrame, config: Config) -> Any:
    """A model trained the way CT trains it (first candidate of the grid), for when there is no champion."""
    X, y = modeling.features_and_target(train, config)
    preprocessor = modeling.build_preprocessor(config).fit(X)
    estimator = modeling.fit_estimator(config, modeling.candidate_grid(config)[0], preprocessor.transform(X), y)
    return modeling.assemble_model(preprocessor, estimator)


def measure_latency(predict: Callable[[pd.DataFrame], Any], X: pd.DataFrame, rows: int, repeats: int) -> Latency:
    """Time `predict` on `rows`-row batches taken in turn from `X` (one warm-up call first)."""
    rows = min(rows, len(X))
    batches = [X.iloc[(i * rows) % max(1, len(X) - rows + 1):][:rows] for i in range(repeats + 1)]
    predict(batches[0])
    times = []
    for batch in batches[1:]:
        started = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return Latency(rows=rows, repeats=repeats, median_ms=round(median * 1000, 3),
                   p95_ms=round(float(np.percentile(times, 95)) * 1000, 3), rows_per_s=round(rows / median, 1))


def schema_problems(X: pd.DataFrame, outputs: np.ndarray, config: Config, signature: Any | None) -> list[str]:
    """How the model's inputs and outputs differ from its MLflow signature; with no signature, from the task's shape."""
    problems = []
    if signature is not None and signature.inputs is not None:
        declared = signature.inputs.input_names()
        missing, extra = sorted(set(config.dataset.features) - set(declared)), sorted(set(declared) - set(config.dataset.features))
        if missing or extra:
            problems.append(f"signature inputs differ from the config's features: missing {missing}, extra {extra}")
        else:
            from mlflow.models import validate_schema

            try:  # as the service sees a request: numeric columns arrive as doubles
                validate_schema(X.astype({c: "float64" for c in config.dataset.numeric}), signature.inputs)
            except Exception as exc:  # MlflowException names the column and the type
                problems.append(f"inputs break the signature: {_one_line(str(exc))}")
    if signature is not None and signature.outputs is not None:
        problems += _output_problems(outputs, signature.outputs)
    problems += _shape_problems(outputs, len(X), config)
    return problems


def _output_problems(outputs: np.ndarray, schema: Any) -> list[str]:
    if schema.is_tensor_spec():
        spec = schema.inputs[0]
        shape = tuple(spec.shape)
        if len(shape) != outputs.ndim or any(want not in (-1, got) for want, got in zip(shape, outputs.shape)):
            return [f"output shape {outputs.shape} does not match the signature's {shape}"]
        if spec.type.kind != outputs.dtype.kind:
            return [f"output dtype {outputs.dtype} does not match the signature's {spec.type}"]
        return []
    width = 1 if outputs.ndim == 1 else outputs.shape[1]
    if len(schema.inputs) != width:
        return [f"{width} output columns, the signature declares {len(schema.inputs)}"]
    return []


def _shape_problems(outputs: np.ndarray, rows: int, config: Config) -> list[str]:
    if config.task == "regression":
        if outputs.shape != (rows,):
            return [f"regression output shape {outputs.shape}, expected ({rows},)"]
        return [] if np.isfinite(outputs).all() else ["non-finite predictions"]
    if outputs.ndim != 2 or outputs.shape[0] != rows or outputs.shape[1] < 2:
        return [f"class-probability output shape {outputs.shape}, expected ({rows}, n_classes)"]
    if not (np.isfinite(outputs).all() and (outputs >= 0).all() and (outputs <= 1).all()):
        return ["probabilities outside [0, 1]"]
    if not np.allclose(outputs.sum(axis=1), 1.0, atol=1e-6):
        return ["class probabilities do not sum to 1"]
    return []


def model_checks(
    model: Any,
    test: pd.DataFrame,
    config: Config,
    signature: Any | None = None,
    repeats: tuple[int, int] = (30, 10),
) -> tuple[list[Step], dict[str, Latency]]:
    """The model on a holdout: gate floors, schema, determinism, and in-process latency vs the SLO.

    Args:
        model: A fitted pipeline (features + estimator) as CT registers it.
        test: Holdout rows with the target.
        config: Floors come from `gates.floors`, the latency bound from `slo.p95_ms`.
        signature: The registered version's MLflow signature; None for a model never logged.
        repeats: How many timed calls for 1-row and for 1,000-row batches.

    Returns:
        The steps (each with observed and required values) and the latency per batch size.
    """
    X, _ = modeling.features_and_target(test, config)
    classes = getattr(model, "classes_", None)
    directions = METRICS[config.task]
    steps: list[Step] = []

    started = time.perf_counter()
    outputs = predict_outputs(model, X, config.task)
    decision = decide(evaluate(test, outputs, classes, config), None, config)
    seconds = round(time.perf_counter() - started, 3)
    for check in decision.checks:
        bound = ">=" if directions[check.name.split()[-1]] else "<="
        steps.append(Step(name=check.name, passed=check.passed, observed=_num(check.observed),
                          required=f"{bound} {_num(check.required)}", seconds=seconds))
    if not decision.checks:
        steps.append(Step(name="floors", passed=True, observed="no floors configured", required="gates.floors"))

    started = time.perf_counter()
    problems = schema_problems(X, outputs, config, signature)
    what = "MLflow signature" if signature is not None else f"{config.task} output shape"
    steps.append(Step(name="output schema", passed=not problems, observed="; ".join(problems) or f"{outputs.shape} matches",
                      required=what, seconds=round(time.perf_counter() - started, 3)))

    started = time.perf_counter()
    again = predict_outputs(model, X, config.task)
    same = again.shape == outputs.shape and bool(np.array_equal(again, outputs))
    steps.append(Step(name="deterministic predictions", passed=same, observed=f"{len(X)} rows " + ("identical" if same else "DIFFER"),
                      required="identical on the same input", seconds=round(time.perf_counter() - started, 3)))

    predict = lambda frame: predict_outputs(model, frame, config.task)  # noqa: E731
    latency = {
        "1 row": measure_latency(predict, X, 1, repeats[0]),
        "1000 rows": measure_latency(predict, X, 1000, repeats[1]),
    }
    # The median, not the tail, is compared: in-process timing on a shared machine has a noisy tail,
    # and a model whose typical single prediction already exceeds the p95 budget cannot meet it served.
    one = latency["1 row"]
    steps.append(Step(name="latency 1 row (median)", passed=one.median_ms <= config.slo.p95_ms,
                      observed=f"{one.median_ms:.2f} ms (p95 {one.p95_ms:.2f} ms, {one.repeats} calls)",
                      required=f"<= {config.slo.p95_ms:g} ms (slo.p95_ms)"))
    for label, found in latency.items():
        steps.append(Step(name=f"throughput {label}", passed=True, observed=f"{found.rows_per_s:,.0f} rows/s",
                          required=f"reported (slo.min_rps {config.slo.min_rps:g} req/s applies to the service)"))
    return steps, latency


def _num(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


# --- the summary ---------------------------------------------------------------------------------


def summarize(sha: str, checks: Iterable[CheckResult]) -> Summary:
    """The CI verdict: passed when at least one check ran and every one passed."""
    checks = list(checks)
    return Summary(sha=sha, passed=bool(checks) and all(c.passed for c in checks),
                   seconds=round(sum(c.seconds for c in checks), 1), checks=checks)


def summary_markdown(summary: Summary) -> str:
    verdict = "PASSED" if summary.passed else "FAILED: " + ", ".join(summary.failed)
    rows = "\n".join(
        f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.seconds:.1f} s | {c.summary.replace('|', '/')} |" for c in summary.checks
    )
    then = "`mlops.ci.passed` emitted: continuous training starts for this commit." if summary.passed else "No event: nothing is trained."
    return (
        f"# CI {verdict}\n\ncommit `{summary.sha}`, {len(summary.checks)} checks in {summary.seconds:.1f} s. {then}\n\n"
        f"| check | result | duration | details |\n|---|---|---|---|\n{rows}\n"
    )


def event_payload(summary: Summary) -> dict[str, Any]:
    """The `mlops.ci.passed` payload: the sha and the summary."""
    return {"sha": summary.sha, "summary": summary.model_dump(mode="json")}

