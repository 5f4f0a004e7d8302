"""Feature engineering and estimators: sklearn objects built from the config, fitted on training data only."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops.config import METRICS, Config
from mlops.domain.evaluation import compute_metrics, predict_outputs
from mlops.domain.record import Record
from mlops.domain.split import held_out

ESTIMATORS: dict[tuple[str, bool], type[BaseEstimator]] = {
    ("hist_gradient_boosting", True): HistGradientBoostingClassifier,
    ("hist_gradient_boosting", False): HistGradientBoostingRegressor,
    ("random_forest", True): RandomForestClassifier,
    ("random_forest", False): RandomForestRegressor,
    ("linear", True): LogisticRegression,
    ("linear", False): Ridge,
}


def is_classifier(config: Config) -> bool:
    return config.task != "regression"


def build_preprocessor(config: Config) -> ColumnTransformer:
    """Per-column transforms; tree boosting takes ordinal codes, the others one-hot and imputed values."""
    ds = config.dataset
    if config.training.estimator == "hist_gradient_boosting":
        # Unknown and missing categories become NaN, which the booster routes as missing.
        categorical = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            max_categories=250,
            dtype=np.float64,
        )
        numeric: Any = "passthrough"
    else:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=50)),
            ]
        )
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    return ColumnTransformer(
        [("numeric", numeric, ds.numeric), ("categorical", categorical, ds.categorical)],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def build_estimator(config: Config, params: dict[str, Any]) -> BaseEstimator:
    """The configured estimator with the config's fixed params overlaid by the candidate's."""
    cls = ESTIMATORS[(config.training.estimator, is_classifier(config))]
    merged = {**config.training.params, **params}
    if config.training.estimator == "hist_gradient_boosting" and config.dataset.categorical:
        first = len(config.dataset.numeric)
        merged.setdefault("categorical_features", list(range(first, first + len(config.dataset.categorical))))
    return cls(**merged)


def candidate_grid(config: Config) -> list[dict[str, Any]]:
    """The search space as a list of parameter dicts, capped at max_candidates."""
    space = config.training.search
    if not space:
        return [{}]
    names = sorted(space)
    grid = [dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))]
    return grid[: config.training.max_candidates]


def features_and_target(df: pd.DataFrame, config: Config) -> tuple[pd.DataFrame, pd.Series]:
    """The model's input columns (in the config's order) and the target."""
    return df[config.dataset.features], df[config.dataset.target]


def assemble_model(preprocessor: ColumnTransformer, estimator: BaseEstimator) -> Pipeline:
    """The served model: the fitted feature transforms and the fitted estimator, as one Pipeline."""
    return Pipeline([("features", preprocessor), ("estimator", estimator)])


def fit_estimator(config: Config, params: dict[str, Any], X: np.ndarray, y: np.ndarray) -> BaseEstimator:
    return clone(build_estimator(config, params)).fit(X, y)


def fit_features(train: pd.DataFrame, config: Config) -> tuple[ColumnTransformer, np.ndarray, np.ndarray, np.ndarray]:
    """The feature transforms fitted on the training rows, those rows transformed, the target, and the
    search's split of them (True: the row scores candidates; False: it fits them)."""
    X, y = features_and_target(train, config)
    preprocessor = build_preprocessor(config).fit(X)
    return preprocessor, preprocessor.transform(X), y.to_numpy(), held_out(train, config, config.split.validation_size)


class Candidate(Record):
    """One point of the search space and its validation score in the gate metric."""

    params: dict[str, Any]
    metric: str
    score: float


def score_candidate(
    config: Config, params: dict[str, Any], X: np.ndarray, y: np.ndarray, scoring: np.ndarray
) -> Candidate:
    """One point of the grid fitted on the search's fitting rows and scored on its scoring rows."""
    estimator = fit_estimator(config, params, X[~scoring], y[~scoring])
    outputs = predict_outputs(estimator, X[scoring], config.task)
    score = compute_metrics(config.task, y[scoring], outputs, getattr(estimator, "classes_", None))[config.gates.metric]
    return Candidate(params=params, metric=config.gates.metric, score=score)


def best_candidate(candidates: list[Candidate], config: Config) -> Candidate:
    """The best validation score in the gate metric's direction (NaN never wins)."""
    higher = METRICS[config.task][config.gates.metric]
    scored = [c for c in candidates if not math.isnan(c.score)] or candidates
    return (max if higher else min)(scored, key=lambda c: c.score)
