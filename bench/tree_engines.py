"""Time the compiled path's tree engines on the same model: tl2cgen's C library and treelite's GTIL.

Trains and registers the default model as bench/serving.py does (throw-away SQLite store under
.mlops/bench/), loads it as the service does (`load_served_model`: the C library built and verified),
builds the C library again at -O0 (the service's `native.OPTIMIZE`) and at -O3 (tl2cgen's own
default), timing each build and a load from the per-user cache (what a later service start of the
same version does), and times one call over every tree (`CompiledPredictor.scores`) for 1,
64 (a full batch) and 2,000 rows (one CD check request) of held-out March flights, with each engine,
interleaved; median of 7 rounds. This is what one batch holds the event loop for when it is scored
there (`serving.predict_in`).

    .venv/bin/python bench/tree_engines.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import timeit
from dataclasses import replace

import numpy as np
from common import ROOT, machine
from serving import register_model

SIZES = (1, 64, 2000)


def main() -> int:
    from mlops.serving.model import load_served_model
    from mlops.serving.native import native_library
    from mlops.serving.schema import parse_request  # the service's own request parsing

    workdir = ROOT / ".mlops" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="engines-", dir=workdir) as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        model_uri, _, march = register_model(os.environ["MLFLOW_TRACKING_URI"], ROOT / tmp / "artifacts")
        served = load_served_model(model_uri)
    native = served.compiled
    if native is None or native.native is None:
        raise SystemExit(f"the C library is not serving: {served.path_note}")
    engines, builds = {}, {}
    for flag in ("-O0", "-O3"):
        library, how = native_library(native.forest, flag, cached=False)  # built afresh, to time the build
        if library is None:
            raise SystemExit(how)
        engines[f"C {flag}"], builds[f"C {flag}"] = replace(native, native=library), how
    builds["C -O0 again"] = native_library(native.forest)[1]  # what every later service start does: a cache hit
    engines["GTIL"] = replace(native, native=None)
    sample = march.sample(n=max(SIZES), random_state=1)
    rows = sample.astype(object).where(sample.notna(), None).values.tolist()
    print(f"{machine()}; {served.path_note}; " + "; ".join(f"{k}: {v}" for k, v in builds.items()) + "\n")
    print("| rows | " + " | ".join(f"{name} µs" for name in engines) + " | GTIL / C -O0 |")
    print("|---:|" + "---:|" * (len(engines) + 1))
    for n in SIZES:
        body = json.dumps({"dataframe_split": {"columns": list(sample.columns), "data": rows[:n]}})
        X = native.matrix([parse_request(body, served.columns)])
        for engine in engines.values():
            assert np.abs(engine.scores(X) - native.scores(X)).max() <= 1e-9
        number = max(1, 2000 // n)
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(7):  # rounds interleave the engines
            for name, engine in engines.items():
                times[name].append(timeit.timeit(lambda e=engine, X=X: e.scores(X), number=number) / number)
        figures = {name: 1e6 * float(np.median(t)) for name, t in times.items()}
        print(
            f"| {n:,} | "
            + " | ".join(f"{v:,.1f}" for v in figures.values())
            + f" | {figures['GTIL'] / figures['C -O0']:.1f}× |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
