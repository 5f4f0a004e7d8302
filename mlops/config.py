"""The one config a team writes for its use case: `mlops.yaml`, validated by pydantic."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from mlops.usercode import (
    PROJECT_ROOT,
    USECASES,
    UserCodeError,
    import_root,
    is_import_path,
    resolve_callable,
    use_case_of,
)

DEFAULT_CONFIG = PROJECT_ROOT / "usecases" / "flights" / "mlops.yaml"  # the default use case
CAPTURE_DIR = "capture"  # under the state dir: captured traffic, partitioned by use case, environment, version, hour
# A captured row's own columns (mlops/serving/capture.py writes them, monitoring and feedback read them); then the
# model's inputs and key columns by name (captured_column), and the partition keys read back from the path.
REQUEST_ID, ROW, CAPTURED_AT, LATENCY_MS, PREDICTION = "request_id", "row", "captured_at", "latency_ms", "prediction"
CAPTURE_PARTITIONS = ("use_case", "environment", "version", "hour")


def captured_column(name: str) -> str:
    """The captured column of an input column: its name, prefixed "input_" only if a captured row's own collides."""
    own = (REQUEST_ID, ROW, CAPTURED_AT, LATENCY_MS, PREDICTION, *CAPTURE_PARTITIONS)
    return f"input_{name}" if name in own else name


USE_CASE_LABEL = "mlops.use-case"  # the resource label naming the use case (Config.name) on every event of the loop


# `package.module:name` or `package.module.name` (mlops/usercode.py)
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*([:.][A-Za-z_][A-Za-z0-9_]*)$"
BUILTIN_ESTIMATORS = ("hist_gradient_boosting", "random_forest", "linear")


class ConfigError(ValueError):
    """A config file that cannot be used, with every offending key named."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSource(Strict):
    kind: Literal["csv", "parquet"]
    path: Path


class SqlSource(Strict):
    kind: Literal["sql"]
    url: str
    table: str


class PythonSource(Strict):
    """Data no built-in kind reads: `loader` (`module:function`) takes no arguments and returns a DataFrame."""

    kind: Literal["python"]
    loader: str = Field(pattern=IMPORT_PATH)


Source = Annotated[FileSource | SqlSource | PythonSource, Field(discriminator="kind")]


class Dataset(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: Source
    target: str
    numeric: list[str] = []
    categorical: list[str] = []
    time_column: str | None = None
    segments: list[str] = []
    key_columns: list[str] = []  # identify a row in batch-scoring output
    contract: Path | None = None  # schema contract file; default contracts/<name>.json

    @model_validator(mode="after")
    def _columns_are_consistent(self) -> Dataset:
        features = self.numeric + self.categorical
        if not features:
            raise ValueError("declare at least one feature under numeric or categorical")
        dupes = sorted({c for c in features if features.count(c) > 1})
        if dupes:
            raise ValueError(f"columns listed twice in numeric/categorical: {dupes}")
        if self.target in features:
            raise ValueError(f"target {self.target!r} is also listed as a feature")
        unknown_segments = [s for s in self.segments if s not in self.categorical]
        if unknown_segments:
            raise ValueError(f"segments must be categorical features: {unknown_segments}")
        return self

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical

    @property
    def contract_path(self) -> Path:
        return _resolve(self.contract or Path("contracts") / f"{self.name}.json")


class Window(Strict):
    """Which rows CT trains on, when the dataset has a time column."""

    as_of: str | None = None  # ISO date; rows strictly before it. None: the latest data
    months: int = Field(default=3, ge=1, le=120)


class Split(Strict):
    test_size: float = Field(default=0.2, gt=0.0, lt=0.9)
    validation_size: float = Field(default=0.2, gt=0.0, lt=0.9)  # of the training part, for the search
    seed: int = 42


class Quality(Strict):
    min_rows: int = Field(default=1000, ge=1)
    max_missing_share: float = Field(default=0.3, ge=0.0, le=1.0)
    max_duplicate_share: float = Field(default=0.01, ge=0.0, le=1.0)
    min_class_share: float = Field(default=0.02, ge=0.0, le=0.5)  # classification target balance


class Training(Strict):
    # A built-in name, or the import path of a scikit-learn-compatible class: `lightgbm.LGBMClassifier`,
    # `xgboost.XGBRegressor`, `usecases.fraud.model:Estimator` (constructed with `params`, then the candidate's).
    estimator: str = Field(
        default="hist_gradient_boosting", pattern=f"^({'|'.join(BUILTIN_ESTIMATORS)})$|{IMPORT_PATH}"
    )
    params: dict[str, Any] = {}
    search: dict[str, list[Any]] = {}  # grid over estimator params
    max_candidates: int = Field(default=4, ge=1, le=64)


class Features(Strict):
    """What the estimator sees. Default: the built-in per-column preprocessing (mlops/domain/modeling.py)."""

    # `module:function` returning an unfitted scikit-learn transformer over the frame of the declared
    # input columns; fitted on training rows only and saved inside the served model.
    transform: str | None = Field(default=None, pattern=IMPORT_PATH)


class Compute(Strict):
    """Where CT's candidate search runs: this process's threads, or a Dask cluster (prefect-dask)."""

    # auto: Dask in the `scale` profile (MLOPS_PROFILE=scale) or when a scheduler address is given, else threads
    search_runner: Literal["auto", "threads", "dask"] = "auto"
    # An existing scheduler, e.g. tcp://10.0.0.5:8786 (DASK_SCHEDULER_ADDRESS wins); None: a LocalCluster per CT run.
    # Its workers must see the state dir (CT hands them its feature files by path).
    dask_address: str | None = None
    dask_workers: int = Field(default=2, ge=1, le=256)  # the LocalCluster's worker processes, one thread each


class CustomMetric(Strict):
    """A metric of the team's own: `function(y_true, y) -> float`, y being predicted labels or values,
    or with `uses: probabilities` the positive class's probability (binary) or the probability matrix."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    function: str = Field(pattern=IMPORT_PATH)
    greater_is_better: bool
    uses: Literal["predictions", "probabilities"] = "predictions"


class Gates(Strict):
    metric: str  # the metric that decides, e.g. roc_auc, rmse, or a custom metric's name
    floors: dict[str, float] = {}  # absolute bounds; lower bound, or upper bound for loss metrics
    min_gain: float = 0.0  # over the champion on the same holdout, in the gate metric
    max_segment_drop: float = 0.05  # no large segment worse than the champion by more than this
    min_segment_rows: int = Field(default=200, ge=1)  # segments smaller than this are reported, not gated
    custom_metrics: list[CustomMetric] = []  # computed beside the task's metrics, usable as any of them


class Drift(Strict):
    """How drift monitoring compares a new window with the champion's training window (see mlops/drift.py).

    Retraining on drift is debounced by the trigger in prefect.yaml (`within:` on the retrain deployment).
    """

    num_method: str | None = None  # Evidently stattest, e.g. "wasserstein", "psi", "ks"; None: Evidently's choice
    cat_method: str | None = None  # e.g. "jensenshannon", "chisquare"
    threshold: float | None = None  # per-column threshold; None: the method's default
    drift_share: float = Field(default=0.5, gt=0.0, le=1.0)  # share of drifted columns that means drift
    sample_rows: int | None = Field(default=50_000, ge=100)  # per side; None compares every row
    window_months: int = Field(default=1, ge=1, le=120)  # length of the new window checked


class Slo(Strict):
    p95_ms: float = 100.0
    p99_ms: float = 200.0
    max_error_rate: float = 0.01
    min_rps: float = 100.0


class LoadTest(Strict):
    users: int = Field(default=32, ge=1)
    spawn_rate: float = Field(default=32.0, gt=0)
    seconds: int = Field(default=20, ge=1)


class CaptureSettings(Strict):
    """What the service keeps of the traffic it answered (mlops/serving/capture.py), under `<state>/capture/`."""

    enabled: bool = True
    sample_rate: float = Field(default=1.0, gt=0.0, le=1.0)  # the share of answered requests kept
    # Requests (and their bytes) held in memory before they are written; past either a request is answered and
    # not kept (counted in /metrics).
    buffer_requests: int = Field(default=20_000, ge=1)
    buffer_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    flush_requests: int = Field(default=5_000, ge=1)  # a write starts when this many wait...
    flush_seconds: float = Field(default=5.0, gt=0.0)  # ...or this long after the last (a SIGKILL loses these)


class Serving(Strict):
    """The model service (mlops/serving/); the limits keep its memory bounded whatever clients send."""

    workers: int = Field(default=1, ge=1)
    # Serve a verified compiled predictor when the model allows (mlops/serving/compiled.py); false: sklearn.
    compiled: bool = True
    # On the compiled path, compile the trees to C with tl2cgen when a C compiler is found (verified like
    # the rest, ≈ 1.5 s at start-up); false, or no compiler: treelite's GTIL interpreter, ≈ 6× slower a batch.
    native: bool = True
    # Where batches are scored: auto = on the event loop for C trees (µs a batch: the hand-off to a thread
    # cost more than it freed, docs/benchmarks.md), in the batcher's thread for slower paths; or force one.
    predict_in: Literal["auto", "loop", "thread"] = "auto"
    max_batch_size: int = Field(default=64, ge=1)
    # 0: a batch is whatever waits when the model is free (batches grow with the load); > 0 also waits
    # that long for company, which only adds latency here (docs/benchmarks.md).
    max_wait_ms: float = Field(default=0.0, ge=0.0)
    # A bigger /invocations body gets 413 before it is read past this. The CD checks send 2,000 rows
    # per request: ≈ 0.3 MB for the default dataset's 17 columns. Raise it for much wider rows.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Requests waiting for a batch; past it /invocations answers 503 + Retry-After. None: 16 × max_batch_size.
    max_queue: int | None = Field(default=None, ge=1)
    # The request bytes held at once (being read, parsed or queued); past it 503. None: 16 x max_body_bytes.
    max_inflight_bytes: int | None = Field(default=None, ge=1024)
    host: str = "127.0.0.1"
    staging_port: int = 5101
    production_port: int = 5102
    capture: CaptureSettings = CaptureSettings()


class Delivery(Strict):
    """How a version that passed the staging gates reaches production."""

    # manual: CD pauses for a person's decision (a form in the Prefect UI, `mlops approve`, or the API)
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout_s: int = Field(default=3600, ge=10)  # no answer by then rejects the version
    # After the promotion CD watches production this long (a light probe of holdout rows, the service's
    # /metrics); a breach of the SLOs' error rate or p99 rolls production back. 0: no watch.
    watch_seconds: float = Field(default=0.0, ge=0.0)
    watch_rps: float = Field(default=10.0, gt=0.0)  # the probe's requests per second
    # swap: production is replaced by the candidate once staging's gates pass. shadow: first production serves the
    # champion with the candidate scoring every request unseen (both answers captured); after shadow_requests rows
    # (or shadow_seconds) the shadow gate (agreement, the candidate's latency, and where labels came back, the
    # metric on the same rows) promotes or rejects. A first version (no champion) is always swapped in.
    strategy: Literal["swap", "shadow"] = "swap"
    shadow_requests: int = Field(default=500, ge=1)
    shadow_seconds: float = Field(default=3600.0, gt=0.0)
    shadow_min_agreement: float = Field(default=0.8, ge=0.0, le=1.0)


class Feedback(Strict):
    """Late labels joined to the traffic production answered (flows/feedback.py, `mlops labels`)."""

    # The realized gates.metric of the version in production past this fires mlops.performance.degraded (and CT
    # through its trigger); None: the gates' floor for that metric. No floor at all: nothing fires.
    floor: float | None = None
    min_rows: int = Field(default=200, ge=1)  # labelled rows of a version before its realized metric is judged
    # Estimate the metric from served probabilities (CBPE) only for a version whose calibration error on its own
    # holdout (test_calibration_error in its MLflow run) is within this; else the estimate says "not estimable".
    max_calibration_error: float = Field(default=0.05, gt=0.0, le=1.0)

    def floor_for(self, gates: Gates) -> float | None:
        return self.floor if self.floor is not None else gates.floors.get(gates.metric)


NOTIFICATION_EVENTS = ("cd_rejected", "cd_rolled_back", "ct_failed", "drift_detected")
WEBHOOK_URL_ENV = "MLOPS_WEBHOOK_URL"


class Notifications(Strict):
    """Messages to a webhook (Slack-compatible JSON) from Prefect automations (deployments/notifications.yaml)."""

    # MLOPS_WEBHOOK_URL wins when set: a Slack webhook URL is a secret, keep it out of the repo.
    # No URL (the default): `mlops up` removes the automations and nothing is sent.
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    events: list[Literal[NOTIFICATION_EVENTS]] = list(NOTIFICATION_EVENTS)  # type: ignore[valid-type]

    def url(self) -> str | None:
        return os.environ.get(WEBHOOK_URL_ENV) or self.webhook_url


class ModelCard(Strict):
    """What every version's model card says about the use case (mlops.adapters.cards.set_model_card)."""

    use_case: str = ""
    intended_use: str = ""
    limitations: str = ""
    owner: str = ""


class Tracking(Strict):
    experiment: str
    model_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # MLFLOW_TRACKING_URI wins when set; this is the local stack's default.
    tracking_uri: str = "http://127.0.0.1:5000"


class Stack(Strict):
    """The local stack's ports and state dir; mlops/platform/settings.py applies the MLOPS_* overrides."""

    prefect_port: int = Field(default=4200, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    worker_port: int = Field(default=4201, ge=1, le=65535)  # the worker's /health endpoint
    receiver_port: int = Field(default=4202, ge=1, le=65535)  # MLflow webhooks → Prefect events
    postgres_port: int = Field(default=4203, ge=1, le=65535)  # the scale profile's PostgreSQL
    state_dir: Path = Path(".mlops")


class Config(Strict):
    dataset: Dataset
    task: Literal["binary", "multiclass", "regression"]
    window: Window = Window()
    split: Split = Split()
    quality: Quality = Quality()
    features: Features = Features()
    training: Training = Training()
    compute: Compute = Compute()
    gates: Gates
    drift: Drift = Drift()
    slo: Slo = Slo()
    tracking: Tracking
    load_test: LoadTest = LoadTest()
    serving: Serving = Serving()
    delivery: Delivery = Delivery()
    feedback: Feedback = Feedback()
    notifications: Notifications = Notifications()
    stack: Stack = Stack()
    model_card: ModelCard = ModelCard()

    _import_root: Path | None = PrivateAttr(default=None)  # where its import paths are imported from
    _use_case: str | None = PrivateAttr(default=None)  # set by load_config for usecases/<name>/mlops.yaml

    @model_validator(mode="after")
    def _gate_metric_fits_task(self) -> Config:
        clashes = [m.name for m in self.gates.custom_metrics if m.name in METRICS[self.task]]
        if clashes:
            raise ValueError(f"gates.custom_metrics: {clashes} already name built-in {self.task} metrics")
        names = [m.name for m in self.gates.custom_metrics]
        if len(set(names)) < len(names):
            raise ValueError(f"gates.custom_metrics: a name is listed twice in {names}")
        known = self.metric_directions()
        for name in [self.gates.metric, *self.gates.floors]:
            if name not in known:
                raise ValueError(f"gates: metric {name!r} is not one of {sorted(known)} for task {self.task!r}")
        return self

    def metric_directions(self) -> dict[str, bool]:
        """Every metric this use case computes -> True when higher is better (the task's and its own)."""
        return {**METRICS[self.task], **{m.name: m.greater_is_better for m in self.gates.custom_metrics}}

    def import_paths(self) -> dict[str, str]:
        """Each key that names user code -> its import path."""
        paths = {}
        if is_import_path(self.training.estimator):
            paths["training.estimator"] = self.training.estimator
        if self.features.transform:
            paths["features.transform"] = self.features.transform
        for i, metric in enumerate(self.gates.custom_metrics):
            paths[f"gates.custom_metrics[{i}].function"] = metric.function
        if isinstance(self.dataset.source, PythonSource):
            paths["dataset.source.loader"] = self.dataset.source.loader
        return paths

    @property
    def import_root(self) -> Path:
        """Where the config's import paths are imported from (mlops/usercode.py); the project for a
        config made in code."""
        return self._import_root or PROJECT_ROOT

    @property
    def use_case(self) -> str | None:
        """The use case's name when its config lives in `usecases/<name>/`, else None."""
        return self._use_case

    @property
    def name(self) -> str:
        """What the stack calls this use case (state dirs, ports, locks, events, status): its folder's name, else
        its dataset's."""
        return self._use_case or self.dataset.name

    def resolve(self, key: str) -> Any:
        """The object the import path at `key` names (see import_paths), imported from import_root."""
        return resolve_callable(self.import_paths()[key], key, self.import_root)

    @property
    def capture_dir(self) -> Path:
        """Where the stack's model services keep the traffic they answered (mlops/serving/capture.py)."""
        return self.state_dir / CAPTURE_DIR

    @property
    def state_dir(self) -> Path:
        """Where the local stack and the flows keep their files; MLOPS_STATE_DIR overrides it."""
        return _resolve(Path(os.environ.get("MLOPS_STATE_DIR") or self.stack.state_dir))

    def with_operations_of(self, current: Config) -> Config:
        """This config (a version's snapshot: what defines its data, split and features) with the
        OPERATIONAL_SECTIONS of `current` (ports, SLOs, timeouts, gates) and its import root."""
        merged = self.model_copy(update={name: getattr(current, name) for name in OPERATIONAL_SECTIONS})
        merged._import_root, merged._use_case = current._import_root, current._use_case
        return merged

    def fingerprint(self) -> str:
        """A short hash of the effective config, recorded as lineage on every model."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# What the file as it is now decides for every version: how and where things run, and the bar a version
# must clear (a raised floor applies to the next delivery at once). What a version's data is (source,
# columns, window, split, quality rules, features, estimator) comes from its own snapshot.
OPERATIONAL_SECTIONS = (
    "compute", "drift", "gates", "slo", "load_test", "serving", "delivery", "notifications", "stack", "tracking",
)  # fmt: skip

# Metric name -> True when higher is better.
# Policy replay (mlops/domain/replay.py): when a policy retrains, and the drift thresholds swept by default.
PolicyKind = Literal["never", "monthly", "drift", "metric", "estimated"]
POLICY_KINDS: tuple[PolicyKind, ...] = ("never", "monthly", "drift", "metric", "estimated")
DRIFT_SWEEP = (0.3, 0.4, 0.6, 0.7)  # around drift.drift_share's default 0.5

METRICS: dict[str, dict[str, bool]] = {
    "binary": {
        "roc_auc": True,
        "pr_auc": True,
        "log_loss": False,
        "f1": True,
        "accuracy": True,
        "calibration_error": False,
    },
    "multiclass": {"macro_f1": True, "accuracy": True, "log_loss": False},
    "regression": {"rmse": False, "mae": False, "r2": True},
}


def _resolve(path: Path) -> Path:
    return path if path.is_absolute() else PROJECT_ROOT / path


def config_path() -> Path:
    return Path(os.environ.get("MLOPS_CONFIG") or DEFAULT_CONFIG)


def use_cases(root: Path = PROJECT_ROOT) -> list[str]:
    """This project's use cases: each folder `usecases/<name>/` that holds an mlops.yaml, by name."""
    return sorted(p.parent.name for p in (root / USECASES).glob("*/mlops.yaml"))


def use_case_parameter() -> Any:
    """The type of a flow's `use_case` parameter: the discovered names, so Prefect's form offers them."""
    found = use_cases()
    return Literal[tuple(found)] if found else str  # type: ignore[valid-type]


def stack_use_cases() -> list[str]:
    """The use cases this stack runs: every folder of usecases/, or only the file MLOPS_CONFIG names when that file
    lives elsewhere (it points the whole system at one file)."""
    if use_case_of(config_path()) is None:
        return [load_config().name]
    return use_cases()


def config_named(name: str) -> Config:
    """The config of the use case the stack calls `name` (Config.name): its folder's, or the default config's."""
    if name in use_cases():
        return load_config(use_case=name)
    default = load_config()
    if default.name != name:
        raise ConfigError(f"no use case named {name!r}: not a folder usecases/<name>/ nor the default config's name")
    return default


def config_for_model(model_name: str | None) -> Config | None:
    """The config of the use case that registers `model_name` (tracking.model_name): the default config's first,
    then each folder's; the default config when no name is given, None when no use case registers it."""
    default = load_config()
    if model_name is None or default.tracking.model_name == model_name:
        return default
    for name in use_cases():
        config = load_config(use_case=name)
        if config.tracking.model_name == model_name:
            return config
    return None


def load_config(path: str | Path | None = None, *, use_case: str | None = None) -> Config:
    """Load and validate a config: `usecases/<use_case>/mlops.yaml`, else `path`, else MLOPS_CONFIG, else the
    default use case's (usecases/flights/mlops.yaml)."""
    if use_case:
        if use_case not in use_cases():
            raise ConfigError(f"use case {use_case!r} is not one of {use_cases()} (folders usecases/<name>/mlops.yaml)")
        path = PROJECT_ROOT / USECASES / use_case / "mlops.yaml"
    path = Path(path) if path else config_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid config\n{problems}") from None
    config = _anchor_paths(config, path.resolve().parent)
    config._import_root, config._use_case = import_root(path), use_case_of(path)
    check_user_code(config, path)
    return config


def check_user_code(config: Config, path: Path | str = "config") -> None:
    """Import every path the config names; a ConfigError lists each key and path that fails."""
    problems = []
    for key in config.import_paths():
        try:
            config.resolve(key)
        except UserCodeError as exc:
            problems.append(f"  - {exc}")
    if problems:
        raise ConfigError(f"{path}: user code that cannot be used\n" + "\n".join(problems))


def _anchor_paths(config: Config, base: Path) -> Config:
    """Relative data and contract paths in a config are relative to the config file."""
    ds = config.dataset
    update: dict[str, Any] = {}
    if isinstance(ds.source, FileSource) and not ds.source.path.is_absolute():
        update["source"] = ds.source.model_copy(update={"path": base / ds.source.path})
    if ds.contract is not None and not ds.contract.is_absolute():
        update["contract"] = base / ds.contract
    if not update:
        return config
    return config.model_copy(update={"dataset": ds.model_copy(update=update)})
