"""A policy replay's shared work, each piece done once and cached by what it depends on. No Prefect here.

CT's steps on a training window (one per window, whichever policies train on it), CT's gates for a
candidate against the model then in service, the gate metric of a model on a month, and the drift
monitoring flow's check of a month against a model's training window; each with the CPU seconds it
took, which every policy that uses it is charged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mlops.config import Config
from mlops.domain import drift, modeling
from mlops.domain.data import select_columns
from mlops.domain.evaluation import Evaluation, compute_metrics, evaluate_on, predict_outputs, user_metrics
from mlops.domain.feedback import estimate
from mlops.domain.gates import GateDecision, champion_comparison, decide
from mlops.domain.split import check_split, split_frame
from mlops.domain.validation import Contract, validate_frame
from mlops.domain.window import Window, fitted_part


@dataclass
class Trained:
    """What CT made of one training window: the fitted model and its holdout, or why it made none."""

    as_of: str  # the window's end: the model's name in the table
    data_window: str
    training_window: str  # the part of the window the model was fitted on (what the gates must not score it on)
    cpu_s: float
    model: Any = None
    holdout: pd.DataFrame | None = None
    evaluation: Evaluation | None = None
    problems: list[str] = field(default_factory=list)


class Replay:
    """The shared work of a replay, cached by what it depends on."""

    def __init__(self, config: Config, source: pd.DataFrame, contract: Contract | None, log: Callable[[str], None]):
        self.config, self.source, self.contract, self.log = config, source, contract, log
        self._trained: dict[str, Trained] = {}
        self._scores: dict[tuple[str, str], tuple[float, float, float]] = {}
        self._drift: dict[tuple[str, str], tuple[float, float]] = {}
        self._gates: dict[tuple[str, str | None], tuple[GateDecision | None, float]] = {}

    def _frame(self, window: Window) -> pd.DataFrame:
        return select_columns(window.cut(self.source, self.config.dataset.time_column), self.config)

    def train(self, as_of: pd.Timestamp) -> Trained:
        """CT's steps on the `window.months` before `as_of`, up to the holdout evaluation."""
        key = f"{as_of:%Y-%m-%d}"
        if key not in self._trained:
            started = time.process_time()
            self._trained[key] = self._train(as_of, key)
            self._trained[key].cpu_s = time.process_time() - started
            found = self._trained[key]
            self.log(
                f"trained on {found.data_window}: {found.problems or f'{self.config.gates.metric} {self._holdout(found):.4f}'}"
                f" ({found.cpu_s:.1f} CPU s)"
            )
        return self._trained[key]

    def _holdout(self, trained: Trained) -> float:
        return trained.evaluation.overall[self.config.gates.metric] if trained.evaluation else math.nan

    def _train(self, as_of: pd.Timestamp, key: str) -> Trained:
        config = self.config
        window = Window.ending(as_of, config.window.months)
        df = self._frame(window)
        trained = Trained(as_of=key, data_window=window.label(), training_window=window.label(), cpu_s=0.0)
        violations = validate_frame(df, config, self.contract)
        if not violations:
            train, test = split_frame(df, config)
            violations = check_split(train, test, config)
        if violations:
            trained.problems = [f"{v.column}: {v.rule}" for v in violations]
            return trained
        preprocessor, X, y, scoring = modeling.fit_features(train, config)
        candidates = [
            modeling.score_candidate(config, params, X, y, scoring) for params in modeling.candidate_grid(config)
        ]
        chosen = modeling.best_candidate(candidates, config)
        trained.model = modeling.assemble_model(preprocessor, modeling.fit_estimator(config, chosen.params, X, y))
        trained.holdout, trained.evaluation = test, evaluate_on(trained.model, test, config)
        trained.training_window = fitted_part(window, test[config.dataset.time_column].min()).label()
        return trained

    def gate(self, candidate: Trained, serving: Trained | None) -> tuple[GateDecision | None, float]:
        """CT's gates for `candidate` against the model in service (None: the floors alone); None: no model to gate."""
        key = (candidate.as_of, serving.as_of if serving else None)
        if key not in self._gates:
            started = time.process_time()
            decision = None
            if candidate.model is not None:
                comparison = (
                    None
                    if serving is None
                    else champion_comparison(
                        candidate.holdout,
                        candidate.model,
                        serving.model,
                        serving.training_window,
                        serving.as_of,
                        self.config,
                    )
                )
                assert candidate.evaluation is not None, "CT evaluates every model it fits (Replay._train)"
                decision = decide(candidate.evaluation, self.config, comparison)
            self._gates[key] = (decision, time.process_time() - started)
        return self._gates[key]

    def score(self, serving: Trained, month: Window) -> tuple[float, float]:
        """The gate metric of the model in service on one month's labelled rows, and its CPU seconds."""
        value, _, cpu = self._scored(serving, month)
        return value, cpu

    def estimate(self, serving: Trained, month: Window) -> tuple[float, float]:
        """The gate metric the model in service is expected to have on the month from its probabilities alone
        (CBPE, mlops/domain/feedback.py; NaN where there is no estimator), and its CPU seconds."""
        _, value, cpu = self._scored(serving, month)
        return value, cpu

    def _scored(self, serving: Trained, month: Window) -> tuple[float, float, float]:
        key = (serving.as_of, month.label())
        if key not in self._scores:
            started, config = time.process_time(), self.config
            rows = self._frame(month)
            outputs = predict_outputs(serving.model, rows[config.dataset.features], config.task)
            value, estimated = math.nan, math.nan
            if len(rows):
                classes = getattr(serving.model, "classes_", None)
                value = compute_metrics(
                    config.task, rows[config.dataset.target], outputs, classes, user_metrics(config)
                )[config.gates.metric]
                found = estimate(outputs, config.gates.metric, config.task)
                calibration = serving.evaluation.overall.get("calibration_error") if serving.evaluation else None
                calibrated = calibration is not None and calibration <= config.feedback.max_calibration_error
                estimated = found if found is not None and calibrated else math.nan  # as production would: or none
            self._scores[key] = (value, estimated, time.process_time() - started)
        return self._scores[key]

    def drift_share(self, serving: Trained, month: Window) -> tuple[float, float]:
        """The monitoring flow's check: the window of `drift.window_months` ending with `month` against the
        training window of the model in service (rows of the new window left out), both scored by it."""
        key = (serving.as_of, month.label())
        if key not in self._drift:
            started, config = time.process_time(), self.config
            current_window = Window.ending(month.end, config.drift.window_months)
            reference_window = Window.parse(serving.data_window)
            reference, _ = drift.reference_without(
                self._frame(reference_window), reference_window, current_window, config
            )
            result = drift.compare(
                drift.scored_frame(serving.model, reference, config),
                drift.scored_frame(serving.model, self._frame(current_window), config),
                config,
            )
            self._drift[key] = (result.drift_share, time.process_time() - started)
        return self._drift[key]
