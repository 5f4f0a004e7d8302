"""Production history: which version served production from when to when, and why it changed.

Read from the decisions CD writes on each version (tags `deployment`, `deployment_at`, the
reason, the approval), so the registry is the one record: nothing else to keep in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mlops.domain.record import Record

DECISIONS = ("promoted", "rejected", "rolled_back")


class Change(Record):
    """One delivery decision, and for a promotion the time it served production."""

    version: str
    decision: str  # promoted | rejected | rolled_back
    at: str | None  # when it was decided (ISO, UTC); None for decisions made before it was recorded
    served_from: str | None = None  # promoted only
    served_until: str | None = None  # promoted only; None while it still serves
    serving: bool = False  # the version production serves now
    why: str = ""


def _why(decision: str, tags: Mapping[str, str]) -> str:
    approval = tags.get("approval")
    by = f"; {approval} by {tags.get('approval_by', '?')}" if approval in ("approved", "rejected") else ""
    if decision == "promoted":
        return f"gates passed{by}"
    return f"{tags.get(decision, '')}{by}".strip("; ")[:300]


def production_history(versions: Iterable[tuple[str, Mapping[str, str]]], champion: str | None) -> list[Change]:
    """Every decided version as a `Change`, in the order decided (undated ones first, by version number).

    A promoted version served from its decision until the next promotion; `champion` (the alias)
    is the one production serves now.
    """
    decided = [(number, tags) for number, tags in versions if tags.get("deployment") in DECISIONS]
    decided.sort(key=lambda item: (item[1].get("deployment_at") or "", int(item[0])))
    promotions = [i for i, (_, tags) in enumerate(decided) if tags["deployment"] == "promoted"]
    changes = []
    for i, (number, tags) in enumerate(decided):
        decision, at = tags["deployment"], tags.get("deployment_at")
        if decision != "promoted":
            changes.append(Change(version=number, decision=decision, at=at, why=_why(decision, tags)))
            continue
        later = [j for j in promotions if j > i]
        until = decided[later[0]][1].get("deployment_at") if later else None
        changes.append(Change(version=number, decision=decision, at=at, served_from=at, served_until=until,
                              serving=number == champion, why=_why(decision, tags)))
    return changes
