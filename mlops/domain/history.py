"""Production history: which version served production from when to when, and why it changed.

Read from the decisions CD writes on each version (tags `deployment`, `deployment_at`, the
reason, the approval), so the registry is the one record: nothing else to keep in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mlops.domain.record import Record

DECISIONS = ("promoted", "rejected", "rolled_back")
RESTORED = "restored"  # a Change that is no decision of CD: a rollback by hand put the version back in production
SERVED = ("promoted", RESTORED)  # the changes that start a period of serving production

# Tags a rollback by hand (flows/rollback.py) writes: on the version it took out of production, and on
# the one it put back. The version taken out keeps `deployment=promoted`: it did serve, until then.
ROLLED_BACK_AT, ROLLED_BACK_WHY = "rolled_back_at", "rolled_back"
RESTORED_AT, RESTORED_WHY = "restored_at", "restored"


class Change(Record):
    """One delivery decision or restoration, and for a promotion or restoration the time it served production."""

    version: str
    decision: str  # promoted | rejected | rolled_back | restored
    at: str | None  # when it was decided (ISO, UTC); None for decisions made before it was recorded
    served_from: str | None = None  # promoted and restored only
    served_until: str | None = None  # promoted and restored only; None while it still serves
    serving: bool = False  # the version production serves now
    why: str = ""

    @property
    def served(self) -> bool:
        return self.decision in SERVED


def _why(decision: str, tags: Mapping[str, str]) -> str:
    approval = tags.get("approval")
    by = f"; {approval} by {tags.get('approval_by', '?')}" if approval in ("approved", "rejected") else ""
    if decision == "promoted":
        return f"gates passed{by}"[:300]
    if decision == RESTORED:
        return f"back in production by hand: {tags.get(RESTORED_WHY, '')}"[:300]
    return f"{tags.get(decision, '')}{by}".strip("; ")[:300]


def production_history(versions: Iterable[tuple[str, Mapping[str, str]]], champion: str | None) -> list[Change]:
    """Every decided version as a `Change`, and each restoration by hand as one more, in the order they
    happened (undated ones first, by version number).

    A promoted or restored version served from then until the next promotion or restoration;
    `champion` (the alias) is the one production serves now. A version restored twice keeps its
    latest restoration only (its tags hold one `restored_at`).
    """
    changes: list[tuple[str, int, str, Mapping[str, str]]] = []  # (at, version, decision, tags)
    for version, tags in versions:
        if tags.get("deployment") in DECISIONS:
            changes.append((tags.get("deployment_at") or "", int(version), tags["deployment"], tags))
        if tags.get(RESTORED_AT):
            changes.append((tags[RESTORED_AT], int(version), RESTORED, tags))
    changes.sort(key=lambda item: (item[0], item[1]))
    starts = [at for at, _, decision, _ in changes if decision in SERVED]
    result = []
    for at, number, decision, tags in changes:
        change = Change(version=str(number), decision=decision, at=at or None, why=_why(decision, tags))
        if change.served:
            later = [start for start in starts if start > at] if at else []
            until = later[0] if later else None
            taken_out = tags.get(ROLLED_BACK_AT)  # the period a rollback by hand ended is the one serving until then
            why = (
                f"{change.why}; rolled back by hand at {taken_out}: {tags.get(ROLLED_BACK_WHY, '')}"[:300]
                if taken_out and until == taken_out
                else change.why
            )
            change = change.model_copy(
                update={
                    "served_from": at or None,
                    "served_until": until,
                    "why": why,
                    "serving": str(number) == champion and not later,
                }
            )
        result.append(change)
    return result
