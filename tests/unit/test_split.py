import pandas as pd
import pytest

from mlops.domain.split import check_split, held_out, search_split, split_frame

pytestmark = pytest.mark.unit


def _rules(violations) -> set[tuple[str, str]]:
    return {(v.column, v.rule) for v in violations}


def test_time_split_is_ordered_and_disjoint(flights_config):
    times = pd.date_range("2013-01-01", periods=100, freq="h", tz="UTC")
    df = pd.DataFrame({"time_hour": times, "arr_delayed": [0, 1] * 50})
    train, test = split_frame(df, flights_config)
    assert train["time_hour"].max() < test["time_hour"].min()
    assert len(test) == pytest.approx(len(df) * flights_config.split.test_size, abs=2)
    assert check_split(train, test, flights_config) == []
    assert ("time_hour", "split_time_order") in _rules(check_split(test, train, flights_config))


def test_random_split_is_seeded_and_stratified(diabetes_config):
    classification = diabetes_config.model_copy(update={"task": "binary"})
    df = pd.DataFrame({"progression": [0] * 300 + [1] * 100, "sex": ["F"] * 400})
    train_a, test_a = split_frame(df, classification)
    _train_b, test_b = split_frame(df, classification)
    assert test_a.index.equals(test_b.index)
    assert test_a["progression"].mean() == pytest.approx(0.25, abs=0.01)
    assert check_split(train_a, test_a, classification) == []
    assert ("*", "split_overlap") in _rules(check_split(train_a, pd.concat([test_a, train_a.head(3)]), classification))


def test_search_split_follows_the_holdout_policy_on_rows_sorted_by_target(diabetes_config):
    # An exported table sorted by its label: a positional cut would give the search's validation part
    # one class only. The policy is the holdout's: seeded and stratified, every class on both sides.
    classification = diabetes_config.model_copy(update={"task": "binary"})
    df = pd.DataFrame({"progression": [0] * 300 + [1] * 100, "sex": ["F"] * 400})
    train, _ = split_frame(df, classification)
    fit, validate = search_split(train, classification)
    assert set(fit["progression"]) == set(validate["progression"]) == {0, 1}
    assert validate["progression"].mean() == pytest.approx(0.25, abs=0.02)
    assert len(validate) == pytest.approx(len(train) * classification.split.validation_size, abs=2)


def test_search_split_is_time_later_with_a_time_column(flights_config):
    times = pd.date_range("2013-01-01", periods=100, freq="h", tz="UTC")
    train = pd.DataFrame({"time_hour": times, "arr_delayed": [0, 1] * 50})
    fit, validate = search_split(train, flights_config)
    assert fit["time_hour"].max() < validate["time_hour"].min()


def test_a_class_with_one_row_stays_in_the_fitted_part(diabetes_config):
    classification = diabetes_config.model_copy(update={"task": "binary"})
    df = pd.DataFrame({"progression": [0] * 50 + [1], "sex": ["F"] * 51})
    mask = held_out(df, classification, 0.5)
    assert not mask[-1] and mask[:50].sum() == 25
