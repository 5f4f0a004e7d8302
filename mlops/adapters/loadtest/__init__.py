"""Load tests with locust, always run as a subprocess.

Importing locust monkey-patches the process with gevent, which breaks Prefect and anything else
threaded in the same process: the task starts `locust --headless` and parses its CSV summary.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from mlops.config import LoadTest, Slo
from mlops.domain.checks import Check, at_least, at_most
from mlops.domain.record import Record

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PAYLOADS_ENV = "MLOPS_LOADTEST_PAYLOADS"


class LoadTestResult(Record):
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 1.0


def write_payloads(rows: pd.DataFrame, path: Path) -> Path:
    """One-row `dataframe_split` bodies, one JSON document per line, for the locust users to send."""
    lines = []
    for i in range(len(rows)):
        split = json.loads(rows.iloc[i : i + 1].to_json(orient="split", index=False))
        lines.append(json.dumps({"dataframe_split": split}))
    path.write_text("\n".join(lines) + "\n")
    return path


def run_locust(endpoint: str, payloads: Path, settings: LoadTest, out_dir: Path) -> LoadTestResult:
    """Run locust headless against `endpoint` for the configured users and seconds; parse its summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "locust"
    locust = Path(sys.executable).parent / "locust"
    command = [
        str(locust),
        "--headless",
        "-f",
        str(LOCUSTFILE),
        "--host",
        endpoint,
        "--users",
        str(settings.users),
        "--spawn-rate",
        str(settings.spawn_rate),
        "--run-time",
        f"{settings.seconds}s",
        "--stop-timeout",
        "5",
        "--only-summary",
        "--csv",
        str(prefix),
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]
    env = {**os.environ, PAYLOADS_ENV: str(payloads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=settings.seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"locust exited with {done.returncode}: {done.stderr[-2000:]}")
    return parse_stats(prefix.with_name("locust_stats.csv"))


def parse_stats(stats_csv: Path) -> LoadTestResult:
    """The "Aggregated" row of locust's --csv stats, read by column name."""
    with stats_csv.open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    return LoadTestResult(
        requests=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        rps=_number(row["Requests/s"]),
        p50_ms=_number(row["50%"]),
        p95_ms=_number(row["95%"]),
        p99_ms=_number(row["99%"]),
    )


def _number(text: str) -> float:
    """A figure of locust's CSV; "N/A" (no request finished) is NaN, which fails every SLO check."""
    return math.nan if text.strip() in ("N/A", "") else float(text)


def check_slos(result: LoadTestResult, slo: Slo) -> list[Check]:
    """The load test against each service-level objective in the config."""
    return [
        at_most("p95 latency ms", result.p95_ms, slo.p95_ms),
        at_most("p99 latency ms", result.p99_ms, slo.p99_ms),
        at_most("error rate", result.error_rate, slo.max_error_rate),
        at_least("throughput rps", result.rps, slo.min_rps),
    ]
