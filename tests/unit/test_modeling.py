import numpy as np
import pandas as pd
import pytest
import skops.io

from mlops.adapters import model_files
from mlops.adapters.model_files import TRUSTED_TYPES
from mlops.domain import modeling

pytestmark = pytest.mark.unit


def test_candidate_grid_is_the_product_capped(flights_config):
    grid = modeling.candidate_grid(flights_config)
    assert len(grid) == 4
    assert {"learning_rate", "max_leaf_nodes"} == set(grid[0])
    capped = flights_config.model_copy(
        update={"training": flights_config.training.model_copy(update={"max_candidates": 3})}
    )
    assert len(modeling.candidate_grid(capped)) == 3


def _frame(config, n=300) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({c: rng.normal(size=n) for c in config.dataset.numeric})
    for c in config.dataset.categorical:
        df[c] = rng.choice(["a", "b", "c"], n)
    df.loc[::7, config.dataset.numeric[0]] = np.nan  # missing values must be handled
    signal = df[config.dataset.numeric[1]]
    df[config.dataset.target] = (signal > 0).astype(int) if config.task != "regression" else signal * 3
    return df


@pytest.mark.parametrize(
    "estimator", ["hist_gradient_boosting", "random_forest", "linear", "lightgbm.LGBM{kind}", "xgboost.XGB{kind}"]
)
@pytest.mark.parametrize("which", ["flights_config", "diabetes_config"])
def test_every_estimator_fits_handles_unknowns_and_saves_with_the_trusted_types(which, estimator, request, tmp_path):
    config = request.getfixturevalue(which)
    estimator = estimator.format(kind="Regressor" if config.task == "regression" else "Classifier")
    config = config.model_copy(
        update={"training": config.training.model_copy(update={"estimator": estimator, "params": {}})}
    )
    df = _frame(config)
    X, y = modeling.features_and_target(df, config)
    preprocessor = modeling.build_preprocessor(config).fit(X)
    estimator_obj = modeling.fit_estimator(config, {}, preprocessor.transform(X), y.to_numpy())
    model = modeling.assemble_model(preprocessor, estimator_obj)
    unseen = X.head(3).copy()
    unseen[config.dataset.categorical[0]] = "never-seen"
    assert len(model.predict(unseen)) == 3
    path = tmp_path / "model.skops"
    skops.io.dump(model, path)
    trusted = model_files.trusted_types(model, config)  # the built-in ones, and lightgbm's or xgboost's when named
    assert set(trusted) - set(TRUSTED_TYPES) <= {t for t in trusted if t.startswith(("lightgbm.", "xgboost."))}
    reloaded = skops.io.load(path, trusted=trusted)
    np.testing.assert_allclose(reloaded.predict(X), model.predict(X))
