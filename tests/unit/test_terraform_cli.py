"""The environment `mlops-terraform` gives the embedded Terraform."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlops.adapters.terraform_cli import terraform_environment

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("config", [None, "", "/nonexistent/terraformrc"])
def test_a_missing_cli_config_becomes_an_empty_one(config: str | None) -> None:
    env = {} if config is None else {"TF_CLI_CONFIG_FILE": config}

    assert terraform_environment(env)["TF_CLI_CONFIG_FILE"] == os.devnull


def test_an_existing_cli_config_is_kept(tmp_path: Path) -> None:
    config = tmp_path / "terraformrc"
    config.write_text('plugin_cache_dir = "/tmp"\n')

    env = terraform_environment({"TF_CLI_CONFIG_FILE": str(config)})

    assert env["TF_CLI_CONFIG_FILE"] == str(config)


def test_the_checkpoint_is_disabled_and_the_rest_passes_through() -> None:
    original = {"PATH": "/usr/bin", "CHECKPOINT_DISABLE": "0"}

    env = terraform_environment(original)

    assert env["CHECKPOINT_DISABLE"] == "1"
    assert env["PATH"] == "/usr/bin"
    assert original["CHECKPOINT_DISABLE"] == "0"  # the input is not mutated
