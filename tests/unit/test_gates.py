import numpy as np
import pandas as pd
import pytest

from mlops.domain.evaluation import Evaluation, SegmentMetrics
from mlops.domain.gates import ChampionComparison, comparable_rows, compare_with_champion, decide

pytestmark = pytest.mark.unit


def _evaluation(overall: float, segment: float, rows: int = 1000) -> Evaluation:
    metrics = {"roc_auc": overall, "pr_auc": 0.5, "log_loss": 0.45, "f1": 0.3, "accuracy": 0.8}
    seg = SegmentMetrics(column="carrier", value="AA", rows=rows, metrics={**metrics, "roc_auc": segment})
    return Evaluation(rows=rows, overall=metrics, segments=[seg])


def _versus(candidate: Evaluation, champion: Evaluation, version: str = "3") -> ChampionComparison:
    return ChampionComparison(
        version=version, rows=candidate.rows, excluded=0, note="test", candidate=candidate, champion=champion
    )


def test_floors_alone_without_champion(flights_config):
    assert decide(_evaluation(0.70, 0.70), flights_config).passed
    failed = decide(_evaluation(0.55, 0.55), flights_config)
    assert not failed.passed and failed.reasons == ["floor roc_auc: 0.55 vs required 0.6"]
    assert failed.champion is None and "floors alone" in failed.comparison


def test_candidate_must_not_lose_to_the_champion(flights_config):
    champion = _evaluation(0.72, 0.72)
    assert decide(_evaluation(0.73, 0.71), flights_config, _versus(_evaluation(0.73, 0.71), champion)).passed
    worse = decide(_evaluation(0.71, 0.71), flights_config, _versus(_evaluation(0.71, 0.71), champion))
    assert not worse.passed and worse.champion_version == "3" and worse.champion == 0.72
    assert any(r.startswith("gain roc_auc") for r in worse.reasons)


def test_gain_is_judged_on_the_compared_rows_not_the_whole_holdout(flights_config):
    # Whole holdout 0.80, but on the rows the champion never saw the candidate is worse: it loses.
    comparison = _versus(_evaluation(0.70, 0.70), _evaluation(0.72, 0.72))
    decision = decide(_evaluation(0.80, 0.80), flights_config, comparison)
    assert decision.candidate == 0.80 and not decision.passed


def test_large_segment_may_not_drop_more_than_allowed(flights_config):
    drop = decide(_evaluation(0.75, 0.70), flights_config, _versus(_evaluation(0.75, 0.70), _evaluation(0.72, 0.80)))
    assert [r.split(":")[0] for r in drop.reasons] == ["segment carrier=AA roc_auc"]
    small = _versus(_evaluation(0.75, 0.70, rows=10), _evaluation(0.72, 0.80, rows=10))
    assert decide(_evaluation(0.75, 0.70, rows=10), flights_config, small).passed  # under min_segment_rows: not gated


def _holdout(days: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time_hour": pd.to_datetime(days, utc=True),
            "arr_delayed": [0, 1] * (len(days) // 2),
            "carrier": "AA",
            "origin": "JFK",
        }
    )


def test_champion_rows_inside_its_training_window_are_never_compared(flights_config):
    holdout = _holdout(["2013-06-20", "2013-06-25", "2013-07-02", "2013-07-05"])
    rows, note = comparable_rows(holdout, flights_config, "2013-05-01..2013-07-01")
    assert rows.tolist() == [False, False, True, True] and "2 holdout row(s) inside" in note
    rows, _ = comparable_rows(holdout, flights_config, "2013-01-01..2013-04-01")
    assert rows.all()


def test_no_comparable_rows_means_the_floors_decide_and_the_decision_says_so(flights_config):
    # The case: CT on March-June against a champion trained on May-July: the holdout (late June)
    # lies inside the champion's window, so its score there would be a leaked one.
    holdout = _holdout(["2013-06-20", "2013-06-25"] * 200)
    rows, note = comparable_rows(holdout, flights_config, "2013-05-01..2013-08-01")
    assert not rows.any()
    outputs = np.tile([0.4, 0.6], (len(holdout), 1))
    comparison = compare_with_champion(holdout, outputs, None, np.array([0, 1]), rows, note, "2", flights_config)
    assert comparison.champion is None and comparison.excluded == len(holdout)
    decision = decide(_evaluation(0.70, 0.70), flights_config, comparison)
    assert decision.passed and decision.champion is None and decision.champion_version == "2"
    assert "floors alone decide" in decision.comparison and not any("gain" in c.name for c in decision.checks)


def test_without_a_time_column_only_the_same_data_is_comparable(diabetes_config):
    holdout = pd.DataFrame({"target": [1.0, 2.0]})
    assert comparable_rows(holdout, diabetes_config, "all", "abc", "abc")[0].all()
    assert not comparable_rows(holdout, diabetes_config, "all", "abc", "def")[0].any()
    assert comparable_rows(holdout, diabetes_config, None)[0].all()  # hand-registered: no lineage to go by
