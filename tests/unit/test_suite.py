"""`mlops test`'s runner: pytest runs side by side, their lines prefixed, the worst exit code; the whole suite covered."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.config import PROJECT_ROOT
from mlops.platform import suite

pytestmark = pytest.mark.unit


def test_runs_side_by_side_print_prefixed_lines_and_fail_when_one_fails(tmp_path: Path, capsys) -> None:
    (tmp_path / "test_good.py").write_text("def test_ok():\n    pass\n")
    (tmp_path / "test_bad.py").write_text("def test_no():\n    assert 1 == 2\n")

    code = suite.side_by_side({"good": ["-q", "test_good.py"], "bad": ["-q", "test_bad.py"]}, cwd=tmp_path)

    out = capsys.readouterr().out
    assert code == 1  # pytest's code for failed tests, from the run that failed
    assert "good | 1 passed" in out and " bad | 1 failed" in out, out
    assert "mlops test: good passed, bad FAILED (1)" in out, out


def test_the_runs_cover_every_test_path_of_pyproject() -> None:
    import tomllib

    paths = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"]
    given = {arg.rstrip("/") for args in suite.RUNS.values() for arg in args if arg.startswith(("tests/", "usecases"))}
    assert set(paths) <= given, f"testpaths no run of `mlops test` collects whole: {set(paths) - given}"
    assert all((PROJECT_ROOT / g).exists() for g in given), "a run names a path that does not exist"
