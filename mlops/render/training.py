"""Continuous training's artifacts: evaluation rows, the gate decision, the CT summary and the model card."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mlops.domain.checks import Check
from mlops.domain.evaluation import Evaluation
from mlops.domain.gates import GateDecision
from mlops.render.common import checks_table, number, table, verdict


def evaluation_rows(result: Evaluation) -> list[dict[str, Any]]:
    """Metrics overall and per segment, as rows of a table artifact."""
    rows = [{"segment": "overall", "rows": result.rows, **_rounded(result.overall)}]
    rows += [{"segment": f"{s.column}={s.value}", "rows": s.rows, **_rounded(s.metrics)} for s in result.segments]
    return rows


def _rounded(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if math.isnan(v) else round(v, 4)) for k, v in metrics.items()}


def decision_markdown(decision: GateDecision, outcome: str) -> str:
    """A gate decision: the verdict, the scores compared, how the champion was compared, each check."""
    champion = (
        f"{decision.champion:.4f} (version {decision.champion_version})"
        if decision.champion is not None
        else f"not compared (version {decision.champion_version})"
        if decision.champion_version
        else "none yet"
    )
    rows = [(c.name, number(c.observed), number(c.required), verdict(c.passed)) for c in decision.checks]
    return (
        f"# Model validation {'PASSED' if decision.passed else 'FAILED'}: {outcome}\n\n"
        f"- {decision.metric}: candidate {decision.candidate:.4f} on the whole holdout, champion {champion}\n"
        f"- comparison: {decision.comparison}\n\n"
        f"{table(['check', 'observed', 'required', 'result'], rows)}\n"
    )


def ct_summary_markdown(summary: dict[str, Any], overall: dict[str, float], lineage: dict[str, str]) -> str:
    """The CT run's outcome, its holdout metrics and the lineage it recorded."""
    outcome = (
        f"Registered **{summary['model_name']} version {summary['version']}** as `challenger`."
        if summary["registered"]
        else "Not registered: " + "; ".join(summary["reasons"])
    )
    metrics = table(["holdout metric", "value"], [(k, number(v)) for k, v in overall.items()])
    tags = table(["lineage", "value"], [(k, f"`{v}`") for k, v in lineage.items()])
    return f"# Continuous training\n\n{outcome}\n\nChampion comparison: {summary['champion_comparison']}\n\n{metrics}\n\n{tags}\n"


DELIVERY_HEADING = "## Delivery"


def model_card(
    name: str,
    version: str,
    config: Any,
    lineage: dict[str, str],
    evaluation: Evaluation,
    decision: GateDecision,
    comparison: Any,
    links: dict[str, str | None],
) -> str:
    """A version's model card: what it is for, its data, features, metrics (vs the champion), gates,
    what started it, its lineage; the delivery section says "pending" until CD decides."""
    card, ds, metric = config.model_card, config.dataset, decision.metric
    about = [
        ("use case", card.use_case),
        ("intended use", card.intended_use),
        ("limitations", card.limitations),
        ("owner", card.owner),
    ]
    data = [
        ("dataset", f"`{ds.name}`"),
        ("data window", lineage.get("data_window", "-")),
        ("training window", lineage.get("training_window", "-")),
        ("holdout rows", evaluation.rows),
        ("data hash", f"`{lineage.get('data_hash', '-')}`"),
        ("target", f"`{ds.target}`"),
        ("numeric features", ", ".join(ds.numeric) or "-"),
        ("categorical features", ", ".join(ds.categorical) or "-"),
    ]
    champion = comparison.champion if comparison is not None else None
    rows = [("overall (whole holdout)", evaluation.rows, number(evaluation.overall.get(metric)), "")]
    if champion is not None and comparison.candidate is not None:
        rows.append(
            (
                f"overall (rows v{comparison.version} did not train on)",
                comparison.rows,
                number(comparison.candidate.overall.get(metric)),
                number(champion.overall.get(metric)),
            )
        )
        for s in comparison.candidate.segments:
            theirs = champion.segment(s.column, s.value)
            rows.append(
                (
                    f"{s.column}={s.value}",
                    s.rows,
                    number(s.metrics.get(metric)),
                    number(theirs.metrics.get(metric)) if theirs else "-",
                )
            )
    versus = f"champion v{comparison.version}" if champion is not None else "champion (none compared)"
    started = lineage.get("trigger_reason", "-")
    lineage_rows = [(k, f"`{v}`") for k, v in lineage.items()] + [(k, v) for k, v in links.items() if v]
    return (
        f"# Model card: {name} v{version}\n\n{table(['', ''], [(k, v or '-') for k, v in about])}\n\n"
        f"## Data and features\n\n{table(['', ''], data)}\n\n"
        f"## Metrics ({metric})\n\n{table(['rows', 'count', 'this version', versus], rows)}\n\n"
        f"All metrics on the whole holdout: "
        + ", ".join(f"{k} {number(v)}" for k, v in evaluation.overall.items())
        + f".\n\n## Gates: {'passed' if decision.passed else 'failed'}\n\n{decision.comparison}\n\n"
        f"{checks_table(decision.checks)}\n\n## What started it\n\n`{started}`"
        + (" (Evidently drift on new data: see the drift-monitoring run's report)" if started == "drift" else "")
        + f"\n\n## Lineage\n\n{table(['', ''], lineage_rows)}\n\n{DELIVERY_HEADING}\n\nPending: CD has not decided yet.\n"
    )


def with_delivery(card: str, outcome: str, at: str, gates: Sequence[Check]) -> str:
    """The card with its delivery section replaced by CD's decision."""
    head = card.split(DELIVERY_HEADING, 1)[0].rstrip()
    return f"{head}\n\n{DELIVERY_HEADING}\n\n**{outcome}** ({at})\n\n{checks_table(gates)}\n"
