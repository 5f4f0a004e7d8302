"""What a use case's data and model are: mlops.yaml's dataset, window, split, quality, features, training, compute,
gates and drift sections (strict pydantic models; a wrong key is named)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops.usercode import PROJECT_ROOT

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
        return resolve_path(self.contract or Path("contracts") / f"{self.name}.json")


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


def resolve_path(path: Path) -> Path:
    """A path of the config, relative to the project when not absolute."""
    return path if path.is_absolute() else PROJECT_ROOT / path
