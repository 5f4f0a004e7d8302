"""The Terraform checks: `fmt -check`, `validate` of every root module and module, `terraform test`."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from mlops.adapters import terraform as infra
from mlops.ci.verdict import one_line
from mlops.domain.checks import Check


def terraform_checks(infra_dir: Path, workdir: Path) -> list[Check]:
    """`fmt -check` on infra/, `validate` of each configuration, `terraform test` of each with tests.

    A configuration is a root module (`infra/<name>/`, e.g. `service`) or a module
    (`infra/modules/<name>/`); one with `tests/*.tftest.hcl` is tested, its `tests/terraform.tfvars`
    `run_dir` pointed at a directory of this run. Terraform runs in a copy of `infra_dir` under
    `workdir`, so `.terraform/` never lands in the repository; a failing step does not stop the others.
    """
    copy = Path(workdir) / "infra"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(infra_dir, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfplan"))
    steps = [_step("fmt -check", lambda: _unformatted(copy))]
    for config in _configurations(copy):
        name = config.relative_to(copy).as_posix()
        steps.append(_step(f"validate {name}", partial(_validated, config)))
        if any(config.glob("tests/*.tftest.hcl")):
            _private_run_dir(config / "tests" / "terraform.tfvars", Path(workdir) / "tftest-run" / name)
            steps.append(_step(f"test {name}", partial(_tested, config)))
    return steps


def _configurations(infra_dir: Path) -> list[Path]:
    """The directories holding `*.tf` files: `<infra>/<root>/` and `<infra>/modules/<module>/`.

    `<infra>/examples/` (cloud environments this project does not apply) is only `fmt`-checked:
    validating it needs its providers, which `init` downloads from a registry.
    """
    roots = [p for p in infra_dir.iterdir() if p.name not in ("modules", "examples")]
    modules = list((infra_dir / "modules").iterdir()) if (infra_dir / "modules").is_dir() else []
    return sorted(p for p in roots + modules if p.is_dir() and any(p.glob("*.tf")))


def _unformatted(directory: Path) -> str:
    files = infra.fmt_check(directory)
    if files:
        raise ValueError(
            "not formatted (run `mlops-terraform fmt -recursive infra`): "
            + ", ".join(str(f.relative_to(directory)) for f in files)
        )
    return "formatted"


def _validated(config: Path) -> str:
    infra.validate(config)  # raises when the configuration is invalid
    return "valid"


def _tested(config: Path) -> str:
    return _test_report(infra.test(config))


def _test_report(output: str) -> str:
    found = re.search(r"(\d+) passed, (\d+) failed(?:, (\d+) skipped)?", output)
    return found.group(0) if found else one_line(output[-200:])


def _private_run_dir(tfvars: Path, run_dir: Path) -> None:
    """Point a test's `run_dir` at this run's directory, so two CI runs never share a pid file."""
    if tfvars.exists() and re.search(r"(?m)^run_dir\s*=", tfvars.read_text()):
        tfvars.write_text(re.sub(r"(?m)^run_dir\s*=.*$", f'run_dir = "{run_dir}"', tfvars.read_text()))


def _step(name: str, action: Callable[[], str]) -> Check:
    """Run one Terraform step; what it reports (or the error it raised) becomes the check's detail."""
    started = time.perf_counter()
    try:
        detail, passed = action(), True
    except Exception as exc:  # a Terraform or file error is this step's failure, not the check's end
        detail, passed = one_line(f"{type(exc).__name__}: {exc}", 1000), False
    return Check(name=name, passed=passed, detail=detail, seconds=round(time.perf_counter() - started, 3))
