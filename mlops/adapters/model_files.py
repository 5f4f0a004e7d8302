"""What a model version carries (skops model, trusted types, requirements, own code, verification rows, config snapshot) and reading it back."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from mlops import usercode
from mlops.config import Config

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

VERIFICATION_ROWS = "serving/verification_rows.parquet"  # in a version's run: `example` as logged with the model
CONFIG_SNAPSHOT = "config/mlops.yaml"  # in a version's run: the effective config CT trained it with


def log_model(model: Any, example: pd.DataFrame, outputs: Any, config: Config, numeric_as: str = "float64") -> str:
    """Log the fitted pipeline (skops format, input signature) into the active run; returns its model URI.

    `example` (holdout rows) gives the signature, the input example (its first 5 rows), and
    `VERIFICATION_ROWS`, on which the model service checks its compiled prediction path.
    """
    # Numeric inputs are declared double so a request may carry a missing value (the booster handles NaN);
    # `numeric_as` declares another type (a test's train/serve skew).
    example = example.astype(dict.fromkeys(config.dataset.numeric, numeric_as))
    with tempfile.TemporaryDirectory() as tmp:
        paths = config.import_paths().values()
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, outputs),
            input_example=example.head(5),
            serialization_format="skops",
            skops_trusted_types=trusted_types(model, config),
            pyfunc_predict_fn="predict_proba" if config.task != "regression" else "predict",
            pip_requirements=model_requirements(model),
            # The use case's code as it is now: a later edit cannot change what this version runs.
            code_paths=usercode.stage_code(paths, config.import_root, config.use_case, Path(tmp, "code")) or None,
        )
        # The config it was trained with: CD, drift and batch scoring read what defines its data from it.
        mlflow.log_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), CONFIG_SNAPSHOT)
        # The rows the model service checks its compiled prediction path on (mlops/serving/compiled.py).
        rows = Path(tmp) / VERIFICATION_ROWS.rsplit("/", 1)[1]
        example.to_parquet(rows, index=False)
        mlflow.log_artifact(str(rows), VERIFICATION_ROWS.rsplit("/", 1)[0])
    return info.model_uri


def trusted_types(model: Any, config: Config) -> list[str]:
    """What skops may load for this model: TRUSTED_TYPES, and the types of the use case's own modules
    and of the packages its config names (`lightgbm`, `xgboost`); anything else is refused here,
    before a version exists, rather than when it is served."""
    import skops.io

    owned = usercode.owned_prefixes(config.import_paths().values(), config.import_root, config.use_case)
    found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    refused = [t for t in found if t not in TRUSTED_TYPES and not any(t.startswith(f"{p}.") for p in owned)]
    if refused:
        raise usercode.UserCodeError(
            f"the model holds {refused}, which loading it would have to trust; only the built-in types, the use "
            f"case's own modules and the packages its config names ({owned or 'none'}) are trusted"
        )
    return sorted({*TRUSTED_TYPES, *found})


def model_requirements(model: Any) -> list[str]:
    """The pinned distributions the fitted model's own classes come from, and skops (its format).

    Named from the model rather than left to MLflow, whose inference loads the model again in a
    subprocess (4 s of every CT run here) and lists whatever that process had imported (pytest,
    dask, rich for this project's models).
    """
    from importlib.metadata import packages_distributions, version

    roots = {"skops"}
    pending = [model]
    while pending:
        step = pending.pop()
        roots.add(type(step).__module__.split(".")[0])
        pending += [s for _, s, *_ in getattr(step, "steps", None) or getattr(step, "transformers_", None) or []]
    found = packages_distributions()
    names = sorted({name for root in roots for name in found.get(root, [])})
    return [f"{name}=={version(name)}" for name in names]


def load_local_model(path: str | Path) -> Any:
    """A downloaded sklearn-flavour model whose use-case code (`code_paths`) is imported from its own
    copy: modules of those names imported earlier (the working tree's, another version's) are
    forgotten first, so this version's are read; objects already loaded keep theirs."""
    code = Path(path) / "code"
    if code.is_dir():
        usercode.forget(entry.stem for entry in code.iterdir())
    return mlflow.sklearn.load_model(str(path))


def version_config(client: MlflowClient, run_id: str | None, current: Config) -> Config:
    """The config that defines a version's data (the snapshot in its run `run_id`) with `current`'s
    operational settings; `current` alone for a version without one (registered by hand, or older)."""
    raw = read_run_artifact(client, run_id, CONFIG_SNAPSHOT) if run_id else None
    if raw is None:
        return current
    return Config.model_validate(yaml.safe_load(raw)).with_operations_of(current)


def read_run_artifact(client: MlflowClient, run_id: str, path: str) -> bytes | None:
    """One file of a run's artifacts, or None when the run has no such file (other errors raise)."""
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    if not any(item.path == path for item in client.list_artifacts(run_id, folder)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()
