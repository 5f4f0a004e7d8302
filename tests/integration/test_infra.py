"""The Terraform side of CD on the real embedded engine: fmt, validate, test, a full cycle.

Every test works on a copy of `infra/` under tmp_path, so `.terraform/` and state never land
in the repository, and it stops every process it started, by pid, even when it fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from mlops import infra
from mlops.config import PROJECT_ROOT

pytestmark = pytest.mark.integration

INFRA = PROJECT_ROOT / "infra"
SERVICE = "module.model_service.terraform_data.service"

# Stands in for `mlops serve`: takes the flags the module appends, answers GET /ping.
STAND_IN = """\
import argparse
from http.server import BaseHTTPRequestHandler, HTTPServer

parser = argparse.ArgumentParser()
for flag in ("--model-uri", "--host", "--workers"):
    parser.add_argument(flag)
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()


class Ping(BaseHTTPRequestHandler):
    def do_GET(self):
        body = args.model_uri.encode() if self.path == "/ping" else b"not found"
        self.send_response(200 if self.path == "/ping" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


HTTPServer(("127.0.0.1", args.port), Ping).serve_forever()
"""


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def is_running(pid: int) -> bool:
    """True while `pid` runs; a zombie waiting for init to reap it has stopped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_with(marker: str) -> list[psutil.Process]:
    """Running processes whose command line contains `marker`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or []) and is_running(process.pid):
            found.append(process)
    return found


def ping(endpoint: str) -> str | None:
    """The body of GET <endpoint>/ping, or None while nothing answers."""
    try:
        response = httpx.get(f"{endpoint}/ping", timeout=1.0)
    except httpx.TransportError:
        return None
    return response.text if response.status_code == 200 else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_pid(pid_file: str) -> int:
    return int(Path(pid_file).read_text().strip())


@pytest.fixture
def infra_copy(tmp_path: Path) -> Path:
    """A private copy of infra/ (module sources are relative, so the whole tree)."""
    ignore = shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfplan")
    return Path(shutil.copytree(INFRA, tmp_path / "infra", ignore=ignore))


@pytest.fixture
def stop_marked() -> Iterator[Callable[[str], str]]:
    """Register a command-line marker; teardown KILLs every process carrying one, by pid."""
    markers: list[str] = []

    def register(marker: str) -> str:
        markers.append(marker)
        return marker

    yield register
    for marker in markers:
        for process in processes_with(marker):
            process.kill()


@pytest.fixture
def stand_in(tmp_path: Path, stop_marked: Callable[[str], str]) -> Path:
    """The stand-in service script; its unique path marks the processes to clean up."""
    script = tmp_path / f"stand_in_{secrets.token_hex(4)}.py"
    script.write_text(STAND_IN)
    stop_marked(str(script))
    return script


def test_mlops_terraform_runs_the_embedded_engine(tmp_path: Path) -> None:
    binary = infra.terraform_bin()
    env = {"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": str(tmp_path / "missing.tfrc")}

    version = subprocess.run([binary, "version"], capture_output=True, text=True, env=env)
    unknown = subprocess.run([binary, "no-such-command"], capture_output=True, text=True, env=env)

    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("Terraform v1.15.5")
    assert "CLI configuration" not in version.stderr
    assert unknown.returncode == 1
    assert 'no command named "no-such-command"' in unknown.stderr


def test_terraform_files_are_formatted() -> None:
    assert infra.fmt_check(INFRA) == []


def test_fmt_check_lists_unformatted_files(tmp_path: Path) -> None:
    (tmp_path / "ugly.tf").write_text('variable "a" {\ntype=string\n}\n')

    assert infra.fmt_check(tmp_path) == [tmp_path / "ugly.tf"]


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_environments_are_valid(infra_copy: Path, environment: str) -> None:
    infra.validate(infra_copy / "envs" / environment)


def test_module_tests_pass_and_stop_their_service(
    infra_copy: Path, tmp_path: Path, stop_marked: Callable[[str], str]
) -> None:
    # The stand-in's sh forks sleep; a unique duration marks both, so we can find them.
    marker = stop_marked(f"300.{secrets.randbelow(10**9):09d}")
    module = infra_copy / "modules" / "model-service"
    run_dir = tmp_path / "tftest-run"
    # tests/terraform.tfvars wins over -var in `terraform test`, so the copy's is rewritten.
    (module / "tests" / "terraform.tfvars").write_text(
        f"serve_command = \"sh -c 'sleep {marker}' mlops-tftest\"\nrun_dir = \"{run_dir}\"\n"
    )

    report = infra.test(module)

    assert "0 failed" in report and "passed" in report
    assert "starting models:/" in (run_dir / "model-service-production.log").read_text()
    assert processes_with(marker) == [], "the destroy provisioner left the service running"


def test_a_failing_command_raises_terraform_error(infra_copy: Path, tmp_path: Path) -> None:
    env_dir = infra_copy / "envs" / "staging"
    infra.init(env_dir, tmp_path / "state" / "terraform.tfstate")

    with pytest.raises(infra.TerraformError) as failure:
        infra.plan(env_dir, {"model_name": "flights-delay"}, tmp_path / "incomplete.tfplan")

    assert failure.value.returncode == 1
    assert " plan " in failure.value.command and "-var-file=<model_name>" in failure.value.command
    assert "No value for required variable" in failure.value.stderr


def test_full_delivery_cycle(infra_copy: Path, tmp_path: Path, stand_in: Path) -> None:
    env_dir = infra_copy / "envs" / "staging"
    state = tmp_path / ".mlops" / "terraform" / "staging" / "terraform.tfstate"
    port = free_port()
    variables = {
        "model_name": "flights-delay",
        "model_version": "1",
        "model_uri": "models:/flights-delay/1",
        "serve_command": f"{sys.executable} {stand_in}",
        "tracking_uri": "http://127.0.0.1:5000",
        "run_dir": str(tmp_path / "run"),
        "port": port,
        "workers": 1,
    }
    infra.init(env_dir, state)

    first = infra.plan(env_dir, variables, tmp_path / "v1.tfplan")
    assert (first.to_add, first.to_change, first.to_destroy) == ((SERVICE,), (), ())

    infra.apply_plan(env_dir, first.plan_file)
    out = infra.outputs(env_dir)
    assert out["endpoint"] == f"http://127.0.0.1:{port}"
    assert (out["environment"], out["model_version"]) == ("staging", "1")
    old_pid = read_pid(out["pid_file"])
    assert wait_until(lambda: ping(out["endpoint"]) == "models:/flights-delay/1")
    # Terraform has exited; the service runs on in its own session, with the tracking URI.
    assert os.getsid(old_pid) == old_pid
    assert psutil.Process(old_pid).environ()["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert state.exists()
    with pytest.raises(infra.TerraformError, match="stale"):
        infra.apply_plan(env_dir, first.plan_file)

    variables |= {"model_version": "2", "model_uri": "models:/flights-delay/2"}
    second = infra.plan(env_dir, variables, tmp_path / "v2.tfplan")
    assert second.to_replace == (SERVICE,)
    assert (second.to_add, second.to_destroy) == ((SERVICE,), (SERVICE,))

    infra.apply_plan(env_dir, second.plan_file)
    new_pid = read_pid(infra.outputs(env_dir)["pid_file"])
    assert new_pid != old_pid
    assert not is_running(old_pid), "replacing must stop the old service before it returns"
    assert wait_until(lambda: ping(out["endpoint"]) == "models:/flights-delay/2")
    assert infra.outputs(env_dir)["model_version"] == "2"

    infra.destroy(env_dir, variables)
    assert not is_running(new_pid), "destroy must stop the service before it returns"
    assert infra.outputs(env_dir) == {}

