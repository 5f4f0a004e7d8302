"""Late labels: ground truth joined to the traffic production answered, the metric it realized, and before the
labels come, the metric estimated from the served probabilities (confidence-based performance estimation).

A label names its request by `request_id` (+ `row` for a request of several rows, else 0), the id the service
answered in `X-Request-ID`, or by the use case's `dataset.key_columns`. A batch of labels is checked as a whole
before anything is kept: a label whose id no captured request has, one given twice in the batch, one already
ingested, or one that is not a value the model predicts is left out and counted by reason; a batch without a
way to join (or without the target column) is refused naming the columns.

Estimation (CBPE, as NannyML describes it): if the version's probabilities are calibrated, a row scored p is
positive with probability p, so the expected confusion counts at any threshold are sums of p and 1 - p, and the
expected ROC AUC, accuracy, F1 or log loss follow without a label. Calibrated is measured, not assumed: the
version's expected calibration error on its own holdout (CT logs it as `test_calibration_error`) must be within
`feedback.max_calibration_error`, else the estimate is "not estimable". Written here (about forty lines) rather
than taken from NannyML, whose newest release requires lightgbm<4.6 (we serve 4.7) and brings an AutoML library,
cloud filesystems and a telemetry client (docs/architecture.md); the e2e test shows the estimate beside the
realized metric once labels land.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import CAPTURED_AT, PREDICTION, REQUEST_ID, ROW, Config
from mlops.config import captured_column as column_name
from mlops.domain.evaluation import compute_metrics, user_metrics
from mlops.domain.record import Record

ESTIMABLE = ("roc_auc", "pr_auc", "accuracy", "f1", "log_loss")  # binary metrics CBPE estimates


class LabelsError(ValueError):
    """A batch of labels that cannot be joined at all (nothing of it is kept)."""


class LabelProblem(Record):
    reason: str
    rows: int
    examples: list[str]


def join_keys(columns: list[str], config: Config) -> list[str]:
    """How a batch with these columns names its requests: `request_id` (+ `row`), else the key columns."""
    target = config.dataset.target
    if target not in columns:
        raise LabelsError(f"the labels have no column {target!r} (dataset.target); columns: {columns[:20]}")
    if REQUEST_ID in columns:
        return [REQUEST_ID, ROW]
    keys = config.dataset.key_columns
    missing = [k for k in keys if k not in columns]
    if not keys or missing:
        raise LabelsError(
            f"the labels name no request: give a column {REQUEST_ID!r} (the X-Request-ID the service answered, "
            f"with {ROW!r} for a request of several rows) or the key columns {keys} (dataset.key_columns)"
            + (f"; missing: {missing}" if keys else "")
        )
    return [column_name(k) for k in keys]


def label_keys(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One string per row from its key columns (labels from CSV and captured JSON agree on text, not on dtypes)."""
    if not len(frame):
        return pd.Series([], dtype=str)
    return frame[keys].astype(str).agg("\x1f".join, axis=1)


_NOT_A_CLASS = object()


def _text(value: Any) -> str:
    """A label value as text, so that 1, 1.0 and "1" name the same class."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


IDENTITY = [REQUEST_ID, ROW]  # a captured row's own key: what a kept label is stored under, however it was joined


def check_labels(
    labels: pd.DataFrame,
    captured: pd.DataFrame,
    ingested: set[str],
    config: Config,
    classes: list[Any] | None,
) -> tuple[pd.DataFrame, list[LabelProblem]]:
    """The labels that name one captured row each, as that row's `request_id`, `row` and the target; and the
    rest by reason. `ingested`: the identities (label_keys of IDENTITY) labelled before; `classes`: the values a
    classifier predicts."""
    keys = join_keys(list(labels.columns), config)
    target = config.dataset.target
    labels = labels.rename(columns={k: column_name(k) for k in config.dataset.key_columns})
    if keys == IDENTITY:
        labels = labels.assign(**{ROW: labels.get(ROW, 0)})
    labels = labels.assign(label_key=label_keys(labels, keys).to_numpy())
    problems: list[LabelProblem] = []
    keep = pd.Series(True, index=labels.index)

    def refuse(mask: pd.Series, reason: str) -> None:
        nonlocal keep
        mask = mask & keep
        if mask.any():
            examples = labels.loc[mask, "label_key"].str.replace("\x1f", ", ").head(5).tolist()
            problems.append(LabelProblem(reason=reason, rows=int(mask.sum()), examples=examples))
            keep = keep & ~mask

    refuse(labels[target].isna(), f"no value in {target!r}")
    if config.task == "regression":
        refuse(pd.to_numeric(labels[target], errors="coerce").isna(), f"{target!r} is not a number")
    else:  # a file's column of 0/1 with a stray "yes" reads as text, one with a gap as floats: compare as text
        by_text = {_text(c): c for c in classes or []}
        as_class = labels[target].map(lambda v: by_text.get(_text(v), _NOT_A_CLASS))
        refuse(as_class.eq(_NOT_A_CLASS), f"{target!r} is not one of the model's classes {classes}")
        labels[target] = as_class.where(keep, None)
    refuse(labels["label_key"].duplicated(keep=False), "the same request twice in this batch")
    by_key = captured.assign(label_key=label_keys(captured, keys).to_numpy()).drop_duplicates("label_key")
    refuse(~labels["label_key"].isin(by_key["label_key"]), "no captured request has this id")
    identity = labels["label_key"].map(by_key.set_index("label_key")[IDENTITY].astype(str).agg("\x1f".join, axis=1))
    refuse(identity.isin(ingested), "already ingested (the label kept before is left as it was)")
    accepted = labels.loc[keep, ["label_key", target]]
    kept = by_key[["label_key", *IDENTITY]].merge(accepted, on="label_key").drop(columns="label_key")
    return kept, problems


def join_kept(captured: pd.DataFrame, kept: pd.DataFrame, config: Config) -> pd.DataFrame:
    """The captured rows that have a kept label, with it (kept: IDENTITY + the target, as check_labels gave)."""
    target = config.dataset.target
    labels = kept[[*IDENTITY, target]].astype({REQUEST_ID: str, ROW: int})
    rows = captured.drop(columns=[target], errors="ignore").astype({REQUEST_ID: str, ROW: int})
    return rows.merge(labels, on=IDENTITY)


def outputs_of(captured: pd.DataFrame, task: str) -> np.ndarray:
    """The served answers as the evaluation takes them: class probabilities (rows × classes) or values."""
    values = captured[PREDICTION].tolist()
    return np.asarray(values, dtype=float) if task == "regression" else np.vstack(values).astype(float)


class Realized(Record):
    """One version's metric over a slice of its labelled traffic, with the estimate for the same rows."""

    environment: str
    version: str
    scope: str  # all, day or segment
    key: str  # the day, "column=value", or "all"
    rows: int
    realized: float
    estimated: float | None


def realized_metrics(joined: pd.DataFrame, classes: list[Any] | None, config: Config) -> list[Realized]:
    """The gates' metric per (environment, version): over all its labelled rows, per day and per segment, each
    with its estimate from the same rows' probabilities (None where there is no estimator)."""
    found: list[Realized] = []
    for (environment, version), part in joined.groupby(["environment", "version"], sort=True):
        slices = [("all", "all", np.ones(len(part), dtype=bool))]
        days = pd.to_datetime(part[CAPTURED_AT], utc=True).dt.strftime("%Y-%m-%d").to_numpy()
        slices += [("day", day, days == day) for day in sorted(set(days))]
        for column in config.dataset.segments:
            values = part[column_name(column)].astype(str).to_numpy()
            slices += [("segment", f"{column}={value}", values == value) for value in sorted(set(values))]
        found += _slices(str(environment), str(version), part, slices, classes, config)
    return found


def _slices(
    environment: str,
    version: str,
    part: pd.DataFrame,
    slices: list[tuple[str, str, np.ndarray]],
    classes: list[Any] | None,
    config: Config,
) -> list[Realized]:
    metric, task = config.gates.metric, config.task
    outputs, y = outputs_of(part, task), part[config.dataset.target].to_numpy()
    cls = np.asarray(classes) if classes is not None else None
    custom = user_metrics(config)  # the gates' metric may be the team's own
    return [
        Realized(
            environment=environment,
            version=version,
            scope=scope,
            key=key,
            rows=int(mask.sum()),
            realized=compute_metrics(task, y[mask], outputs[mask], cls, custom)[metric],
            estimated=estimate(outputs[mask], metric, task),
        )
        for scope, key, mask in slices
    ]


def estimate(outputs: np.ndarray, metric: str, task: str) -> float | None:
    """The metric expected from calibrated probabilities alone (CBPE); None where it has no estimator."""
    if task != "binary" or metric not in ESTIMABLE or not len(outputs):
        return None
    p = np.clip(outputs[:, 1], 1e-15, 1 - 1e-15)
    if metric == "log_loss":
        return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    predicted = p >= 0.5  # the class argmax picks
    if metric == "accuracy":
        return float(np.mean(np.where(predicted, p, 1 - p)))
    if metric == "f1":
        tp, fp, fn = p[predicted].sum(), (1 - p[predicted]).sum(), p[~predicted].sum()
        return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else math.nan
    # Expected TP and FP above each distinct score, highest first (ties move together).
    scores, inverse = np.unique(-p, return_inverse=True)
    tp = np.cumsum(np.bincount(inverse, weights=p, minlength=len(scores)))
    fp = np.cumsum(np.bincount(inverse, weights=1 - p, minlength=len(scores)))
    tpr, fpr = np.concatenate([[0], tp / tp[-1]]), np.concatenate([[0], fp / fp[-1]])
    if metric == "roc_auc":
        return float(np.trapezoid(tpr, fpr))
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(tpr) * precision))  # average precision, as scikit-learn's
