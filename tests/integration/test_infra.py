"""The Terraform side of CD on the real embedded engine: fmt, validate, test, a full cycle.

Every test works on a copy of `infra/` under tmp_path, so `.terraform/` and state never land
in the repository, and it stops every process it started, by pid, even when it fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from mlops import processes, waiting
from mlops.adapters import environment_restore, environments
from mlops.adapters import terraform as infra
from mlops.config import DEFAULT_CONFIG, PROJECT_ROOT, load_config

pytestmark = pytest.mark.integration

INFRA = PROJECT_ROOT / "infra"
SERVICE = "terraform_data.service"  # tasks/infra.py's SERVICE_ADDRESS, replaced when it stops answering
SERVICE_KEYS = {"endpoint", "environment", "model_version", "model_uri", "pid_file", "log_file"}  # what mlops reads
PROCESS_COMMAND = f"{sys.executable} -m mlops.processes"  # what environments.service_variables passes

# Stands in for `mlops serve`: takes the flags the root appends, answers GET /ping.
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


def is_running(pid: int) -> bool:
    """True while `pid` runs; a zombie waiting for init to reap it has stopped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_with(marker: str) -> list[psutil.Process]:
    """Running processes whose command line contains `marker`."""
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if marker in " ".join(process.info["cmdline"] or []) and is_running(process.pid)
    ]


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
    """The pid of the live service `pid_file` names (the process owner's record)."""
    record = processes.running(Path(pid_file))
    assert record is not None, f"no live service behind {pid_file}"
    return record.pid


def wait_serving(endpoint: str, model_uri: str) -> None:
    """Wait until the stand-in at `endpoint` answers /ping with `model_uri`."""
    answered = []
    waiting.wait_for(
        lambda: answered.append(ping(endpoint)) or answered[-1] == model_uri,
        timeout=20,
        interval=0.1,
        what=f"{endpoint}/ping answering {model_uri}",
        seen=lambda: answered[-1] if answered else "nothing yet",
    )


def planned_outputs(root_dir: Path, plan_file: str) -> dict[str, object]:
    """The root module's output values in a saved plan (`terraform show -json`), by output name."""
    shown = subprocess.run(
        [infra.terraform_bin(), "show", "-json", plan_file], cwd=root_dir, capture_output=True, text=True, check=True
    )
    return {name: output["value"] for name, output in json.loads(shown.stdout)["planned_values"]["outputs"].items()}


def version_variables(tmp_path: Path, serve_command: str, version: str = "1") -> dict[str, object]:
    """What mlops passes with -var besides the port: the model version and this machine's paths."""
    return {
        "model_name": "flights-delay",
        "model_version": version,
        "model_uri": f"models:/flights-delay/{version}",
        "serve_command": serve_command,
        "process_command": PROCESS_COMMAND,
        "tracking_uri": "http://127.0.0.1:5000",
        "run_dir": str(tmp_path / "run"),
        "workers": 1,
    }


@pytest.fixture
def infra_copy(tmp_path: Path) -> Path:
    """A private copy of infra/ (the whole tree, as environments.initialise copies it)."""
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


def test_the_service_root_is_valid(infra_copy: Path) -> None:
    infra.validate(infra_copy / environments.ROOT_MODULE)


@pytest.mark.parametrize("environment", environments.NAMES)
def test_each_environment_is_the_root_with_its_var_file(infra_copy: Path, tmp_path: Path, environment: str) -> None:
    root_dir = infra_copy / environments.ROOT_MODULE
    infra.init(root_dir, tmp_path / "state" / environment / "terraform.tfstate")

    summary = infra.plan(
        root_dir,
        version_variables(tmp_path, "true"),
        tmp_path / f"{environment}.tfplan",
        var_file=environments.var_file(root_dir, environment),
    )

    planned = planned_outputs(root_dir, summary.plan_file)
    serving = load_config(DEFAULT_CONFIG).serving
    assert summary.to_add == (SERVICE,)
    assert set(planned) == {environments.SERVICE_OUTPUT}  # one object, not an output per value
    planned = planned[environments.SERVICE_OUTPUT]
    assert set(planned) == SERVICE_KEYS
    # The var file names the environment and its default port, the one the repo's mlops.yaml sets.
    assert planned["environment"] == environment
    assert planned["endpoint"] == f"http://127.0.0.1:{getattr(serving, f'{environment}_port')}"
    assert planned["pid_file"] == str(tmp_path / "run" / f"model-service-{environment}.pid")


def test_the_service_root_rejects_an_unknown_environment(infra_copy: Path, tmp_path: Path) -> None:
    root_dir = infra_copy / environments.ROOT_MODULE
    infra.init(root_dir, tmp_path / "state" / "terraform.tfstate")
    variables = version_variables(tmp_path, "true") | {"environment": "dev", "port": 5101}

    with pytest.raises(infra.TerraformError, match='must be "staging" or "production"'):
        infra.plan(root_dir, variables, tmp_path / "dev.tfplan")


def test_the_roots_tests_pass_and_stop_their_service(
    infra_copy: Path, tmp_path: Path, stop_marked: Callable[[str], str]
) -> None:
    # The stand-in's sh forks sleep; a unique duration marks both, so we can find them.
    marker = stop_marked(f"300.{secrets.randbelow(10**9):09d}")
    root_dir = infra_copy / environments.ROOT_MODULE
    run_dir = tmp_path / "tftest-run"
    # tests/terraform.tfvars wins over -var in `terraform test`, so the copy's is rewritten.
    (root_dir / "tests" / "terraform.tfvars").write_text(
        f'serve_command = "sh -c \'sleep {marker}\' mlops-tftest"\nrun_dir = "{run_dir}"\n'
        f'process_command = "{PROCESS_COMMAND}"\n'
    )

    # Not initialised, and its `backend "local" {}` unconfigured: test runs keep state in memory.
    report = infra.test(root_dir)

    assert "0 failed" in report and "passed" in report
    assert all(f"tests/{name}.tftest.hcl... pass" in report for name in ("plan", "apply"))
    assert "--model-uri models:/flights-delay/7" in (run_dir / "model-service-production.log").read_text()
    assert processes_with(marker) == [], "the destroy provisioner left the service running"


def legacy_root(infra_copy: Path, tmp_path: Path) -> Path:
    """The layout before the module was folded into the root: a root calling the module, six outputs."""
    module = shutil.copytree(
        infra_copy / environments.ROOT_MODULE,
        tmp_path / "legacy" / "modules" / "model-service",
        ignore=shutil.ignore_patterns("env", "tests"),
    )
    main = (module / "main.tf").read_text()
    (module / "main.tf").write_text(main[main.index("locals {") :])  # no backend, no moved block
    names = [
        "environment",
        "port",
        "model_name",
        "model_version",
        "model_uri",
        "serve_command",
        "process_command",
        "tracking_uri",
        "run_dir",
        "workers",
    ]
    root = tmp_path / "legacy" / "envs" / "staging"
    root.mkdir(parents=True)
    (root / "main.tf").write_text(
        'terraform {\n  backend "local" {}\n}\n'
        + 'module "model_service" {\n  source = "../../modules/model-service"\n'
        + "".join(f"  {name} = var.{name}\n" for name in names)
        + "}\n"
        + "".join(f'variable "{name}" {{}}\n' for name in names)
        + "".join(f'output "{key}" {{\n  value = module.model_service.service.{key}\n}}\n' for key in SERVICE_KEYS)
    )
    return root


def test_a_state_applied_with_the_module_is_taken_over_without_a_restart(
    infra_copy: Path, tmp_path: Path, stand_in: Path
) -> None:
    old_root, root_dir = legacy_root(infra_copy, tmp_path), infra_copy / environments.ROOT_MODULE
    state = tmp_path / "state" / "staging" / "terraform.tfstate"
    variables = version_variables(tmp_path, f"{sys.executable} {stand_in}") | {"environment": "staging"}
    variables["port"] = free_port()
    infra.init(old_root, state)
    infra.apply_plan(old_root, infra.plan(old_root, variables, tmp_path / "old.tfplan").plan_file)
    legacy = infra.outputs(old_root)
    assert set(legacy) == SERVICE_KEYS
    pid = read_pid(legacy["pid_file"])

    infra.init(root_dir, state)
    var_file = environments.var_file(root_dir, "staging")
    summary = infra.plan(root_dir, variables, tmp_path / "new.tfplan", var_file=var_file)

    # The moved block keeps the running service: nothing to replace, and it is read as before.
    assert not summary.has_changes and summary.to_replace == ()
    assert is_running(pid)
    assert environments.service_outputs(root_dir) == legacy
    infra.destroy(root_dir, variables, var_file=var_file)
    assert not is_running(pid), "destroy must stop a service applied with the module, too"


def test_a_failing_command_raises_terraform_error(infra_copy: Path, tmp_path: Path) -> None:
    root_dir = infra_copy / environments.ROOT_MODULE
    var_file = environments.var_file(root_dir, "staging")
    infra.init(root_dir, tmp_path / "state" / "terraform.tfstate")

    with pytest.raises(infra.TerraformError) as failure:
        infra.plan(root_dir, {"model_name": "flights-delay"}, tmp_path / "incomplete.tfplan", var_file=var_file)

    assert failure.value.returncode == 1
    assert " plan " in failure.value.command and "-var-file=<model_name>" in failure.value.command
    # The environment's file comes first, so the values given with it win.
    assert failure.value.command.index(f"-var-file={var_file}") < failure.value.command.index("-var-file=<model_name>")
    assert "No value for required variable" in failure.value.stderr


def test_full_delivery_cycle(infra_copy: Path, tmp_path: Path, stand_in: Path) -> None:
    root_dir = infra_copy / environments.ROOT_MODULE
    var_file = environments.var_file(root_dir, "staging")
    state = tmp_path / ".mlops" / "terraform" / "staging" / "terraform.tfstate"
    port = free_port()  # given with -var, it wins over the var file's default port
    variables = version_variables(tmp_path, f"{sys.executable} {stand_in}") | {"port": port}
    infra.init(root_dir, state)

    first = infra.plan(root_dir, variables, tmp_path / "v1.tfplan", var_file=var_file)
    assert (first.to_add, first.to_change, first.to_destroy) == ((SERVICE,), (), ())

    infra.apply_plan(root_dir, first.plan_file)
    out = environments.service_outputs(root_dir)
    assert set(out) == SERVICE_KEYS
    assert out["endpoint"] == f"http://127.0.0.1:{port}"
    assert (out["environment"], out["model_version"]) == ("staging", "1")
    old_pid = read_pid(out["pid_file"])
    wait_serving(out["endpoint"], "models:/flights-delay/1")
    # `mlops up` leaves it alone: the state's input holds each variable mlops passes, under the root's names.
    assert environment_restore.serving_as_applied(state, variables | {"shadow_model_uri": ""}) == out["endpoint"]
    # Terraform has exited; the service runs on in its own session, with the tracking URI.
    assert os.getsid(old_pid) == old_pid
    assert psutil.Process(old_pid).environ()["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert state.exists()
    with pytest.raises(infra.TerraformError, match="stale"):
        infra.apply_plan(root_dir, first.plan_file)

    variables |= {"model_version": "2", "model_uri": "models:/flights-delay/2"}
    second = infra.plan(root_dir, variables, tmp_path / "v2.tfplan", var_file=var_file)
    assert second.to_replace == (SERVICE,)
    assert (second.to_add, second.to_destroy) == ((SERVICE,), (SERVICE,))

    infra.apply_plan(root_dir, second.plan_file)
    new_pid = read_pid(environments.service_outputs(root_dir)["pid_file"])
    assert new_pid != old_pid
    assert not is_running(old_pid), "replacing must stop the old service before it returns"
    wait_serving(out["endpoint"], "models:/flights-delay/2")
    assert environments.service_outputs(root_dir)["model_version"] == "2"

    infra.destroy(root_dir, variables, var_file=var_file)
    assert not is_running(new_pid), "destroy must stop the service before it returns"
    assert infra.outputs(root_dir) == {} and environments.service_outputs(root_dir) == {}


def test_a_service_started_before_processes_owned_it_is_stopped_by_destroy(
    infra_copy: Path, tmp_path: Path, stand_in: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack upgraded while running: its state's input has no process_command, its pid file a bare pid."""
    root_dir = infra_copy / environments.ROOT_MODULE
    var_file = environments.var_file(root_dir, "staging")
    state = tmp_path / "state" / "staging" / "terraform.tfstate"
    variables = version_variables(tmp_path, f"{sys.executable} {stand_in}") | {"port": free_port()}
    infra.init(root_dir, state)
    infra.apply_plan(root_dir, infra.plan(root_dir, variables, tmp_path / "v1.tfplan", var_file=var_file).plan_file)
    pid_file = Path(environments.service_outputs(root_dir)["pid_file"])
    pid = read_pid(str(pid_file))
    # What the shell provisioners left: `echo $! > <pid file>` just after setsid, and no process owner in the input.
    pid_file.write_text(f"{pid}\n")
    applied = json.loads(state.read_text())
    [service] = applied["resources"]
    service_input = service["instances"][0]["attributes"]["input"]
    del service_input["value"]["process_command"], service_input["type"][1]["process_command"]
    state.write_text(json.dumps(applied))
    # The destroy then runs the variable's default, `python3 -m ...`: the project's, first on PATH as in the stack.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    report = infra.destroy(root_dir, variables, var_file=var_file)

    assert f"stopped pid {pid}" in report
    assert not is_running(pid), "destroy must stop a service whose pid file holds a bare pid"
