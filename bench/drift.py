"""Benchmark: the drift check (champion scoring + Evidently comparison) on a month and on the full year.

Each case runs in a fresh subprocess so its peak memory is its own. The reference is a champion's
training window; the model is trained once on it with the project's own functions.

    .venv/bin/python bench/drift.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    # name: (reference window, current window, sample_rows)
    "month vs 3-month reference (Jul vs Jan-Mar)": (("2013-01-01", "2013-04-01"), ("2013-07-01", "2013-08-01"), 50_000),
    "full year vs reference month (2013 vs Jan)": (("2013-01-01", "2013-02-01"), ("2013-01-01", "2014-01-01"), 50_000),
    "full year vs reference month, no sampling": (("2013-01-01", "2013-02-01"), ("2013-01-01", "2014-01-01"), None),
}


def run_case(name: str, repeats: int) -> dict:
    import pandas as pd

    from mlops.adapters import sources
    from mlops.config import load_config
    from mlops.domain import drift, modeling
    from mlops.domain.window import Window

    (ref_start, ref_end), (cur_start, cur_end), sample_rows = CASES[name]
    config = load_config()
    config = config.model_copy(update={"drift": config.drift.model_copy(update={"sample_rows": sample_rows})})
    full = sources.load_source(config)

    def window(start: str, end: str) -> pd.DataFrame:
        return Window.parse(f"{start}..{end}").cut(full, config.dataset.time_column)

    reference, current = window(ref_start, ref_end), window(cur_start, cur_end)
    X, y = modeling.features_and_target(reference, config)
    preprocessor = modeling.build_preprocessor(config).fit(X)
    model = modeling.assemble_model(preprocessor, modeling.fit_estimator(config, {}, preprocessor.transform(X), y))
    times, results = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        frames = [
            drift.monitored_frame(df, pd.Series(model.predict_proba(df[config.dataset.features])[:, 1]), config)
            for df in (reference, current)
        ]
        result = drift.compare(*frames, config)
        times.append(time.perf_counter() - started)
        results.append(result)
    return {
        "case": name,
        "reference_rows": len(reference),
        "current_rows": len(current),
        "sample_rows": sample_rows,
        "median_s": statistics.median(times),
        "runs_s": times,
        "drift_share": results[-1].drift_share,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.repeats)))
        return
    rows = []
    for name in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--case", name, "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        "| case | reference rows | current rows | sampled to | median s (score + compare) | runs s | drift share | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        runs = ", ".join(f"{t:.2f}" for t in r["runs_s"])
        print(
            f"| {r['case']} | {r['reference_rows']:,} | {r['current_rows']:,} | {(format(r['sample_rows'], ',') if r['sample_rows'] else 'all')} | "
            f"{r['median_s']:.2f} | {runs} | {r['drift_share']:.2f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
