"""The team's own code, named in a use case's config by import path: found, checked, shipped with the model.

A config names user code as `package.module:attribute` or `package.module.attribute` (MLflow
Recipes' `estimator_method`, kedro's node functions). Where the config lives decides where that
code is imported from, its *import root*:

- `<root>/usecases/<name>/mlops.yaml`: `<root>`, so the team's package is `usecases.<name>`;
- a config file anywhere else (`MLOPS_CONFIG=/some/dir/model.yaml`): its own directory.

The import root is put at the front of `sys.path` when a path is resolved, and this project's root
at its end (so a copy of a use case's config made elsewhere still finds `usecases.<name>`), in whichever process
resolves it (a flow run, a Dask worker). A registered version carries the use case's code
(`code_paths`, staged by `stage_code`), so serving, batch scoring and the replay load it from the
version, never from the working tree; skops trusts the use case's own modules and nothing else.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

USECASES = "usecases"  # the package every use case folder lives in: usecases/<name>/
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # this checkout, whose usecases/ every config can import


class UserCodeError(ValueError):
    """An import path in the config that cannot be used; the message names the key and the path."""


def split(path: str) -> tuple[str, str]:
    """`a.b:c` or `a.b.c` as (module, attribute)."""
    module, sep, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not (module and attribute and sep) or not all(p.isidentifier() for p in [*module.split("."), attribute]):
        raise UserCodeError(f"{path!r} is not an import path (`package.module:name` or `package.module.name`)")
    return module, attribute


def is_import_path(text: str) -> bool:
    """A config value that names code (`lightgbm.LGBMClassifier`, `usecases.fraud.model:make`), not a built-in."""
    return "." in text or ":" in text


def use_case_of(config_file: Path) -> str | None:
    """The use case a config file describes: `<name>` for `usecases/<name>/mlops.yaml`, else None."""
    folder = config_file.resolve().parent
    return folder.name if folder.parent.name == USECASES else None


def import_root(config_file: Path) -> Path:
    """Where a config's import paths are imported from (see the module docstring)."""
    folder = config_file.resolve().parent
    return folder.parent.parent if use_case_of(config_file) else folder


def resolve(path: str, key: str, root: Path | None = None) -> Any:
    """The object an import path names, imported with `root` first on sys.path; errors name `key` and `path`."""
    if root is not None and sys.path[:1] != [str(root)]:  # first, ahead of another use case's root
        sys.path[:] = [str(root), *(p for p in sys.path if p != str(root))]
    if str(PROJECT_ROOT) not in sys.path:  # then this project's own use cases, for a config copied elsewhere
        sys.path.append(str(PROJECT_ROOT))
    try:
        module_name, attribute = split(path)
    except UserCodeError as exc:
        raise UserCodeError(f"{key}: {exc}") from None
    if root is not None:
        _prefer(module_name.split(".")[0], root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        where = f" (imported from {root} and the installed packages)" if root is not None else ""
        raise UserCodeError(f"{key}: cannot import {module_name!r} for {path!r}{where}: {exc}") from exc
    except Exception as exc:  # the module itself raised while importing
        raise UserCodeError(
            f"{key}: importing {module_name!r} for {path!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise UserCodeError(f"{key}: module {module_name!r} has no {attribute!r} (from {path!r})") from None


def _prefer(top: str, root: Path) -> None:
    """When `root` holds package `top` but another copy of it is imported (another use case's root,
    a version's shipped code), forget that copy so `root`'s is imported."""
    loaded = sys.modules.get(top)
    if loaded is None or not ((root / top).is_dir() or (root / f"{top}.py").is_file()):
        return
    where = [*getattr(loaded, "__path__", []), getattr(loaded, "__file__", None) or ""]
    if not any(Path(w).resolve().is_relative_to(root.resolve()) for w in where if w):
        forget([top])


def resolve_callable(path: str, key: str, root: Path | None = None) -> Any:
    found = resolve(path, key, root)
    if not callable(found):
        raise UserCodeError(f"{key}: {path!r} is a {type(found).__name__}, not a function or class")
    return found


def local_packages(paths: Iterable[str], root: Path) -> list[str]:
    """The top-level packages or modules of `paths` that live under `root` (the team's code, not installed)."""
    found = []
    for path in paths:
        top = split(path)[0].split(".")[0]
        if (root / top).is_dir() or (root / f"{top}.py").is_file():
            found.append(top)
    return sorted(set(found))


def owned_prefixes(paths: Iterable[str], root: Path, use_case: str | None) -> list[str]:
    """The module prefixes whose types a version may load: the use case's package, and the modules its
    import paths name (`lightgbm` for `lightgbm.LGBMClassifier`, `usecases.fraud.model`)."""
    prefixes = {f"{USECASES}.{use_case}" if use_case else None}
    prefixes.update(split(path)[0] for path in paths)  # `lightgbm`, not all of `sklearn` for sklearn.ensemble.X
    return sorted(p for p in prefixes if p)


def stage_code(paths: Iterable[str], root: Path, use_case: str | None, into: Path) -> list[str]:
    """Copies of the team's code for MLflow's `code_paths`: `usecases/` holding only this use case
    (its Python, not its data or tests), and any other local module a path names; their paths."""
    ignore = shutil.ignore_patterns("tests", "__pycache__", "*.pyc", "*.csv", "*.parquet", "*.json", "*.yaml")
    staged = []
    for top in local_packages([*paths, *([f"{USECASES}.{use_case}.x"] if use_case else [])], root):
        target = into / top
        if top == USECASES and use_case:
            target.mkdir(parents=True)
            (target / "__init__.py").write_text("")
            shutil.copytree(root / USECASES / use_case, target / use_case, ignore=ignore)
        elif (root / top).is_dir():
            shutil.copytree(root / top, target, ignore=ignore)
        else:
            target = into / f"{top}.py"
            shutil.copy2(root / f"{top}.py", target)
        staged.append(str(target))
    return staged


def forget(prefixes: Iterable[str]) -> None:
    """Drop imported modules under `prefixes` so the next import reads a version's own copy of them.

    Objects loaded earlier keep their own module objects, so two versions' code can live in one process.
    """
    prefixes = tuple(prefixes)
    for name in [m for m in sys.modules if any(m == p or m.startswith(f"{p}.") for p in prefixes)]:
        del sys.modules[name]
