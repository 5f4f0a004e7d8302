"""Evaluation: the task's usual metrics, overall and per segment, and the gates that decide promotion."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlops.config import Config, CustomMetric
from mlops.domain.record import Record

CALIBRATION_BINS = 10


def calibration_error(y_true: np.ndarray, positive: np.ndarray, classes: np.ndarray) -> float:
    """Expected calibration error of the positive class's probability (10 equal-width bins), 0 = calibrated."""
    hit = (np.asarray(y_true) == classes[1]).astype(float)
    bins = np.minimum((positive * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.sum() * abs(hit[inside].mean() - positive[inside].mean())
    return float(total / len(positive)) if len(positive) else math.nan


def predict_outputs(model: Any, X: pd.DataFrame, task: str) -> np.ndarray:
    """Class probabilities for classifiers, values for regressors."""
    return model.predict_proba(X) if task != "regression" else model.predict(X)


UserMetric = tuple[CustomMetric, Callable[..., Any]]


def user_metrics(config: Config) -> list[UserMetric]:
    """The config's custom metrics with their functions (imported from the use case's code)."""
    return [
        (m, config.resolve(f"gates.custom_metrics[{i}].function")) for i, m in enumerate(config.gates.custom_metrics)
    ]


def compute_metrics(
    task: str,
    y_true: pd.Series | np.ndarray,
    outputs: np.ndarray,
    classes: np.ndarray | None,
    custom: Sequence[UserMetric] = (),
) -> dict[str, float]:
    """The usual metrics for the task and the `custom` ones; NaN where a metric is undefined (one class present)."""
    found = _task_metrics(task, np.asarray(y_true), outputs, classes)
    for metric, function in custom:
        if task == "regression" or metric.uses == "probabilities":
            y = outputs if task == "regression" or task == "multiclass" else outputs[:, 1]
        else:
            assert classes is not None  # _task_metrics raised otherwise
            y = classes[np.argmax(outputs, axis=1)]
        try:
            found[metric.name] = float(function(np.asarray(y_true), y))
        except Exception as exc:
            raise ValueError(
                f"gates.custom_metrics {metric.name!r} ({metric.function}) raised {type(exc).__name__}: {exc}"
            ) from exc
    return found


def _task_metrics(task: str, y_true: np.ndarray, outputs: np.ndarray, classes: np.ndarray | None) -> dict[str, float]:
    if task == "regression":
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, outputs))),
            "mae": float(skm.mean_absolute_error(y_true, outputs)),
            "r2": float(skm.r2_score(y_true, outputs)) if len(y_true) > 1 else math.nan,
        }
    if classes is None:
        raise ValueError(f"{task} metrics need the classifier's classes (its `classes_`)")
    predicted = classes[np.argmax(outputs, axis=1)]
    both_classes = len(np.unique(y_true)) > 1
    if task == "binary":
        positive = outputs[:, 1]
        return {
            "roc_auc": float(skm.roc_auc_score(y_true, positive)) if both_classes else math.nan,
            "pr_auc": float(skm.average_precision_score(y_true, positive, pos_label=classes[1]))
            if both_classes
            else math.nan,
            "log_loss": float(skm.log_loss(y_true, outputs, labels=classes)),
            "f1": float(skm.f1_score(y_true, predicted, pos_label=classes[1], zero_division=0)),
            "accuracy": float(skm.accuracy_score(y_true, predicted)),
            # how far the probabilities are from observed rates; CBPE trusts them only when this is small
            "calibration_error": calibration_error(y_true, positive, classes),
        }
    return {
        "macro_f1": float(skm.f1_score(y_true, predicted, average="macro", zero_division=0)),
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "log_loss": float(skm.log_loss(y_true, outputs, labels=classes)),
    }


class SegmentMetrics(Record):
    column: str
    value: str
    rows: int
    metrics: dict[str, float]


class Evaluation(Record):
    """A model's metrics on one holdout: overall and for each value of each segment column."""

    rows: int
    overall: dict[str, float]
    segments: list[SegmentMetrics]

    def segment(self, column: str, value: str) -> SegmentMetrics | None:
        return next((s for s in self.segments if s.column == column and s.value == value), None)


def evaluate(df: pd.DataFrame, outputs: np.ndarray, classes: np.ndarray | None, config: Config) -> Evaluation:
    """Metrics of `outputs` (aligned with the rows of `df`) overall and per segment."""
    y = df[config.dataset.target].to_numpy()
    custom = user_metrics(config)
    segments = []
    for column in config.dataset.segments:
        keys = df[column].astype(str).to_numpy()
        for value in sorted(set(keys)):
            mask = keys == value
            metrics = compute_metrics(config.task, y[mask], outputs[mask], classes, custom)
            segments.append(SegmentMetrics(column=column, value=value, rows=int(mask.sum()), metrics=metrics))
    overall = compute_metrics(config.task, y, outputs, classes, custom)
    return Evaluation(rows=len(df), overall=overall, segments=segments)


def evaluate_on(model: Any, df: pd.DataFrame, config: Config) -> Evaluation:
    """`model`'s metrics on the labelled rows of `df`, overall and per segment."""
    outputs = predict_outputs(model, df[config.dataset.features], config.task)
    return evaluate(df, outputs, getattr(model, "classes_", None), config)
