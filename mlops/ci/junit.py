"""A pytest suite's JUnit XML report, read by element, and the suite's verdict."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Literal

from mlops.ci.verdict import one_line
from mlops.domain.checks import Check
from mlops.domain.record import Record

Outcome = Literal["passed", "failed", "error", "skipped"]
# The child elements that mark a test case as not passed, in the order they outrank each other.
_MARKS: tuple[tuple[str, Outcome], ...] = (("failure", "failed"), ("error", "error"), ("skipped", "skipped"))


class TestCase(Record):
    __test__ = False  # not a pytest test class

    name: str  # <module path>[.<class>]::<test>[params]
    outcome: Outcome
    seconds: float
    message: str = ""


class TestReport(Record):
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


def parse_junit(xml: str | bytes, slowest: int = 5) -> TestReport:
    """Read a pytest JUnit XML report (a <testsuites> or a single <testsuite> root) by element, never by position."""
    root = ET.fromstring(xml)
    cases = [_case(element) for element in root.iter("testcase")]
    seconds = (
        sum(_seconds(s.get("time")) for s in root.iter("testsuite"))
        if root.tag == "testsuites"
        else _seconds(root.get("time"))
    )
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
    for tag, outcome in _MARKS:
        found = element.find(tag)
        if found is not None:
            lines = (found.text or "").strip().splitlines()
            message = found.get("message") or (lines[-1] if lines else "")
            return TestCase(name=full_name, outcome=outcome, seconds=seconds, message=one_line(message))
    return TestCase(name=full_name, outcome="passed", seconds=seconds)


def suite_result(marker: str, returncode: int, report: TestReport | None, output: str, seconds: float) -> Check:
    """A suite's verdict: passed only when pytest exited 0 and the report shows tests and no failure."""
    if report is None:
        reason = "no tests selected" if returncode == 5 else f"pytest exited {returncode} without a report"
        return Check(
            name=f"{marker} tests", passed=False, seconds=seconds, detail=f"{reason}: {one_line(output[-600:], 600)}"
        )
    detail = report.counts()
    if report.failures:
        detail += "; failing: " + ", ".join(c.name for c in report.failures[:10])
        detail += f" (+{len(report.failures) - 10} more)" if len(report.failures) > 10 else ""
    passed = returncode == 0 and report.ok and report.total > 0
    if returncode == 5 or report.total == 0:
        detail = f"no tests selected by marker {marker!r}"
    elif returncode != 0 and report.ok:
        detail += f"; pytest exited {returncode}: {one_line(output[-300:])}"
    return Check(name=f"{marker} tests", passed=passed, seconds=seconds, detail=detail)
