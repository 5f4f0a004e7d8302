"""Policy replay: what each retraining policy would have had in service, month by month. No Prefect here.

Every policy starts from the model CT trains on the window before the first month. At the end of
each month it decides whether to retrain: never; every month; on drift (the monitoring flow's rule:
the month against the training window of the model in service, drifted when the share of drifted
columns reaches the policy's threshold); when the gate metric of the model in service on the
month just ended is past a floor (with `label_delay_months`, the metric of the month that many months
earlier: labels arrive late); or when that metric *estimated* from the model's probabilities alone
(CBPE, no label needed; only for a model whose holdout calibration allows it) is past the floor. A retrain runs CT's steps (validation, split, features, the
candidate search, the final fit, the holdout evaluation) on the window that ends with that month,
and CT's gates against the model in service; only a candidate that passes is deployed, from the
next month on, as in production. The model in service is scored on every month it served.

Work that policies share is done once (mlops/domain/replay_work.py): a window is trained once, a
(model, month) pair scored and drift-checked once, a gate decided once per (candidate, model in
service). Each policy is charged the CPU seconds of the work it used, as if it had run alone.
Every policy replayed, summarized and compared (`run`): mlops/domain/replay_results.py.
"""

from __future__ import annotations

import math

import pandas as pd

from mlops.config import Config, PolicyKind
from mlops.domain.checks import bound
from mlops.domain.gates import GateDecision
from mlops.domain.record import Record
from mlops.domain.replay_work import Replay, Trained
from mlops.domain.window import Window, latest_complete_month_end, month_start


class ReplayError(ValueError):
    """A replay that cannot run as asked (no time column, no month to replay, no floor)."""


class Policy(Record):
    """When to retrain: its kind and, for drift and metric, the bound that retrains."""

    name: str
    kind: PolicyKind
    drift_share: float | None = None  # drift: retrain when the share of drifted columns reaches this
    metric_floor: float | None = None  # metric, estimated: retrain when the month's gate metric is worse than this
    label_delay_months: int = 0  # metric: the labels of a month are known this many months after it


def make_policies(
    config: Config,
    kinds: list[PolicyKind],
    drift_shares: list[float],
    metric_floor: float | None,
    label_delay_months: int = 0,
) -> list[Policy]:
    """The policies to replay: one per kind, plus one drift policy per other threshold of the sweep, and with a
    label delay a metric policy that sees its labels that many months late beside the one that sees them at once."""
    policies = []
    for kind in dict.fromkeys(kinds):
        if kind == "drift":
            policies.append(Policy(name="drift", kind=kind, drift_share=config.drift.drift_share))
        elif kind in ("metric", "estimated"):
            floor = metric_floor if metric_floor is not None else config.gates.floors.get(config.gates.metric)
            if floor is None:
                raise ReplayError(
                    f"the {kind} policy needs a floor: give metric_floor or gates.floors.{config.gates.metric}"
                )
            policies.append(Policy(name=f"{kind}:{floor:g}", kind=kind, metric_floor=floor))
            if kind == "metric" and label_delay_months:
                policies.append(
                    Policy(
                        name=f"metric:{floor:g}:late-{label_delay_months}m",
                        kind=kind,
                        metric_floor=floor,
                        label_delay_months=label_delay_months,
                    )
                )
        else:
            policies.append(Policy(name=kind, kind=kind))
    policies += [
        Policy(name=f"drift:{share:g}", kind="drift", drift_share=share)
        for share in sorted(set(drift_shares) - {config.drift.drift_share})
    ]
    return policies


def replay_months(source: pd.DataFrame, config: Config, start: str | None, end: str | None) -> list[Window]:
    """The months to replay, `[start, end)`: by default from the first month with `window.months` of data
    before it (the month of the first row counts) to the newest complete month of the data."""
    time_column = config.dataset.time_column
    if not time_column:
        raise ReplayError(f"policy replay walks the time column, and dataset {config.dataset.name} has none")
    times = source[time_column]
    first = month_start(start) if start else month_start(times.min()) + pd.DateOffset(months=config.window.months)
    last = month_start(end) if end else latest_complete_month_end(times.max())
    months = []
    while first + pd.DateOffset(months=1) <= last:
        months.append(Window(first, first + pd.DateOffset(months=1)))
        first = months[-1].end
    if not months:
        raise ReplayError(f"no whole month to replay between {start or 'the first window'} and {end or 'the data end'}")
    return months


class ReplayRow(Record):
    """One month of one policy: the model in service, its score, and what the policy did at the month's end."""

    month: str
    policy: str
    metric: float | None  # the gate metric of the model in service on this month (None: nothing in service)
    version: int | None  # this policy's count of deployed models, 1 for the first
    trained_before: str | None  # the model in service was trained on the months before this date
    drift_share: float | None  # drift policies: the month against the training window of the model in service
    retrained: bool  # CT ran at the month's end
    gate: str  # "", "passed", or why the candidate was not deployed
    deployed: bool  # the candidate serves from the next month
    cpu_s: float  # what the policy spent at this month's end (drift check, month score, training, gates)


def retrains(policy: Policy, metric: float, drift_share: float | None, higher: bool) -> bool:
    """Whether `policy` retrains at a month's end, given the metric it sees (the month's, a late month's, or an
    estimate) and the drift share (None: not checked)."""
    if policy.kind == "monthly":
        return True
    if policy.kind == "drift":
        if drift_share is None:
            return False
        if policy.drift_share is None:
            raise ReplayError(f"the drift policy {policy.name!r} needs a drift_share")
        return drift_share >= policy.drift_share
    if policy.kind in ("metric", "estimated"):
        if math.isnan(metric):
            return False
        if policy.metric_floor is None:
            raise ReplayError(f"the metric policy {policy.name!r} needs a metric_floor")
        return not bound("metric", metric, policy.metric_floor, higher).passed
    return False


def _gate_text(candidate: Trained, decision: GateDecision | None) -> str:
    if decision is None:
        return "no model: " + "; ".join(candidate.problems)
    return "passed" if decision.passed else "; ".join(decision.reasons)


def replay_policy(replay: Replay, policy: Policy, months: list[Window]) -> list[ReplayRow]:
    """One policy over the months: a row per month."""
    higher = replay.config.metric_directions()[replay.config.gates.metric]
    first = replay.train(months[0].start)
    decision, gate_cpu = replay.gate(first, None)
    serving, version = (first, 1) if decision is not None and decision.passed else (None, 0)
    rows: list[ReplayRow] = []
    carried = first.cpu_s + gate_cpu  # the first training is charged to the first month
    for i, month in enumerate(months):
        cpu, metric, share = carried, math.nan, None
        carried = 0.0
        seen = math.nan  # what the policy knows at the month's end
        if serving is not None:
            metric, score_cpu = replay.score(serving, month)
            cpu += score_cpu if policy.kind == "metric" else 0.0
            if policy.kind == "estimated":
                seen, estimate_cpu = replay.estimate(serving, month)
                cpu += estimate_cpu
            if policy.kind == "drift" and i < len(months) - 1:
                share, drift_cpu = replay.drift_share(serving, month)
                cpu += drift_cpu
        if policy.kind == "metric":  # labels `label_delay_months` late: the metric of that earlier month
            late = i - policy.label_delay_months
            known = metric if late == i else rows[late].metric if late >= 0 else None
            seen = math.nan if known is None else known
        retrain = i < len(months) - 1 and (serving is None or retrains(policy, seen, share, higher))
        gate, deployed, next_serving = "", False, serving
        if retrain:
            candidate = replay.train(month.end)
            decision, gate_cpu = replay.gate(candidate, serving)
            cpu += candidate.cpu_s + gate_cpu
            gate, deployed = _gate_text(candidate, decision), decision is not None and decision.passed
            next_serving = candidate if deployed else serving
        rows.append(
            ReplayRow(
                month=f"{month.start:%Y-%m}",
                policy=policy.name,
                metric=None if serving is None or math.isnan(metric) else metric,
                version=version or None,
                trained_before=serving.as_of if serving else None,
                drift_share=share,
                retrained=retrain,
                gate=gate,
                deployed=deployed,
                cpu_s=round(cpu, 3),
            )
        )
        version += deployed
        serving = next_serving
    return rows
