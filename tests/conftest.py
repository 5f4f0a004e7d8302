"""Shared fixtures: every test gets its own MLflow store and state dir under tmp_path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlops.config import DEFAULT_CONFIG, PROJECT_ROOT, Config, load_config

DIABETES_CONFIG = PROJECT_ROOT / "usecases" / "diabetes" / "mlops.yaml"


@pytest.fixture(autouse=True)
def project_imports_restored() -> Iterator[None]:
    """Loading a model in-process (MLflow's `code_paths`) puts the version's copy of the team's code first on
    sys.path and drops `usecases` from sys.modules, as a model service should; after each test the project's own
    are back, so the next test in this process (the use cases' own tests among them) imports this checkout."""
    path = list(sys.path)
    ours = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "usecases"}
    yield
    sys.path[:] = path
    for name in [name for name in sys.modules if name.split(".")[0] == "usecases"]:
        del sys.modules[name]
    sys.modules.update(ours)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """MLflow on a SQLite file and the state dir under tmp_path, so no test touches .mlops/ or a server.

    The test runs in tmp_path too: MLflow puts an experiment made with its own API (`mlflow.set_experiment`)
    in `./mlruns`, which would otherwise be this checkout's.
    """
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLOPS_CONFIG", raising=False)
    # MLflow keeps a process-wide URI that beats the environment: point it here, then forget it.
    mlflow.set_tracking_uri(uri)
    yield tmp_path
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def flights_config() -> Config:
    return load_config(DEFAULT_CONFIG)


@pytest.fixture(scope="session")
def diabetes_config() -> Config:
    return load_config(DIABETES_CONFIG)


@pytest.fixture(scope="session")
def flights_month(flights_config: Config):
    """January 2013: one month of the default dataset (about 26k rows)."""
    from mlops.adapters import sources

    return sources.load_window(flights_config, as_of="2013-02-01", months=1).frame


# The default use case on one month, delivered quickly: a short, light load test and watch, and SLOs that
# a shared 2-core machine meets under the test suite. Integration and e2e deliveries check the gates'
# logic and the loop's wiring, not this machine's throughput (bench/ measures that).
QUICK_DELIVERY = {
    "window": {"as_of": "2013-02-01", "months": 1},
    "load_test": {"users": 4, "spawn_rate": 4, "seconds": 3},  # 2 s once made no request at all under load
    "delivery.watch_seconds": 2,
    "slo": {"p95_ms": 2000, "p99_ms": 5000, "max_error_rate": 0.01, "min_rps": 5},
}


def quick_delivery_config(directory: Path, changes: dict | None = None) -> Path:
    """The default use case with QUICK_DELIVERY and free service ports, written in `directory`."""
    from mlops.processes import free_port

    ports = {"serving.staging_port": free_port(), "serving.production_port": free_port()}
    return write_config(DEFAULT_CONFIG, directory, {**QUICK_DELIVERY, **ports, **(changes or {})})


def write_config(base: Path, directory: Path, changes: dict) -> Path:
    """A copy of a config with dotted keys changed (None removes a key); relative paths kept working."""
    raw = yaml.safe_load(base.read_text())
    source = raw["dataset"]["source"]
    if "path" in source:
        source["path"] = str((base.parent / source["path"]).resolve())
    if "contract" in raw["dataset"]:
        raw["dataset"]["contract"] = str((base.parent / raw["dataset"]["contract"]).resolve())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value
    path = directory / f"{base.stem}-{len(list(directory.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


SAMPLE_USE_CASE = PROJECT_ROOT / "usecases" / "returns"


def write_use_case(root: Path) -> Path:
    """The returns use case as its team wrote it, copied to `root/usecases/returns/` with its data as a CSV
    (a time column, as a file a team exports); returns the folder. Nothing under mlops/, flows/ or tasks/
    knows of it."""
    import shutil

    from mlops import usercode

    folder = root / usercode.USECASES / SAMPLE_USE_CASE.name
    shutil.copytree(SAMPLE_USE_CASE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder.parent / "__init__.py").write_text("")
    orders = usercode.resolve("usecases.returns.model:orders", "test data", root)
    orders().to_csv(folder / "returns.csv", index=False)
    config = yaml.safe_load((folder / "mlops.yaml").read_text())
    config["dataset"]["source"] = {"kind": "csv", "path": "returns.csv"}
    (folder / "mlops.yaml").write_text(yaml.safe_dump(config))
    return folder
