"""The real model service in a subprocess, against a model registered in a temporary MLflow store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml

from mlops import processes
from mlops.adapters.service_checks import is_healthy
from mlops.config import DEFAULT_CONFIG

pytestmark = pytest.mark.integration

MODEL = "tiny-delays"
COLUMNS = ["distance", "hour", "carrier", "origin"]
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "functools.partial",  # HistGradientBoosting's own categorical preprocessing wraps check_array
    "sklearn.utils.validation.check_array",
]


def training_frame(n: int = 400) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(
        {
            "distance": rng.uniform(100, 2500, n).round(1),
            "hour": rng.integers(5, 23, n),
            "carrier": rng.choice(["AA", "UA", "DL", "B6"], n),
            "origin": rng.choice(["JFK", "EWR", "LGA"], n),
        }
    )
    X.loc[::23, "distance"] = np.nan
    late = (X["hour"] > 16) ^ X["carrier"].isin(["B6"]) ^ (rng.uniform(size=n) < 0.1)
    return X, late.astype(int)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Train, log (skops, signature, predict_proba) and register a tiny model; yields the tracking URI."""
    import mlflow

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            yield _register(mlflow, tmp)
        finally:
            mlflow.set_tracking_uri(None)  # back to the environment, which `patch` restores


def _register(mlflow: Any, tmp: Path) -> str:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    X, y = training_frame()
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    features = ColumnTransformer(
        [("numeric", "passthrough", ["distance", "hour"]), ("categorical", encoder, ["carrier", "origin"])]
    )
    booster = HistGradientBoostingClassifier(max_iter=30, categorical_features=[2, 3], random_state=0)
    model = Pipeline([("features", features), ("estimator", booster)]).fit(X, y)
    experiment = mlflow.create_experiment("serving-test", artifact_location=(tmp / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict_proba(X)),
            input_example=X.head(50),  # the rows the service checks its compiled path on
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pyfunc_predict_fn="predict_proba",
            registered_model_name=MODEL,
        )
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", info.registered_model_version)
    return mlflow.get_tracking_uri()


@pytest.fixture(scope="module")
def offline(store: str) -> Any:
    """The same model as `mlflow models serve` runs it."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")


def mlflow_answer(model: Any, body: dict[str, Any]) -> Any:
    """What `mlflow models serve` answers for `body` (its own request handler, in-process)."""
    from mlflow.pyfunc.scoring_server import invocations

    answer = invocations(json.dumps(body), "application/json", model, model.metadata.get_input_schema())
    assert answer.status == 200, answer.response
    return json.loads(answer.response)


def same_predictions(answer: Any, expected: Any) -> bool:
    """Equal answers up to 1e-9: the compiled path's promise (mlops/serving/compiled.py), not bit for bit."""
    if list(answer) != ["predictions"] or list(expected) != ["predictions"]:
        return False
    got, want = np.array(answer["predictions"]), np.array(expected["predictions"])
    return got.shape == want.shape and bool(np.abs(got - want).max() <= 1e-9)


@contextmanager
def service(
    store: str, tmp_path: Path, workers: int = 1, timeout_s: float = 90, capture_dir: Path | None = None
) -> Iterator[tuple[str, int]]:
    """`mlops serve` in its own process group with a config giving `workers` (capturing into `capture_dir`, never
    flushing on its own); stopped by pid afterwards."""
    config = yaml.safe_load((DEFAULT_CONFIG).read_text())
    config["serving"] = {**config.get("serving", {}), "workers": workers, "max_batch_size": 16, "max_wait_ms": 2}
    config["serving"]["capture"] = {"flush_seconds": 3600}
    config_path = tmp_path / f"mlops-{workers}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLOPS_CONFIG": str(config_path)}
    command = [sys.executable, "-m", "mlops.platform.cli", "serve", "--model-uri", f"models:/{MODEL}@champion"]
    command += ["--port", str(port)]  # --host and --workers left to their defaults: 127.0.0.1, the config
    command += ["--environment", "staging", "--capture-dir", str(capture_dir)] if capture_dir else []
    log = tmp_path / f"service-{workers}.log"
    healthy = lambda: is_healthy(url)  # noqa: E731
    with processes.server(command, env=env, log=log, healthy=healthy, timeout_s=timeout_s, stop_timeout_s=15) as record:
        yield url, record.pid


@pytest.fixture(scope="module")
def url(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with service(store, tmp_path_factory.mktemp("service")) as (address, _):
        yield address


def score(url: str, body: Any, content_type: str = "application/json") -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(f"{url}/invocations", content=content, headers={"Content-Type": content_type}, timeout=10)


def split(*rows: list[Any], columns: list[str] = COLUMNS) -> dict[str, Any]:
    return {"dataframe_split": {"columns": columns, "data": [list(r) for r in rows]}}


GOOD = split([1200.0, 18, "AA", "JFK"])


def test_health_routes(url: str) -> None:
    for path in ["/ping", "/health"]:
        assert httpx.get(f"{url}{path}").status_code == 200


def test_version_names_the_registered_model(url: str) -> None:
    import mlflow

    answer = httpx.get(f"{url}/version").json()
    assert answer["mlflow_version"] == mlflow.__version__
    assert answer["model_uri"] == f"models:/{MODEL}@champion"
    assert (answer["model_name"], answer["model_version"]) == (MODEL, "1")
    assert answer["resolved_uri"] == f"models:/{MODEL}/1"
    assert answer["run_id"]
    # The booster is served compiled, checked against the sklearn path on the model's input example.
    assert answer["prediction_path"] == "compiled", answer["prediction_path_note"]
    assert answer["prediction_path_note"].startswith("verified on 50 input-example rows")
    assert answer["prediction_engine"] == "tl2cgen", answer["prediction_path_note"]
    assert answer["predicts_in"] == "event loop"  # C trees: no hand-off to a thread


@pytest.mark.parametrize(
    "body",
    [
        GOOD,
        split([1200.0, 18, "AA", "JFK"], [300, 6, "B6", "LGA"], [None, 9, "UA", "EWR"]),  # int distance, null
        {"dataframe_split": {"columns": list(reversed(COLUMNS)), "index": [10], "data": [["EWR", "DL", 7, 900.5]]}},
        {"dataframe_records": [{"distance": 500.0, "hour": 20, "carrier": "UA", "origin": "EWR", "extra": 1}]},
        split([800.0, 12, "ZZ", "SFO"]),  # unknown categories
        split([800.0, 12, None, "JFK"]),  # missing category
    ],
    ids=[
        "one-row",
        "rows-with-null",
        "reordered-with-index",
        "records-extra-column",
        "unknown-category",
        "null-category",
    ],
)
def test_predictions_are_what_mlflow_models_serve_answers(url: str, offline: Any, body: dict[str, Any]) -> None:
    answer = score(url, body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert same_predictions(answer.json(), mlflow_answer(offline, body))
    assert all(np.isfinite(p).all() and abs(sum(p) - 1) < 1e-9 for p in answer.json()["predictions"])


@pytest.mark.parametrize(
    ("body", "content_type", "status", "names"),
    [
        ('{"dataframe_split": {"columns": ["distance"', "application/json", 400, "valid JSON"),
        ({"inputs": [[1, 2]]}, "application/json", 400, "dataframe_split"),
        ({"something": "else"}, "application/json", 400, "dataframe_records"),
        (split(), "application/json", 422, "no rows"),
        ({"dataframe_records": []}, "application/json", 422, "no rows"),
        (split([1.0, 5, "AA"], columns=COLUMNS[:3]), "application/json", 422, "origin"),
        (split(["far", 5, "AA", "JFK"]), "application/json", 422, "distance"),
        (split([1.0, 5.5, "AA", "JFK"]), "application/json", 422, "hour"),
        (split([1.0, None, "AA", "JFK"]), "application/json", 422, "hour"),
        (split([1.0, 5, 42, "JFK"]), "application/json", 422, "carrier"),
        ("distance,hour\n1,2\n", "text/csv", 415, "application/json"),
    ],
    ids=[
        "malformed",
        "inputs",
        "unknown-format",
        "empty-split",
        "empty-records",
        "missing-column",
        "str-for-double",
        "fraction-for-long",
        "null-long",
        "int-for-string",
        "csv",
    ],
)
def test_bad_requests_get_an_mlflow_style_error_and_the_service_goes_on(
    url: str, body: Any, content_type: str, status: int, names: str
) -> None:
    answer = score(url, body, content_type)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert set(error) == {"error_code", "message"} and names in error["message"]
    assert score(url, GOOD).status_code == 200


def test_unknown_routes_answer_json(url: str) -> None:
    for answer in [httpx.get(f"{url}/invocations"), httpx.get(f"{url}/nowhere")]:
        assert answer.status_code in (404, 405) and "message" in answer.json()


def test_concurrent_requests_get_the_offline_predictions(url: str, offline: Any) -> None:
    X, _ = training_frame(160)
    rows = X.astype(object).where(X.notna(), None).values.tolist()
    bodies = [split(row) for row in rows]
    expected = [mlflow_answer(offline, body) for body in bodies]

    async def send_all() -> list[httpx.Response]:
        limit = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def one(body: dict[str, Any]) -> httpx.Response:
                async with limit:
                    return await client.post("/invocations", json=body)

            return await asyncio.gather(*(one(body) for body in bodies))

    answers = asyncio.run(send_all())
    assert [a.status_code for a in answers] == [200] * len(bodies)
    assert all(same_predictions(a.json(), e) for a, e in zip(answers, expected, strict=True))


def test_workers_come_from_the_config(store: str, tmp_path: Path, offline: Any) -> None:
    with service(store, tmp_path, workers=2) as (address, pid):
        children = psutil.Process(pid).children()
        workers = [p for p in children if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in children]
        for _ in range(6):
            assert same_predictions(score(address, GOOD).json(), mlflow_answer(offline, GOOD))


MiB = 1024 * 1024
JSON_HEADERS = {"Content-Type": "application/json"}


def lazy_body(size: int, chunk: int = MiB) -> Iterator[bytes]:
    """`size` bytes of a scoring request that never ends, made a chunk at a time: the test holds one chunk."""
    head = json.dumps(split())[:-3].encode()  # '{"dataframe_split": {"columns": [...], "data": ['
    row = json.dumps(GOOD["dataframe_split"]["data"][0]).encode() + b", "
    block = row * (chunk // len(row))
    yield head
    sent = len(head)
    while sent < size:
        part = block[: size - sent]
        yield part
        sent += len(part)


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its children, in bytes."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


class RssWatch(threading.Thread):
    """Samples a service's RSS; past `ceiling` it kills the service, so a regression fails the test, not the machine."""

    def __init__(self, pid: int, ceiling: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.ceiling = pid, ceiling
        self.peak, self.killed = 0, False
        self._finished = threading.Event()

    def run(self) -> None:
        while not self._finished.wait(0.02):
            try:
                rss = tree_rss(self.pid)
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, rss)
            if rss > self.ceiling:
                self.killed = True
                os.killpg(self.pid, signal.SIGKILL)  # the service's own process group (start_new_session)
                return

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._finished.set()
        self.join()


def test_oversized_bodies_get_413_and_the_service_memory_stays_bounded(store: str, tmp_path: Path) -> None:
    with service(store, tmp_path) as (address, pid), httpx.Client(base_url=address, timeout=120) as client:
        assert client.post("/invocations", json=GOOD).status_code == 200  # warm: the first batch loads the rest
        start = tree_rss(pid)
        declared = {**JSON_HEADERS, "Content-Length": str(64 * MiB)}
        sends = [(512 * MiB, JSON_HEADERS), *[(64 * MiB, declared)] * 3, (64 * MiB, JSON_HEADERS)]  # chunked, sized
        with RssWatch(pid, ceiling=start + 300 * MiB) as watch:
            try:
                answers = [client.post("/invocations", content=lazy_body(n), headers=h) for n, h in sends]
                after = client.post("/invocations", json=GOOD)
            except httpx.TransportError:
                if not watch.killed:
                    raise
        print(f"service RSS: {start / MiB:.0f} MiB at start, peak {watch.peak / MiB:.0f} MiB")
    assert not watch.killed, f"the service grew past {(watch.ceiling - start) / MiB:.0f} MiB over its start: stopped"
    for answer in answers:
        assert answer.status_code == 413, answer.text[:200]
        error = answer.json()
        assert error["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
        assert "max_body_bytes" in error["message"] and f"{4 * MiB:,} bytes" in error["message"]
    assert after.status_code == 200 and len(after.json()["predictions"]) == 1
    assert watch.peak - start < 300 * MiB


def test_sigterm_writes_every_captured_request(store: str, tmp_path: Path, offline: Any) -> None:
    from mlops.config import PREDICTION, REQUEST_ID
    from mlops.serving.capture import read_captured

    bodies = {f"req-{i}": split([100.0 + i, 5 + i % 18, "AA", "JFK"]) for i in range(40)}
    with service(store, tmp_path, capture_dir=tmp_path / "capture") as (address, pid):
        for rid, body in bodies.items():
            answer = httpx.post(f"{address}/invocations", json=body, headers={"X-Request-ID": rid}, timeout=10)
            assert answer.status_code == 200 and answer.headers["x-request-id"] == rid
        assert not list((tmp_path / "capture").rglob("*.parquet"))  # flush_seconds 3600: all still in memory
        os.killpg(pid, signal.SIGTERM)
        assert psutil.Process(pid).wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises it after shutdown
    use_case = yaml.safe_load(DEFAULT_CONFIG.read_text())["dataset"]["name"]  # a config outside usecases/: its dataset
    captured = read_captured(tmp_path / "capture", use_case).set_index(REQUEST_ID)
    assert sorted(captured.index) == sorted(bodies)
    assert set(captured["environment"]) == {"staging"} and set(captured["version"]) == {"1"}
    for rid in ["req-0", "req-39"]:
        expected = mlflow_answer(offline, bodies[rid])["predictions"][0]
        assert np.allclose(captured.loc[rid, PREDICTION], expected, atol=1e-9)


@pytest.mark.parametrize("client", ["urllib", "requests"])
def test_clients_that_send_the_whole_body_first_read_the_413(url: str, client: str) -> None:
    # urllib and requests write the whole body before reading: a service that closed on unread bytes reset them.
    body = b" " * (6 * MiB)
    if client == "urllib":
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{url}/invocations", data=body, headers=JSON_HEADERS, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        status, error = refused.value.code, json.loads(refused.value.read())
    else:
        import requests

        answer = requests.post(f"{url}/invocations", data=body, headers=JSON_HEADERS, timeout=30)
        status, error = answer.status_code, answer.json()
    assert status == 413 and error["error_code"] == "RESOURCE_LIMIT_EXCEEDED", error
    assert "max_body_bytes" in error["message"]


BAD_BODIES: list[tuple[str | bytes, str]] = [
    ('{"dataframe_split": {"columns": ["distance"', "application/json"),
    ("[" * 100_000 + "]" * 100_000, "application/json"),
    (json.dumps(split([1.0, 18, "AA", "JFK"])).replace("1.0", "1e400"), "application/json"),
    (json.dumps(split([1.0, 18, "AA", "JFK"])).replace("18", "1" + "0" * 400), "application/json"),
    (json.dumps(split([1.0, 18, "AA", "\ud800"])).encode() + b"\xed\xa0\x80", "application/json"),
    (json.dumps({"dataframe_split": {"columns": ["a"] * 200_000, "data": []}}), "application/json"),  # n² before
    (b"", "application/json"),
    (json.dumps(GOOD), "text/plain"),
    (b" " * (4 * MiB + 1), "application/json"),
]


def test_valid_requests_are_answered_during_and_after_a_burst_of_bad_ones(url: str, offline: Any) -> None:
    expected = mlflow_answer(offline, GOOD)
    good: list[int] = []
    done = threading.Event()

    def steady_client() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not done.is_set():
                answer = client.post("/invocations", json=GOOD)
                good.append(answer.status_code if same_predictions(answer.json(), expected) else -answer.status_code)

    thread = threading.Thread(target=steady_client, daemon=True)
    thread.start()
    bad: list[int] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(10):
            for body, content_type in BAD_BODIES:
                answer = client.post("/invocations", content=body, headers={"Content-Type": content_type})
                bad.append(answer.status_code)
        during = len(good)
        done.set()
        thread.join(timeout=30)
        after = client.post("/invocations", json=GOOD)
    assert all(400 <= status < 500 for status in bad), sorted(set(bad))
    assert during > 0 and set(good) == {200}, sorted(set(good))
    assert after.status_code == 200 and same_predictions(after.json(), expected)
