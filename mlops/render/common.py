"""The tables every artifact is made of, and the checks and data violations several stages show."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from mlops.domain.checks import Check
from mlops.domain.validation import Violation


def number(value: Any, digits: int = 4) -> str:
    """A figure for a table: floats rounded, NaN and None shown as such."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; `align` is one of `l`/`r` per column (default: left)."""
    marks = ["---:" if a == "r" else "---" for a in (align or "l" * len(header))]
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join(marks)}|"]
    lines += [f"| {' | '.join(str(cell) for cell in row)} |" for row in rows]
    return "\n".join(lines)


def verdict(passed: bool) -> str:
    return "pass" if passed else "**FAIL**"


def key_values(title: str, pairs: Iterable[tuple[str, Any]], header: tuple[str, str] = ("", "")) -> str:
    return f"{title}\n\n{table(list(header), [(k, v) for k, v in pairs])}\n"


# --- checks ----------------------------------------------------------------------------------------


def check_rows(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """Checks as rows of a Prefect table artifact."""
    return [
        {
            "check": c.name,
            "passed": c.passed,
            "observed": c.observed,
            "required": c.required,
            "detail": c.detail,
            **({"seconds": c.seconds} if c.seconds is not None else {}),
        }
        for c in checks
    ]


def checks_table(checks: Iterable[Check]) -> str:
    return table(
        ["check", "result", "observed", "required", "detail"],
        [(c.name, verdict(c.passed), number(c.observed), number(c.required), c.detail) for c in checks],
    )


def checks_summary(checks: Iterable[Check], limit: int = 4000) -> str:
    """One line per check, for a model-version tag that the registry UI shows."""
    return "\n".join(f"{c.name}: {'pass' if c.passed else 'FAIL'} ({c.detail})" for c in checks)[:limit]


# --- data ------------------------------------------------------------------------------------------


def violations_markdown(title: str, violations: Sequence[Violation], consequence: str) -> str:
    """A failed data check: each column and rule broken."""
    rows = [(f"`{v.column}`", v.rule, v.detail) for v in violations]
    return (
        f"# {title}\n\n{len(violations)} violation(s); {consequence}\n\n{table(['column', 'rule', 'detail'], rows)}\n"
    )
