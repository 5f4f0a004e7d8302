"""Training tasks: fit the feature transforms, search candidates in parallel, fit, evaluate, gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger
from threadpoolctl import threadpool_limits

from mlops import render
from mlops.adapters import registry
from mlops.config import Config
from mlops.domain import modeling
from mlops.domain.evaluation import Evaluation, evaluate_on
from mlops.domain.gates import ChampionComparison, GateDecision, champion_comparison, decide
from mlops.domain.modeling import Candidate
from mlops.domain.record import Record
from tasks.data import Extract, Split
from tasks.retries import IO_RETRIES


class Features(Record):
    """The fitted feature transforms, the transformed training matrix and the search's split, on disk."""

    preprocessor_path: Path
    X_path: Path
    y_path: Path
    search_mask_path: Path  # True: the row scores candidates; False: it fits them
    rows: int
    width: int


@task
def engineer_features(config: Config, split: Split) -> Features:
    """Fit the feature transforms on the training rows only, transform them once, cut them for the search."""
    preprocessor, matrix, y, search_mask = modeling.fit_features(pd.read_parquet(split.train_path), config)
    out = split.train_path.parent
    paths = {
        "preprocessor_path": out / "preprocessor.joblib",
        # An array is memory-mapped by each candidate; a user transform's frame or sparse matrix is pickled.
        "X_path": out / ("train_X.npy" if isinstance(matrix, np.ndarray) else "train_X.joblib"),
        "y_path": out / "train_y.npy",
        "search_mask_path": out / "search_mask.npy",
    }
    joblib.dump(preprocessor, paths["preprocessor_path"])
    if isinstance(matrix, np.ndarray):
        np.save(paths["X_path"], matrix)
    else:
        joblib.dump(matrix, paths["X_path"])
    np.save(paths["y_path"], y, allow_pickle=True)
    np.save(paths["search_mask_path"], search_mask)
    get_run_logger().info("features: %d rows x %d columns from %d inputs", *matrix.shape, len(config.dataset.features))
    return Features(**paths, rows=matrix.shape[0], width=matrix.shape[1])


def _load_matrix(features: Features) -> tuple[Any, np.ndarray]:
    X_path = features.X_path
    X = np.load(X_path, mmap_mode="r") if X_path.suffix == ".npy" else joblib.load(X_path)
    return X, np.load(features.y_path, allow_pickle=True)


@task
def train_candidate(
    config: Config, features: Features, params: dict[str, Any], threads: int | None = None
) -> Candidate:
    """Fit one candidate on the search's fitting rows and score it on its validation rows.

    `threads` caps this fit's OpenMP threads (candidates run side by side; None: the library's default).
    """
    X, y = _load_matrix(features)
    with threadpool_limits(limits=threads, user_api="openmp"):
        candidate = modeling.score_candidate(config, params, X, y, np.load(features.search_mask_path))
    get_run_logger().info("candidate %s: validation %s = %.4f", params, config.gates.metric, candidate.score)
    return candidate


@task
def fit_final_model(config: Config, features: Features, params: dict[str, Any]) -> Path:
    """Refit the chosen candidate on all training rows; the model is transforms + estimator in one Pipeline."""
    X, y = _load_matrix(features)
    estimator = modeling.fit_estimator(config, params, X, y)
    model = modeling.assemble_model(joblib.load(features.preprocessor_path), estimator)
    path = features.X_path.with_name("model.joblib")
    joblib.dump(model, path)
    return path


@task
def evaluate_model(config: Config, model_path: Path, split: Split) -> Evaluation:
    """The candidate's metrics on the holdout, overall and per segment, as a table artifact."""
    result = evaluate_on(joblib.load(model_path), pd.read_parquet(split.test_path), config)
    create_table_artifact(
        key="holdout-metrics", table=render.evaluation_rows(result), description="Candidate on the holdout"
    )
    return result


@task(**IO_RETRIES)
def compare_champion(config: Config, model_path: Path, split: Split, extract: Extract) -> ChampionComparison | None:
    """The candidate and the champion on the holdout rows outside the champion's training window; None without a champion."""
    client = registry.connect(config)
    champion = registry.champion(client, config.tracking.model_name)
    if champion is None:
        get_run_logger().info("no champion yet: the floors alone decide")
        return None
    comparison = champion_comparison(
        pd.read_parquet(split.test_path),
        joblib.load(model_path),
        registry.load_model(champion),
        champion.trained_on,
        champion.version,
        config,
        champion.tags.get("data_hash"),
        extract.data_hash,
    )
    get_run_logger().info("champion v%s: %s", champion.version, comparison.note)
    return comparison


@task
def publish_ct_summary(
    config: Config,
    run_id: str,
    version: str | None,
    extract: Extract,
    evaluation: Evaluation,
    decision: GateDecision,
    lineage: dict[str, str],
) -> dict[str, Any]:
    """The CT run's outcome (what the flow returns) and its `ct-summary` artifact."""
    summary = {
        "model_name": config.tracking.model_name,
        **decision.outcome(version, run_id),
        "champion_comparison": decision.comparison,
        "window": extract.window,
    }
    create_markdown_artifact(
        key="ct-summary", markdown=render.ct_summary_markdown(summary, evaluation.overall, lineage)
    )
    return summary


@task
def validate_model(config: Config, candidate: Evaluation, comparison: ChampionComparison | None) -> GateDecision:
    """Floors, then gain over the champion overall and per large segment; publishes the decision."""
    decision = decide(candidate, config, comparison)
    outcome = "will be registered as challenger" if decision.passed else "not registered"
    create_markdown_artifact(
        key="model-validation", markdown=render.decision_markdown(decision, outcome), description="Gate decision"
    )
    get_run_logger().info(
        "model validation %s: %s", "passed" if decision.passed else "failed", decision.reasons or "all checks"
    )
    return decision
