"""MLflow tracking and registry: where runs are tracked and versions registered, aliased, found and loaded. No Prefect here."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops.adapters import model_files
from mlops.config import PROJECT_ROOT, Config

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"


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
    version's own copy (see model_files.load_local_model)."""
    return model_files.load_local_model(mlflow.artifacts.download_artifacts(ref.uri))


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
