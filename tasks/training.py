"""Training tasks: fit the feature transforms, search candidates in parallel, fit, evaluate, gate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict

from mlops import modeling, registry
from mlops.config import METRICS, Config
from mlops.evaluation import Evaluation, GateDecision, compute_metrics, decide, evaluate, predict_outputs
from tasks.data import Split


class Features(BaseModel):
    """The fitted feature transforms and the transformed training matrix, on disk."""

    model_config = ConfigDict(frozen=True)

    preprocessor_path: Path
    X_path: Path
    y_path: Path
    rows: int
    width: int


class Candidate(BaseModel):
    model_config = ConfigDict(frozen=True)

    params: dict[str, Any]
    metric: str
    score: float


@task
def engineer_features(config: Config, split: Split) -> Features:
    """Fit the ColumnTransformer on the training rows only and transform them once for the search."""
    train = pd.read_parquet(split.train_path)
    X, y = modeling.features_and_target(train, config)
    preprocessor = modeling.build_preprocessor(config).fit(X)
    matrix = preprocessor.transform(X)
    out = split.train_path.parent
    joblib.dump(preprocessor, out / "preprocessor.joblib")
    np.save(out / "train_X.npy", matrix)
    np.save(out / "train_y.npy", y.to_numpy(), allow_pickle=True)
    get_run_logger().info("features: %d rows x %d columns from %d inputs", *matrix.shape, X.shape[1])
    return Features(preprocessor_path=out / "preprocessor.joblib", X_path=out / "train_X.npy",
                    y_path=out / "train_y.npy", rows=matrix.shape[0], width=matrix.shape[1])


def _load_matrix(features: Features) -> tuple[np.ndarray, np.ndarray]:
    return np.load(features.X_path, mmap_mode="r"), np.load(features.y_path, allow_pickle=True)


@task
def train_candidate(config: Config, features: Features, params: dict[str, Any]) -> Candidate:
    """Fit one candidate on the earlier training rows and score it on the later ones."""
    X, y = _load_matrix(features)
    cut = modeling.validation_cut(len(y), config.split.validation_size)
    estimator = modeling.fit_estimator(config, params, X[:cut], y[:cut])
    classes = getattr(estimator, "classes_", None)
    outputs = predict_outputs(estimator, X[cut:], config.task)
    score = compute_metrics(config.task, y[cut:], outputs, classes)[config.gates.metric]
    get_run_logger().info("candidate %s: validation %s = %.4f", params, config.gates.metric, score)
    return Candidate(params=params, metric=config.gates.metric, score=score)


def best_candidate(candidates: list[Candidate], config: Config) -> Candidate:
    """The best validation score in the gate metric's direction (NaN never wins)."""
    higher = METRICS[config.task][config.gates.metric]
    scored = [c for c in candidates if not math.isnan(c.score)] or candidates
    return (max if higher else min)(scored, key=lambda c: c.score)


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
    model = joblib.load(model_path)
    test = pd.read_parquet(split.test_path)
    X, _ = modeling.features_and_target(test, config)
    result = evaluate(test, predict_outputs(model, X, config.task), getattr(model, "classes_", None), config)
    create_table_artifact(key="holdout-metrics", table=evaluation_rows(result), description="Candidate on the holdout")
    return result


@task(retries=2, retry_delay_seconds=[2, 10])
def evaluate_champion(config: Config, split: Split) -> tuple[Evaluation | None, str | None]:
    """The current champion on the same holdout; (None, None) when there is no champion yet."""
    champion = registry.load_aliased(registry.connect(config), config, registry.CHAMPION)
    if champion is None:
        get_run_logger().info("no champion yet: the floors alone decide")
        return None, None
    test = pd.read_parquet(split.test_path)
    X, _ = modeling.features_and_target(test, config)
    outputs = predict_outputs(champion.model, X, config.task)
    return evaluate(test, outputs, getattr(champion.model, "classes_", None), config), champion.version


@task
def validate_model(config: Config, candidate: Evaluation, champion: Evaluation | None, champion_version: str | None) -> GateDecision:
    """Floors, then gain over the champion overall and per large segment; publishes the decision."""
    decision = decide(candidate, champion, config, champion_version)
    create_markdown_artifact(key="model-validation", markdown=decision_markdown(decision), description="Gate decision")
    get_run_logger().info("model validation %s: %s", "passed" if decision.passed else "failed", decision.reasons or "all checks")
    return decision


def evaluation_rows(result: Evaluation) -> list[dict[str, Any]]:
    rows = [{"segment": "overall", "rows": result.rows, **_rounded(result.overall)}]
    rows += [{"segment": f"{s.column}={s.value}", "rows": s.rows, **_rounded(s.metrics)} for s in result.segments]
    return rows


def _rounded(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if math.isnan(v) else round(v, 4)) for k, v in metrics.items()}


def decision_markdown(decision: GateDecision) -> str:
    verdict = "PASSED: will be registered as challenger" if decision.passed else "FAILED: not registered"
    champion = f"{decision.champion:.4f} (version {decision.champion_version})" if decision.champion is not None else "none yet"
    rows = "\n".join(
        f"| {c.name} | {c.observed:.4f} | {c.required:.4f} | {'pass' if c.passed else '**FAIL**'} |" for c in decision.checks
    )
    return (
        f"# Model validation {verdict}\n\n"
        f"- {decision.metric}: candidate {decision.candidate:.4f}, champion {champion}\n\n"
        f"| check | observed | required | result |\n|---|---|---|---|\n{rows}\n"
    )
