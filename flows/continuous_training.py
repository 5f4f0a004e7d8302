"""Continuous training: extract → validate → features → train → evaluate → validate vs champion → register."""

from __future__ import annotations

import os
import shutil
from typing import Any

from prefect import flow, runtime, unmapped
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from mlops.config import Config, load_config
from mlops.domain import modeling
from mlops.domain.modeling import Candidate
from mlops.domain.window import AsOf, resolve_as_of
from tasks.compute import dask_task_runner, search_compute
from tasks.data import extract_window, profile_data, split_data, validate_data
from tasks.registry import (
    describe_version,
    log_model,
    log_training_record,
    register_model,
    run_lineage,
    training_run,
    version_lineage,
)
from tasks.runs import UseCase, require_servers, run_config, run_name, run_parameter, tag_this_run
from tasks.training import (
    Features,
    compare_champion,
    engineer_features,
    evaluate_model,
    fit_final_model,
    publish_ct_summary,
    train_candidate,
    validate_model,
)


def _run_name() -> str:
    config = run_config()
    return run_name("ct", config.name, run_parameter("as_of") or config.window.as_of or "latest")


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
    workdir = config.state_dir / "runs" / str(runtime.flow_run.id)
    run_tags = run_lineage(config, reason, commit)
    require_servers(config)
    tag_this_run([f"reason:{reason}", *([f"commit:{commit}"] if commit else []), f"use-case:{config.name}"])
    with training_run(config, run_tags) as run_id:  # closed FINISHED, or FAILED with the error that stops the run
        extract = extract_window(config, as_of_text, months, workdir)
        validate_data(config, extract)
        split = split_data(config, extract)
        lineage = version_lineage(config, run_tags, extract, split)
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
            describe_version(config, run_id, version, lineage, evaluation, decision, comparison)
    shutil.rmtree(workdir, ignore_errors=True)
    return publish_ct_summary(config, run_id, version, extract, evaluation, decision, lineage)
