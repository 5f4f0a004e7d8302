from pathlib import Path

import pytest

from mlops.config import DEFAULT_CONFIG, PROJECT_ROOT, ConfigError, load_config, use_cases
from tests.conftest import write_config

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, changes: dict) -> Path:
    return write_config(DEFAULT_CONFIG, tmp_path, changes)


def test_default_config_is_valid():
    config = load_config(DEFAULT_CONFIG)
    assert config.task == "binary"
    assert config.dataset.target not in config.dataset.features
    assert len(config.fingerprint()) == 16


def test_env_var_points_at_another_config(monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG", str(PROJECT_ROOT / "usecases/diabetes/mlops.yaml"))
    config = load_config()
    assert config.task == "regression"
    assert config.dataset.source.path.is_absolute() and config.dataset.source.path.exists()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"task": "clustering"}, "task"),
        ({"dataset.target": None}, "dataset.target"),
        ({"gates.metric": "rmse"}, "rmse"),
        ({"training.estimator": "xgboost"}, "training.estimator"),
        ({"serving.workers": 0}, "serving.workers"),
        ({"dataset.segments": ["tailnum"]}, "segments must be categorical"),
        ({"dataset.colour": "blue"}, "dataset.colour"),
        ({"dataset.source": {"kind": "csv"}}, "dataset.source.csv.path"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, changes, named):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, changes))
    assert named in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_a_use_case_is_named_by_its_folder_and_an_unknown_name_lists_the_known_ones():
    assert {"flights", "diabetes", "returns"} <= set(use_cases())
    assert load_config(use_case="diabetes").tracking.model_name == "diabetes-progression"
    with pytest.raises(ConfigError, match=r"use case 'nope' is not one of \['diabetes', 'flights'"):
        load_config(use_case="nope")
