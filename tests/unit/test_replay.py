"""The policy replay's rules on tiny inputs: which policies, which months, when each retrains, which to choose."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mlops.domain.replay import Policy, ReplayError, ReplayRow, make_policies, replay_months, retrains
from mlops.domain.replay_results import PolicySummary, choose, summarize

pytestmark = pytest.mark.unit


def test_one_policy_per_kind_and_one_drift_policy_per_other_threshold(flights_config):
    policies = make_policies(flights_config, ["never", "monthly", "drift", "metric"], [0.3, 0.5, 0.7, 0.3], None)
    assert [p.name for p in policies] == ["never", "monthly", "drift", "metric:0.6", "drift:0.3", "drift:0.7"]
    assert policies[2].drift_share == flights_config.drift.drift_share  # the monitoring rule itself
    assert policies[3].metric_floor == flights_config.gates.floors["roc_auc"]  # the gate's floor by default
    assert make_policies(flights_config, ["metric"], [], 0.71)[0].metric_floor == 0.71


def test_a_metric_policy_without_a_floor_is_refused(flights_config):
    no_floor = flights_config.model_copy(update={"gates": flights_config.gates.model_copy(update={"floors": {}})})
    with pytest.raises(ReplayError, match="needs a floor"):
        make_policies(no_floor, ["metric"], [], None)


def _times(*stamps: str) -> pd.DataFrame:
    return pd.DataFrame({"time_hour": pd.to_datetime(list(stamps), utc=True)})


def test_the_months_start_after_a_training_window_and_end_with_the_newest_complete_month(flights_config):
    source = _times("2013-01-01 05:00", "2013-06-30 23:00", "2013-07-15 10:00")  # July is not complete
    months = replay_months(source, flights_config, None, None)
    assert [m.label() for m in months] == ["2013-04-01..2013-05-01", "2013-05-01..2013-06-01", "2013-06-01..2013-07-01"]
    assert [m.label() for m in replay_months(source, flights_config, "2013-05-20", "2013-07-01")] == [
        "2013-05-01..2013-06-01",
        "2013-06-01..2013-07-01",
    ]  # a date means its month


def test_no_time_column_or_no_whole_month_is_a_clear_error(flights_config, diabetes_config):
    with pytest.raises(ReplayError, match="has none"):
        replay_months(pd.DataFrame({"x": [1]}), diabetes_config, None, None)
    with pytest.raises(ReplayError, match="no whole month"):
        replay_months(_times("2013-01-01 00:00", "2013-03-31 23:00"), flights_config, None, None)


@pytest.mark.parametrize(
    ("policy", "metric", "share", "higher", "expected"),
    [
        (Policy(name="never", kind="never"), 0.1, 0.9, True, False),
        (Policy(name="monthly", kind="monthly"), 0.9, 0.0, True, True),
        (Policy(name="drift", kind="drift", drift_share=0.5), 0.9, 0.5, True, True),  # reaching the share is drift
        (Policy(name="drift", kind="drift", drift_share=0.5), 0.9, 0.49, True, False),
        (Policy(name="m", kind="metric", metric_floor=0.7), 0.69, None, True, True),
        (Policy(name="m", kind="metric", metric_floor=0.7), 0.71, None, True, False),
        (
            Policy(name="m", kind="metric", metric_floor=10.0),
            11.0,
            None,
            False,
            True,
        ),  # a loss: past the floor is above it
        (Policy(name="m", kind="metric", metric_floor=10.0), 9.0, None, False, False),
        (Policy(name="m", kind="metric", metric_floor=0.7), math.nan, None, True, False),  # no score: no signal
    ],
)
def test_when_each_policy_retrains(policy, metric, share, higher, expected):
    assert retrains(policy, metric, share, higher) is expected


def _row(policy: str, metric: float | None, retrained: bool = False, cpu: float = 1.0) -> ReplayRow:
    return ReplayRow(
        month="2013-04",
        policy=policy,
        metric=metric,
        version=1,
        trained_before="2013-04-01",
        drift_share=None,
        retrained=retrained,
        gate="passed" if retrained else "",
        deployed=retrained,
        cpu_s=cpu,
    )


def test_the_summary_is_per_policy_and_the_choice_is_the_cheapest_close_to_the_best():
    rows = [
        _row("a", 0.70),
        _row("a", 0.60),
        _row("b", 0.71, True, 30.0),
        _row("b", 0.71),
        _row("c", None),
        _row("c", 0.68),
    ]
    summary = summarize(rows, [Policy(name=n, kind="never") for n in "abc"], higher=True)
    assert [(s.policy, s.months, round(s.mean, 3), s.worst, s.retrains, s.cpu_s) for s in summary] == [
        ("a", 2, 0.65, 0.60, 0, 2.0),
        ("b", 2, 0.71, 0.71, 1, 31.0),
        ("c", 1, 0.68, 0.68, 0, 2.0),
    ]
    assert choose(summary, higher=True, tolerance=0.005) == ("b", "b")
    assert choose(summary, higher=True, tolerance=0.05) == ("b", "c")  # a is further than 0.05 from b's mean


def test_for_a_loss_the_best_is_the_lowest():
    summary = [
        PolicySummary(policy=p, months=3, mean=m, worst=m, retrains=r, deployed=r, cpu_s=c)
        for p, m, r, c in [("never", 40.0, 0, 1.0), ("monthly", 15.0, 4, 9.0), ("drift", 15.2, 1, 5.0)]
    ]
    assert choose(summary, higher=False, tolerance=0.5) == ("monthly", "drift")


def test_late_labels_and_the_estimated_metric_give_policies_of_their_own(flights_config):
    policies = make_policies(flights_config, ["metric", "estimated"], [], None, label_delay_months=2)
    assert [(p.name, p.label_delay_months) for p in policies] == [
        ("metric:0.6", 0),
        ("metric:0.6:late-2m", 2),
        ("estimated:0.6", 0),
    ]


class _Months:
    """A replay whose model in service scores `metrics[i]` (labels) and `estimates[i]` (no labels) on month i;
    every retrain passes the gates."""

    def __init__(self, config, metrics: list[float], estimates: list[float]):
        self.config, self.metrics, self.estimates = config, metrics, estimates

    def train(self, as_of):
        from mlops.domain.replay_work import Trained

        return Trained(as_of=f"{as_of:%Y-%m-%d}", data_window="", training_window="", cpu_s=0.0, model=object())

    def gate(self, candidate, serving):
        from types import SimpleNamespace

        return SimpleNamespace(passed=True, reasons=[]), 0.0

    def _month(self, month) -> int:
        return (month.start.year - 2013) * 12 + month.start.month - 4  # April 2013 is month 0

    def score(self, serving, month):
        return self.metrics[self._month(month)], 0.0

    def estimate(self, serving, month):
        return self.estimates[self._month(month)], 0.0


def test_a_metric_policy_acts_when_its_labels_arrive_and_an_estimated_one_before_any(flights_config):
    from mlops.domain.replay import replay_policy

    source = _times("2013-01-01 05:00", "2013-08-31 23:00")
    months = replay_months(source, flights_config, None, None)  # April to August
    work = _Months(flights_config, metrics=[0.7, 0.5, 0.7, 0.7, 0.7], estimates=[0.7, 0.7, 0.55, 0.7, 0.7])
    retrained = {}
    for policy in make_policies(flights_config, ["metric", "estimated"], [], None, label_delay_months=1):
        rows = replay_policy(work, policy, months)  # type: ignore[arg-type]
        retrained[policy.name] = [r.month for r in rows if r.retrained]
    assert retrained == {
        "metric:0.6": ["2013-05"],  # May's metric is under the floor at May's end
        "metric:0.6:late-1m": ["2013-06"],  # ... but its labels arrive a month later
        "estimated:0.6": ["2013-06"],  # the estimate fell in June, with no label at all
    }


def test_the_bootstrap_interval_of_a_mean_narrows_with_months_and_needs_two():
    from mlops.domain.replay_results import bootstrap_mean

    assert all(math.isnan(x) for x in bootstrap_mean([0.7]))
    few, many = bootstrap_mean([0.70, 0.74, 0.66]), bootstrap_mean([0.70, 0.74, 0.66] * 12)
    assert few[0] < 0.70 < few[1] and many[0] < 0.70 < many[1]
    assert many[1] - many[0] < few[1] - few[0]
    assert bootstrap_mean([0.70, 0.74, 0.66]) == few  # seeded: the same interval every time
