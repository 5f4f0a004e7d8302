"""User code named by import path: found from the use case's folder, every bad path named with its key."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops import usercode
from mlops.adapters import model_files, sources
from mlops.config import ConfigError, load_config
from mlops.domain import modeling
from mlops.domain.evaluation import compute_metrics, user_metrics
from mlops.domain.validation import DataValidationError

pytestmark = pytest.mark.unit

TEAM_CODE = """
import pandas as pd
from sklearn.preprocessing import FunctionTransformer, StandardScaler

def scaled():
    return StandardScaler()

def not_a_transformer():
    return 42

def fails_to_fit():
    def boom(frame):
        raise ValueError("no column 'price'")
    return FunctionTransformer(boom)

def frame():
    return pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})

def broken_loader():
    raise ConnectionError("warehouse down")

def wrong_loader():
    return [1, 2]

def hits(y_true, y):
    return float((y_true == y).sum())

def mean_probability(y_true, probability):
    return float(probability.mean())
"""


@pytest.fixture
def use_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`write(changes)` writes tmp_path/usecases/team/mlops.yaml beside the team's module; returns its path."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = tmp_path / "usecases" / "team"
    folder.mkdir(parents=True)
    (folder.parent / "__init__.py").write_text("")
    (folder / "__init__.py").write_text("")
    (folder / "code.py").write_text(TEAM_CODE)
    usercode.forget(["usecases"])  # another test's usecases package

    def write(changes: dict) -> Path:
        raw = {
            "dataset": {"name": "team", "source": {"kind": "csv", "path": "x.csv"}, "target": "y", "numeric": ["x"]},
            "task": "binary",
            "gates": {"metric": "roc_auc"},
            "tracking": {"experiment": "team", "model_name": "team"},
        }
        for dotted, value in changes.items():
            *parents, leaf = dotted.split(".")
            node = raw
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        (folder / "mlops.yaml").write_text(yaml.safe_dump(raw))
        return folder / "mlops.yaml"

    yield write
    usercode.forget(["usecases"])


def test_a_use_case_folder_imports_its_own_code_as_usecases_name(use_case):
    config = load_config(use_case({"features.transform": "usecases.team.code:scaled"}))
    assert config.use_case == "team"
    assert config.import_root == use_case({}).parent.parent.parent
    assert type(modeling.build_preprocessor(config)).__name__ == "StandardScaler"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (
            {"training.estimator": "lightgbm.NoSuchBooster"},
            "training.estimator: module 'lightgbm' has no 'NoSuchBooster'",
        ),
        ({"training.estimator": "nosuchlib.Model"}, "training.estimator: cannot import 'nosuchlib'"),
        (
            {"features.transform": "usecases.team.code:missing"},
            "features.transform: module 'usecases.team.code' has no",
        ),
        ({"features.transform": "usecases.other:f"}, "features.transform: cannot import 'usecases.other'"),
        ({"dataset.source": {"kind": "python", "loader": "usecases.team.code.nope"}}, "dataset.source.loader"),
        (
            {"gates.custom_metrics": [{"name": "m", "function": "usecases.team.code:gone", "greater_is_better": True}]},
            "gates.custom_metrics[0].function",
        ),
    ],
)
def test_an_import_path_that_cannot_be_used_fails_at_config_load_naming_key_and_path(use_case, changes, named):
    with pytest.raises(ConfigError) as raised:
        load_config(use_case(changes))
    assert named in str(raised.value)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"training.estimator": "lightgbm"}, "training.estimator"),  # neither built-in nor an import path
        ({"features.transform": "not a path"}, "features.transform"),
        (
            {"gates.custom_metrics": [{"name": "roc_auc", "function": "a.b:c", "greater_is_better": True}]},
            "already name built-in binary metrics",
        ),
        ({"gates.metric": "hits"}, "'hits' is not one of"),  # a custom metric must be declared to be the gate
    ],
)
def test_a_malformed_user_code_key_is_a_config_error(use_case, changes, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("(", r"\(")):
        load_config(use_case(changes))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("not_a_transformer", "returned 42 (int), not a scikit-learn transformer"),
        ("fails_to_fit", "failed to fit on the 4 training rows: ValueError: no column 'price'"),
    ],
)
def test_a_transform_that_is_not_a_transformer_or_does_not_fit_fails_the_feature_step(use_case, factory, message):
    config = load_config(use_case({"features.transform": f"usecases.team.code:{factory}"}))
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    with pytest.raises(usercode.UserCodeError, match=r"features\.transform") as raised:
        modeling.fit_features(train, config)
    assert message in str(raised.value) and f"usecases.team.code:{factory}" in str(raised.value)


def test_custom_metrics_take_labels_or_probabilities_and_may_be_the_gate(use_case):
    metrics = [
        {"name": "hits", "function": "usecases.team.code:hits", "greater_is_better": True},
        {
            "name": "mean_p",
            "function": "usecases.team.code.mean_probability",
            "greater_is_better": False,
            "uses": "probabilities",
        },
    ]
    config = load_config(
        use_case({"gates.custom_metrics": metrics, "gates.metric": "hits", "gates.floors": {"mean_p": 0.9}})
    )
    assert config.metric_directions()["mean_p"] is False
    outputs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    found = compute_metrics("binary", np.array([0, 1, 1]), outputs, np.array([0, 1]), user_metrics(config))
    assert found["hits"] == 2.0  # labels: argmax of the probabilities
    assert found["mean_p"] == pytest.approx((0.1 + 0.8 + 0.4) / 3)  # the positive class's probability
    assert "roc_auc" in found


def test_a_python_loader_reads_data_no_built_in_kind_reads_and_its_failures_are_named(use_case):
    loader = {"kind": "python", "loader": "usecases.team.code:frame"}
    assert len(sources.load_source(load_config(use_case({"dataset.source": loader})))) == 4
    for name, detail in [
        ("broken_loader", "raised ConnectionError: warehouse down"),
        ("wrong_loader", "returned a list"),
    ]:
        config = load_config(use_case({"dataset.source": {**loader, "loader": f"usecases.team.code:{name}"}}))
        with pytest.raises(DataValidationError, match="loader_failed") as raised:
            sources.load_source(config)
        assert detail in str(raised.value)


def test_a_model_holding_types_from_outside_the_use_case_is_refused_before_it_is_logged(use_case):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    config = load_config(use_case({"features.transform": "usecases.team.code:scaled"}))
    owned = make_pipeline(FunctionTransformer(usercode.resolve("usecases.team.code:hits", "t", config.import_root)))
    assert "usecases.team.code.hits" in model_files.trusted_types(owned, config)
    foreign = make_pipeline(FunctionTransformer(yaml.safe_dump))
    with pytest.raises(usercode.UserCodeError, match=r"yaml\.safe_dump"):
        model_files.trusted_types(foreign, config)


@pytest.mark.parametrize(
    ("path", "parts"),
    [("a.b:C", ("a.b", "C")), ("a.b.C", ("a.b", "C")), ("lightgbm.LGBMClassifier", ("lightgbm", "LGBMClassifier"))],
)
def test_import_paths_take_a_colon_or_a_last_dot(path, parts):
    assert usercode.split(path) == parts


def test_code_staged_for_a_version_is_its_use_case_alone(tmp_path):
    for name in ("team", "other"):
        (tmp_path / "usecases" / name / "tests").mkdir(parents=True)
        (tmp_path / "usecases" / name / "model.py").write_text("x = 1\n")
        (tmp_path / "usecases" / name / "data.csv").write_text("a\n1\n")
    staged = usercode.stage_code(["usecases.team.model:x"], tmp_path, "team", tmp_path / "staged")
    assert staged == [str(tmp_path / "staged" / "usecases")]
    files = sorted(str(p.relative_to(tmp_path / "staged")) for p in (tmp_path / "staged").rglob("*") if p.is_file())
    assert files == ["usecases/__init__.py", "usecases/team/model.py"]  # not the other use case, its data or tests
