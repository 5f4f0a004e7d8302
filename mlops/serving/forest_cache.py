"""Forests compiled to C once per machine: a per-user cache of built libraries, keyed by what made them.

A model service compiles its trees when it starts (mlops.serving.compiled). Staging and production
serve the same version, `mlops up` restarts them, and the tests and the bench start many services
of few models: without a cache each start paid the build (1–5 s alone, about 14 s under a test
suite's load). An entry's key is the SHA-256 of the forest's treelite serialization, the compiler
(its path and `--version`), the optimisation flag, the tl2cgen and treelite versions and the
machine, so any change to any of them is a different entry; a hit is still verified against the
model like a fresh build (`compiled.compile_for_serving`), and an entry that fails to load or to
verify is built again.

A library is code this process will run: the cache is a directory of this user's only (0700,
owned by the effective user). One that is not (made by someone else, or opened up) is not used,
and the service builds in a private temp dir as before. `MLOPS_CACHE_DIR` moves it (default
`$XDG_CACHE_HOME/mlops`, else `~/.cache/mlops`); it keeps the newest `KEEP` libraries.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import stat
import subprocess
from pathlib import Path
from typing import Any

CACHE_DIR_ENV = "MLOPS_CACHE_DIR"
KEEP = 64  # libraries kept (the newest by use); a -O0 forest of 200 trees is a few MB
SUFFIX = ".so"


def cache_dir() -> Path:
    """The forests' directory: $MLOPS_CACHE_DIR/forests, else $XDG_CACHE_HOME/mlops/forests, else ~/.cache/..."""
    root = os.environ.get(CACHE_DIR_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops"
    return Path(root) / "forests"


def private_dir() -> tuple[Path | None, str]:
    """The cache directory, created 0700 when missing; None and why when it is not this user's alone."""
    path = cache_dir()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = path.stat()
    except OSError as exc:
        return None, f"cache {path} unusable: {exc}"
    if found.st_uid != os.geteuid() or stat.S_IMODE(found.st_mode) & 0o077:
        return None, f"cache {path} not used: not a 0700 directory of this user"
    return path, ""


@functools.cache
def compiler_identity(compiler: str) -> str:
    """The compiler's resolved path and the first line of its `--version`: a new compiler is a new key."""
    import shutil

    path = os.path.realpath(shutil.which(compiler) or compiler)
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    return f"{path} {version.splitlines()[0] if version else '?'}"


def key(forest: Any, compiler: str, optimize: str) -> str:
    """The entry's name: a hash of the forest and of everything that turns it into a library."""
    import tl2cgen
    import treelite

    digest = hashlib.sha256(forest.serialize_bytes())
    for part in (compiler_identity(compiler), optimize, tl2cgen.__version__, treelite.__version__, platform.machine()):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


def lookup(directory: Path, entry: str) -> Path | None:
    """The cached library for `entry`, marked as used now; None on a miss or when its bytes are not the ones stored.

    A library is checked against the digest stored beside it before anything loads it: a short or
    altered file would crash the loading process (SIGBUS on the missing pages) rather than fail.
    """
    path, digest = _files(directory, entry)
    try:
        intact = digest.read_text().strip() == _digest(path)
        os.utime(path)
    except FileNotFoundError:
        return None
    if not intact:
        discard(directory, entry)
        return None
    return path


def store(directory: Path, entry: str, built: Path) -> Path:
    """Move a built library into the cache and prune it to the newest KEEP.

    Written beside, then renamed: a reader sees a whole old file or a whole new one, and a service
    that mapped the old one keeps it (a library is never rewritten in place).
    """
    path, digest = _files(directory, entry)
    written = digest.with_suffix(f".{os.getpid()}.tmp")
    written.write_text(_digest(built))
    os.replace(written, digest)
    os.replace(built, path)
    libraries = sorted(directory.glob(f"*{SUFFIX}"), key=_last_used, reverse=True)
    for old in libraries[KEEP:]:
        discard(directory, old.stem)
    return path


def discard(directory: Path, entry: str) -> None:
    """Remove an entry that failed to load or to verify."""
    for path in _files(directory, entry):
        path.unlink(missing_ok=True)


def _files(directory: Path, entry: str) -> tuple[Path, Path]:
    return directory / f"{entry}{SUFFIX}", directory / f"{entry}.sha256"


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _last_used(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # pruned by another service meanwhile
        return 0.0
