"""Batch scoring, one chunk at a time: screen input rows, shape predictions and rejects. Pure.

`check_input_schema`, `screen_chunk`, `key_frame`, `prediction_frame` and `reject_frame` work on
frames; reading the input, resolving the model and writing files is `mlops.adapters.batch_io`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from mlops.config import Config
from mlops.domain import validation
from mlops.domain.evaluation import predict_outputs
from mlops.domain.record import Record
from mlops.domain.validation import Contract, Violation

DEFAULT_CHUNK_ROWS = 50_000
SAMPLE_ROWS = 1_000  # rows read up front to check the schema

# Output columns besides the row keys.
ROW_NUMBER = "row_number"  # 0-based position in the input; the key when a key column is missing
MODEL_VERSION = "model_version"
PREDICTION = "prediction"  # the label (classification) or the value (regression)
PROBABILITY = "probability"  # binary: of the positive class (classes_[1]); multiclass: of the predicted label
REASON = "reason"

# Rules a row can break; the reason reads "<rule>: <column>", several joined with "; ".
NOT_NULLABLE = "not_nullable"  # null where the contract says the column never is, or the model cannot take one
NON_NUMERIC = "non_numeric"  # a value in a numeric column that does not parse as a number
NON_FINITE = "non_finite"  # +/-inf in a numeric column
REASON_SEPARATOR = "; "

Format = Literal["csv", "parquet"]
_SUFFIXES: dict[str, Format] = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}


class ScoringInputError(ValueError):
    """An input that cannot be scored at all (e.g. a model input column is missing); names every problem."""

    def __init__(self, source: str, violations: list[Violation]):
        self.source = source
        self.violations = violations
        lines = "\n".join(f"  - {v.column}: {v.rule} ({v.detail})" for v in violations)
        missing = [v.column for v in violations if v.rule == "missing_column"]
        headline = f"missing column(s) {missing}" if missing else f"{len(violations)} problem(s)"
        super().__init__(f"cannot score {source}: {headline}; nothing was written\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:  # keeps the violations when Prefect pickles the failure
        return self.__class__, (self.source, self.violations)


# --------------------------------------------------------------------------------------------
# Pure: what to read, what to check, what to write, for one chunk.
# --------------------------------------------------------------------------------------------


def input_format(path: str | Path) -> Format:
    """csv or parquet, from the file name's suffix."""
    name = str(path).lower()
    for suffix, kind in _SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    raise ValueError(f"cannot tell the format of {path}: name it with one of {sorted(_SUFFIXES)}")


def check_input_schema(sample: pd.DataFrame, config: Config) -> list[Violation]:
    """Model input columns missing or of an unusable type; the target and time column are not required.

    A numeric column read as text (a CSV with a stray word in it) is usable: its values are parsed
    row by row and the rows that do not parse are rejected, not the whole input.
    """
    features = set(config.dataset.features)
    found = [v for v in validation.check_schema(sample, config) if v.column in features]
    found = [v for v in found if not (v.rule == "wrong_type" and _parsable_text(sample[v.column]))]
    if sample.empty:
        found.append(Violation(column="*", rule="no_rows", detail="the input has no rows to score"))
    return found


def _parsable_text(column: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)


def non_nullable_columns(config: Config, contract: Contract | None) -> frozenset[str]:
    """Model input columns the contract declares never null; none without a contract."""
    if contract is None:
        return frozenset()
    features = set(config.dataset.features)
    return frozenset(c.name for c in contract.columns if c.name in features and not c.nullable)


def null_intolerant_columns(model: Any, config: Config) -> frozenset[str]:
    """Model input columns where a null makes the model fail or return a non-finite value.

    Probed once on a synthetic row (numeric 0, categorical "") as the model service does: a
    HistGradientBoosting pipeline takes nulls everywhere, a linear model without an imputer nowhere.
    Returns nothing when the model cannot score even the synthetic row (the chunks will say why).
    """
    ds = config.dataset
    base = {**dict.fromkeys(ds.numeric, 0.0), **dict.fromkeys(ds.categorical, "")}

    def scores(missing: list[str]) -> bool:
        row = pd.DataFrame(
            {c: [np.nan if c in missing and c in ds.numeric else None if c in missing else v] for c, v in base.items()}
        ).astype(dict.fromkeys(ds.numeric, "float64"))
        try:
            output = np.asarray(predict_outputs(model, row, config.task), dtype="float64")
        except Exception:
            return False
        return bool(np.isfinite(output).all())

    if not scores([]) or scores(ds.features):
        return frozenset()
    return frozenset(c for c in ds.features if not scores([c]))


def output_keys(columns: list[str], config: Config) -> list[str]:
    """The configured key columns; when one is missing from the input, those present plus the row number."""
    keys = list(config.dataset.key_columns)
    present = [k for k in keys if k in columns]
    return present if keys and len(present) == len(keys) else [*present, ROW_NUMBER]


def read_plan(columns: list[str], config: Config) -> list[str]:
    """The input columns to read: keys and model inputs, nothing else."""
    wanted = dict.fromkeys([*config.dataset.key_columns, *config.dataset.features])
    return [c for c in wanted if c in columns]


@dataclass(frozen=True)
class Screened:
    """One chunk split into model input (scorable rows) and rejected rows with their reasons."""

    features: pd.DataFrame  # scorable rows, the model's input columns, numeric ones as float64
    keep: np.ndarray  # one bool per chunk row
    reasons: pd.Series  # one "; "-joined reason per rejected row, indexed like the chunk
    counts: dict[str, int]  # reason -> rows (a row breaking two rules counts under both)


def screen_chunk(chunk: pd.DataFrame, config: Config, non_nullable: frozenset[str] = frozenset()) -> Screened:
    """Parse numeric inputs and find the rows that cannot be scored; the chunk itself is not changed."""
    ds = config.dataset
    numeric = set(ds.numeric)
    columns: dict[str, pd.Series] = {}
    problems: dict[str, pd.Series] = {}
    for name in ds.features:
        values = chunk[name]
        missing = values.isna()
        if name in non_nullable and missing.any():
            problems[f"{NOT_NULLABLE}: {name}"] = missing
        if name in numeric:
            if pd.api.types.is_numeric_dtype(values):
                numbers = values.astype("float64")
            else:
                numbers = pd.to_numeric(values, errors="coerce").astype("float64")
                unparsed = numbers.isna() & ~missing
                if unparsed.any():
                    problems[f"{NON_NUMERIC}: {name}"] = unparsed
            infinite = pd.Series(np.isinf(numbers.to_numpy()), index=chunk.index)
            if infinite.any():
                problems[f"{NON_FINITE}: {name}"] = infinite
            columns[name] = numbers
        else:
            columns[name] = values
    rejected = np.zeros(len(chunk), dtype=bool)
    for mask in problems.values():
        rejected |= mask.to_numpy()
    keep = ~rejected
    broken: dict[Any, list[str]] = {label: [] for label in chunk.index[rejected]}
    for reason, mask in problems.items():
        for label in chunk.index[mask.to_numpy()]:
            broken[label].append(reason)
    reasons = pd.Series([REASON_SEPARATOR.join(r) for r in broken.values()], index=chunk.index[rejected], dtype=object)
    return Screened(
        features=pd.DataFrame(columns, index=chunk.index).loc[keep],
        keep=keep,
        reasons=reasons,
        counts={reason: int(mask.sum()) for reason, mask in problems.items()},
    )


def key_frame(chunk: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The key columns of a chunk; `row_number` comes from its index (the position in the input)."""
    frame = pd.DataFrame({k: chunk[k] for k in keys if k != ROW_NUMBER}, index=chunk.index)
    if ROW_NUMBER in keys:
        frame[ROW_NUMBER] = chunk.index.to_numpy(dtype="int64")
    return frame


def prediction_frame(
    keys: pd.DataFrame, outputs: np.ndarray, classes: np.ndarray | None, task: str, version: str
) -> pd.DataFrame:
    """Keys, model version and prediction per row: binary probability of classes_[1] + label,
    multiclass label + its probability, regression the value."""
    out = keys.reset_index(drop=True)
    out[MODEL_VERSION] = str(version)
    if task == "regression":
        out[PREDICTION] = np.asarray(outputs, dtype="float64").reshape(-1)
        return out
    if classes is None:
        raise ValueError(f"{task} predictions need the classifier's classes (its `classes_`)")
    outputs = np.asarray(outputs, dtype="float64").reshape(len(out), len(classes))
    out[PREDICTION] = np.asarray(classes)[np.argmax(outputs, axis=1)]
    out[PROBABILITY] = outputs[:, 1] if task == "binary" else outputs.max(axis=1)
    return out


def reject_frame(rejected: pd.DataFrame, reasons: pd.Series, keys: list[str], config: Config) -> pd.DataFrame:
    """Rejected rows: row number, keys, reason and the model inputs as read (as text, they may be anything)."""
    out = key_frame(rejected, [k for k in keys if k != ROW_NUMBER] + [ROW_NUMBER])
    out[REASON] = reasons.reindex(rejected.index).astype("string")
    for name in config.dataset.features:
        out[name] = rejected[name].astype("string")
    return out.reset_index(drop=True)


class Tally(Record):
    """Rows read, scored and rejected so far, and rejected rows by reason."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)

    def plus(self, screened: Screened) -> Tally:
        by_reason = dict(self.rejected_by_reason)
        for reason, count in screened.counts.items():
            by_reason[reason] = by_reason.get(reason, 0) + count
        return Tally(
            rows_read=self.rows_read + len(screened.keep),
            rows_scored=self.rows_scored + int(screened.keep.sum()),
            rows_rejected=self.rows_rejected + int((~screened.keep).sum()),
            rejected_by_reason=dict(sorted(by_reason.items())),
        )


class ScoreResult(Record):
    """What one scoring pass read, scored, rejected and wrote."""

    output_path: Path
    rejects_path: Path
    model_version: str
    tally: Tally
    chunks: int
    chunk_rows: int
    key_columns: list[str]  # the row keys in the output (see output_keys)
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.tally.rows_read / self.seconds if self.seconds > 0 else float("nan")


def default_output_path(state_dir: Path, model_name: str, version: str, now: datetime) -> Path:
    """<state>/scores/<model>-v<version>-<UTC timestamp to the millisecond>.parquet."""
    stamp = f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z"
    return state_dir / "scores" / f"{model_name}-v{version}-{stamp}.parquet"


def rejects_path_for(output: Path) -> Path:
    """The rejects file beside an output file: <stem>.rejects.parquet."""
    stem = output.name[: -len(".parquet")] if output.name.endswith(".parquet") else output.name
    return output.with_name(f"{stem}.rejects.parquet")
