"""Splitting: one policy for the holdout and for the search's validation part, and its checks.

With a time column the held-out part is the time-latest share (nothing from the future leaks into
fitting); without one it is a seeded random share, stratified by class for classification, so
rows sorted by their target (common in exported tables) still give every part every class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.config import Config
from mlops.domain.validation import Violation


def held_out(df: pd.DataFrame, config: Config, share: float) -> np.ndarray:
    """One bool per row: True for the rows the policy holds out (at least one, never all when possible)."""
    ds = config.dataset
    if ds.time_column:
        times = df[ds.time_column]
        cut = times.quantile(1 - share, interpolation="nearest")
        if cut <= times.min():  # fewer distinct times than parts: keep the held-out part non-empty
            cut = times.max()
        return (times >= cut).to_numpy()
    rng = np.random.default_rng(config.split.seed)
    if config.task == "regression":
        mask = rng.random(len(df)) < share
        if not mask.any() and len(df) > 1:
            mask[rng.integers(len(df))] = True
        return mask
    mask = np.zeros(len(df), dtype=bool)  # stratified: the same share of every class is held out
    for positions in df.groupby(ds.target, sort=True).indices.values():
        chosen = rng.permutation(positions)[: max(1, round(len(positions) * share))]
        if len(chosen) == len(positions):
            chosen = chosen[:-1]  # a class must stay in the fitted part too
        mask[chosen] = True
    return mask


def split_frame(df: pd.DataFrame, config: Config, share: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fitted part, held-out part); by default the holdout of `split.test_size`."""
    mask = held_out(df, config, config.split.test_size if share is None else share)
    return df[~mask], df[mask]


def search_split(train: pd.DataFrame, config: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training rows cut for the candidate search by the same policy (`split.validation_size`)."""
    return split_frame(train, config, config.split.validation_size)


def check_split(train: pd.DataFrame, test: pd.DataFrame, config: Config) -> list[Violation]:
    """Both parts non-empty, disjoint, and time-ordered (or with the same classes for a random split)."""
    ds = config.dataset
    found = []
    if train.empty or test.empty:
        return [Violation(column="*", rule="split_empty", detail=f"train {len(train)} rows, test {len(test)} rows")]
    if ds.time_column:
        last_train, first_test = train[ds.time_column].max(), test[ds.time_column].min()
        if last_train >= first_test:
            found.append(
                Violation(
                    column=ds.time_column,
                    rule="split_time_order",
                    detail=f"train ends {last_train}, test starts {first_test}",
                )
            )
    overlap = train.index.intersection(test.index)
    if len(overlap):
        found.append(Violation(column="*", rule="split_overlap", detail=f"{len(overlap)} row(s) in both parts"))
    if config.task != "regression" and not ds.time_column:
        train_classes, test_classes = set(train[ds.target].unique()), set(test[ds.target].unique())
        if train_classes != test_classes:
            found.append(
                Violation(
                    column=ds.target,
                    rule="split_classes",
                    detail=f"train {sorted(train_classes)} vs test {sorted(test_classes)}",
                )
            )
    return found
