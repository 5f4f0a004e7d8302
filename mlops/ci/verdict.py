"""Which CI checks run, and CI's verdicts: every check and every step in it is a `Check`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args

from mlops.domain.checks import Check, failures
from mlops.domain.record import Record
from mlops.usercode import USECASES

CheckName = Literal["unit", "integration", "data", "model", "infra"]  # `model` also checks the champion in the flow
CHECKS: tuple[CheckName, ...] = get_args(CheckName)
TEST_SUITES = ("unit", "integration", "data", "model")  # pytest markers; `e2e` needs its own stack


class CIFailed(RuntimeError):
    """Raised at the end of a CI run, after every check ran and the summary was published."""


class Summary(Record):
    """The CI verdict on one commit: each check with its duration (`seconds`) and its summary (`detail`)."""

    sha: str
    passed: bool
    seconds: float
    checks: list[Check]

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]


def select_checks(checks: Sequence[str] | None) -> list[CheckName]:
    """The checks to run, in CI order; None means all of them. Unknown names raise with the known ones."""
    if checks is None:
        return list(CHECKS)
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown CI checks {unknown}; choose from {list(CHECKS)}")
    if not checks:
        raise ValueError(f"no CI checks selected; choose from {list(CHECKS)}")
    return [c for c in CHECKS if c in checks]


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line, cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def steps_result(name: str, steps: Sequence[Check], seconds: float, subject: str = "") -> Check:
    """A check made of steps passes when it has steps and none failed; its detail names the failing ones."""
    failed = failures(steps)
    detail = (f"{subject}: " if subject else "") + f"{len(steps) - len(failed)}/{len(steps)} passed"
    if failed:
        detail += "; failing: " + "; ".join(failed)
    return Check(name=name, passed=bool(steps) and not failed, seconds=seconds, detail=one_line(detail, 1500))


def summarize(sha: str, checks: Iterable[Check]) -> Summary:
    """The CI verdict: passed when at least one check ran and every one passed."""
    checks = list(checks)
    return Summary(
        sha=sha,
        passed=bool(checks) and all(c.passed for c in checks),
        seconds=round(sum(c.seconds or 0.0 for c in checks), 1),
        checks=checks,
    )


def summary_json(summary: Summary) -> dict[str, Any]:
    """The summary as the event and the flow's result carry it: each check's name, passed, seconds and summary."""
    checks = [
        {"name": c.name, "passed": c.passed, "seconds": c.seconds or 0.0, "summary": c.detail} for c in summary.checks
    ]
    return {"sha": summary.sha, "passed": summary.passed, "seconds": summary.seconds, "checks": checks}


def event_payload(summary: Summary, use_case: str | None = None) -> dict[str, Any]:
    """The `mlops.ci.passed` payload: the sha, the summary, and the use case it retrains (the retrain trigger's
    `use_case`: a folder's name, None for the stack's default file)."""
    return {"sha": summary.sha, "use_case": use_case, "summary": summary_json(summary)}


# Changes that retrain nothing: documentation, benchmarks, the platform's own tests.
NOT_TRAINED = ("docs/", "bench/", "tests/", ".ci/")


def use_cases_to_retrain(changed: Iterable[str], stack: Sequence[str]) -> list[str]:
    """Which of the stack's use cases (`stack`: their Config.name) a commit's changed paths retrain.

    A change in a use case's folder (`usecases/<name>/...`) retrains that use case; a change to the shared
    code (the library, the flows, the dependencies, `usecases/__init__.py`) retrains every one; documentation,
    benchmarks and the platform's tests retrain nothing.
    """
    retrain: set[str] = set()
    for path in changed:
        parts = path.split("/")
        if parts[0] == USECASES and len(parts) > 2:
            retrain |= {parts[1]} & set(stack)
        elif not (path.startswith(NOT_TRAINED) or (len(parts) == 1 and path.endswith(".md"))):
            return sorted(stack)
    return sorted(retrain)
