"""MLflow tracking and registry: where models are logged, registered, aliased and loaded. No Prefect here."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException, RestException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from mlops.config import PROJECT_ROOT, Config

CHALLENGER = "challenger"
CHAMPION = "champion"

# Types skops may load beyond its defaults; named one by one (never "trust everything").
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.tree._tree.Tree",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.link.Interval",
    # ColumnTransformer's fitted "passthrough" is a FunctionTransformer over partial(check_array).
    "functools.partial",
    "sklearn.utils.validation.check_array",
    "numpy.dtype",
    "collections.OrderedDict",
]


def tracking_uri(config: Config) -> str:
    """MLFLOW_TRACKING_URI when set, else the config's (the local stack's server)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or config.tracking.tracking_uri


def connect(config: Config) -> MlflowClient:
    """Point the MLflow fluent API at the tracking server and make sure the experiment exists."""
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(config.tracking.experiment)
    return MlflowClient(uri, registry_uri=uri)


def run_url(config: Config, run_id: str) -> str | None:
    """A browser link to the run when the tracking server speaks HTTP."""
    uri = tracking_uri(config)
    if not uri.startswith("http"):
        return None
    experiment = mlflow.get_experiment_by_name(config.tracking.experiment)
    return f"{uri.rstrip('/')}/#/experiments/{experiment.experiment_id}/runs/{run_id}"


def git_commit() -> str:
    """The commit of the working tree, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def log_model(model: Any, example: pd.DataFrame, outputs: Any, config: Config) -> str:
    """Log the fitted pipeline (skops format, input signature) into the active run; returns its model URI."""
    # Numeric inputs are declared double so a request may carry a missing value (the booster handles NaN).
    example = example.astype({c: "float64" for c in config.dataset.numeric})
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, outputs),
        input_example=example.head(5),
        serialization_format="skops",
        skops_trusted_types=TRUSTED_TYPES,
        pyfunc_predict_fn="predict_proba" if config.task != "regression" else "predict",
    )
    return info.model_uri


def register(client: MlflowClient, model_uri: str, run_id: str, config: Config, tags: dict[str, str]) -> str:
    """Register a new version with lineage tags and point the `challenger` alias at it."""
    name = config.tracking.model_name
    try:
        client.create_registered_model(name, description=f"{config.task} model for dataset {config.dataset.name}")
    except (MlflowException, RestException) as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise
    # A logged model's URI is models:/<model id>; an MLflow server also wants that id spelled out.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


@dataclass(frozen=True)
class AliasedModel:
    version: str
    run_id: str
    model: Any


def load_aliased(client: MlflowClient, config: Config, alias: str) -> AliasedModel | None:
    """The model version behind an alias, loaded with its sklearn flavor; None when the alias is unset."""
    name = config.tracking.model_name
    try:
        version = client.get_model_version_by_alias(name, alias)
    except (MlflowException, RestException) as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            return None
        raise
    model = mlflow.sklearn.load_model(f"models:/{name}@{alias}")
    return AliasedModel(version=str(version.version), run_id=version.run_id, model=model)
