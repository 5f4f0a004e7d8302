"""Continuous delivery's artifacts: the Terraform plan, the gates, production history and reconciliation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlops.domain.checks import Check
from mlops.render.common import table, verdict


def plan_markdown(environment: str, model_name: str, version: str, summary: Any) -> str:
    """A saved Terraform plan: what it adds, changes, destroys and replaces (a `PlanSummary`)."""

    def items(addresses: tuple[str, ...]) -> str:
        return ", ".join(f"`{a}`" for a in addresses) or "none"

    rows = [
        ("add", items(summary.to_add)),
        ("change", items(summary.to_change)),
        ("destroy", items(summary.to_destroy)),
        ("replace", items(summary.to_replace)),
    ]
    plan_file = str(summary.plan_file).rsplit("/", 1)[-1]
    return (
        f"# Terraform plan: {environment} → {model_name} v{version}\n\n{table(['action', 'resources'], rows)}\n\n"
        f"Applied from the saved plan file `{plan_file}`."
    )


def gates_markdown(model_name: str, version: str, outcome: str, gates: Sequence[Check]) -> str:
    """The CD decision: each gate, its result and the numbers behind it."""
    rows = [(g.name, verdict(g.passed), g.detail) for g in gates]
    return f"# {model_name} v{version}: {outcome}\n\n{table(['gate', 'result', 'numbers'], rows)}\n"


def history_rows(changes: Sequence[Any]) -> list[dict[str, str]]:
    """Production history (`domain.history.Change`s) as table rows, newest first."""
    return [
        {
            "version": f"v{c.version}" + (" (serving)" if c.serving else ""),
            "decision": c.decision,
            "decided at": c.at or "-",
            "served production": (
                f"{c.served_from or '?'} → {c.served_until or ('now' if c.serving else '?')}" if c.served else "-"
            ),
            "why": c.why or "-",
        }
        for c in reversed(changes)
    ]


def history_table(changes: Sequence[Any]) -> str:
    """The same rows as a markdown table, for a terminal (`mlops history`, the demo)."""
    rows = history_rows(changes)
    if not rows:
        return "no delivery decision yet"
    return table(list(rows[0]), [list(row.values()) for row in rows])


# Findings are orchestration types (tasks.reconciliation.Finding), so they come in as Any.


def reconciliation_markdown(model_name: str, champion: str | None, findings: Sequence[Any]) -> str:
    """A reconciliation run (a `Finding` per undelivered version): what it found and the CD runs it started."""
    title = f"# Delivery reconciliation: {model_name}\n\n"
    if not findings:
        return title + "Every READY version has a delivery decision: nothing to do.\n"
    started = sum(1 for f in findings if f.flow_run_id)
    rows = [
        (
            f"v{f.version}",
            f.registered,
            f"**{f.action}**" if f.flow_run_id else f.action,
            f.detail.replace("|", "/"),
            f"`{f.flow_run_id}` (attempt {f.attempt})" if f.flow_run_id else "—",
        )
        for f in findings
    ]
    return (
        f"{title}{len(findings)} READY version(s) without a delivery decision "
        f"({f'champion v{champion}' if champion else 'no champion yet'}); continuous delivery started for {started}.\n\n"
        f"{table(['version', 'registered (UTC)', 'action', 'why', 'CD flow run'], rows)}\n"
    )
