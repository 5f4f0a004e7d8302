"""Bad batches stop CT at validation with a report naming each column and rule; nothing is registered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.continuous_training import continuous_training
from mlops.adapters import sources
from mlops.config import DEFAULT_CONFIG, load_config
from mlops.domain.validation import DataValidationError
from tests.conftest import DIABETES_CONFIG, write_config
from tests.integration.conftest import read_artifacts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]

GOOD = DIABETES_CONFIG.parent / "diabetes.csv"


def _frame(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    return lambda path: change(pd.read_csv(GOOD)).to_csv(path, index=False)


def _decimal_commas(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(bmi=df["bmi"].map(lambda v: f"{v:.1f}".replace(".", ",")))  # 32,1: not a number (n/a would be NaN)


def _truncated(path: Path) -> None:
    text = GOOD.read_text()
    path.write_text(text[: len(text) // 2])  # cut mid-row, as an interrupted copy leaves it


BATCHES: dict[str, tuple[Callable[[Path], None], set[tuple[str, str]]]] = {
    "missing column": (_frame(lambda df: df.drop(columns=["s6"])), {("s6", "missing_column")}),
    "wrong type": (_frame(_decimal_commas), {("bmi", "wrong_type")}),
    "flood of unknown categories": (
        _frame(lambda df: df.assign(sex=df["sex"].where(df.index % 3 > 0, "X"))),
        {("sex", "unknown_category")},
    ),
    "all-null target": (_frame(lambda df: df.assign(progression=float("nan"))), {("progression", "target_missing")}),
    "empty file": (lambda path: path.write_bytes(b""), {("*", "empty_file")}),
    "truncated file": (_truncated, {("*", "truncated_file")}),
    "duplicated rows": (_frame(lambda df: pd.concat([df, df.head(100)])), {("*", "duplicates")}),
    "out-of-range values": (_frame(lambda df: df.assign(bmi=df["bmi"] * 100)), {("bmi", "out_of_range")}),
}


@pytest.mark.parametrize("kind", sorted(BATCHES))
def test_a_bad_batch_stops_at_validation_naming_columns_and_rules(kind, isolated, monkeypatch):
    write, expected = BATCHES[kind]
    write(isolated / "batch.csv")
    config = write_config(
        DIABETES_CONFIG, isolated, {"dataset.source": {"kind": "csv", "path": str(isolated / "batch.csv")}}
    )
    monkeypatch.setenv("MLOPS_CONFIG", str(config))

    state = continuous_training(return_state=True)

    assert state.is_failed()
    with pytest.raises(DataValidationError) as err:
        state.result()
    assert expected <= {(v.column, v.rule) for v in err.value.violations}
    report = read_artifacts(state.state_details.flow_run_id)["data-validation"]
    assert all(f"`{column}`" in report and rule in report for column, rule in expected)
    assert MlflowClient().search_registered_models() == []


def test_a_time_column_that_does_not_parse_is_a_violation_not_a_crash(isolated, monkeypatch):
    month = sources.load_window(load_config(DEFAULT_CONFIG), as_of="2013-02-01", months=1).frame.head(2000)
    month = month.assign(time_hour=month["time_hour"].astype(str).where(month.index % 50 > 0, "the 5th, after lunch"))
    month.to_csv(isolated / "flights.csv", index=False)
    config = write_config(
        DEFAULT_CONFIG,
        isolated,
        {"dataset.source": {"kind": "csv", "path": str(isolated / "flights.csv")}},
    )
    monkeypatch.setenv("MLOPS_CONFIG", str(config))

    state = continuous_training(return_state=True)

    with pytest.raises(DataValidationError) as err:
        state.result()
    assert {("time_hour", "unparsable_time")} <= {(v.column, v.rule) for v in err.value.violations}
    assert "unparsable_time" in read_artifacts(state.state_details.flow_run_id)["data-validation"]
    assert MlflowClient().search_registered_models() == []
