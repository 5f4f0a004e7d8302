"""Continuous integration's artifacts: test suites, prediction latency and the CI summary."""

from __future__ import annotations

from typing import Any

from mlops.render.common import table, verdict

# CI's results are platform types (mlops.ci), so they come in as Any, named in the docstrings.


def suite_rows(report: Any) -> list[dict[str, Any]]:
    """A test suite's table (a `TestReport`): every failure with its message, then the slowest other tests."""
    rows = [
        {"test": c.name, "outcome": c.outcome, "seconds": round(c.seconds, 3), "message": c.message}
        for c in report.failures
    ]
    failing = {c.name for c in report.failures}
    rows += [
        {"test": c.name, "outcome": f"{c.outcome} (slowest)", "seconds": round(c.seconds, 3), "message": ""}
        for c in report.slowest
        if c.name not in failing
    ]
    return rows


def suite_output_markdown(marker: str, output: str) -> str:
    """A test suite that left no JUnit report: the tail of pytest's output."""
    return f"# {marker} tests: no report\n\n```\n{output[-3000:]}\n```\n"


def latency_rows(latency: dict[str, Any]) -> list[dict[str, Any]]:
    """In-process prediction time per batch size (a `Latency` each), as rows of a table artifact."""
    return [{"batch": batch, **found.model_dump()} for batch, found in latency.items()]


def ci_summary_markdown(summary: Any) -> str:
    """A CI run (a `Summary`): the verdict, whether `mlops.ci.passed` was emitted, each check with its duration."""
    outcome = "PASSED" if summary.passed else "FAILED: " + ", ".join(summary.failed)
    then = (
        "`mlops.ci.passed` emitted: continuous training starts for this commit."
        if summary.passed
        else "No event: nothing is trained."
    )
    rows = [
        (c.name, verdict(c.passed), f"{c.seconds or 0.0:.1f} s", c.detail.replace("|", "/")) for c in summary.checks
    ]
    return (
        f"# CI {outcome}\n\ncommit `{summary.sha}`, {len(summary.checks)} checks in {summary.seconds:.1f} s. {then}\n\n"
        f"{table(['check', 'result', 'duration', 'details'], rows)}\n"
    )
