"""The returns team's own tests of its code: run by `make test` and by the CI flow (`-m unit`)."""

import numpy as np
import pytest

from usecases.returns import model

pytestmark = pytest.mark.unit


def test_the_derived_feature_is_the_price_per_item_and_leaves_the_input_alone():
    orders = model.orders(rows=50)
    derived = model.derive(orders)
    assert "amount_per_item" not in orders
    np.testing.assert_allclose(derived["amount_per_item"] * derived["n_items"], orders["amount"])


def test_the_transform_fits_on_the_declared_columns_and_codes_unknown_categories():
    orders = model.orders(rows=200)
    transform = model.features().fit(orders[[*model.NUMERIC, *model.CATEGORICAL]])
    unseen = orders.head(1).assign(channel="phone")
    assert transform.transform(unseen)[0, -2] == -1  # an unseen channel gets the unknown code


def test_top_decile_precision_counts_returns_among_the_riskiest_tenth():
    y = np.array([1, 0] * 10)
    assert model.top_decile_precision(y, np.where(y == 1, 0.9, 0.1)) == 1.0
    assert model.top_decile_precision(y, np.where(y == 1, 0.1, 0.9)) == 0.0
