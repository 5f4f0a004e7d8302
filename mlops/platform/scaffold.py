"""`mlops new`: a use case folder from a data file, as `kedro new` or a ZenML template makes a project.

What it writes trains with no further edit: `usecases/<name>/mlops.yaml` (the task and each column's
kind inferred from the data), `contract.json` (as `mlops contract` infers it, for review), `model.py`
(the team's feature transform, named by `features.transform`) and `tests/test_model.py`.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlops.config import PROJECT_ROOT, ConfigError, load_config
from mlops.usercode import USECASES

NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a Python package name: usecases.<name>
MAX_CLASSES = 20  # a target with more distinct integer values (or any fractional one) is regression
MAX_SEGMENT_VALUES = 12  # the first categorical feature with 2..this many values is the segment column
KEY_SHARE = 0.95  # a text or integer column this unique is an identifier (key_columns), not a feature


class ScaffoldError(ValueError):
    """Why no folder was written."""


@dataclass(frozen=True)
class Inferred:
    task: str
    numeric: list[str]
    categorical: list[str]
    keys: list[str]
    segments: list[str]


def infer(df: pd.DataFrame, target: str, time_column: str | None) -> Inferred:
    """The task from the target's values, and each other column's role from its type and values."""
    for column in [target, time_column]:
        if column and column not in df.columns:
            raise ScaffoldError(f"no column {column!r} in the data; it has {list(df.columns)}")
    labels = df[target].dropna()
    if labels.nunique() < 2:
        raise ScaffoldError(f"target {target!r} has fewer than two distinct values")
    fractional = pd.api.types.is_float_dtype(labels) and not (labels == labels.round()).all()
    numeric_target = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    if numeric_target and (fractional or labels.nunique() > MAX_CLASSES):
        task = "regression"
    else:
        task = "binary" if labels.nunique() == 2 else "multiclass"
    numeric, categorical, keys = [], [], []
    for column in df.columns:
        values = df[column]
        if column in (target, time_column) or values.isna().all():
            continue
        is_number = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if (not is_number or pd.api.types.is_integer_dtype(values)) and values.nunique() > KEY_SHARE * len(values):
            keys.append(column)  # text or integers all but unique: an id
        elif is_number:
            numeric.append(column)
        else:
            categorical.append(column)
    if not numeric and not categorical:
        raise ScaffoldError("no column besides the target and time column can be a feature")
    segments = [c for c in categorical if 2 <= df[c].nunique() <= MAX_SEGMENT_VALUES][:1]
    return Inferred(task, numeric, categorical, keys, segments)


def config_for(name: str, data: Path, folder: Path, target: str, time_column: str | None, df: pd.DataFrame) -> dict:
    """The use case's mlops.yaml as a mapping: what was inferred, and gates any first model passes."""
    found = infer(df, target, time_column)
    # Relative to the config when the data is in the project (the folder's grandparent), else absolute.
    inside = data.resolve().is_relative_to(folder.resolve().parent.parent)
    path = os.path.relpath(data.resolve(), folder.resolve()) if inside else str(data.resolve())
    kind = "parquet" if data.suffix.lower() in (".parquet", ".pq") else "csv"
    metric = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}[found.task]
    estimator = "Regressor" if found.task == "regression" else "Classifier"
    dataset: dict[str, Any] = {
        "name": name,
        "source": {"kind": kind, "path": path},
        "contract": "contract.json",
        "target": target,
        "numeric": found.numeric,
        "categorical": found.categorical,
    }
    if time_column:
        dataset["time_column"] = time_column
    if found.segments:
        dataset["segments"] = found.segments
    if found.keys:
        dataset["key_columns"] = found.keys
    config: dict[str, Any] = {"dataset": dataset, "task": found.task}
    if time_column:
        times = pd.to_datetime(df[time_column], utc=True)
        span = (times.max().year - times.min().year) * 12 + times.max().month - times.min().month + 1
        config["window"] = {"months": max(1, min(12, span))}
    config |= {
        "quality": {"min_rows": max(1, min(1000, len(df) // 2))},
        "features": {"transform": f"{USECASES}.{name}.model:features"},
        "training": {
            "estimator": f"sklearn.ensemble.HistGradientBoosting{estimator}",
            "params": {"max_iter": 100, "random_state": 0},
            "search": {"learning_rate": [0.05, 0.1]},
        },
        # No floors yet: the first model is registered; set them once you know what good is here.
        "gates": {"metric": metric, "min_gain": 0.0, "min_segment_rows": max(1, min(200, len(df) // 20))},
        "tracking": {"experiment": name, "model_name": name},
    }
    return config


MODEL = '''\
"""The {name} team's own code: named from mlops.yaml by import path (features.transform)."""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

NUMERIC = {numeric!r}
CATEGORICAL = {categorical!r}


def derive(frame: pd.DataFrame) -> pd.DataFrame:
    """Derived columns go here (add them to a list below); return a new frame, never change `frame`."""
    return frame.copy()


def features() -> object:
    """features.transform: an unfitted transformer from the declared input columns to the model's matrix.

    Fitted on training rows only and saved inside every version, so serving runs exactly this.
    """
    codes = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
    encode = ColumnTransformer(
        [("numeric", "passthrough", NUMERIC), ("categorical", codes, CATEGORICAL)], remainder="drop"
    )
    return make_pipeline(FunctionTransformer(derive), encode)
'''

TEST = '''\
"""The {name} team's tests of its own code: run by `make test` and by the CI flow (`-m unit`)."""

import pandas as pd
import pytest

from {package}.model import CATEGORICAL, NUMERIC, derive, features

pytestmark = pytest.mark.unit

ROWS = pd.DataFrame({rows!r})


def test_derive_leaves_its_input_alone():
    before = ROWS.copy()
    derive(ROWS)
    pd.testing.assert_frame_equal(ROWS, before)


def test_the_transform_gives_one_row_per_input_row():
    assert features().fit(ROWS[NUMERIC + CATEGORICAL]).transform(ROWS[NUMERIC + CATEGORICAL]).shape[0] == len(ROWS)
'''


def new_use_case(name: str, data: Path, target: str, time_column: str | None = None, into: Path | None = None) -> Path:
    """Write `into/<name>/` (default: this project's usecases/) from the data file; returns its mlops.yaml.
    Nothing is written when it fails."""
    into = into or PROJECT_ROOT / USECASES
    from mlops.adapters import sources
    from mlops.domain import validation

    if not NAME.match(name):
        raise ScaffoldError(f"name {name!r}: use lower case letters, digits and _ (it becomes usecases.{name})")
    folder = into / name
    if folder.exists():
        raise ScaffoldError(f"{folder} exists: choose another name or remove it")
    if not data.is_file():
        raise ScaffoldError(f"no data file at {data}")
    df = sources.read_file(data, "parquet" if data.suffix.lower() in (".parquet", ".pq") else "csv")
    config = config_for(name, data, folder, target, time_column, df)
    sample = df[config["dataset"]["numeric"] + config["dataset"]["categorical"]].head(5)
    rows = {c: [None if pd.isna(v) else v for v in sample[c].tolist()] for c in sample.columns}
    files = {
        "mlops.yaml": f"# Written by `mlops new {name}` from {data.name}: review the inferred kinds, then commit.\n"
        + yaml.safe_dump(config, sort_keys=False),
        "__init__.py": "",
        "model.py": MODEL.format(
            name=name, numeric=config["dataset"]["numeric"], categorical=config["dataset"]["categorical"]
        ),
        "tests/__init__.py": "",
        "tests/test_model.py": TEST.format(name=name, package=f"{USECASES}.{name}", rows=rows),
    }
    try:
        for relative, text in files.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(textwrap.dedent(text))
        if not (into / "__init__.py").exists():
            (into / "__init__.py").write_text("")
        loaded = load_config(folder / "mlops.yaml")
        frame = sources.load_source(loaded)
        validation.infer_contract(frame, loaded, inferred_from=f"{data.name}, {len(frame)} rows").save(
            loaded.dataset.contract_path
        )
    except (ConfigError, ValueError, OSError):
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder / "mlops.yaml"
