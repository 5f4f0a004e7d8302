"""Parse and validate one scoring request against the model's input columns.

A request body is `{"dataframe_split": {"columns": [...], "data": [[...]], "index": [...]}}` or
`{"dataframe_records": [{...}, ...]}` (the MLflow scoring protocol). Validation is plain Python
on the decoded JSON, done once per request when it arrives, so a bad request is answered on its
own and never reaches (or fails) a batch. The rules:

- every column of the signature must be present (extra columns are ignored, as MLflow does);
  a record that lacks a column is an error, not a silent null;
- `double`/`float` take JSON numbers (not booleans, not strings); `long`/`integer` take integers,
  or floats with an integral value such as 3.0 (MLflow's serving casts those too), within range;
  `string` takes strings; `boolean` takes true/false;
- null (or NaN) is accepted only in the columns the model is known to handle missing values in
  (`Column.nullable`, decided when the model is loaded); infinities are never accepted;
- at least one row.

Structural problems answer 400 BAD_REQUEST; a well-formed request that breaks the schema
answers 422 INVALID_PARAMETER_VALUE. The message names the column and the row.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd

Kind = Literal["double", "float", "long", "integer", "string", "boolean"]
KINDS: tuple[Kind, ...] = ("double", "float", "long", "integer", "string", "boolean")

# The dtypes MLflow's own schema enforcement gives each column, so the model sees the same frame.
DTYPES: dict[Kind, Any] = {
    "double": np.float64,
    "float": np.float32,
    "long": np.int64,
    "integer": np.int32,
    "string": object,
    "boolean": np.bool_,
}
_INT_RANGE = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
_FORMATS = ("dataframe_split", "dataframe_records")
_OTHER_FORMATS = ("instances", "inputs")


@dataclass(frozen=True)
class Column:
    """One input column of the model's signature."""

    name: str
    kind: Kind
    nullable: bool = False


@dataclass(frozen=True)
class Rows:
    """A validated request: the values of every signature column, in signature order."""

    values: dict[str, list[Any]]
    n_rows: int


class RequestError(Exception):
    """A request the service refuses, answered as MLflow does: `{"error_code", "message"}`."""

    def __init__(self, message: str, *, status: int = 400, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code

    def to_json(self) -> bytes:
        return json.dumps({"error_code": self.error_code, "message": self.message}).encode()


def _bad(message: str) -> RequestError:
    return RequestError(message, status=400, error_code="BAD_REQUEST")


def _invalid(message: str) -> RequestError:
    return RequestError(message, status=422, error_code="INVALID_PARAMETER_VALUE")


def parse_request(body: bytes | str, columns: Sequence[Column]) -> Rows:
    """Decode a scoring request and check it against `columns`; raise RequestError if it is bad."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:  # NaN literals, ints past 64 bits, or bad JSON: the stdlib decides and words it
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:  # ValueError covers bad UTF-8 too
            raise _bad(f"Ensure that input is a valid JSON formatted string. Error: {exc}") from None
    if not isinstance(payload, dict):
        raise _bad(f"The input must be a JSON object, got {type(payload).__name__}")
    present = [key for key in (*_FORMATS, *_OTHER_FORMATS) if key in payload]
    if len(present) != 1 or present[0] not in _FORMATS:
        raise _bad(
            "The input must be a JSON object with exactly one of the fields "
            f"{list(_FORMATS)}; got fields {sorted(payload)}"
        )
    if present[0] == "dataframe_split":
        table, n_rows = _split_columns(payload["dataframe_split"])
    else:
        table, n_rows = _records_columns(payload["dataframe_records"], columns)
    if n_rows == 0:
        raise _invalid("The request has no rows: send at least one row to score")
    missing = [c.name for c in columns if c.name not in table]
    if missing:
        raise _invalid(f"Model is missing inputs {missing}: these columns are required by the model signature")
    return Rows({c.name: _convert(c, table[c.name]) for c in columns}, n_rows)


def _split_columns(split: Any) -> tuple[dict[str, list[Any]], int]:
    """Columns of a `dataframe_split` body, checked for shape."""
    if not isinstance(split, dict):
        raise _bad(f"dataframe_split must be an object, got {type(split).__name__}")
    extra = set(split) - {"columns", "data", "index"}
    if "data" not in split or extra:
        raise _bad(f"dataframe_split must have 'data' and may have 'columns' and 'index'; got {sorted(split)}")
    names, data = split.get("columns"), split["data"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _bad("dataframe_split needs 'columns': a list of column names")
    if len(set(names)) != len(names):  # Counter, not names.count: a body of many names must not cost n²
        duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
        raise _bad(f"dataframe_split has duplicate column names: {duplicates}")
    if not isinstance(data, list):
        raise _bad(f"dataframe_split 'data' must be a list of rows, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(names):
            raise _bad(f"dataframe_split row {i} must be a list of {len(names)} values, one per column")
    index = split.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise _bad(f"dataframe_split 'index' must be a list of {len(data)} labels, one per row")
    return {name: [row[j] for row in data] for j, name in enumerate(names)}, len(data)


def _records_columns(records: Any, columns: Sequence[Column]) -> tuple[dict[str, list[Any]], int]:
    """Columns of a `dataframe_records` body; every record must carry every signature column."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _bad("dataframe_records must be a list of objects, one per row")
    table: dict[str, list[Any]] = {}
    for column in columns:
        try:
            table[column.name] = [record[column.name] for record in records]
        except KeyError:
            rows = [i for i, r in enumerate(records) if column.name not in r]
            if len(rows) < len(records):
                raise _invalid(f"Column {column.name!r} is missing from dataframe_records rows {rows[:10]}") from None
    return table, len(records)


def _convert(column: Column, values: list[Any]) -> list[Any]:
    """Check one column's values against its kind; nulls become NaN (numbers) or None."""
    out: list[Any] = []
    for row, value in enumerate(values):
        if value is None or (type(value) is float and math.isnan(value)):
            if not column.nullable:
                raise _invalid(
                    f"Column {column.name!r} ({column.kind}) does not accept null/NaN (row {row}); "
                    "the model cannot handle a missing value there"
                )
            out.append(None if column.kind == "string" else math.nan)
            continue
        converted = _SCALAR[column.kind](value)
        if converted is None:
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise _invalid(
                f"Column {column.name!r} expects {column.kind}, got {type(value).__name__} {shown} (row {row})"
            )
        out.append(converted)
    return out


def _to_real(limit: float) -> Any:
    def convert(value: Any) -> float | int | None:
        if type(value) is float:
            return value if abs(value) <= limit else None  # rejects inf (NaN is handled as null)
        if type(value) is int:  # bool is excluded by the exact type check
            return value if abs(value) <= 2**53 else None  # beyond that, a float is not exact
        return None

    return convert


def _to_int(kind: Kind) -> Any:
    low, high = _INT_RANGE[kind]

    def convert(value: Any) -> int | None:
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is int and low <= value <= high:
            return value
        return None

    return convert


_SCALAR = {
    "double": _to_real(float(np.finfo(np.float64).max)),
    "float": _to_real(float(np.finfo(np.float32).max)),
    "long": _to_int("long"),
    "integer": _to_int("integer"),
    "string": lambda v: v if type(v) is str else None,
    "boolean": lambda v: v if type(v) is bool else None,
}


def to_frame(batch: Sequence[Rows], columns: Sequence[Column]) -> pd.DataFrame:
    """One DataFrame of all rows of `batch`, in order, with the dtypes MLflow would give them."""
    data = {}
    for column in columns:
        values = [v for rows in batch for v in rows.values[column.name]]
        data[column.name] = np.array(values, dtype=DTYPES[column.kind])
    return pd.DataFrame(data, copy=False)
