"""Imports point one way: domain ← adapters ← platform, serving apart, tasks wrap, flows compose.

Read from the source with `ast`, so a module that breaks the layering fails here by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mlops.config import PROJECT_ROOT

pytestmark = pytest.mark.unit

ORCHESTRATION = ("prefect", "tasks", "flows", "deployments")


def _without(names: tuple[str, ...], *own: str) -> tuple[str, ...]:
    return tuple(name for name in names if name not in own)


LIBRARY = ("mlops.domain", "mlops.adapters", "mlops.platform", "mlops.serving", "mlops.render", "mlops.ci")
# folder (or file) -> top-level names its modules may not import (docs/architecture.md's picture, read downwards)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the one wait helper, under every layer (serving included) and the tests: it imports nothing of the project
    "mlops/waiting.py": ("mlops", "mlflow", "httpx", "pandas", *ORCHESTRATION),
    # the one owner of a process's start and stop (the stack's parts, Terraform's model services): only the wait helper
    "mlops/processes": ("mlops.config", *LIBRARY, "mlflow", "pandas", *ORCHESTRATION),
    # the team's code by import path: under config, so it imports nothing of the project either
    "mlops/usercode.py": ("mlops", "mlflow", "httpx", "pandas", *ORCHESTRATION),
    # mlops.yaml and the stack's settings: under every layer; the model service loads it without Prefect
    "mlops/config": (*LIBRARY, "mlflow", "httpx", *ORCHESTRATION),
    "mlops/domain": (
        *_without(LIBRARY, "mlops.domain"),
        "mlflow",
        "httpx",
        "python_terraform",
        "starlette",
        *ORCHESTRATION,
    ),
    "mlops/render": (*_without(LIBRARY, "mlops.domain", "mlops.render"), "mlflow", "httpx", *ORCHESTRATION),
    "mlops/adapters": ("mlops.platform", "mlops.serving", "mlops.render", "mlops.ci", *ORCHESTRATION),
    # the model service: the MLflow adapter (an alias's version, the version's verification rows) and nothing above
    "mlops/serving": ("mlops.platform", "mlops.domain", "mlops.render", "mlops.ci", *ORCHESTRATION),
    # CI's checks: the domain and the adapters, run by tasks/ci.py; never the orchestrator
    "mlops/ci": ("mlops.platform", "mlops.serving", "mlops.render", *ORCHESTRATION),
    "mlops/platform": ("tasks", "flows", "deployments"),
    "deployments": ("tasks", "flows"),
    "tasks": ("flows",),
}
# The arrows up into the platform that the picture draws: the environments' locks, held by CD and the rollback
# (tasks/runs.py) and leased by `mlops up`; prefect.yaml read by the cluster targets. Any other is a layer broken.
ALLOWED_INTO_PLATFORM = {
    "tasks": ("mlops.platform.locks",),
    "flows": (),
    "deployments": ("mlops.platform.deploy",),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _modules(where: str) -> list[Path]:
    path = PROJECT_ROOT / where
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_imports_point_one_way(where):
    broken = [
        f"{module.relative_to(PROJECT_ROOT)} imports {name}"
        for module in _modules(where)
        for name in sorted(_imports(module))
        if any(name == bad or name.startswith(f"{bad}.") for bad in FORBIDDEN[where])
    ]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("where", sorted(ALLOWED_INTO_PLATFORM))
def test_orchestration_reaches_into_the_platform_only_where_the_picture_says(where):
    allowed = ALLOWED_INTO_PLATFORM[where]
    broken = [
        f"{module.relative_to(PROJECT_ROOT)} imports {name}"
        for module in _modules(where)
        for name in sorted(_imports(module))
        if name.startswith("mlops.platform")
        and not any(name == a or name.startswith(f"{a}.") for a in allowed)
        and name not in {a.rpartition(".")[0] for a in allowed}  # `from mlops.platform import locks`
    ]
    assert not broken, "\n".join(broken)


def test_every_library_module_sits_in_a_layer():
    top = sorted(p.name for p in (PROJECT_ROOT / "mlops").glob("*.py") if p.name != "__init__.py")
    assert top == ["usercode.py", "waiting.py"], f"modules outside a layer's folder: {top}"
    layers = sorted(p.name for p in (PROJECT_ROOT / "mlops").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert layers == ["adapters", "ci", "config", "domain", "platform", "processes", "render", "serving"]


def test_flows_tasks_and_deployments_are_not_installed_as_packages():
    """They are this checkout's folders, imported from its root; a team's own `tasks` package never collides."""
    import tomllib

    found = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert found["include"] == ["mlops*"]
