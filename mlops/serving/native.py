"""The forest compiled to C by tl2cgen and loaded, from the per-user cache when built before."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mlops.serving import forest_cache

logger = logging.getLogger(__name__)

# gcc/clang flag for the forest's C, after tl2cgen's own -O3: builds 3-4x faster, predicts a batch as fast here
# (the call's fixed cost dominates; bench/tree_engines.py), and a service start waits for the build.
OPTIMIZE = "-O0"


def native_library(forest: Any, optimize: str = OPTIMIZE, *, cached: bool = True) -> tuple[Any, str]:
    """The forest compiled to C by tl2cgen and loaded (one thread), or None; and what was done.

    With `cached`, a library built earlier for the same forest, compiler and flags is loaded from
    the per-user cache (mlops.serving.forest_cache); otherwise it is built with the first of gcc,
    clang on PATH (`optimize`: its -O flag) in a private temp dir, loaded from there, and then
    moved into the cache. `cached=False` builds afresh (and replaces the entry).
    """
    compiler = next((c for c in ("gcc", "clang") if shutil.which(c)), None)
    if compiler is None:
        return None, "no C compiler (gcc or clang) on PATH"
    started = time.perf_counter()
    try:
        import tl2cgen

        directory, why_not = forest_cache.private_dir()
        entry = forest_cache.key(forest, compiler, optimize)
        hit = forest_cache.lookup(directory, entry) if directory is not None and cached else None
        if hit is not None:
            try:
                predictor = tl2cgen.Predictor(hit, nthread=1)
                return predictor, f"{CACHED} {hit.parent} in {time.perf_counter() - started:.2f} s"
            except Exception:  # intact, yet it does not load here (a missing symbol, another libc): build it again
                logger.warning("the cached library %s did not load; building it again", hit, exc_info=True)
                forest_cache.discard(hit.parent, entry)
        # Loaded from the unique temp path, not the cache's: a process that loaded a library of that
        # name before (a hit that failed verification) would otherwise be handed the old one again.
        with tempfile.TemporaryDirectory(prefix="mlops-tl2cgen-", dir=directory) as tmp:
            library = Path(tmp) / "forest.so"
            tl2cgen.export_lib(
                forest, toolchain=compiler, libpath=library, params={"parallel_comp": 0}, nthread=1, options=[optimize]
            )
            predictor = tl2cgen.Predictor(library, nthread=1)
            where = f"cached in {forest_cache.store(directory, entry, library).parent}" if directory else why_not
    except Exception as exc:  # any failure leaves GTIL to serve
        logger.warning("compiling the forest to C failed", exc_info=True)
        return None, f"tl2cgen failed: {type(exc).__name__}: {exc}"
    return predictor, f"built by {compiler} {optimize} in {time.perf_counter() - started:.1f} s, {where}"


CACHED = "loaded from the cache"  # how native_library's note starts for a hit
