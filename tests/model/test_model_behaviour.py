"""Behaviour tests of a model trained on one month, the way CT trains it (pure functions, no Prefect)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.metrics import roc_auc_score

from mlops.domain import modeling, split

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def trained(flights_month, flights_config):
    train, test = split.split_frame(flights_month, flights_config)
    X, y = modeling.features_and_target(train, flights_config)
    preprocessor = modeling.build_preprocessor(flights_config).fit(X)
    params = modeling.candidate_grid(flights_config)[0]
    model = modeling.assemble_model(
        preprocessor, modeling.fit_estimator(flights_config, params, preprocessor.transform(X), y)
    )
    return model, modeling.features_and_target(test, flights_config), (X, y)


def test_learning_happened(trained):
    model, (X_test, y_test), (X, y) = trained
    auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    baseline = roc_auc_score(y_test, DummyClassifier(strategy="prior").fit(X, y).predict_proba(X_test)[:, 1])
    assert auc > 0.6 and auc > baseline + 0.1


def test_outputs_are_probabilities_of_the_declared_shape(trained):
    model, (X_test, _), _ = trained
    proba = model.predict_proba(X_test.head(100))
    assert proba.shape == (100, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(model.classes_) == [0, 1]


def test_predictions_are_deterministic(trained, flights_config):
    model, (X_test, _), (X, y) = trained
    again = modeling.assemble_model(
        modeling.build_preprocessor(flights_config).fit(X),
        modeling.fit_estimator(
            flights_config,
            modeling.candidate_grid(flights_config)[0],
            modeling.build_preprocessor(flights_config).fit(X).transform(X),
            y,
        ),
    )
    np.testing.assert_array_equal(model.predict_proba(X_test), again.predict_proba(X_test))


def test_unseen_and_missing_values_get_a_prediction(trained):
    model, (X_test, _), _ = trained
    odd = X_test.head(3).copy()
    odd["carrier"] = "ZZ"
    odd["temp"] = np.nan
    assert np.isfinite(model.predict_proba(odd)).all()


def test_worse_weather_raises_the_predicted_delay_on_average(trained):
    """A directional expectation: heavy rain and low visibility should not make delays less likely."""
    model, (X_test, _), _ = trained
    storm = X_test.assign(precip=0.5, visib=1.0)
    clear = X_test.assign(precip=0.0, visib=10.0)
    assert model.predict_proba(storm)[:, 1].mean() > model.predict_proba(clear)[:, 1].mean()
