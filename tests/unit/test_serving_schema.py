"""Request parsing and signature enforcement of the model service."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from mlops.serving.schema import Column, RequestError, Rows, parse_request, to_frame

pytestmark = pytest.mark.unit

COLUMNS = (
    Column("distance", "double", nullable=True),
    Column("hour", "long"),
    Column("carrier", "string", nullable=True),
    Column("origin", "string"),
)
NAMES = ["distance", "hour", "carrier", "origin"]


def split(*rows: list[object], columns: list[str] = NAMES) -> str:
    return json.dumps({"dataframe_split": {"columns": columns, "data": [list(r) for r in rows]}})


def test_split_and_records_give_the_same_rows() -> None:
    by_split = parse_request(split([1000.0, 5, "AA", "JFK"], [200, 6, None, "EWR"]), COLUMNS)
    records = [
        {"origin": "JFK", "carrier": "AA", "hour": 5, "distance": 1000.0},
        {"origin": "EWR", "carrier": None, "hour": 6, "distance": 200},
    ]
    by_records = parse_request(json.dumps({"dataframe_records": records}), COLUMNS)
    assert by_split == by_records
    assert by_split.n_rows == 2
    assert by_split.values["carrier"] == ["AA", None]
    assert list(by_split.values) == NAMES  # signature order, whatever the request order


def test_index_and_extra_columns_are_accepted_and_extras_dropped() -> None:
    body = {"dataframe_split": {"columns": [*NAMES, "extra"], "index": [7], "data": [[1.5, 5, "AA", "JFK", 0]]}}
    rows = parse_request(json.dumps(body), COLUMNS)
    assert "extra" not in rows.values and rows.n_rows == 1


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("distance", 7, 7),  # int -> double
        ("hour", 3.0, 3),  # integral float -> long, as MLflow's serving casts it
        ("distance", None, "nan"),  # nullable double: null becomes NaN
        ("carrier", None, None),  # nullable string: null stays None
    ],
)
def test_safe_conversions(column: str, value: object, expected: object) -> None:
    row = dict(zip(NAMES, [1.0, 5, "AA", "JFK"], strict=True))
    row[column] = value
    got = parse_request(json.dumps({"dataframe_records": [row]}), COLUMNS).values[column][0]
    if expected == "nan":
        assert math.isnan(got)
    else:
        assert got == expected and type(got) is type(expected)


def test_nan_literal_counts_as_null() -> None:
    body = split([1.0, 1, "AA", "JFK"]).replace("1.0", "NaN")
    assert math.isnan(parse_request(body, COLUMNS).values["distance"][0])


GOOD = [1.0, 5, "AA", "JFK"]


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ('{"dataframe_split": ', 400, "valid JSON"),
        (b"\xff\xfe", 400, "valid JSON"),
        ("[1, 2]", 400, "JSON object"),
        ('{"data": [[1]]}', 400, "dataframe_split"),
        ('{"instances": [[1]]}', 400, "dataframe_records"),
        (json.dumps({"dataframe_split": {}, "dataframe_records": []}), 400, "exactly one"),
        (json.dumps({"dataframe_split": [GOOD]}), 400, "must be an object"),
        (json.dumps({"dataframe_split": {"data": [GOOD]}}), 400, "'columns'"),
        (json.dumps({"dataframe_split": {"columns": NAMES, "data": [GOOD], "x": 1}}), 400, "'data'"),
        (split([1.0, 5, "AA"]), 400, "row 0"),
        (split(GOOD, columns=["distance", "hour", "hour", "origin"]), 400, "duplicate"),
        (json.dumps({"dataframe_split": {"columns": NAMES, "data": [GOOD], "index": [1, 2]}}), 400, "index"),
        (json.dumps({"dataframe_records": {"distance": 1}}), 400, "list of objects"),
        (json.dumps({"dataframe_split": {"columns": NAMES, "data": []}}), 422, "no rows"),
        (json.dumps({"dataframe_records": []}), 422, "no rows"),
        (split([1.0, 5, "AA"], columns=["distance", "hour", "carrier"]), 422, "'origin'"),
        (
            json.dumps({"dataframe_records": [dict(zip(NAMES, GOOD, strict=True)), {"hour": 1, "carrier": "AA"}]}),
            422,
            "'distance'",
        ),
        (split(["far", 5, "AA", "JFK"]), 422, "'distance' expects double, got str"),
        (split([True, 5, "AA", "JFK"]), 422, "'distance' expects double, got bool"),
        (split([1.0, 5.5, "AA", "JFK"]), 422, "'hour' expects long"),
        (split([1.0, "5", "AA", "JFK"]), 422, "'hour' expects long"),
        (split([1.0, 2**63, "AA", "JFK"]), 422, "'hour' expects long"),
        (split([1.0, 5, 3, "JFK"]), 422, "'carrier' expects string"),
        (split([1.0, None, "AA", "JFK"]), 422, "'hour' (long) does not accept null"),
        (split([1.0, 5, "AA", None]), 422, "'origin' (string) does not accept null"),
        (split(GOOD).replace("1.0", "Infinity"), 422, "'distance'"),
    ],
)
def test_bad_requests_are_refused_with_the_problem_named(body: str | bytes, status: int, names: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_request(body, COLUMNS)
    assert caught.value.status == status
    assert names in caught.value.message
    answer = json.loads(caught.value.to_json())
    assert answer == {"error_code": caught.value.error_code, "message": caught.value.message}
    assert answer["error_code"] == ("BAD_REQUEST" if status == 400 else "INVALID_PARAMETER_VALUE")


def test_many_duplicate_column_names_are_refused_without_quadratic_work() -> None:
    names = ["distance", "distance"] + [f"c{i}" for i in range(100_000)]  # ≈ 1 MB; n² took minutes
    body = json.dumps({"dataframe_split": {"columns": names, "data": []}})
    refused: list[RequestError] = []

    def parse() -> None:
        try:
            parse_request(body, COLUMNS)
        except RequestError as exc:
            refused.append(exc)

    worker = threading.Thread(target=parse, daemon=True)
    worker.start()
    worker.join(timeout=10)  # a hang guard, not a timing bound: linear work takes milliseconds
    assert refused and refused[0].message.endswith("duplicate column names: ['distance']")


def test_to_frame_concatenates_requests_in_order_with_mlflow_dtypes() -> None:
    columns = (*COLUMNS, Column("day", "integer"), Column("ratio", "float"), Column("flag", "boolean"))
    first = Rows(
        {
            "distance": [1.0],
            "hour": [5],
            "carrier": ["AA"],
            "origin": ["JFK"],
            "day": [1],
            "ratio": [0.5],
            "flag": [True],
        },
        1,
    )
    second = Rows(
        {"distance": [math.nan, 3.0], "hour": [6, 7], "carrier": [None, "UA"], "origin": ["EWR", "LGA"],
         "day": [2, 3], "ratio": [1.5, 2.5], "flag": [False, True]},
        2,
    )  # fmt: skip
    frame = to_frame([first, second], columns)
    assert list(frame.columns) == [c.name for c in columns]
    assert frame["hour"].tolist() == [5, 6, 7]
    assert frame["carrier"].tolist() == ["AA", None, "UA"]
    assert np.isnan(frame["distance"][1])
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "distance": "float64", "hour": "int64", "carrier": "object", "origin": "object",
        "day": "int32", "ratio": "float32", "flag": "bool",
    }  # fmt: skip
