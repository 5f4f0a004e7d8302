"""Benchmark the model service against `mlflow models serve` on the same registered model, with wrk.

Trains the default `mlops.yaml` model (the project's own `mlops.domain.modeling`, first search
candidate) on January–February 2013, logs it with `mlops.adapters.model_files.log_model` (skops,
signature, 1,000 held-out March rows as the verification rows) into a throw-away SQLite MLflow
store under .mlops/bench/, registers it as `flights-delay` @champion, and for each server: starts
it on 127.0.0.1, checks its answers equal the offline model's (1e-9), warms it up, then loads it
with wrk (closed loop, one-row `dataframe_split` bodies of March flights picked at random by a Lua
script) at each connection count, and stops it by its process group. The servers:

- `mlflow models serve` (its defaults);
- `mlops serve` on the compiled path (the default: trees as C by tl2cgen, scored on the event loop),
  with `serving.native: false` (treelite's GTIL, in the batcher's thread), and with
  `serving.compiled: false` (sklearn);
- `mlops serve` on the compiled path with capture of its traffic on (`mlops-compiled-capture`:
  `--capture-dir` a fresh directory per start, `--environment production`; mlops/serving/capture.py);
  run only when named in `--only`; the other `mlops serve` variants capture nothing (no `--capture-dir`);
- `GET /ping` of `mlops serve`: the HTTP floor of the same server.

With `--rounds N` (N > 1) each connection count is run N times per server, the servers alternating
(A, B, A, B, ...), each run on a freshly started server: a noisy machine then spreads over both
sides alike. It prints each round, the medians per server, and, for a capture variant, the ratio to
the same server without capture. After each run of a capture variant it reads the service's capture
counters from `/metrics` (before stopping it) and, once it is stopped by SIGTERM, counts the rows of
the Parquet files it wrote (pyarrow): rows written == captured when nothing was dropped.

wrk is installed from Debian's packages when missing (needs root; says so otherwise).

    .venv/bin/python bench/serving.py                               # 1, 8, 32, 128 connections, 15 s each
    .venv/bin/python bench/serving.py --connections 32 --seconds 10 --only mlops-compiled
    .venv/bin/python bench/serving.py --connections 1 32 --only mlops-compiled mlops-gtil --predict-in loop thread
    .venv/bin/python bench/serving.py --connections 32 --only mlops-compiled --boosters lightgbm.LGBMClassifier xgboost.XGBClassifier
    .venv/bin/python bench/serving.py --connections 32 --seconds 15 --only mlops-compiled mlops-compiled-capture --rounds 3

Prints a markdown table for docs/benchmarks.md and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from common import HOST, ROOT, VENV_BIN, machine, running

from mlops.config import DEFAULT_CONFIG
from mlops.processes import free_port

DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""
INVOCATIONS = (
    """
local bodies = {BODIES}
math.randomseed(42)
request = function()
  return wrk.format("POST", "/invocations", {["Content-Type"] = "application/json"}, bodies[math.random(#bodies)])
end
"""
    + DONE
)


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is not installed and this is not root: run `sudo apt-get install wrk`, then again")
    print("installing wrk from Debian's packages")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


# Boosters by import path, trained with as many trees of as many leaves as the default's first candidate
# (150 trees, 7 leaves, learning rate 0.03) so the compiled forests are of a size.
BOOSTERS = {
    "lightgbm.LGBMClassifier": {"n_estimators": 150, "num_leaves": 7, "learning_rate": 0.03, "random_state": 42},
    "xgboost.XGBClassifier": {"n_estimators": 150, "max_leaves": 7, "learning_rate": 0.03, "grow_policy": "lossguide"},
}


def register_model(tracking_uri: str, artifacts: Path, estimator: str | None = None) -> tuple[str, Any, Any]:
    """Train and register the default model (or `estimator`, a BOOSTERS key, on the same features);
    returns its champion URI, the model, and March's features."""
    import mlflow

    from mlops.adapters import model_files, registry, sources
    from mlops.config import load_config
    from mlops.domain import modeling

    config = load_config(DEFAULT_CONFIG)
    params = modeling.candidate_grid(config)[0]
    if estimator is not None:
        name = f"{config.tracking.model_name}-{estimator.split('.')[0]}"
        training = config.training.model_copy(update={"estimator": estimator, "params": {}, "search": {}})
        config = config.model_copy(
            update={"training": training, "tracking": config.tracking.model_copy(update={"model_name": name})}
        )
        params = BOOSTERS[estimator]
    X, y = modeling.features_and_target(sources.load_window(config, as_of="2013-03-01", months=2).frame, config)
    march, _ = modeling.features_and_target(sources.load_window(config, as_of="2013-04-01", months=1).frame, config)
    preprocessor = modeling.build_preprocessor(config).fit(X)
    model = modeling.assemble_model(
        preprocessor, modeling.fit_estimator(config, params, preprocessor.transform(X), y.to_numpy())
    )
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    experiment = registry.ensure_experiment(client, config.tracking.experiment)
    holdout = march.sample(n=1000, random_state=0)
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = model_files.log_model(model, holdout, model.predict_proba(holdout), config)
    version = registry.register(client, uri, run.info.run_id, config, {"trigger_reason": "benchmark"})
    client.set_registered_model_alias(config.tracking.model_name, registry.CHAMPION, version)
    print(f"trained {config.training.estimator} on {len(X):,} flights (Jan-Feb 2013, {params}), registered v{version}")
    return f"models:/{config.tracking.model_name}@{registry.CHAMPION}", model, march


def lua_bodies(bodies: list[str]) -> str:
    return "{" + ",".join(f"[==[{body}]==]" for body in bodies) + "}"


def run_wrk(wrk: str, url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    """One closed-loop wrk run (one thread: it costs little CPU); figures from the script's done()."""
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^WRK_JSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    raw = json.loads(match.group(1))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1e3,
        "p95_ms": raw["p95_us"] / 1e3,
        "p99_ms": raw["p99_us"] / 1e3,
        "max_ms": raw["max_us"] / 1e3,
        "requests": raw["requests"],
        "errors": errors,
    }


def check_answers(url: str, bodies: list[str], expected: np.ndarray) -> None:
    """The server's answers equal the offline model's predictions (also warms it up): within 1e-9, or
    8 float32 ulps for a model that computes in float32 (XGBoost), as the compiled path's check."""
    got = [
        httpx.post(f"{url}/invocations", content=b, headers={"Content-Type": "application/json"}, timeout=30)
        for b in bodies
    ]
    answers = np.array([r.json()["predictions"][0] for r in got])
    diff = float(np.abs(answers - expected).max())
    if diff > (8 * np.finfo(np.float32).eps if expected.dtype == np.float32 else 1e-9):
        raise AssertionError(f"{url} answers differ from the offline model by {diff:.3g}")


CAPTURE_COUNTERS = ("captured", "dropped", "rows_written", "write_errors")


def capture_counters(url: str) -> dict[str, int | None]:
    """The service's capture counters from its `/metrics` (Prometheus text): mlops_capture_<name>_total."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counters: dict[str, int | None] = {}
    for name in CAPTURE_COUNTERS:
        match = re.search(rf"^mlops_capture_{name}_total\s+(\S+)\s*$", text, re.MULTILINE)
        counters[name] = None if match is None else int(float(match.group(1)))
    return counters


def parquet_rows(directory: Path) -> dict[str, int]:
    """Rows and files of the Parquet files a capture wrote under `directory` (and half-written files left)."""
    import pyarrow.parquet as pq

    files = sorted(directory.rglob("part-*.parquet"))
    return {
        "parquet_rows": sum(pq.ParquetFile(f).metadata.num_rows for f in files),
        "parquet_files": len(files),
        "partial_files": len(list(directory.rglob(".part-*.tmp"))),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    base = {(r["connections"]): r["rps"] for r in results if r["server"] == "mlflow models serve"}
    ping = {(r["connections"]): r["rps"] for r in results if r["server"].endswith("/ping")}
    lines = [
        "| server | conns | requests/s | p50 ms | p95 ms | p99 ms | max ms | errors | × mlflow | % of /ping |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r["connections"]
        ratio = f"{r['rps'] / base[c]:.1f}×" if c in base and not r["server"].endswith("/ping") else ""
        share = f"{r['rps'] / ping[c]:.0%}" if c in ping and not r["server"].endswith("/ping") else ""
        lines.append(
            f"| {r['server']} | {c} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['max_ms']:.1f} | {r['errors']} | {ratio} | {share} |"
        )
    return "\n".join(lines)


FIGURES = ("rps", "p50_ms", "p95_ms", "p99_ms", "max_ms")


def _row(r: dict[str, Any]) -> str:
    return f"{r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['errors']}"


def medians(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per server and connection count (in the order first run): the median of each figure over its rounds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["server"], r["connections"]), []).append(r)
    return [
        {
            "server": server,
            "connections": c,
            "runs": len(runs),
            **{k: statistics.median(r[k] for r in runs) for k in FIGURES},
            "errors": sum(r["errors"] for r in runs),
            "rps_range": (min(r["rps"] for r in runs), max(r["rps"] for r in runs)),
            "base": runs[0].get("base"),
        }
        for (server, c), runs in groups.items()
    ]


def markdown_rounds(results: list[dict[str, Any]]) -> str:
    """Each round, the medians per server, capture on / off, and the capture's counts, as markdown."""
    head = "| requests/s | p50 ms | p95 ms | p99 ms | max ms | errors |"
    rule = "---:|---:|---:|---:|---:|---:|"
    out = [
        "Each run:",
        "",
        f"| round | server | conns {head} load 1m before |",
        f"|---:|---|---:|{rule}---:|",
        *(
            f"| {r['round']} | {r['server']} | {r['connections']} | {_row(r)} | {r['load_before']:.2f} |"
            for r in results
        ),
        "",
        "Medians over the rounds:",
        "",
        f"| server | conns | runs {head} requests/s min–max |",
        f"|---|---:|---:|{rule}---|",
    ]
    summary = medians(results)
    out += [
        f"| {m['server']} | {m['connections']} | {m['runs']} | {_row(m)} | {m['rps_range'][0]:,.0f}–{m['rps_range'][1]:,.0f} |"
        for m in summary
    ]
    by_key = {(m["server"], m["connections"]): m for m in summary}
    pairs = [(m, by_key.get((m["base"], m["connections"]))) for m in summary if m["base"]]
    if any(off for _, off in pairs):
        out += [
            "",
            "Capture on / off (medians; each round's ratio of requests/s, on / off, of the runs next to each other):",
            "",
            "| on | off | conns | requests/s off | requests/s on | on / off | p99 ms off | p99 ms on | per round |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for on, off in pairs:
            if off is None:
                continue
            c = on["connections"]
            runs = {(r["server"], r["round"]): r for r in results if r["connections"] == c}
            per_round = [
                f"{runs[on['server'], n]['rps'] / runs[off['server'], n]['rps']:.3f}"
                for n in sorted({n for server, n in runs if server == on["server"]})
                if (off["server"], n) in runs
            ]
            out.append(
                f"| {on['server']} | {off['server']} | {on['connections']} | {off['rps']:,.0f} | {on['rps']:,.0f} "
                f"| {on['rps'] / off['rps']:.3f} ({on['rps'] / off['rps'] - 1:+.1%}) | {off['p99_ms']:.2f} "
                f"| {on['p99_ms']:.2f} | {', '.join(per_round)} |"
            )
    captured = [r for r in results if "capture" in r]
    if captured:
        out += [
            "",
            "Capture counts per run (from `/metrics` before the SIGTERM; the Parquet files' rows after it; every "
            "request of a start is counted: the 200 answers checked, the warm-up and the run):",
            "",
            "| round | server | conns | answered to the bench (wrk-counted) | captured | dropped | rows_written "
            "before stop | write errors | Parquet rows after stop | files | captured − Parquet rows |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in captured:
            k = r["capture"]
            lost = k["captured"] - k["parquet_rows"] if k["captured"] is not None else "?"
            out.append(
                f"| {r['round']} | {r['server']} | {r['connections']} | {k['requests_sent']:,} | {k['captured']:,} "
                f"| {k['dropped']} | {k['rows_written']:,} | {k['write_errors']} | {k['parquet_rows']:,} "
                f"| {k['parquet_files']} | {lost} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["mlflow", "mlops-compiled", "mlops-compiled-capture", "mlops-gtil", "mlops-sklearn"],
        default=None,
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each connection count N times per server, the servers alternating, each run on a fresh "
        "start (no GET /ping then); prints each round and the medians",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        nargs="+",
        default=None,
        help="run the compiled service once per serving.max_wait_ms given (default: the config's)",
    )
    parser.add_argument(
        "--predict-in",
        nargs="+",
        choices=["auto", "loop", "thread"],
        default=None,
        help="run the compiled service once per serving.predict_in given (default: the config's)",
    )
    parser.add_argument(
        "--boosters",
        nargs="*",
        choices=sorted(BOOSTERS),
        default=[],
        help="also serve these, trained on the same rows, on the compiled path (beside the default's)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".mlops" / "bench" / "serving.json")
    args = parser.parse_args(argv)

    args.out = args.out.resolve()  # the MLflow store and artifacts below need absolute paths
    wrk = ensure_wrk()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="serving-", dir=args.out.parent))
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    model_uri, model, march = register_model(tracking_uri, workdir / "artifacts")
    sample = march.sample(n=1000, random_state=1)
    rows = sample.astype(object).where(sample.notna(), None).values.tolist()
    bodies = [json.dumps({"dataframe_split": {"columns": list(sample.columns), "data": [row]}}) for row in rows]
    expected = model.predict_proba(sample)
    boosters = {b: register_model(tracking_uri, workdir / "artifacts", b) for b in args.boosters}
    script = workdir / "invocations.lua"
    script.write_text(INVOCATIONS.replace("{BODIES}", lua_bodies(bodies)))
    ping_script = workdir / "ping.lua"
    ping_script.write_text(DONE)  # no request(): wrk GETs the URL
    # `mlflow models serve` runs `uvicorn` from PATH: put this venv first.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    servers: dict[str, tuple[list[str], dict[str, str]]] = {}
    serve = [sys.executable, "-m", "mlops.platform.cli", "serve", "--model-uri", model_uri, "--port", "{port}"]
    if args.only is None or "mlflow" in args.only:
        servers["mlflow models serve"] = ([
            str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", HOST, "-p", "{port}",
        ], env)  # fmt: skip
    variants = [("compiled", wait, where) for wait in args.max_wait_ms or [None] for where in args.predict_in or [None]]
    variants += [(path, None, where) for path in ("gtil", "sklearn") for where in args.predict_in or [None]]
    capture_on = ["--capture-dir", "{capture}", "--environment", "production"]
    bases: dict[str, str] = {}  # a capture variant's name -> the name of the same server without capture
    for path, wait, where in variants:
        wanted = [False] if args.only is None or f"mlops-{path}" in args.only else []
        wanted += [True] if args.only is not None and f"mlops-{path}-capture" in args.only else []  # named only
        if not wanted:
            continue
        knobs = ([] if wait is None else [f"max_wait_ms {wait:g}"]) + ([] if where is None else [f"in {where}"])
        name = f"mlops serve ({', '.join([path, *knobs])})"
        settings = {**config["serving"], "compiled": path != "sklearn", "native": path == "compiled"}
        settings.update({} if wait is None else {"max_wait_ms": wait})
        settings.update({} if where is None else {"predict_in": where})
        variant = workdir / f"mlops-{path}-{wait}-{where}.yaml"
        variant.write_text(yaml.safe_dump({**config, "serving": settings}))
        for capture in wanted:  # capture on only with --capture-dir (serving.capture.enabled is the config's)
            label = f"{name[:-1]}, capture)" if capture else name
            servers[label] = ([*serve, *capture_on] if capture else serve, {**env, "MLOPS_CONFIG": str(variant)})
            if capture:
                bases[label] = name
    answers = dict.fromkeys(servers, expected)
    for booster, (uri, fitted, _) in boosters.items():
        name = f"mlops serve (compiled, {booster.split('.')[0]})"
        servers[name] = ([*serve[:5], uri, *serve[6:]], env)
        answers[name] = fitted.predict_proba(sample)

    # One start of a server runs every connection count; with rounds, one start per (connections, round,
    # server), the servers alternating at each connection count: A, B, A, B, ...
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    sessions = (
        [(1, name, args.connections) for name in servers]
        if args.rounds == 1
        else [(n, name, [c]) for c in args.connections for n in range(1, args.rounds + 1) for name in servers]
    )
    results: list[dict[str, Any]] = []
    for index, (round_, name, counts) in enumerate(sessions):
        template, server_env = servers[name]
        port = free_port(HOST)
        url = f"http://{HOST}:{port}"
        capture_dir = workdir / f"capture-{index}"  # fresh per start: its Parquet rows are this run's
        command = [part.format(port=port, capture=capture_dir) for part in template]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
        print(f"{name} (round {round_}): $ {' '.join(command)}", flush=True)
        rows: list[dict[str, Any]] = []
        sent = 0  # answers the bench got from this start: what its capture should hold
        with running(command, env=server_env, health_url=f"{url}/ping", log=workdir / f"{slug}-{index}.log"):
            check_answers(url, bodies[:200], answers[name][:200])
            sent += 200
            targets = [(name, url, script)]
            if (
                args.rounds == 1
                and name.startswith("mlops serve (compiled")
                and not any(r["server"].endswith("/ping") for r in results)
            ):
                targets.append(("mlops serve GET /ping", f"{url}/ping", ping_script))
            for label, target, lua in targets:
                for connections in counts:
                    load = os.getloadavg()[0]
                    warm = run_wrk(wrk, target, lua, connections, 2)  # warm-up
                    figures = run_wrk(wrk, target, lua, connections, args.seconds)
                    if label == name:
                        sent += warm["requests"] + figures["requests"]
                    rows.append(
                        {
                            "server": label,
                            "round": round_,
                            "connections": connections,
                            **figures,
                            "load_before": load,
                            "command": command,
                            **({"base": bases[label]} if label in bases else {}),
                        }
                    )
                    print(f"  {label} {connections} conns: {figures}", flush=True)
            counters = capture_counters(url) if name in bases else None
        if counters is not None:  # the server is stopped (SIGTERM): its capture has written what it held
            capture = {**counters, **parquet_rows(capture_dir), "requests_sent": sent, "directory": str(capture_dir)}
            print(f"  capture: {capture}", flush=True)
            for row in rows:
                if row["server"] == name:
                    row["capture"] = capture
        results.extend(rows)

    report = {"machine": machine(), "seconds": args.seconds, "rounds": args.rounds, "results": results}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{report['machine']}; wrk -t1, {args.seconds} s per point; raw figures in {args.out}\n")
    print(markdown(results) if args.rounds == 1 and not bases else markdown_rounds(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
