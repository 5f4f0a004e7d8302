"""Evaluation: the task's usual metrics, overall and per segment, and the gates that decide promotion."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn import metrics as skm

from mlops.config import METRICS, Config


def predict_outputs(model: Any, X: pd.DataFrame, task: str) -> np.ndarray:
    """Class probabilities for classifiers, values for regressors."""
    return model.predict_proba(X) if task != "regression" else model.predict(X)


def compute_metrics(task: str, y_true: pd.Series | np.ndarray, outputs: np.ndarray, classes: np.ndarray | None) -> dict[str, float]:
    """The usual metrics for the task; NaN where a metric is undefined (e.g. one class present)."""
    y_true = np.asarray(y_true)
    if task == "regression":
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, outputs))),
            "mae": float(skm.mean_absolute_error(y_true, outputs)),
            "r2": float(skm.r2_score(y_true, outputs)) if len(y_true) > 1 else math.nan,
        }
    predicted = classes[np.argmax(outputs, axis=1)]
    both_classes = len(np.unique(y_true)) > 1
    if task == "binary":
        positive = outputs[:, 1]
        return {
            "roc_auc": float(skm.roc_auc_score(y_true, positive)) if both_classes else math.nan,
            "pr_auc": float(skm.average_precision_score(y_true, positive, pos_label=classes[1])) if both_classes else math.nan,
            "log_loss": float(skm.log_loss(y_true, outputs, labels=classes)),
            "f1": float(skm.f1_score(y_true, predicted, pos_label=classes[1], zero_division=0)),
            "accuracy": float(skm.accuracy_score(y_true, predicted)),
        }
    return {
        "macro_f1": float(skm.f1_score(y_true, predicted, average="macro", zero_division=0)),
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "log_loss": float(skm.log_loss(y_true, outputs, labels=classes)),
    }


class SegmentMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    column: str
    value: str
    rows: int
    metrics: dict[str, float]


class Evaluation(BaseModel):
    """A model's metrics on one holdout: overall and for each value of each segment column."""

    model_config = ConfigDict(frozen=True)

    rows: int
    overall: dict[str, float]
    segments: list[SegmentMetrics]

    def segment(self, column: str, value: str) -> SegmentMetrics | None:
        return next((s for s in self.segments if s.column == column and s.value == value), None)


def evaluate(df: pd.DataFrame, outputs: np.ndarray, classes: np.ndarray | None, config: Config) -> Evaluation:
    """Metrics of `outputs` (aligned with the rows of `df`) overall and per segment."""
    y = df[config.dataset.target].to_numpy()
    segments = []
    for column in config.dataset.segments:
        keys = df[column].astype(str).to_numpy()
        for value in sorted(set(keys)):
            mask = keys == value
            metrics = compute_metrics(config.task, y[mask], outputs[mask], classes)
            segments.append(SegmentMetrics(column=column, value=value, rows=int(mask.sum()), metrics=metrics))
    return Evaluation(rows=len(df), overall=compute_metrics(config.task, y, outputs, classes), segments=segments)


class GateCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    observed: float
    required: float
    passed: bool


class GateDecision(BaseModel):
    """Whether a candidate may be registered, with every number that decided it."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None
    checks: list[GateCheck]

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.observed:.4f} vs required {c.required:.4f}" for c in self.checks if not c.passed]


def _better_or_equal(observed: float, required: float, higher_is_better: bool) -> bool:
    if math.isnan(observed):
        return False
    return observed >= required if higher_is_better else observed <= required


def decide(
    candidate: Evaluation, champion: Evaluation | None, config: Config, champion_version: str | None = None
) -> GateDecision:
    """Absolute floors, then (with a champion) the minimum gain overall and the allowed drop per large segment."""
    gates, directions = config.gates, METRICS[config.task]
    checks = []
    for name, floor in gates.floors.items():
        observed = candidate.overall[name]
        checks.append(GateCheck(name=f"floor {name}", observed=observed, required=floor,
                                passed=_better_or_equal(observed, floor, directions[name])))
    metric, higher = gates.metric, directions[gates.metric]
    sign = 1.0 if higher else -1.0
    if champion is not None:
        required = champion.overall[metric] + sign * gates.min_gain
        checks.append(GateCheck(name=f"gain {metric} over champion", observed=candidate.overall[metric],
                                required=required, passed=_better_or_equal(candidate.overall[metric], required, higher)))
        for seg in candidate.segments:
            old = champion.segment(seg.column, seg.value)
            if seg.rows < gates.min_segment_rows or old is None or math.isnan(old.metrics[metric]):
                continue
            required = old.metrics[metric] - sign * gates.max_segment_drop
            checks.append(GateCheck(name=f"segment {seg.column}={seg.value} {metric}", observed=seg.metrics[metric],
                                    required=required, passed=_better_or_equal(seg.metrics[metric], required, higher)))
    return GateDecision(
        passed=all(c.passed for c in checks),
        metric=metric,
        candidate=candidate.overall[metric],
        champion=champion.overall[metric] if champion else None,
        champion_version=champion_version,
        checks=checks,
    )
