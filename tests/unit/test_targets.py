"""prefect.yaml rewritten for a Kubernetes or Docker work pool: valid for Prefect, and nothing changed but where runs go."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from deployments.targets import SERVER_ENV, TARGETS, WORKDIR, for_target
from mlops.config import PROJECT_ROOT
from mlops.platform.deploy import load_prefect_yaml

pytestmark = pytest.mark.unit

IMAGE = "registry.example.com/prefect-mlops:test"
KEPT = ("name", "entrypoint", "parameters", "schedules", "triggers", "concurrency_limit", "description", "tags")


@pytest.mark.parametrize("target", TARGETS)
def test_each_deployment_keeps_its_flow_triggers_and_schedules_and_runs_from_the_image(target):
    local = load_prefect_yaml(PROJECT_ROOT)
    rendered = for_target(local, target, IMAGE)
    # The same shape as the prefect.yaml `prefect deploy` accepts on every `mlops up` (e2e): no key of its own.
    assert set(rendered) <= set(local) and [d["name"] for d in rendered["deployments"]] == [
        d["name"] for d in local["deployments"]
    ]
    for before, after in zip(local["deployments"], rendered["deployments"], strict=True):
        assert set(after) == set(before) and set(after["work_pool"]) <= {"name", "work_queue_name", "job_variables"}
        assert {k: after.get(k) for k in KEPT} == {k: before.get(k) for k in KEPT}, before["name"]
        variables = after["work_pool"]["job_variables"]
        assert variables["image"] == IMAGE
        assert variables["env"]["MALLOC_ARENA_MAX"] == "2"  # the local pool's environment is kept
        assert all(value == SERVER_ENV[key] for key, value in variables["env"].items() if key in SERVER_ENV)
        assert after["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": WORKDIR}}]
    assert (
        "definitions" not in rendered and load_prefect_yaml(PROJECT_ROOT) == local
    )  # the one prefect.yaml is untouched


def test_no_credential_is_written_into_a_deployment():
    # `prefect deploy` resolves variables and blocks into the deployment: credentials come from the platform
    rendered = yaml.safe_dump(for_target(load_prefect_yaml(PROJECT_ROOT), "kubernetes", IMAGE))
    assert not [k for k in SERVER_ENV if "PASSWORD" in k or "TOKEN" in k or "USERNAME" in k]
    assert "prefect.blocks.secret" not in rendered and "PASSWORD" not in rendered


def test_the_command_prints_a_file_prefect_can_read():
    done = subprocess.run(
        [sys.executable, "-m", "deployments.targets", "docker", "--image", IMAGE],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rendered = yaml.safe_load(done.stdout)
    assert {d["work_pool"]["name"] for d in rendered["deployments"]} == {"docker"}
    assert rendered == for_target(load_prefect_yaml(PROJECT_ROOT), "docker", IMAGE)  # the file, whole, as tested above
