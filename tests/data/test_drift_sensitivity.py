"""The drift check's statistical choices against known shifts on real data (docs/drift.md)."""

from __future__ import annotations

import numpy as np
import pytest

from mlops.domain import drift

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def halves(flights_month, flights_config):
    """Two random halves of January: the same distribution, so no column should drift."""
    frame = drift.monitored_frame(flights_month, None, flights_config)
    shuffled = frame.sample(frac=1.0, random_state=0)
    return shuffled.iloc[: len(frame) // 2], shuffled.iloc[len(frame) // 2 :]


def test_random_halves_of_one_month_do_not_drift(halves, flights_config):
    result = drift.compare(*halves, flights_config)
    assert result.drifted_columns == [] and not result.drifted


@pytest.mark.parametrize(("shift_sd", "flagged"), [(0.05, False), (0.5, True)])
def test_a_shift_in_one_column_is_flagged_only_when_it_matters(halves, flights_config, shift_sd, flagged):
    reference, current = halves
    shifted = current.assign(temp=current["temp"] + shift_sd * reference["temp"].std())
    result = drift.compare(reference, shifted, flights_config)
    assert (result.column("temp").drifted, result.drifted_columns == (["temp"] if flagged else [])) == (flagged, True)
    assert not result.drifted  # one column of many is not dataset drift


def test_a_shift_in_most_columns_is_dataset_drift(halves, flights_config):
    reference, current = halves
    numeric = [c for c in flights_config.dataset.numeric if c in current.columns]
    shifted = current.assign(**{c: current[c] + reference[c].std() for c in numeric})
    shifted["carrier"] = np.where(np.arange(len(shifted)) % 2 == 0, "UA", shifted["carrier"])
    result = drift.compare(reference, shifted, flights_config)
    assert result.drifted and result.drift_share >= flights_config.drift.drift_share


def test_sampling_is_seeded_and_bounded(halves, flights_config):
    reference, _ = halves
    assert drift.sample(reference, 1000, 7).index.equals(drift.sample(reference, 1000, 7).index)
    assert len(drift.sample(reference, 1000, 7)) == 1000 and drift.sample(reference, None, 7) is reference
