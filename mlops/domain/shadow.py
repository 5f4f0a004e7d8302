"""The shadow gate: a candidate that scored production's traffic unseen, beside the champion that answered it.

Both answers of each shadowed row are captured under the same request id and row (mlops/serving/shadow.py);
joined, they say how often the candidate agrees with the champion, how fast it scored, and, for the rows whose
labels came back (`mlops labels`), which of the two was right more often on the same rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import LATENCY_MS, PREDICTION, REQUEST_ID, ROW, Config
from mlops.domain.checks import Check, at_least, at_most, bound
from mlops.domain.evaluation import compute_metrics, user_metrics
from mlops.domain.record import Record

REGRESSION_AGREEMENT = 0.1  # two regression answers agree within 10% of the champion's


class ShadowEvidence(Record):
    rows: int  # rows both answered
    agreement: float  # share of them the candidate answers like the champion (same class; regression: within 10%)
    champion_p99_ms: float  # the champion's request latency, as the client saw it
    candidate_p99_ms: float  # the candidate's scoring latency after the answer (its queue and its model)
    labelled: int  # of the rows, those with a label kept
    champion_metric: float | None  # the gates' metric on the labelled rows
    candidate_metric: float | None


def evidence(
    served: pd.DataFrame, shadow: pd.DataFrame, labels: pd.DataFrame, classes: list[Any] | None, config: Config
) -> ShadowEvidence:
    """`served` and `shadow`: captured rows (read_captured) of the champion and of the candidate; `labels`: kept
    labels (request_id, row, target), possibly empty."""
    keys = [REQUEST_ID, ROW]
    both = served[[*keys, PREDICTION, LATENCY_MS]].merge(
        shadow[[*keys, PREDICTION, LATENCY_MS]], on=keys, suffixes=("_champion", "_candidate")
    )
    if both.empty:
        return ShadowEvidence(
            rows=0,
            agreement=math.nan,
            champion_p99_ms=math.nan,
            candidate_p99_ms=math.nan,
            labelled=0,
            champion_metric=None,
            candidate_metric=None,
        )
    champion, candidate = (
        _outputs(both[f"{PREDICTION}_champion"], config),
        _outputs(both[f"{PREDICTION}_candidate"], config),
    )
    if config.task == "regression":
        agree = np.abs(candidate - champion) <= REGRESSION_AGREEMENT * np.maximum(np.abs(champion), 1e-12)
    else:
        agree = np.argmax(candidate, axis=1) == np.argmax(champion, axis=1)
    metrics: tuple[float | None, float | None] = (None, None)
    target = config.dataset.target
    labelled = pd.DataFrame()
    if len(labels):
        labels = labels[[*keys, target]].astype({REQUEST_ID: str, ROW: int})
        labelled = both.reset_index().astype({REQUEST_ID: str, ROW: int}).merge(labels, on=keys)
    if len(labelled):
        at = labelled["index"].to_numpy()
        y, cls, custom = labelled[target].to_numpy(), np.asarray(classes) if classes else None, user_metrics(config)
        metric = config.gates.metric
        metrics = (
            compute_metrics(config.task, y, champion[at], cls, custom)[metric],
            compute_metrics(config.task, y, candidate[at], cls, custom)[metric],
        )
    return ShadowEvidence(
        rows=len(both),
        agreement=float(agree.mean()),
        champion_p99_ms=float(np.percentile(both[f"{LATENCY_MS}_champion"], 99)),
        candidate_p99_ms=float(np.percentile(both[f"{LATENCY_MS}_candidate"], 99)),
        labelled=len(labelled),
        champion_metric=metrics[0],
        candidate_metric=metrics[1],
    )


def _outputs(answers: pd.Series, config: Config) -> np.ndarray:
    values = answers.tolist()
    return np.asarray(values, dtype=float) if config.task == "regression" else np.vstack(values).astype(float)


def checks(found: ShadowEvidence, config: Config) -> list[Check]:
    """Enough shadowed rows, agreement with the champion, the candidate's latency within the SLO, and where at
    least `feedback.min_rows` of the rows have labels, no loss on the gates' metric beyond `gates.min_gain`."""
    delivery, metric = config.delivery, config.gates.metric
    found_checks = [
        at_least(
            "shadow rows",
            found.rows,
            delivery.shadow_requests,
            f"{found.rows} rows of production traffic answered by both (≥ {delivery.shadow_requests})",
        ),
        at_least(
            "shadow agreement",
            found.agreement,
            delivery.shadow_min_agreement,
            f"{found.agreement:.1%} of them answered alike (≥ {delivery.shadow_min_agreement:.0%})",
        ),
        at_most(
            "shadow p99 ms",
            found.candidate_p99_ms,
            config.slo.p99_ms,
            f"the candidate's scoring p99 {found.candidate_p99_ms:.1f} ms (≤ {config.slo.p99_ms}; the champion's "
            f"requests: {found.champion_p99_ms:.1f} ms)",
        ),
    ]
    if found.labelled >= config.feedback.min_rows and found.champion_metric is not None:
        higher = config.metric_directions()[metric]
        assert found.candidate_metric is not None
        found_checks.append(
            bound(
                f"shadow {metric} vs champion",
                found.candidate_metric,
                found.champion_metric + (1 if higher else -1) * config.gates.min_gain,
                higher,
                detail=f"{found.candidate_metric:.4f} vs the champion's {found.champion_metric:.4f} on {found.labelled} "
                "labelled rows of production traffic",
            )
        )
    return found_checks
