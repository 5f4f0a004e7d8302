"""The quality gates that decide registration and promotion, and the fair comparison with the champion.

The champion is never scored on rows it was trained on: the comparison uses only the holdout
rows outside the champion's training window (its `data_window` lineage). When none are left the
decision says so and the floors alone decide, instead of comparing with a leaked score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import Config
from mlops.domain.checks import Check, bound, failures
from mlops.domain.evaluation import Evaluation, evaluate, predict_outputs
from mlops.domain.record import Record
from mlops.domain.window import Window


class ChampionComparison(Record):
    """The candidate and the champion on the same holdout rows, none of which the champion trained on."""

    version: str
    rows: int  # holdout rows compared
    excluded: int  # holdout rows left out because the champion may have trained on them
    note: str
    candidate: Evaluation | None = None  # None: nothing could be compared
    champion: Evaluation | None = None


def comparable_rows(
    holdout: pd.DataFrame,
    config: Config,
    champion_window: str | None,
    champion_hash: str | None = None,
    candidate_hash: str | None = None,
) -> tuple[np.ndarray, str]:
    """One bool per holdout row: True where the champion cannot have seen the row; and why."""
    time_column, every = config.dataset.time_column, np.ones(len(holdout), dtype=bool)
    if champion_window is None:
        return every, "the champion has no data_window lineage (registered by hand): compared on the whole holdout"
    window = Window.parse(champion_window)
    if not window.bounded:
        if time_column is None and champion_hash is not None and champion_hash == candidate_hash:
            return every, "same data and seeded split as the champion: its holdout is this holdout"
        return ~every, "the champion trained on all rows of other data: it may have seen any holdout row"
    if time_column is None:
        return ~every, f"the champion's window {window.label()} cannot be located without a time column"
    inside = window.mask(holdout, time_column).to_numpy()
    if not inside.any():
        return every, f"the holdout lies outside the champion's training window {window.label()}"
    return (
        ~inside,
        f"{int(inside.sum())} holdout row(s) inside the champion's training window {window.label()} left out",
    )


def compare_with_champion(
    holdout: pd.DataFrame,
    candidate_outputs: np.ndarray,
    champion_outputs: np.ndarray | None,
    classes: Any,
    rows: np.ndarray,
    note: str,
    version: str,
    config: Config,
) -> ChampionComparison:
    """Both models' metrics on the `rows` of the holdout; `champion_outputs` are for those rows only."""
    compared = int(rows.sum())
    excluded = len(holdout) - compared
    if compared < config.gates.min_segment_rows or champion_outputs is None:
        why = (
            f"{compared} comparable row(s) < gates.min_segment_rows {config.gates.min_segment_rows}"
            if compared
            else "no comparable rows"
        )
        return ChampionComparison(
            version=version, rows=compared, excluded=excluded, note=f"{note}; {why}: the floors alone decide"
        )
    subset = holdout.loc[rows]
    return ChampionComparison(
        version=version,
        rows=compared,
        excluded=excluded,
        note=note,
        candidate=evaluate(subset, np.asarray(candidate_outputs)[rows], classes, config),
        champion=evaluate(subset, champion_outputs, classes, config),
    )


def champion_comparison(
    holdout: pd.DataFrame,
    candidate: Any,
    champion: Any,
    champion_window: str | None,
    version: str,
    config: Config,
    champion_hash: str | None = None,
    candidate_hash: str | None = None,
) -> ChampionComparison:
    """Both fitted models on the holdout rows the champion (trained on `champion_window`) cannot have seen."""
    X = holdout[config.dataset.features]
    rows, note = comparable_rows(holdout, config, champion_window, champion_hash, candidate_hash)
    champion_outputs = predict_outputs(champion, X.loc[rows], config.task) if rows.any() else None
    return compare_with_champion(
        holdout,
        predict_outputs(candidate, X, config.task),
        champion_outputs,
        getattr(candidate, "classes_", None),
        rows,
        note,
        version,
        config,
    )


class GateDecision(Record):
    """Whether a candidate may be registered (or promoted), with every number that decided it."""

    passed: bool
    metric: str
    candidate: float  # on the whole holdout
    champion: float | None  # on the compared rows
    champion_version: str | None
    comparison: str  # how (or why not) the champion was compared
    checks: list[Check]

    @property
    def reasons(self) -> list[str]:
        return failures(self.checks)

    def outcome(self, version: str | None, run_id: str) -> dict[str, Any]:
        """What the CT run that made this decision ends with: the flow's return value and the plain script's."""
        return {
            "version": version,
            "registered": version is not None,
            "run_id": run_id,
            "metric": self.metric,
            "score": self.candidate,
            "champion_score": self.champion,
            "reasons": self.reasons,
        }


def decide(candidate: Evaluation, config: Config, comparison: ChampionComparison | None = None) -> GateDecision:
    """Absolute floors on the whole holdout, then (when compared) the minimum gain overall and the
    allowed drop per large segment, candidate and champion on the same rows."""
    gates, directions = config.gates, config.metric_directions()
    checks = [
        bound(f"floor {name}", candidate.overall[name], floor, directions[name]) for name, floor in gates.floors.items()
    ]
    metric, higher = gates.metric, directions[gates.metric]
    sign = 1.0 if higher else -1.0
    champion_score = None
    if comparison is not None and comparison.champion is not None and comparison.candidate is not None:
        new, old = comparison.candidate, comparison.champion
        champion_score = old.overall[metric]
        checks.append(
            bound(
                f"gain {metric} over champion",
                new.overall[metric],
                champion_score + sign * gates.min_gain,
                higher,
                detail=f"on {comparison.rows} rows",
            )
        )
        for seg in new.segments:
            before = old.segment(seg.column, seg.value)
            if seg.rows < gates.min_segment_rows or before is None or math.isnan(before.metrics[metric]):
                continue
            checks.append(
                bound(
                    f"segment {seg.column}={seg.value} {metric}",
                    seg.metrics[metric],
                    before.metrics[metric] - sign * gates.max_segment_drop,
                    higher,
                )
            )
    return GateDecision(
        passed=all(c.passed for c in checks),
        metric=metric,
        candidate=candidate.overall[metric],
        champion=champion_score,
        champion_version=comparison.version if comparison else None,
        comparison=comparison.note if comparison else "no champion yet: the floors alone decide",
        checks=checks,
    )
