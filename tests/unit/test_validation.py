import numpy as np
import pandas as pd
import pytest

from mlops.domain.validation import (
    Contract,
    check_contract,
    check_quality,
    check_schema,
    infer_contract,
    validate_frame,
)

pytestmark = pytest.mark.unit


def _rules(violations) -> set[tuple[str, str]]:
    return {(v.column, v.rule) for v in violations}


@pytest.fixture
def frame(diabetes_config) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({c: rng.normal(50, 10, n) for c in diabetes_config.dataset.numeric})
    df["sex"] = rng.choice(["F", "M"], n)
    df["progression"] = rng.normal(150, 50, n)
    df["patient_id"] = range(n)
    return df


def test_a_clean_frame_has_no_violations(frame, diabetes_config):
    contract = infer_contract(frame, diabetes_config, "test")
    assert validate_frame(frame, diabetes_config, contract) == []


def test_schema_names_missing_column_and_wrong_type(frame, diabetes_config):
    broken = frame.drop(columns=["bmi"]).assign(bp=lambda d: d["bp"].astype(str) + "mmHg")
    assert _rules(check_schema(broken, diabetes_config)) == {("bmi", "missing_column"), ("bp", "wrong_type")}


def test_contract_catches_nulls_ranges_and_unknown_categories(frame, diabetes_config):
    contract = infer_contract(frame, diabetes_config, "test")
    broken = frame.copy()
    broken.loc[0, "age"] = None
    broken.loc[1, "bmi"] = 10_000.0
    broken.loc[2:20, "sex"] = "X"
    assert _rules(check_contract(broken, contract)) == {
        ("age", "not_nullable"),
        ("bmi", "out_of_range"),
        ("sex", "unknown_category"),
    }


def test_contract_round_trips_through_its_file(frame, diabetes_config, tmp_path):
    contract = infer_contract(frame, diabetes_config, "test")
    contract.save(tmp_path / "c.json")
    assert Contract.load(tmp_path / "c.json") == contract


def test_quality_rules(frame, diabetes_config):
    broken = pd.concat([frame, frame.head(50)], ignore_index=True)
    broken["s6"] = 1.0
    broken.loc[100:349, "s5"] = None  # more than half, sparing the duplicated rows
    found = _rules(check_quality(broken, diabetes_config))
    assert {("s6", "constant_column"), ("s5", "max_missing_share"), ("*", "duplicates")} <= found


def test_target_balance_for_classification(flights_config):
    df = pd.DataFrame({"arr_delayed": [0] * 999 + [1], "carrier": ["AA"] * 1000})
    found = check_quality(df, flights_config)
    assert ("arr_delayed", "target_balance") in _rules(found)
