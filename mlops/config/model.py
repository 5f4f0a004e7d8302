"""mlops.yaml as one strict model: `Config`, its sections, what it names by import path, and the metrics per task."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import PrivateAttr, model_validator

from mlops.config.operations import (
    CAPTURE_DIR,
    Delivery,
    Feedback,
    LoadTest,
    ModelCard,
    Notifications,
    Serving,
    Slo,
    Tracking,
)
from mlops.config.sections import (
    Compute,
    Dataset,
    Drift,
    Features,
    Gates,
    PythonSource,
    Quality,
    Split,
    Strict,
    Training,
    Window,
)
from mlops.config.stack import Stack, stack_settings_of
from mlops.usercode import PROJECT_ROOT, is_import_path, resolve_callable

USE_CASE_LABEL = "mlops.use-case"  # the resource label naming the use case (Config.name) on every event of the loop


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
        """Where the local stack and the flows keep their files: the stack's settings' (MLOPS_STATE_DIR wins)."""
        return stack_settings_of(self.stack).state_dir

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
