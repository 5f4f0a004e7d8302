"""Monitoring and scoring artifacts: the drift check, late labels and batch scoring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlops.domain.validation import Violation
from mlops.render.common import number, table, violations_markdown


def drift_markdown(
    current_window: str,
    reference_window: str,
    result: Any,
    champion_version: str,
    emitted: bool,
    event: str,
    overlap: str = "",
) -> str:
    """A drift check: the verdict, both windows, and each monitored column's score (a `DriftResult`)."""
    outcome = f"**Drift detected**: `{event}` emitted" if emitted else "No drift: nothing to do"
    rows = [
        (c.column, c.method, f"{c.score:.3f}", f"{c.threshold:.3f}", "**drifted**" if c.drifted else "ok")
        for c in result.columns
    ]
    left_out = f"- {overlap}\n" if overlap else ""
    return (
        f"# Drift monitoring: {current_window}\n\n{outcome}.\n\n"
        f"- reference: champion v{champion_version}'s training window {reference_window} ({result.reference_rows} rows sampled)\n"
        f"{left_out}- current: {current_window} ({result.current_rows} rows sampled)\n"
        f"- drifted columns: {result.drift_share:.0%} (threshold {result.threshold_share:.0%})\n\n"
        f"{table(['column', 'method', 'score', 'threshold', 'verdict'], rows, 'llrrl')}\n"
    )


def feedback_markdown(config: Any, ingested: Any, measured: Any, event: dict[str, Any] | None, name: str) -> str:
    """A feedback run: the labels kept and left out by reason, each version's realized metric next to its
    estimate, and whether the champion was judged degraded (`Ingested`, `Measured` from tasks/feedback.py)."""
    metric = config.gates.metric
    left_out = [(p.reason, f"{p.rows:,}", ", ".join(f"`{e}`" for e in p.examples[:3])) for p in ingested.problems]
    overall = [
        (
            r.environment,
            f"v{r.version}",
            f"{r.rows:,}",
            number(r.realized),
            number(r.estimated) if r.estimated is not None else measured.estimable.get(r.version, "–"),
        )
        for r in measured.realized
        if r.scope == "all"
    ]
    outcome = (
        f"**Degraded**: v{event['version']}'s realized {metric} {number(event['realized'])} is past its floor "
        f"{event['floor']} over {event['rows']:,} labels; `{name}` emitted (retraining follows)."
        if event
        else "The champion's realized metric is within its floor, or not yet judged (see the run's log)."
    )
    return (
        f"# Late labels: {config.name}\n\n{outcome}\n\n"
        f"- batch `{ingested.batch}`: {ingested.received:,} labels received, **{ingested.accepted:,} kept**\n\n"
        + (table(["left out because", "rows", "e.g."], left_out, "lrl") + "\n\n" if left_out else "")
        + table(
            ["environment", "version", "labelled rows", f"realized {metric}", f"estimated {metric} (CBPE)"],
            overall,
            "llrrr",
        )
        + "\n\nPer day and per segment: the `realized-performance` table artifact.\n"
    )


def scoring_refused_markdown(label: str, violations: Sequence[Violation]) -> str:
    return violations_markdown(f"Cannot score {label}", violations, "nothing was scored or written.")


def scoring_markdown(model: Any, source_label: str, result: Any) -> str:
    """A batch-scoring run (a `ScoreResult`): rows read, scored and rejected by reason, files, speed."""
    tally = result.tally
    rows = [
        ("model", f"`{model.name}` version **{model.version}** (`{model.uri}`)"),
        ("input", f"`{source_label}`"),
        ("rows read", f"{tally.rows_read:,}"),
        ("rows scored", f"{tally.rows_scored:,}"),
        ("rows rejected", f"{tally.rows_rejected:,}"),
        ("output", f"`{result.output_path}`"),
        ("rejects", f"`{result.rejects_path}`"),
        ("row keys", ", ".join(f"`{k}`" for k in result.key_columns)),
        ("chunks", f"{result.chunks} of up to {result.chunk_rows:,} rows"),
        ("duration (read, screen, predict, write)", f"{result.seconds:.2f} s"),
        ("rows/s", f"{result.rows_per_second:,.0f}"),
    ]
    reasons = [(f"`{reason}`", f"{count:,}") for reason, count in tally.rejected_by_reason.items()] or [("none", "0")]
    return (
        f"# Batch scoring: {tally.rows_scored:,} rows scored, {tally.rows_rejected:,} rejected\n\n{table(['', ''], rows)}\n\n"
        f"## Rejected rows by reason\n\nA row that breaks two rules counts under both.\n\n{table(['reason', 'rows'], reasons, 'lr')}\n"
    )
