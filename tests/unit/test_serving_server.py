"""The service's HTTP edge, in-process over a tiny real sklearn model: body limit, full queue, hostile input.

Nothing here reads the wall clock: a request is held inside the model by a threading.Event the test
sets, and HANG_GUARD_S only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder
from starlette.applications import Starlette
from starlette.testclient import TestClient

from mlops.config import Serving
from mlops.serving.bodies import DRAIN_BYTES
from mlops.serving.model import ModelRef, ServedModel, probe_nullable
from mlops.serving.schema import Column
from mlops.serving.server import create_app

pytestmark = pytest.mark.unit

MiB = 1024 * 1024
LIMIT = 64 * 1024  # a small body limit, so the tests stay small
CHUNK = 4096
HANG_GUARD_S = 10.0
NAMES = ["distance", "hour", "carrier", "origin"]
FRAME = pd.DataFrame(
    {
        "distance": [100.0, 250.0, np.nan, 400.0, 800.0, 1200.0, 300.0, 950.0],
        "hour": [5, 9, 13, 17, 20, 22, 7, 15],
        "carrier": ["AA", "UA", "AA", "DL", "UA", "AA", "B6", "DL"],
        "origin": ["JFK", "EWR", "LGA", "JFK", "EWR", "LGA", "JFK", "EWR"],
    }
)
TARGET = [0, 0, 1, 1, 1, 0, 0, 1]
GOOD = {"dataframe_split": {"columns": NAMES, "data": [[1200.0, 18, "AA", "JFK"]]}}


@pytest.fixture(scope="module")
def model() -> ServedModel:
    """HistGradientBoosting behind an OrdinalEncoder, as the project trains it; nulls allowed where it copes."""
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    features = ColumnTransformer(
        [("numeric", "passthrough", ["distance", "hour"]), ("categorical", encoder, ["carrier", "origin"])]
    )
    booster = HistGradientBoostingClassifier(max_iter=5, min_samples_leaf=1, categorical_features=[2, 3])
    pipeline = Pipeline([("features", features), ("estimator", booster)]).fit(FRAME, TARGET)
    columns = tuple(
        Column(name, kind) for name, kind in zip(NAMES, ["double", "long", "string", "string"], strict=True)
    )
    predict = pipeline.predict_proba
    return ServedModel(ModelRef("test:/tiny", "test:/tiny"), probe_nullable(columns, predict), predict)


def app_for(model: ServedModel, **limits: Any) -> Starlette:
    options = {"max_batch_size": 8, "max_wait_ms": 0.0, "max_body_bytes": LIMIT, **limits}
    return create_app(model, **options)


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (the batcher) running, and an HTTP client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON followed by whitespace up to exactly `size` bytes."""
    raw = json.dumps(body).encode()
    return raw + b" " * (size - len(raw))


async def post_raw(app: Starlette, chunks: Iterator[bytes | None], headers: dict[str, str]) -> tuple[int, Any, int]:
    """POST /invocations straight through ASGI (a None chunk: the client goes away); returns status,
    JSON answer and how many body bytes the app pulled."""
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(chunks, b"")
        if chunk is None:
            return {"type": "http.disconnect"}
        if not chunk:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/invocations", "raw_path": b"/invocations", "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("service", 80),
    }  # fmt: skip
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


def many(chunk: bytes, total: int) -> Iterator[bytes]:
    """`total` bytes as repeats of one chunk (the test holds one chunk, not the body)."""
    return iter([chunk] * (total // len(chunk)))


def assert_too_large(status: int, answer: Any) -> None:
    assert status == 413
    assert answer["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
    assert "max_body_bytes" in answer["message"] and f"{LIMIT:,}" in answer["message"]


# ----------------------------------------------------------------------------------------- body limit


def test_the_default_limits() -> None:
    serving = Serving()
    assert serving.max_body_bytes == 4 * MiB
    assert serving.max_queue is None  # the batcher then takes 16 × max_batch_size
    with pytest.raises(ValueError):
        Serving(max_queue=0)


def test_a_chunked_body_past_the_limit_is_refused_and_drained_so_the_client_reads_the_413(model: ServedModel) -> None:
    # Drained, not kept: a client that sends its whole body before reading (urllib, requests) would see a reset.
    chunks = many(b" " * CHUNK, 64 * LIMIT)
    status, answer, pulled = asyncio.run(post_raw(app_for(model), chunks, {"content-type": "application/json"}))
    assert_too_large(status, answer)
    assert pulled == 64 * LIMIT


def test_draining_a_refused_body_stops_at_its_bound(model: ServedModel) -> None:
    total = DRAIN_BYTES + 64 * CHUNK
    status, answer, pulled = asyncio.run(
        post_raw(app_for(model), many(b" " * CHUNK, total), {"content-type": "application/json"})
    )
    assert_too_large(status, answer)
    assert LIMIT < pulled <= LIMIT + DRAIN_BYTES + 2 * CHUNK < total


@pytest.mark.parametrize(
    ("declared", "expect", "drained"),
    [(64 * LIMIT, None, True), (64 * LIMIT, "100-continue", False), (DRAIN_BYTES + LIMIT, None, False)],
    ids=["drained", "expect-100-continue", "past-the-drain-bound"],
)
def test_a_declared_length_past_the_limit_is_refused_and_drained_only_when_sent_and_bounded(
    model: ServedModel, declared: int, expect: str | None, drained: bool
) -> None:
    headers = {"content-type": "application/json", "content-length": str(declared)}
    headers |= {"expect": expect} if expect else {}
    status, answer, pulled = asyncio.run(post_raw(app_for(model), many(b" " * CHUNK, declared), headers))
    assert_too_large(status, answer)
    assert pulled == (declared if drained else 0)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_scored(model: ServedModel, declared: bool) -> None:
    body = padded(GOOD, LIMIT)
    headers = {"content-type": "application/json"} | ({"content-length": str(LIMIT)} if declared else {})
    chunks = iter([body[i : i + CHUNK] for i in range(0, LIMIT, CHUNK)])
    status, answer, pulled = asyncio.run(post_raw(app_for(model), chunks, headers))
    assert (status, pulled) == (200, LIMIT)
    assert len(answer["predictions"]) == 1


@pytest.mark.parametrize("declared", ["many", "-1", "1e3"])
def test_a_content_length_that_is_not_a_number_is_a_bad_request(model: ServedModel, declared: str) -> None:
    headers = {"content-type": "application/json", "content-length": declared}
    status, answer, _ = asyncio.run(post_raw(app_for(model), iter([json.dumps(GOOD).encode()]), headers))
    assert status == 400 and answer["error_code"] == "BAD_REQUEST" and "Content-Length" in answer["message"]


def test_a_client_gone_mid_body_is_not_logged_as_a_model_failure(
    model: ServedModel, caplog: pytest.LogCaptureFixture
) -> None:
    chunks = iter([b'{"dataframe_split": ', None])
    status, answer, _ = asyncio.run(post_raw(app_for(model), chunks, {"content-type": "application/json"}))
    assert status == 400 and "disconnected" in answer["message"]
    assert "prediction failed" not in caplog.text


def holding(model: ServedModel) -> tuple[Any, asyncio.Event, threading.Event]:
    """A predict function that holds each call until the test sets `release`; `started` is set as a call begins.

    Call it inside the running event loop (it signals that loop).
    """
    loop = asyncio.get_running_loop()
    started, release = asyncio.Event(), threading.Event()

    def held(frame: pd.DataFrame) -> Any:
        loop.call_soon_threadsafe(started.set)
        if not release.wait(HANG_GUARD_S):
            raise TimeoutError("the test never released the model")
        return model.predict_fn(frame)

    return held, started, release


# ----------------------------------------------------------------------------------------- full queue


def test_a_full_queue_answers_503_with_retry_after_and_recovers(model: ServedModel) -> None:
    async def main() -> tuple[httpx.Response, list[httpx.Response]]:
        held, started, release = holding(model)

        app = app_for(replace(model, predict_fn=held), max_batch_size=1, max_queue=1)
        async with running(app) as client:
            first = asyncio.ensure_future(client.post("/invocations", json=GOOD))
            await asyncio.wait_for(started.wait(), HANG_GUARD_S)  # the first request holds the model
            second, third = (asyncio.ensure_future(client.post("/invocations", json=GOOD)) for _ in range(2))
            done, _ = await asyncio.wait({second, third}, timeout=HANG_GUARD_S, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1, "one of the two should be queued, the other refused at once"
            refused = done.pop()
            release.set()
            answered = [await first, await (third if refused is second else second)]
            answered.append(await client.post("/invocations", json=GOOD))  # the queue has room again
            return refused.result(), answered

    refused, answered = asyncio.run(main())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE" and "queue" in refused.json()["message"]
    assert [a.status_code for a in answered] == [200, 200, 200]


def test_past_the_in_flight_byte_budget_requests_get_503_and_the_budget_comes_back(model: ServedModel) -> None:
    body = json.dumps(GOOD).encode()

    async def main() -> tuple[httpx.Response, list[httpx.Response]]:
        held, started, release = holding(model)

        # Room for one request's bytes (the queue itself has plenty of room).
        app = app_for(replace(model, predict_fn=held), max_inflight_bytes=len(body) + len(body) // 2)
        headers = {"Content-Type": "application/json"}
        async with running(app) as client:
            first = asyncio.ensure_future(client.post("/invocations", content=body, headers=headers))
            await asyncio.wait_for(started.wait(), HANG_GUARD_S)  # the first request's bytes are held
            refused = await client.post("/invocations", content=body, headers=headers)
            release.set()
            answered = [await first, await client.post("/invocations", content=body, headers=headers)]
            return refused, answered

    refused, answered = asyncio.run(main())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "max_inflight_bytes" in refused.json()["message"]
    assert [a.status_code for a in answered] == [200, 200]  # given back once answered


# ------------------------------------------------------------------------------------- hostile input

NESTED = "[" * 100_000 + "]" * 100_000


def in_split(*cells: str) -> str:
    """A dataframe_split body with one row whose cells are the given JSON texts (literals JSON cannot dump)."""
    return f'{{"dataframe_split": {{"columns": {json.dumps(NAMES)}, "data": [[{", ".join(cells)}]]}}}}'


@pytest.mark.parametrize(
    ("body", "content_type", "status", "names"),
    [
        (NESTED, "application/json", 400, "valid JSON"),
        ('{"dataframe_split": {"columns": [], "data": ' + NESTED + "}}", "application/json", 400, "valid JSON"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "application/json", 400, "valid JSON"),
        (in_split("1e400", "18", '"AA"', '"JFK"'), "application/json", 422, "'distance'"),
        (in_split("-1e400", "18", '"AA"', '"JFK"'), "application/json", 422, "'distance'"),
        (in_split("1" + "0" * 400, "18", '"AA"', '"JFK"'), "application/json", 422, "'distance'"),
        (in_split("1.0", "1" + "0" * 400, '"AA"', '"JFK"'), "application/json", 422, "'hour'"),
        (in_split("1.0", "1e400", '"AA"', '"JFK"'), "application/json", 422, "'hour'"),
        (in_split("1" + "0" * 5000, "18", '"AA"', '"JFK"'), "application/json", 400, "valid JSON"),
        (in_split("Infinity", "18", '"AA"', '"JFK"'), "application/json", 422, "'distance'"),
        (in_split("1.0", "NaN", '"AA"', '"JFK"'), "application/json", 422, "'hour'"),
        (in_split("NaN", "18", '"AA"', "NaN"), "application/json", 200, None),  # nullable where the model copes
        (in_split("1.0", "18", '"\\ud800"', '"JFK"'), "application/json", 200, None),  # an unknown category
        (
            in_split("1.0", "18", '"AA"', '"\\udfff\\ud800"').replace('"origin"', '"\\ud800"'),
            "application/json",
            422,
            "'origin'",
        ),
        (
            in_split("1.0", "18", '"AA"', '"JFK"').encode() + "\ud800".encode("utf-8", "surrogatepass"),
            "application/json",
            400,
            "valid JSON",
        ),
        (b"", "application/json", 400, "valid JSON"),
        (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "application/json", 200, None),  # a UTF-8 BOM
        (json.dumps(GOOD).encode("utf-16"), "application/json; charset=utf-16", 200, None),
        (json.dumps(GOOD), "text/plain", 415, "application/json"),
        (json.dumps(GOOD), "application/jsonx", 415, "application/json"),
        (json.dumps(GOOD), "multipart/form-data; boundary=x", 415, "application/json"),
        (json.dumps(GOOD), None, 415, "none"),
    ],
    ids=[
        "nested-arrays",
        "nested-in-data",
        "nested-objects",
        "1e400",
        "-1e400",
        "10**400",
        "10**400-long",
        "1e400-long",
        "int-past-4300-digits",
        "infinity",
        "nan-long",
        "nan-nullable",
        "lone-surrogate-value",
        "lone-surrogate-name",
        "surrogate-bytes",
        "empty",
        "bom",
        "utf-16",
        "text-plain",
        "near-json",
        "multipart",
        "no-content-type",
    ],
)
def test_hostile_requests_get_a_4xx_naming_the_problem(
    model: ServedModel, body: str | bytes, content_type: str | None, status: int, names: str | None
) -> None:
    with TestClient(app_for(model, max_body_bytes=MiB)) as client:
        headers = {"Content-Type": content_type} if content_type else {}
        answer = client.post("/invocations", content=body, headers=headers)
        assert answer.status_code == status, answer.text
        if names is None:
            assert len(answer.json()["predictions"]) == 1
        else:
            assert set(answer.json()) == {"error_code", "message"} and names in answer.json()["message"]
        assert client.post("/invocations", json=GOOD).status_code == 200


KEYS = st.sampled_from([*NAMES, "dataframe_split", "dataframe_records", "columns", "data", "index", "instances"])
TEXT = st.text(st.characters(exclude_categories=()), max_size=8)  # lone surrogates included
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and ±inf included
    TEXT,
    st.sampled_from(["AA", "JFK", "UA", "EWR"]),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | TEXT, inner, max_size=4), max_leaves=12
)
COLUMNS = st.permutations(NAMES) | st.lists(st.sampled_from(NAMES) | TEXT, max_size=6)


def _split(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    row = st.lists(SCALARS, min_size=len(names), max_size=len(names))
    data = st.lists(row | VALUES, max_size=3)
    return st.fixed_dictionaries({"columns": st.just(names), "data": data}, optional={"index": VALUES})


SPLITS = COLUMNS.flatmap(_split).map(lambda split: {"dataframe_split": split})
RECORD = st.fixed_dictionaries(dict.fromkeys(NAMES, SCALARS), optional={"extra": VALUES})
RECORDS = st.lists(
    RECORD | st.dictionaries(st.sampled_from(NAMES) | TEXT, SCALARS, max_size=5) | VALUES, max_size=3
).map(lambda records: {"dataframe_records": records})
PLAUSIBLE = st.tuples(  # values of the right JSON type, at their extremes: these reach the model
    st.floats() | st.integers(-(2**53), 2**53) | st.none(),
    st.integers(-(2**63), 2**63 - 1) | st.integers(-(2**64), 2**64).map(float) | st.none(),  # 3.0 is a long
    TEXT | st.none(),
    TEXT | st.sampled_from(["JFK", "EWR", "LGA"]),
).map(list)
SCORABLE = st.lists(PLAUSIBLE, min_size=1, max_size=4).map(
    lambda rows: {"dataframe_split": {"columns": NAMES, "data": rows}}
)
PAYLOADS = SCORABLE | SPLITS | RECORDS | st.dictionaries(KEYS, VALUES, max_size=3) | VALUES


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A request body: JSON of a payload (ASCII-escaped, or raw UTF-8 with surrogates as invalid bytes),
    maybe cut short, or a deep nest, or bytes."""
    kind = draw(st.sampled_from(["json", "json", "raw-utf8", "cut", "nest", "bytes"]))
    if kind == "nest":
        depth = draw(st.integers(min_value=1, max_value=100_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a": ', "}"), ('{"dataframe_records": [', "]}")]))
        return (opener * depth + draw(st.sampled_from(["", "1", "[]"])) + closer * depth).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    text = json.dumps(draw(PAYLOADS), ensure_ascii=kind != "raw-utf8")
    body = text.encode("utf-8", "surrogatepass")
    return body[: draw(st.integers(0, len(body)))] if kind == "cut" else body


OTHER_TYPES = ["application/json; charset=utf-8", "Application/JSON", None, "", "text/plain", "text/csv",
               "application/x-www-form-urlencoded", "application/json-seq"]  # fmt: skip
CONTENT_TYPES = st.just("application/json") | st.sampled_from(OTHER_TYPES)  # mostly JSON: examples reach the parser


@pytest.fixture(scope="module")
def client(model: ServedModel) -> Iterator[TestClient]:
    with TestClient(app_for(model, max_body_bytes=MiB)) as client:
        yield client


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies(), content_type=CONTENT_TYPES)
@example(body=NESTED.encode(), content_type="application/json")
@example(body=b"", content_type="application/json")
def test_fuzzed_requests_get_an_answer_never_a_server_error(
    client: TestClient, body: bytes, content_type: str | None
) -> None:
    answer = client.post("/invocations", content=body, headers={"Content-Type": content_type} if content_type else {})
    assert answer.status_code < 500, answer.text
    payload = answer.json()
    if answer.status_code == 200:
        assert isinstance(payload["predictions"], list) and payload["predictions"]
    else:
        assert 400 <= answer.status_code < 500
        assert set(payload) == {"error_code", "message"}


def test_metrics_count_requests_by_status_batch_sizes_and_name_the_model(model: ServedModel) -> None:
    async def main() -> str:
        async with running(
            app_for(replace(model, ref=ModelRef("models:/m@champion", "models:/m/7", "m", "7")))
        ) as client:
            for _ in range(3):
                assert (await client.post("/invocations", json=GOOD)).status_code == 200
            assert (
                await client.post("/invocations", content=b"{", headers={"Content-Type": "application/json"})
            ).status_code == 400
            answer = await client.get("/metrics")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
            return answer.text

    text = asyncio.run(main())
    assert 'mlops_requests_total{route="/invocations",status="200"} 3.0' in text
    assert 'mlops_requests_total{route="/invocations",status="400"} 1.0' in text
    assert 'mlops_request_seconds_count{route="/invocations"} 4.0' in text
    assert "mlops_batch_rows_count 3.0" in text and "mlops_batch_requests_sum 3.0" in text
    assert 'mlops_model_info{model_name="m",model_version="7",path="sklearn"} 1.0' in text
