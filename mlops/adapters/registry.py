"""MLflow tracking and registry: where models are logged, registered, aliased and loaded. No Prefect here."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from mlops import usercode
from mlops.config import PROJECT_ROOT, Config

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"

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


class RegistryUnavailable(ConnectionError):
    """The tracking server does not answer; the message names its URL and the fix."""


# MLflow's client retries a failed HTTP call 7 times with a backoff factor of 2 by default: minutes of
# silence when the server is down (7 min 35 s measured). Bounded here, unless the user set them.
CLIENT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
HEALTH_TIMEOUT_S = 5.0


def require_server(uri: str) -> None:
    """Fail within seconds, naming the URL and the fix, when an HTTP tracking server does not answer /health."""
    if not uri.startswith(("http://", "https://")):
        return  # a file or database store: nothing to reach
    import httpx

    try:
        answer = httpx.get(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S)
        if answer.status_code < 500:
            return
        problem = f"answered HTTP {answer.status_code}"
    except httpx.HTTPError as exc:
        problem = f"{type(exc).__name__}: {exc}"
    raise RegistryUnavailable(
        f"the MLflow tracking server at {uri} does not answer ({problem}). Start the local stack with "
        f"`make up` (then `source .mlops/env`), or point MLFLOW_TRACKING_URI at a server that runs."
    )


def connect(config: Config) -> MlflowClient:
    """Point the MLflow fluent API at the tracking server and make sure the experiment exists."""
    uri = tracking_uri(config)
    for name, value in CLIENT_RETRIES.items():
        os.environ.setdefault(name, value)
    require_server(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri, registry_uri=uri)
    mlflow.set_experiment(experiment_id=ensure_experiment(client, config.tracking.experiment))
    return client


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id, created when missing.

    With a local SQL store (`sqlite:///<file>`) its artifacts go into `mlruns/` beside the database;
    MLflow's default is `./mlruns` of whatever directory the process runs in.
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = client.tracking_uri
    location = (
        (Path(uri.removeprefix("sqlite:///")).absolute().parent / "mlruns").as_uri()
        if uri.startswith("sqlite:///")
        else None
    )
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as exc:  # another process created it meanwhile
        if not _is(exc, "RESOURCE_ALREADY_EXISTS"):
            raise
        created = client.get_experiment_by_name(name)
        assert created is not None, f"experiment {name!r} exists and cannot be read"
        return created.experiment_id


def run_url(config: Config, run_id: str) -> str | None:
    """A browser link to the run when the tracking server speaks HTTP."""
    uri = tracking_uri(config)
    if not uri.startswith("http"):
        return None
    experiment = mlflow.get_experiment_by_name(config.tracking.experiment)
    if experiment is None:
        raise ValueError(f"no MLflow experiment named {config.tracking.experiment!r} at {uri}")
    return f"{uri.rstrip('/')}/#/experiments/{experiment.experiment_id}/runs/{run_id}"


def version_url(config: Config, name: str, version: str) -> str | None:
    """A browser link to a registered model version when the tracking server speaks HTTP."""
    uri = tracking_uri(config)
    return f"{uri.rstrip('/')}/#/models/{name}/versions/{version}" if uri.startswith("http") else None


def git_commit() -> str:
    """The commit of the working tree, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


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


def _is(exc: MlflowException, code: str) -> bool:
    return getattr(exc, "error_code", None) == code


def _missing(exc: MlflowException) -> bool:
    """The model, version or alias does not exist. MLflow 3.17 reports an unset alias as
    INVALID_PARAMETER_VALUE "Registered model alias <a> not found." (SQL and file stores alike,
    and so over REST): that one case is told apart by its message."""
    if _is(exc, "RESOURCE_DOES_NOT_EXIST"):
        return True
    message = str(getattr(exc, "message", exc))
    return _is(exc, "INVALID_PARAMETER_VALUE") and "alias" in message and "not found" in message


def register(client: MlflowClient, model_uri: str, run_id: str, config: Config, tags: dict[str, str]) -> str:
    """Register a new version of the run's model with lineage tags and point the `challenger` alias at it.

    One version per run, so it is safe to retry: when the server made the version but its answer
    was lost (or it stopped before the alias moved), the retry finds that version instead of
    registering a second copy, and finishes the job.
    """
    name = config.tracking.model_name
    try:
        client.create_registered_model(name, description=f"{config.task} model for dataset {config.dataset.name}")
    except MlflowException as exc:
        if not _is(exc, "RESOURCE_ALREADY_EXISTS"):
            raise
    made = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if made:
        version = min(made, key=lambda v: int(v.version))
    else:
        # A logged model's URI is models:/<model id>; an MLflow server also wants that id spelled out.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


@dataclass(frozen=True)
class VersionRef:
    """One registered model version: what every caller needs to know about it, without loading it."""

    name: str
    version: str
    run_id: str | None
    status: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        """Pinned to the version, so it cannot change between looking it up and loading it."""
        return f"models:/{self.name}/{self.version}"

    @property
    def data_window(self) -> str | None:
        """The window CT took its data from (`Window.label()`), None when registered by hand."""
        return self.tags.get("data_window")

    @property
    def trained_on(self) -> str | None:
        """The rows it was fitted on: `training_window` lineage, else (older versions) its whole data window."""
        return self.tags.get("training_window") or self.data_window


def _ref(found: Any) -> VersionRef:
    return VersionRef(
        name=found.name,
        version=str(found.version),
        run_id=found.run_id or None,
        status=str(found.status),
        tags=dict(found.tags or {}),
    )


def aliased(client: MlflowClient, name: str, alias: str) -> VersionRef | None:
    """The version behind `alias`. None only when the model or the alias does not exist.

    This is the one policy for "is there a champion?": any other registry error (server down,
    timeout, permission) raises, so the calling task retries or fails instead of reading the
    failure as "no champion" and gating a candidate against the floors alone.
    """
    try:
        return _ref(client.get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def champion(client: MlflowClient, name: str) -> VersionRef | None:
    """The version serving production (alias `champion`), or None before the first promotion."""
    return aliased(client, name, CHAMPION)


def version(client: MlflowClient, name: str, number: str) -> VersionRef | None:
    """A version by number; None when it does not exist (other errors raise)."""
    try:
        return _ref(client.get_model_version(name, str(number)))
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def load_model(ref: VersionRef) -> Any:
    """The version's sklearn model (skops, trusting only the types it was logged with), its code the
    version's own copy (see load_local_model)."""
    return load_local_model(mlflow.artifacts.download_artifacts(ref.uri))


def load_local_model(path: str | Path) -> Any:
    """A downloaded sklearn-flavour model whose use-case code (`code_paths`) is imported from its own
    copy: modules of those names imported earlier (the working tree's, another version's) are
    forgotten first, so this version's are read; objects already loaded keep theirs."""
    code = Path(path) / "code"
    if code.is_dir():
        usercode.forget(entry.stem for entry in code.iterdir())
    return mlflow.sklearn.load_model(str(path))


def promote(client: MlflowClient, name: str, number: str) -> VersionRef | None:
    """Point `champion` at the version; the one it replaces becomes `previous_champion`.

    `challenger` is removed when it names the promoted version (a challenger is registered and not
    yet delivered). Returns the previous champion, None when there was none.
    """
    previous = champion(client, name)
    if previous is not None and previous.version == str(number):
        return aliased(client, name, PREVIOUS_CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, str(number))
    if previous is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous.version)
    challenger = aliased(client, name, CHALLENGER)
    if challenger is not None and challenger.version == str(number):
        client.delete_registered_model_alias(name, CHALLENGER)
    return previous


def restore_champion(client: MlflowClient, name: str, number: str | None) -> None:
    """Put `champion` back on `number` (None: remove it), as a compensation after a failed promotion."""
    if number is None:
        try:
            client.delete_registered_model_alias(name, CHAMPION)
        except MlflowException as exc:
            if not _missing(exc):
                raise
        return
    client.set_registered_model_alias(name, CHAMPION, str(number))


def tag_version(client: MlflowClient, name: str, number: str, tags: dict[str, str]) -> None:
    """Set each of `tags` on the model version, in order."""
    for key, value in tags.items():
        client.set_model_version_tag(name, str(number), key, value)


def reinstate(client: MlflowClient, name: str, number: str) -> None:
    """Point `champion` back at an earlier version and remove `previous_champion` (a rollback by hand): a second
    rollback must name its target rather than go "back" to the version just taken out."""
    client.set_registered_model_alias(name, CHAMPION, str(number))
    try:
        client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    except MlflowException as exc:
        if not _missing(exc):
            raise


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
