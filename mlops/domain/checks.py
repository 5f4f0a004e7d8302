"""One verdict type for every check the loop makes: quality gates, SLOs, contract cases, CI steps."""

from __future__ import annotations

import math
from collections.abc import Iterable

from mlops.domain.record import Record

Number = float | int | str | None


class Check(Record):
    """One check's verdict with the numbers behind it: what was observed and what was required."""

    name: str
    passed: bool
    observed: Number = None
    required: Number = None
    detail: str = ""
    seconds: float | None = None

    @property
    def reason(self) -> str:
        """Why it failed, in one line ("" when it passed)."""
        if self.passed:
            return ""
        numbers = (
            f"{_show(self.observed)} vs required {_show(self.required)}"
            if self.observed is not None and self.required is not None
            else ""
        )
        return f"{self.name}: " + "; ".join(part for part in (numbers, self.detail) if part)


def at_least(name: str, observed: float, required: float, detail: str = "") -> Check:
    """Passes when `observed >= required` (NaN never passes)."""
    return Check(
        name=name,
        observed=observed,
        required=required,
        detail=detail,
        passed=not math.isnan(observed) and observed >= required,
    )


def at_most(name: str, observed: float, required: float, detail: str = "") -> Check:
    """Passes when `observed <= required` (NaN never passes)."""
    return Check(
        name=name,
        observed=observed,
        required=required,
        detail=detail,
        passed=not math.isnan(observed) and observed <= required,
    )


def bound(name: str, observed: float, required: float, higher_is_better: bool, detail: str = "") -> Check:
    """`at_least` for a metric where higher is better, else `at_most`."""
    return (at_least if higher_is_better else at_most)(name, observed, required, detail)


def all_passed(checks: Iterable[Check]) -> bool:
    return all(c.passed for c in checks)


def failures(checks: Iterable[Check]) -> list[str]:
    """One line per failed check."""
    return [c.reason for c in checks if not c.passed]


def _show(value: Number) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return str(value)
