from pathlib import Path

import pytest
import yaml

from mlops.config import PROJECT_ROOT, ConfigError, load_config

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, changes: dict) -> Path:
    raw = yaml.safe_load((PROJECT_ROOT / "mlops.yaml").read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value
    path = tmp_path / "mlops.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_default_config_is_valid():
    config = load_config(PROJECT_ROOT / "mlops.yaml")
    assert config.task == "binary"
    assert config.dataset.target not in config.dataset.features
    assert len(config.fingerprint()) == 16


def test_env_var_points_at_another_config(monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG", str(PROJECT_ROOT / "examples/diabetes/mlops.yaml"))
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
