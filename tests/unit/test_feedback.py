"""Late labels (mlops/domain/feedback.py): joining to captured rows, refusing what cannot join, realized metrics,
and the label-free estimate (CBPE) against what labels later show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops.config import CAPTURED_AT, PREDICTION, REQUEST_ID, ROW, Config
from mlops.domain import feedback
from mlops.domain.evaluation import calibration_error, compute_metrics

pytestmark = pytest.mark.unit
CLASSES = [0, 1]


def captured(n: int = 6, version: str = "3") -> pd.DataFrame:
    """What read_captured gives: one row per scored row (two-row request r1), key columns, probabilities."""
    p = np.linspace(0.1, 0.9, n)
    return pd.DataFrame(
        {
            REQUEST_ID: ["r0", "r1", "r1", *[f"r{i}" for i in range(2, n - 1)]],
            ROW: [0, 0, 1, *[0] * (n - 3)],
            CAPTURED_AT: pd.Timestamp("2026-12-07T10:00:00Z"),
            PREDICTION: [[1 - x, x] for x in p],
            "time_hour": [f"2013-07-0{i + 1} 08:00:00" for i in range(n)],
            "carrier": ["AA", "UA"] * (n // 2),
            "flight": list(range(100, 100 + n)),
            "origin": "JFK",
            "environment": "production",
            "version": version,
        }
    )


def test_labels_by_request_id_or_by_key_columns_land_on_the_same_captured_row(flights_config: Config) -> None:
    rows = captured()
    by_id = pd.DataFrame({REQUEST_ID: ["r1"], ROW: [1], "arr_delayed": [1]})
    by_keys = pd.DataFrame(
        {
            "time_hour": ["2013-07-03 08:00:00"],
            "carrier": ["AA"],
            "flight": [102],
            "origin": ["JFK"],
            "arr_delayed": [1],
        }
    )
    kept_id, problems_id = feedback.check_labels(by_id, rows, set(), flights_config, CLASSES)
    kept_keys, problems_keys = feedback.check_labels(by_keys, rows, set(), flights_config, CLASSES)
    assert not problems_id and not problems_keys
    assert kept_id[[REQUEST_ID, ROW]].values.tolist() == kept_keys[[REQUEST_ID, ROW]].values.tolist() == [["r1", 1]]
    # A second batch naming the same row, by either id, is left out: the first label stays as it was.
    kept_before = set(feedback.label_keys(kept_id, feedback.IDENTITY))
    again, problems = feedback.check_labels(by_keys.assign(arr_delayed=0), rows, kept_before, flights_config, CLASSES)
    assert again.empty and [(p.reason, p.rows) for p in problems] == [
        ("already ingested (the label kept before is left as it was)", 1)
    ]


def test_a_bad_batch_is_reported_by_count_and_reason_and_only_good_labels_are_kept(flights_config: Config) -> None:
    labels = pd.DataFrame(
        {
            REQUEST_ID: ["r0", "r2", "r2", "nobody", "r3", "r1", "r4"],
            "arr_delayed": [1, 0, 1, 0, "late", None, 0],
        }
    )
    kept, problems = feedback.check_labels(labels, captured(), set(), flights_config, CLASSES)
    assert sorted(kept[REQUEST_ID]) == ["r0", "r4"]
    assert {p.reason: p.rows for p in problems} == {
        "no value in 'arr_delayed'": 1,
        "'arr_delayed' is not one of the model's classes [0, 1]": 1,
        "the same request twice in this batch": 2,
        "no captured request has this id": 1,
    }
    assert next(p for p in problems if p.rows == 2).examples == ["r2, 0", "r2, 0"]


@pytest.mark.parametrize(
    ("columns", "named"),
    [
        ([REQUEST_ID], "'arr_delayed' (dataset.target)"),
        (["carrier", "arr_delayed"], "missing: ['time_hour', 'flight', 'origin']"),
    ],
)
def test_a_batch_that_cannot_join_is_refused_naming_the_columns(
    flights_config: Config, columns: list[str], named: str
) -> None:
    with pytest.raises(feedback.LabelsError, match=named.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        feedback.check_labels(pd.DataFrame({c: [1] for c in columns}), captured(), set(), flights_config, CLASSES)


def test_realized_metrics_per_version_day_and_segment(flights_config: Config) -> None:
    rows = pd.concat([captured(version="3"), captured(version="4")], ignore_index=True)
    kept = rows[[REQUEST_ID, ROW]].drop_duplicates().assign(arr_delayed=[0, 0, 1, 0, 1, 1])
    joined = feedback.join_kept(rows, kept, flights_config)
    found = feedback.realized_metrics(joined, CLASSES, flights_config)
    overall = {r.version: r for r in found if r.scope == "all"}
    assert set(overall) == {"3", "4"} and overall["3"].rows == 6
    y, p = kept["arr_delayed"].to_numpy(), np.linspace(0.1, 0.9, 6)
    assert overall["3"].realized == pytest.approx(roc_auc_score(y, p))
    assert {(r.scope, r.key) for r in found if r.version == "3"} >= {
        ("day", "2026-12-07"),
        ("segment", "carrier=AA"),
        ("segment", "origin=JFK"),
    }


def test_the_estimate_from_calibrated_probabilities_matches_what_labels_later_show() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(2, 5, 20_000)
    y = (rng.uniform(size=p.size) < p).astype(int)  # calibrated by construction
    outputs = np.column_stack([1 - p, p])
    realized = compute_metrics("binary", y, outputs, np.array(CLASSES))
    for metric in feedback.ESTIMABLE:
        estimated = feedback.estimate(outputs, metric, "binary")
        assert estimated == pytest.approx(realized[metric], abs=0.01), metric
    assert calibration_error(y, p, np.array(CLASSES)) < 0.02

    # Overconfident probabilities: the calibration check says so, which is why such a version gets no estimate.
    sharp = np.clip((p - 0.28) * 3 + 0.5, 0, 1)
    assert calibration_error(y, sharp, np.array(CLASSES)) > 0.1


def test_no_estimate_where_there_is_no_estimator() -> None:
    outputs = np.array([[0.4, 0.6]])
    assert feedback.estimate(outputs, "macro_f1", "multiclass") is None
    assert feedback.estimate(np.array([1.0]), "rmse", "regression") is None
