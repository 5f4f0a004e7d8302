"""Continuous training: extract → validate → features → train → evaluate → validate vs champion → register."""

from __future__ import annotations

import os
import shutil
from typing import Any

from prefect import flow, runtime, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from mlops import render
from mlops.adapters import registry
from mlops.config import Config, load_config, use_case_parameter
from mlops.domain import modeling
from mlops.domain.modeling import Candidate
from mlops.domain.window import AsOf, resolve_as_of
from tasks.compute import dask_task_runner, search_compute
from tasks.data import extract_window, profile_data, split_data, validate_data
from tasks.registry import (
    finish_training_run,
    log_model,
    log_training_record,
    publish_model_card,
    register_model,
    start_training_run,
)
from tasks.runs import require_servers, tag_this_run
from tasks.training import (
    Features,
    compare_champion,
    engineer_features,
    evaluate_model,
    fit_final_model,
    train_candidate,
    validate_model,
)

UseCase = use_case_parameter()  # the folders of usecases/ when the flow is deployed: the form offers them


def _run_name() -> str:
    config = load_config(use_case=runtime.flow_run.parameters.get("use_case"))
    as_of = runtime.flow_run.parameters.get("as_of") or config.window.as_of or "latest"
    return f"ct-{config.name}-{as_of}"


def _close_failed_run(config, run_id: str, error: Exception) -> None:
    """Mark the MLflow run FAILED with the reason: one try, since the error may be that MLflow is down,
    and never in place of the error that stopped the run (which the flow raises)."""
    try:
        finish_training_run.with_options(retries=0)(config, run_id, "FAILED", {"error": str(error)})
    except Exception as exc:
        get_run_logger().warning("could not mark MLflow run %s FAILED (%s): it stays RUNNING there", run_id, exc)


# CT's concurrent work (the data profile beside the candidate search) is CPU-bound: one task thread
# per core. More only made the threads fight: on 2 cores, 4 candidates x 2 OpenMP threads plus the
# profile took 13.4 s where doing them in turn took 12 s (docs/benchmarks.md, "Continuous training").
CORES = os.cpu_count() or 1


@flow(name="candidate-search", flow_run_name="candidate-search")
def candidate_search(
    config: Config, features: Features, grid: list[dict[str, Any]], threads: int | None
) -> list[Candidate]:
    """CT's candidate search on the task runner its caller gave it (a Dask cluster: `compute` in mlops.yaml)."""
    return train_candidate.map(unmapped(config), unmapped(features), grid, unmapped(threads)).result()


def search_candidates(config: Config, features: Features) -> list[Candidate]:
    """Every candidate of the grid, fitted and scored: in this run's threads, or on Dask as `compute` says."""
    grid = modeling.candidate_grid(config)
    threads = max(1, CORES // min(len(grid), CORES))  # OpenMP threads per candidate: together, the cores
    compute = search_compute(config)
    if compute.runner == "threads":  # the same search, in this flow run (no subflow)
        return candidate_search.fn(config, features, grid, threads)
    get_run_logger().info("candidate search (%d candidates) on %s", len(grid), compute.describe())
    runner = dask_task_runner(compute)
    return candidate_search.with_options(task_runner=runner)(config, features, grid, compute.omp_threads(threads))


@flow(name="continuous-training", flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=CORES))
def continuous_training(
    as_of: AsOf = None,
    window_months: int | None = None,
    reason: str = "manual",
    commit: str | None = None,
    use_case: UseCase | None = None,  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Train a candidate on a window of data and register it as `challenger` if it passes the gates.

    The use case is `use_case`'s folder, else the file MLOPS_CONFIG names (the stack's). A batch that breaks the
    schema contract or the quality rules fails the run at validation with a report; a model that
    fails the gates is logged in MLflow but not registered, and the champion is never touched.

    Args:
        as_of: Train on rows before this date (time-windowed datasets); "latest": the months up to the newest
            complete month of the data (what the monthly schedule uses). Default: the config's `window.as_of`.
        window_months: Length of the training window in months. Default: the config's `window.months`.
        reason: Why this run started (manual, schedule, drift, ci), recorded as lineage.
        commit: The code commit that asked for this run (CI); default: the working tree's HEAD.
        use_case: Which use case to train (a folder `usecases/<name>/`); default: the stack's (MLOPS_CONFIG, else
            the default folder). Its version is delivered to that use case's own staging and production.
    """
    config = load_config(use_case=use_case)
    as_of_text = resolve_as_of(as_of, config.window.as_of)
    months = window_months or config.window.months
    flow_run_id = str(runtime.flow_run.id)
    workdir = config.state_dir / "runs" / flow_run_id
    lineage = {
        "git_commit": commit or registry.git_commit(),
        "config_hash": config.fingerprint(),
        "prefect_flow_run_id": flow_run_id,
        "trigger_reason": reason,
        **({"use_case": config.use_case} if config.use_case else {}),
    }
    require_servers(config)
    tag_this_run([f"reason:{reason}", *([f"commit:{commit}"] if commit else []), f"use-case:{config.name}"])
    run_id = start_training_run(config, runtime.flow_run.name or "ct", lineage)
    try:
        extract = extract_window(config, as_of_text, months, workdir)
        lineage |= {"data_window": extract.window, "data_hash": extract.data_hash, "dataset": config.dataset.name}
        validate_data(config, extract)
        split = split_data(config, extract)
        lineage["training_window"] = split.training_window
        report = profile_data.submit(config, split)
        features = engineer_features(config, split)
        candidates = search_candidates(config, features)
        chosen = modeling.best_candidate(candidates, config)
        model_path = fit_final_model(config, features, chosen.params)
        evaluation = evaluate_model(config, model_path, split)
        comparison = compare_champion(config, model_path, split, extract)
        decision = validate_model(config, evaluation, comparison)
        log_training_record(config, run_id, extract, split, candidates, chosen, evaluation, decision, report.result())
        model_uri = log_model(config, run_id, model_path, split)
        version = register_model(config, run_id, model_uri, lineage) if decision.passed else None
        if version is not None:
            links = {
                "MLflow run": registry.run_url(config, run_id),
                "MLflow version": registry.version_url(config, config.tracking.model_name, version),
            }
            card = render.model_card(
                config.tracking.model_name, version, config, lineage, evaluation, decision, comparison, links
            )
            state = publish_model_card(config, run_id, version, card, return_state=True)
            if not state.is_completed():  # the version is registered and CD is on its way: say it, go on
                get_run_logger().warning("no model card for v%s: %s", version, state.message)
    except Exception as exc:
        _close_failed_run(config, run_id, exc)
        raise
    finish_training_run(config, run_id, "FINISHED")
    shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        "model_name": config.tracking.model_name,
        "version": version,
        "registered": version is not None,
        "run_id": run_id,
        "metric": decision.metric,
        "score": decision.candidate,
        "champion_score": decision.champion,
        "champion_comparison": decision.comparison,
        "window": extract.window,
        "reasons": decision.reasons,
    }
    create_markdown_artifact(
        key="ct-summary", markdown=render.ct_summary_markdown(summary, evaluation.overall, lineage)
    )
    return summary
