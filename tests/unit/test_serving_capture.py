"""Capture of answered requests (mlops/serving/capture.py), in-process over the tiny real model of test_serving_server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.config import PREDICTION, REQUEST_ID, ROW
from mlops.serving.capture import Capture, CaptureSpec, count_captured, read_captured
from mlops.serving.model import ServedModel
from tests.unit.test_serving_server import NAMES, app_for, model, running  # noqa: F401  (model: a fixture)

pytestmark = pytest.mark.unit


def capture_for(directory: Path, **options: Any) -> Capture:
    return Capture(CaptureSpec(str(directory), "flights", "production", "7", **options))


def split(rows: list[list[Any]], columns: list[str] = NAMES) -> dict[str, Any]:
    return {"dataframe_split": {"columns": columns, "data": rows}}


def test_every_answered_row_is_captured_with_its_request_id_inputs_and_answer(
    model: ServedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    capture = capture_for(tmp_path, flush_seconds=3600)  # nothing written before the stop
    requests = [
        ({"X-Request-ID": "client-1"}, split([[1200.0, 18, "AA", "JFK"]])),
        ({}, split([[300.0, 7, "B6", "EWR", 1714], [None, 22, "DL", "LGA", 88]], [*NAMES, "flight"])),
        ({}, {"dataframe_records": [{"distance": 800.0, "hour": 9, "carrier": "UA", "origin": "JFK"}]}),
    ]

    async def go() -> list[Any]:
        async with running(app_for(model, capture=capture)) as client:
            answers = [await client.post("/invocations", json=body, headers=h) for h, body in requests]
            refused = await client.post("/invocations", json=split([["far", 1, "AA", "JFK"]]))
            assert refused.status_code == 422 and refused.headers["x-request-id"]
            assert not list(tmp_path.rglob("*.parquet"))  # still in the buffer
            return answers

    answers = asyncio.run(go())  # leaving `running` is the lifespan's shutdown: the buffer is written
    assert all(a.status_code == 200 for a in answers)
    ids = [a.headers["x-request-id"] for a in answers]
    assert ids[0] == "client-1" and len(set(ids)) == 3 and all(len(i) == 32 for i in ids[1:])

    got = read_captured(tmp_path, "flights").sort_values([REQUEST_ID, ROW]).reset_index(drop=True)
    assert len(got) == 4 == count_captured(tmp_path, "flights")  # the refused request is not captured
    assert count_captured(tmp_path, "flights", versions=["8"]) == 0
    assert set(got["environment"]) == {"production"} and set(got["version"]) == {"7"}
    by_id = {rid: part.sort_values(ROW) for rid, part in got.groupby(REQUEST_ID)}
    two = by_id[ids[1]]
    assert two[ROW].tolist() == [0, 1] and two["flight"].tolist() == [1714, 88]
    assert two["carrier"].tolist() == ["B6", "DL"] and np.isnan(two["distance"].iloc[1])
    assert by_id[ids[0]]["flight"].isna().all()  # a request without the key column: null there
    for answer, rid in zip(answers, ids, strict=True):
        captured = np.array(by_id[rid][PREDICTION].tolist())
        assert np.array_equal(captured, np.array(answer.json()["predictions"]))
    assert (got["latency_ms"] > 0).all()
    assert got["captured_at"].dt.tz is not None


def test_a_full_buffer_answers_as_usual_and_counts_the_drops_in_metrics(
    model: ServedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    capture = capture_for(tmp_path, buffer_requests=3, flush_requests=1000, flush_seconds=3600)

    async def go() -> str:
        async with running(app_for(model, capture=capture)) as client:
            for _ in range(5):
                assert (await client.post("/invocations", json=split([[1.0, 5, "AA", "JFK"]]))).status_code == 200
            return (await client.get("/metrics")).text

    metrics = asyncio.run(go())
    assert "mlops_capture_captured_total 3.0" in metrics and "mlops_capture_dropped_total 2.0" in metrics
    assert len(read_captured(tmp_path, "flights")) == 3


def test_a_sample_rate_keeps_a_share_and_counts_the_rest(model: ServedModel, tmp_path: Path) -> None:  # noqa: F811
    capture = capture_for(tmp_path, sample_rate=0.5)

    async def go() -> None:
        async with running(app_for(model, capture=capture)) as client:
            for _ in range(60):
                await client.post("/invocations", json=split([[1.0, 5, "AA", "JFK"]]))

    asyncio.run(go())
    assert capture.captured + capture.sampled_out == 60
    assert 0 < capture.captured < 60  # P(all on one side) = 2**-59
    assert len(read_captured(tmp_path, "flights")) == capture.captured


@pytest.mark.parametrize("header", ["x" * 129, "bad\x01id"])
def test_an_unusable_request_id_is_a_bad_request(model: ServedModel, header: str, tmp_path: Path) -> None:  # noqa: F811
    async def go() -> Any:
        async with running(app_for(model, capture=capture_for(tmp_path))) as client:
            return await client.post(
                "/invocations", json=split([[1.0, 5, "AA", "JFK"]]), headers={"X-Request-ID": header}
            )

    answer = asyncio.run(go())
    assert answer.status_code == 400 and "X-Request-ID" in answer.json()["message"]


def test_requests_with_other_columns_read_back_with_theirs_and_nulls_elsewhere(tmp_path: Path) -> None:
    capture = capture_for(tmp_path)
    answer = json.dumps({"predictions": [[0.4, 0.6]]}).encode()
    capture.record("a", 0.001, json.dumps(split([[1.0, 5, "AA", "JFK"]])).encode(), answer, 1)
    assert capture.flush() == 1
    with_key = json.dumps(split([[2.0, 6, "UA", "EWR", 42]], [*NAMES, "flight"])).encode()
    capture.record("b", 0.001, with_key, answer, 1)
    assert capture.flush() == 1 and capture.rows_written == 2
    got = read_captured(tmp_path, "flights", environment="production", versions=["7"]).set_index(REQUEST_ID)
    assert sorted(got.index) == ["a", "b"]
    assert got.loc["b", "flight"] == 42 and pd.isna(got.loc["a", "flight"])
    assert read_captured(tmp_path, "flights", versions=["8"]).empty
    assert read_captured(tmp_path, "nobody").empty


def test_a_byte_bound_drops_what_would_pass_it(tmp_path: Path) -> None:
    capture = capture_for(tmp_path, buffer_bytes=1024)
    body, answer = b"x" * 600, b"{}"
    capture.record("a", 0.001, body, answer, 1)
    capture.record("b", 0.001, body, answer, 1)  # 1,204 bytes would wait: dropped
    assert (capture.captured, capture.dropped) == (1, 1)


def test_a_shadow_scores_every_answered_request_unseen_and_its_answers_are_captured_beside(
    model: ServedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from mlops.serving.model import ModelRef
    from mlops.serving.shadow import Shadow

    served = capture_for(tmp_path)
    shadow_model = replace(model, ref=ModelRef("test:/tiny/8", "test:/tiny/8", "tiny", "8"))
    shadow_capture = Capture(CaptureSpec(str(tmp_path), "flights", "production-shadow", "8"))
    shadow = Shadow(shadow_model, shadow_capture, max_batch_size=8, max_queue=None)

    def broken(frame: Any) -> Any:
        raise RuntimeError("the shadow model fails")

    async def go(app_shadow: Shadow, app_capture: Capture) -> tuple[list[Any], str, dict[str, Any]]:
        async with running(app_for(model, capture=app_capture, shadow=app_shadow)) as client:
            answers = [
                await client.post(
                    "/invocations", json=split([[float(i), 5, "AA", "JFK"]]), headers={"X-Request-ID": f"r{i}"}
                )
                for i in range(20)
            ]
            for _ in range(1000):  # the shadow scores after the answers: until it has seen all 20 (or a failure shows)
                metrics = (await client.get("/metrics")).text
                if 'outcome="scored"} 20.0' in metrics or 'outcome="failed"} 20.0' in metrics:
                    break
                await asyncio.sleep(0.01)
            return answers, metrics, (await client.get("/version")).json()

    answers, metrics, version = asyncio.run(go(shadow, served))
    assert all(a.status_code == 200 for a in answers)
    assert version["shadow"]["model_version"] == "8"
    both = read_captured(tmp_path, "flights").pivot_table(
        index=REQUEST_ID, columns="environment", values="version", aggfunc="first"
    )
    assert sorted(both.index) == sorted(f"r{i}" for i in range(20))
    assert (both["production"] == "7").all() and (both["production-shadow"] == "8").all()
    assert 'mlops_shadow_requests_total{outcome="scored"} 20.0' in metrics

    failing = Shadow(replace(shadow_model, predict_fn=broken, compiled=None), None, max_batch_size=8, max_queue=None)
    answers, metrics, _ = asyncio.run(go(failing, capture_for(tmp_path / "again")))
    assert all(a.status_code == 200 for a in answers)  # the client never sees the shadow
    assert 'mlops_shadow_requests_total{outcome="failed"} 20.0' in metrics
