"""Policy replay: judge the retraining policy on the configured data, month by month, with CT's own steps."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, runtime

from mlops.adapters.replay_report import output_directory
from mlops.config import DRIFT_SWEEP, POLICY_KINDS, PolicyKind, load_config
from mlops.domain.replay import make_policies
from tasks.replay import log_replay, publish_replay, replay_policies
from tasks.runs import run_name, run_parameter


def _run_name() -> str:
    return run_name(
        "replay", load_config().dataset.name, run_parameter("start") or "first", run_parameter("end") or "last"
    )


@flow(name="policy-replay", flow_run_name=_run_name)
def policy_replay(
    start: date | None = None,
    end: date | None = None,
    policies: list[PolicyKind] = list(POLICY_KINDS),  # noqa: B006 - the deployment form's default; never mutated
    drift_shares: list[float] = list(DRIFT_SWEEP),  # noqa: B006 - as above
    metric_floor: float | None = None,
    label_delay_months: int = 0,
    tolerance: float = 0.005,
) -> dict[str, Any]:
    """Replay retraining policies over the months of the data and say which is cheapest within a tolerance of the best.

    Each policy starts from the model CT trains on the window before `start`; at each month's end it
    retrains or not (never; every month; on drift by the monitoring rule; when the gate metric on the
    month just ended is past a floor; when that metric estimated from the model's probabilities alone,
    before any label, is), with CT's real steps and gates against the model then in
    service; a candidate that fails the gates is not deployed. The model in service is scored on each
    month it served. Needs no server to compute; the files go to `.mlops/replay/` and to MLflow.

    Args:
        start: The first month served (its first day). Default: the first month after a whole training window.
        end: The end of the last month served (exclusive). Default: the end of the newest complete month.
        policies: Which of never, monthly, drift (the `drift` settings' share), metric and estimated to replay.
        drift_shares: More drift thresholds to sweep (a drift policy each, beside the configured one).
        metric_floor: The metric and estimated policies' floor on the gate metric. Default: the gate's own floor.
        label_delay_months: Labels arrive this many months after their month: a second metric policy that sees
            them that late (0: none).
        tolerance: How far from the best mean metric a policy may be and still be called good enough; the
            summary says whether the months' bootstrap interval supports it.
    """
    config = load_config()
    chosen = make_policies(config, policies, drift_shares, metric_floor, label_delay_months)
    name = runtime.flow_run.name or "replay"
    result, files = replay_policies(
        config, chosen, output_directory(config, name), start and start.isoformat(), end and end.isoformat(), tolerance
    )
    run_url = log_replay(config, result, files, name)
    publish_replay(result, files, run_url)
    return {
        "best": result.best,
        "cheapest": result.cheapest,
        "supported": result.supported,
        "months": result.months,
        "table": str(files.table),
        "plot": str(files.plot),
        "mlflow_run": run_url,
        "summary": [s.model_dump() for s in result.summary],
    }
