"""Policy replay on real data and on a second dataset with a time column: the table's invariants.

The flights replay runs through the `policy-replay` flow in-process (artifacts, MLflow run); the
second dataset, a seeded regression whose regime changes in a known month, through `mlops replay`.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.adapters import replay_report, sources
from mlops.config import DEFAULT_CONFIG, load_config
from mlops.domain.replay_results import ReplayResult
from tests.conftest import write_config
from tests.integration.conftest import read_artifacts

pytestmark = pytest.mark.integration

MONTHS = ["2013-02", "2013-03", "2013-04"]


@pytest.fixture(scope="module")
def flights_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded 15% sample of January to April 2013, with a config that trains on one month."""
    directory = tmp_path_factory.mktemp("flights-sample")
    full = sources.load_source(load_config(DEFAULT_CONFIG))
    months = full[full["time_hour"] < pd.Timestamp("2013-05-01", tz="UTC")]
    data = directory / "flights.parquet"
    months.sample(frac=0.15, random_state=7).sort_values("time_hour").to_parquet(data)
    return write_config(
        DEFAULT_CONFIG,
        directory,
        {
            "dataset.source": {"kind": "parquet", "path": str(data)},
            "window.months": 1,
            "training.params.max_iter": 60,
            "gates.min_segment_rows": 100,
        },
    )


def _rows(result: dict, policy: str) -> list[dict]:
    return [r for r in result["rows"] if r["policy"] == policy]


def check_invariants(result: ReplayResult, months: list[str]) -> None:
    """What holds for every replay: the rules of each policy, read off its own table."""
    assert result.months == months
    assert len(result.rows) == len(months) * len(result.policies)
    for policy in result.policies:
        rows = [r for r in result.rows if r.policy == policy.name]
        assert [r.month for r in rows] == months
        assert all(r.trained_before is not None and r.version is not None and r.metric is not None for r in rows), (
            policy.name
        )
        assert not rows[-1].retrained  # nothing after the last month to serve
        for row, after in itertools.pairwise(rows):
            assert row.gate != "" if row.retrained else row.gate == ""
            assert row.deployed <= row.retrained
            assert after.version == row.version + row.deployed  # a deployed candidate serves from the next month
            assert (after.trained_before != row.trained_before) == row.deployed
        decided = rows[:-1]
        if policy.kind == "never":
            assert not any(r.retrained for r in rows) and {r.version for r in rows} == {1}
        elif policy.kind == "monthly":
            assert all(r.retrained for r in decided)
        elif policy.kind == "drift":
            assert all(r.drift_share is not None for r in decided)
            assert [r.retrained for r in decided] == [r.drift_share >= policy.drift_share for r in decided]
        elif policy.kind == "metric":  # on the metric it knew then: the month's, or `label_delay_months` earlier's
            higher, late = result.higher_is_better, policy.label_delay_months
            known = [rows[i - late].metric if i >= late else None for i in range(len(decided))]
            assert [r.retrained for r in decided] == [
                m is not None and ((m < policy.metric_floor) if higher else (m > policy.metric_floor)) for m in known
            ]
        summary = next(s for s in result.summary if s.policy == policy.name)
        assert summary.retrains == sum(r.retrained for r in rows) and summary.deployed == sum(r.deployed for r in rows)
        assert math.isclose(summary.mean, np.mean([r.metric for r in rows]))
        assert summary.cpu_s > 0  # at least the first training
    best = next(s for s in result.summary if s.policy == result.best)
    cheapest = next(s for s in result.summary if s.policy == result.cheapest)
    sign = 1 if result.higher_is_better else -1
    assert all(sign * (best.mean - s.mean) >= 0 for s in result.summary)
    assert sign * (best.mean - cheapest.mean) <= result.tolerance
    assert all(s.cpu_s >= cheapest.cpu_s for s in result.summary if sign * (best.mean - s.mean) <= result.tolerance)


def check_files(result: ReplayResult, directory: Path) -> None:
    table = replay_report.read_table(directory / "replay.csv")
    assert [(r["month"], r["policy"], r["retrained"]) for r in table] == [
        (r.month, r.policy, str(r.retrained)) for r in result.rows
    ]
    assert json.loads((directory / "summary.json").read_text())["cheapest"] == result.cheapest
    assert (directory / "metric.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_flow_replays_three_months_of_flights_with_every_policy(
    mlflow_server, prefect_backend, flights_sample, monkeypatch
):
    from flows.policy_replay import policy_replay

    monkeypatch.setenv("MLOPS_CONFIG", str(flights_sample))
    state = policy_replay(
        start="2013-02-01",
        end="2013-05-01",
        drift_shares=[0.3],
        metric_floor=0.7,
        label_delay_months=1,
        return_state=True,
    )
    outcome = state.result()
    directory = Path(outcome["table"]).parent
    result = replay_report.read(directory)
    assert [p.name for p in result.policies] == [
        "never", "monthly", "drift", "metric:0.7", "metric:0.7:late-1m", "estimated:0.7", "drift:0.3",
    ]  # fmt: skip
    check_invariants(result, MONTHS)
    # Three months: too few for the bootstrap to say the cheapest is within the tolerance, and the summary says so.
    assert all(s.months < 2 or s.mean_low <= s.mean <= s.mean_high for s in result.summary)
    check_files(result, directory)
    assert directory.parent == mlflow_server.root / "state" / "replay"
    monthly = [r for r in result.rows if r.policy == "monthly"]
    assert sum(r.retrained for r in monthly) == len(MONTHS) - 1
    assert result.cpu_s < sum(
        s.cpu_s for s in result.summary
    )  # a window trained once serves every policy that trains on it
    artifacts = read_artifacts(state.state_details.flow_run_id)
    assert {"policy-replay", "policy-replay-summary", "policy-replay-plot"} <= set(artifacts)
    assert f"Cheapest within 0.005 of it:** {result.cheapest}" in artifacts["policy-replay-summary"]
    assert ("the data supports it" if result.supported else "the data does not show it") in artifacts[
        "policy-replay-summary"
    ]
    import mlflow

    runs = mlflow.search_runs(experiment_names=["flights-delay-replay"], output_format="list")
    assert len(runs) == 1 and runs[0].data.tags["cheapest"] == result.cheapest
    assert (
        outcome["mlflow_run"].startswith(mlflow_server.uri) and runs[0].info.run_id in artifacts["policy-replay-plot"]
    )
    artifacts_logged = {a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "replay")}
    assert artifacts_logged == {"replay/replay.csv", "replay/summary.json", "replay/metric.png"}


SHIFT = "2014-04"  # the month the regime changes in the second dataset


@pytest.fixture(scope="module")
def demand_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hourly demand of three regions over six months (seeded); from April the temperature runs 8 degrees warmer
    and demand answers it twice as strongly: the drift rule must see April and nothing else."""
    directory = tmp_path_factory.mktemp("demand")
    rng = np.random.default_rng(11)
    hours = pd.date_range("2014-01-01", "2014-07-01", freq="h", inclusive="left", tz="UTC")
    frame = pd.DataFrame({"time": np.repeat(hours, 3), "region": np.tile(["north", "south", "west"], len(hours))})
    shifted = frame["time"] >= pd.Timestamp(f"{SHIFT}-01", tz="UTC")
    frame["hour"] = frame["time"].dt.hour
    frame["temp"] = rng.normal(12, 4, len(frame)) + 8 * shifted
    slope = np.where(shifted, 6.0, 3.0)
    frame["demand"] = (
        100
        + slope * frame["temp"]
        + 15 * (frame["region"] == "south")
        + 10 * np.sin(frame["hour"] / 24 * 2 * np.pi)
        + rng.normal(0, 3, len(frame))
    )
    frame["time"] = frame["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(directory / "demand.csv", index=False)
    config = {
        "dataset": {
            "name": "demand",
            "source": {"kind": "csv", "path": str(directory / "demand.csv")},
            "target": "demand",
            "time_column": "time",
            "numeric": ["hour", "temp"],
            "categorical": ["region"],
            "segments": ["region"],
            "key_columns": ["time", "region"],
        },
        "task": "regression",
        "window": {"months": 1},
        "quality": {"min_rows": 500},
        "training": {"params": {"max_iter": 40, "random_state": 3}, "search": {"learning_rate": [0.1, 0.2]}},
        "gates": {"metric": "rmse", "floors": {"rmse": 60.0}, "max_segment_drop": 5.0, "min_segment_rows": 200},
        "tracking": {"experiment": "demand", "model_name": "demand"},
    }
    path = directory / "mlops.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_mlops_replay_on_another_dataset_retrains_on_drift_exactly_where_the_regime_changed(
    isolated, demand_config, monkeypatch, capsys
):
    from mlops.platform.cli import main

    monkeypatch.setenv("MLOPS_CONFIG", str(demand_config))
    assert main(["replay", "--metric-floor", "8", "--drift-shares", "0.9", "--name", "demand-test"]) == 0
    printed = capsys.readouterr().out
    directory = isolated / "state" / "replay" / "demand-test"
    result = replay_report.read(directory)
    months = ["2014-02", "2014-03", "2014-04", "2014-05", "2014-06"]  # after one month of training data
    check_invariants(result, months)
    check_files(result, directory)
    assert not result.higher_is_better
    drift = {r.month: r for r in result.rows if r.policy == "drift"}
    assert [m for m, r in drift.items() if r.retrained] == [SHIFT], {m: r.drift_share for m, r in drift.items()}
    assert drift["2014-05"].trained_before == "2014-05-01"  # the model trained on April took over
    assert drift["2014-05"].metric < drift[SHIFT].metric / 2  # and April's error is gone
    never = [r for r in result.rows if r.policy == "never"]
    assert never[-1].metric > 2 * never[0].metric  # never retraining pays for the change
    assert "Cheapest within" in printed and str(directory / "metric.png") in printed
