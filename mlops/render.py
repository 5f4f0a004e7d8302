"""Every Prefect artifact's markdown and table rows, in one place. Pure: typed results in, text out.

Tasks publish what these functions return; none of them touches Prefect, MLflow or a file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from mlops.domain.checks import Check
from mlops.domain.evaluation import Evaluation
from mlops.domain.gates import GateDecision
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


# --- training and gates ----------------------------------------------------------------------------


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


def key_values(title: str, pairs: Iterable[tuple[str, Any]], header: tuple[str, str] = ("", "")) -> str:
    return f"{title}\n\n{table(list(header), [(k, v) for k, v in pairs])}\n"


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


# --- delivery --------------------------------------------------------------------------------------


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


# --- monitoring and scoring ----------------------------------------------------------------------


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


# --- delivery reconciliation -----------------------------------------------------------------------

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


# --- continuous integration ------------------------------------------------------------------------

# CI's results are platform types (mlops.platform.ci), so they come in as Any, named in the docstrings.


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
