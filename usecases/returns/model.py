"""A team's own code for its use case, named from mlops.yaml by import path: a derived feature and a metric."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

NUMERIC = ["amount", "n_items"]
CATEGORICAL = ["channel", "country"]


def derive(frame: pd.DataFrame) -> pd.DataFrame:
    """The price per item: what the team found predicts a return best."""
    return frame.assign(amount_per_item=frame["amount"] / frame["n_items"].clip(lower=1))


def features() -> object:
    """features.transform: the derived column, then category codes (LightGBM splits on them)."""
    codes = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
    encode = ColumnTransformer(
        [("numeric", "passthrough", [*NUMERIC, "amount_per_item"]), ("categorical", codes, CATEGORICAL)]
    )
    return make_pipeline(FunctionTransformer(derive), encode)


def top_decile_precision(y_true: np.ndarray, probability: np.ndarray) -> float:
    """gates.custom_metrics: the share of returns among the 10% of orders the model ranks riskiest."""
    top = np.argsort(-probability)[: max(1, len(probability) // 10)]
    return float(np.mean(y_true[top] == 1))


def orders(rows: int = 4000, seed: int = 3) -> pd.DataFrame:
    """Synthetic orders over three months; expensive items bought one at a time come back most."""
    rng = np.random.default_rng(seed)
    n_items = rng.integers(1, 6, rows)
    amount = rng.gamma(2.0, 40.0, rows) * n_items
    channel = rng.choice(["web", "app", "store"], rows, p=[0.5, 0.3, 0.2])
    per_item = amount / n_items
    risk = -3.0 + per_item / 40.0 + (channel == "web") * 0.8 + rng.normal(0, 0.5, rows)
    return pd.DataFrame(
        {
            "event_time": pd.date_range("2024-01-01", periods=rows, freq="32min", tz="UTC").astype(str),
            "amount": amount.round(2),
            "n_items": n_items,
            "channel": channel,
            "country": rng.choice(["DE", "FR", "NL", "IT"], rows),
            "returned": (rng.random(rows) < 1 / (1 + np.exp(-risk))).astype(int),
        }
    )
