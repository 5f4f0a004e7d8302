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
# folder (or file) -> top-level names its modules may not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the one wait helper, under every layer (serving included) and the tests: it imports nothing of the project
    "mlops/waiting.py": ("mlops", "mlflow", "httpx", "pandas", *ORCHESTRATION),
    # the team's code by import path: under config, so it imports nothing of the project either
    "mlops/usercode.py": ("mlops", "mlflow", "httpx", "pandas", *ORCHESTRATION),
    "mlops/config.py": (
        "mlops.domain",
        "mlops.adapters",
        "mlops.platform",
        "mlops.serving",
        "mlflow",
        "httpx",
        *ORCHESTRATION,
    ),
    "mlops/domain": (
        "mlops.adapters",
        "mlops.platform",
        "mlops.serving",
        "mlops.render",
        "mlflow",
        "httpx",
        "python_terraform",
        "starlette",
        *ORCHESTRATION,
    ),
    "mlops/render.py": ("mlops.adapters", "mlops.platform", "mlops.serving", "mlflow", "httpx", *ORCHESTRATION),
    "mlops/adapters": ("mlops.platform", "mlops.serving", "mlops.render", *ORCHESTRATION),
    "mlops/serving": ("mlops.platform", "mlops.domain", "mlops.render", *ORCHESTRATION),
    "mlops/platform": ("tasks", "flows"),
    "tasks": ("flows",),
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


def test_every_library_module_sits_in_a_layer():
    top = sorted(p.name for p in (PROJECT_ROOT / "mlops").glob("*.py") if p.name != "__init__.py")
    assert top == ["config.py", "render.py", "usercode.py", "waiting.py"], (
        f"modules outside domain/adapters/serving/platform: {top}"
    )
