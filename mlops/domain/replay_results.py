"""The replay's results: every policy replayed (`run`), summarized with bootstrap intervals, the best and the cheapest."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from mlops.config import Config
from mlops.domain.record import Record
from mlops.domain.replay import Policy, ReplayRow, replay_months, replay_policy
from mlops.domain.replay_work import Replay
from mlops.domain.validation import Contract


class PolicySummary(Record):
    policy: str
    months: int
    mean: float
    mean_low: float = math.nan  # the 95% bootstrap interval of the mean over the months (BOOTSTRAP resamples, seeded)
    mean_high: float = math.nan
    worst: float
    retrains: int
    deployed: int
    cpu_s: float


class ReplayResult(Record):
    metric: str
    higher_is_better: bool
    months: list[str]
    policies: list[Policy]
    rows: list[ReplayRow]
    summary: list[PolicySummary]
    best: str  # the best mean monthly metric
    cheapest: str  # the least CPU among the policies within `tolerance` of the best mean
    tolerance: float
    # The 95% bootstrap interval of the cheapest's mean minus the best's, month by month (paired): "within the
    # tolerance" is supported when the whole interval is (it is not when months are few or policies vary a lot).
    gap_low: float = math.nan
    gap_high: float = math.nan
    supported: bool = False
    cpu_s: float  # what the replay itself spent (shared work counted once)


BOOTSTRAP = 2000


def bootstrap_mean(values: list[float], seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of `values` (NaN, NaN for fewer than two)."""
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.choice(np.asarray(values, dtype=float), size=(BOOTSTRAP, len(values)), replace=True).mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def summarize(rows: list[ReplayRow], policies: list[Policy], higher: bool) -> list[PolicySummary]:
    """Per policy: mean (with its bootstrap interval) and worst monthly metric over the months with a model in
    service, retrains, compute."""
    found = []
    for policy in policies:
        mine = [r for r in rows if r.policy == policy.name]
        scores = [r.metric for r in mine if r.metric is not None]
        low, high = bootstrap_mean(scores)
        found.append(
            PolicySummary(
                policy=policy.name,
                months=len(scores),
                mean=sum(scores) / len(scores) if scores else math.nan,
                mean_low=low,
                mean_high=high,
                worst=(min if higher else max)(scores) if scores else math.nan,
                retrains=sum(r.retrained for r in mine),
                deployed=sum(r.deployed for r in mine),
                cpu_s=round(sum(r.cpu_s for r in mine), 3),
            )
        )
    return found


def choose(summary: list[PolicySummary], higher: bool, tolerance: float) -> tuple[str, str]:
    """(the best mean, the cheapest policy whose mean is within `tolerance` of it)."""
    scored = [s for s in summary if not math.isnan(s.mean)] or summary
    best = (max if higher else min)(scored, key=lambda s: s.mean)
    close = [s for s in scored if (s.mean >= best.mean - tolerance if higher else s.mean <= best.mean + tolerance)]
    return best.policy, min(close, key=lambda s: (s.cpu_s, s.retrains)).policy


def run(
    config: Config,
    source: pd.DataFrame,
    contract: Contract | None,
    policies: list[Policy],
    start: str | None = None,
    end: str | None = None,
    tolerance: float = 0.005,
    log: Callable[[str], None] = lambda _: None,
) -> ReplayResult:
    """Replay every policy over the months from `start` to `end` on `source` (the whole configured data)."""
    months = replay_months(source, config, start, end)
    higher = config.metric_directions()[config.gates.metric]
    replay, started = Replay(config, source, contract, log), time.process_time()
    log(
        f"replaying {len(policies)} policies over {len(months)} months, {months[0].label()} to {months[-1].end:%Y-%m-%d}"
    )
    rows = []
    for policy in policies:
        rows += replay_policy(replay, policy, months)
        mine = [r for r in rows if r.policy == policy.name]
        log(f"{policy.name}: {sum(r.retrained for r in mine)} retrain(s), {sum(r.deployed for r in mine)} deployed")
    summary = summarize(rows, policies, higher)
    best, cheapest = choose(summary, higher, tolerance)
    by_month = {(r.policy, r.month): r.metric for r in rows if r.metric is not None}
    gaps = [
        (by_month[cheapest, m] - by_month[best, m]) * (1 if higher else -1)
        for m in [f"{w.start:%Y-%m}" for w in months]
        if (cheapest, m) in by_month and (best, m) in by_month
    ]
    gap_low, gap_high = bootstrap_mean(gaps) if cheapest != best else (0.0, 0.0)
    return ReplayResult(
        metric=config.gates.metric,
        higher_is_better=higher,
        months=[f"{m.start:%Y-%m}" for m in months],
        policies=policies,
        rows=rows,
        summary=summary,
        best=best,
        cheapest=cheapest,
        tolerance=tolerance,
        gap_low=gap_low,
        gap_high=gap_high,
        supported=bool(gap_low >= -tolerance),  # NaN (too few months) compares False: not supported
        cpu_s=round(time.process_time() - started, 3),
    )
