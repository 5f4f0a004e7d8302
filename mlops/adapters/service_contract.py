"""The model service's request contract as cases: the bodies CD sends and what each must get back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import Config


def split_payload(frame: pd.DataFrame) -> str:
    """A `dataframe_split` request body; NaN travels as null."""
    return json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False, date_format="iso"))})


@dataclass(frozen=True)
class Case:
    """One request and the statuses it may get."""

    name: str
    body: str
    accepted: tuple[int, ...]
    rows: int | None = None  # when 200, the number of predictions expected


def contract_cases(sample: pd.DataFrame, config: Config) -> list[Case]:
    """Valid rows (split and records), broken bodies and odd values, built from `sample`'s first 5 rows."""
    ds = config.dataset
    features = sample[ds.features].head(5).reset_index(drop=True)
    records = json.dumps({"dataframe_records": json.loads(features.to_json(orient="records"))})
    numeric, categorical = ds.numeric[0] if ds.numeric else None, ds.categorical[0] if ds.categorical else None
    cases = [
        Case("valid rows (dataframe_split)", split_payload(features), (200,), len(features)),
        Case("valid rows (dataframe_records)", records, (200,), len(features)),
        Case("missing column", split_payload(features.drop(columns=[ds.features[0]])), (400, 422)),
        Case("empty batch", split_payload(features.head(0)), (400, 422)),
        Case("malformed JSON", '{"dataframe_split": {"columns": [', (400,)),
        Case("neither split nor records", json.dumps({"rows": [[1, 2]]}), (400, 422)),
    ]
    if numeric:
        wrong = features.astype({numeric: object})
        wrong.loc[0, numeric] = "not-a-number"
        cases.append(Case("wrong type in a numeric column", split_payload(wrong), (400, 422)))
        cases.append(
            Case(
                "NaN in a numeric column",
                split_payload(features.assign(**{numeric: np.nan})),
                (200, 400, 422),
                len(features),
            )
        )
    if categorical:
        unknown = features.assign(**{categorical: "never-seen-category"})
        cases.append(Case("unknown category", split_payload(unknown), (200, 400, 422), len(features)))
    return cases


def prediction_shape_ok(predictions: Any, rows: int, config: Config) -> bool:
    """One finite value per row (regression), or one probability row summing to 1 per row."""
    if not isinstance(predictions, list) or len(predictions) != rows:
        return False
    if config.task == "regression":
        return all(isinstance(p, (int, float)) and math.isfinite(p) for p in predictions)
    return all(
        isinstance(p, list) and abs(sum(p) - 1.0) < 1e-6 and all(0.0 <= v <= 1.0 for v in p) for p in predictions
    )
