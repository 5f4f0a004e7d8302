"""The shadow gate's numbers (mlops/domain/shadow.py) on captured rows made by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops.config import LATENCY_MS, PREDICTION, REQUEST_ID, ROW, Config
from mlops.domain import shadow

pytestmark = pytest.mark.unit


def rows(probabilities: list[float], latency: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            REQUEST_ID: [f"r{i}" for i in range(len(probabilities))],
            ROW: 0,
            PREDICTION: [[1 - p, p] for p in probabilities],
            LATENCY_MS: latency,
        }
    )


def test_agreement_latency_and_the_metric_on_labelled_rows_decide(flights_config: Config) -> None:
    config = flights_config.model_copy(
        update={
            "delivery": flights_config.delivery.model_copy(update={"shadow_requests": 4, "shadow_min_agreement": 0.7}),
            "feedback": flights_config.feedback.model_copy(update={"min_rows": 4}),
        }
    )
    champion = rows([0.9, 0.8, 0.2, 0.1, 0.6], latency=3.0)
    labels = pd.DataFrame({REQUEST_ID: ["r0", "r1", "r2", "r3"], ROW: 0, "arr_delayed": [1, 1, 0, 0]})

    alike = shadow.evidence(champion, rows([0.8, 0.7, 0.3, 0.2, 0.7], latency=1.0), labels, [0, 1], config)
    assert (alike.rows, alike.agreement, alike.labelled) == (5, 1.0, 4)
    assert alike.champion_metric == alike.candidate_metric == 1.0
    assert all(c.passed for c in shadow.checks(alike, config))

    opposite = shadow.evidence(champion, rows([0.1, 0.2, 0.8, 0.9, 0.4], latency=1.0), labels, [0, 1], config)
    failed = {c.name for c in shadow.checks(opposite, config) if not c.passed}
    assert opposite.agreement == 0.0 and failed == {"shadow agreement", "shadow roc_auc vs champion"}

    few = shadow.evidence(champion.head(2), rows([0.9, 0.8], latency=1.0), labels.head(0), [0, 1], config)
    assert {c.name for c in shadow.checks(few, config) if not c.passed} == {"shadow rows"}
    assert few.champion_metric is None  # no label: no metric check at all


def test_no_row_answered_by_both_is_no_evidence(flights_config: Config) -> None:
    found = shadow.evidence(
        rows([0.9], 3.0), rows([0.9], 1.0).assign(**{REQUEST_ID: ["other"]}), pd.DataFrame(), None, flights_config
    )
    assert found.rows == 0 and not all(c.passed for c in shadow.checks(found, flights_config))
