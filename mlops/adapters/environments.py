"""The model-service environments (staging, production) of each use case, as Terraform sees them. No Prefect here.

All are the one root module `infra/service`: an environment is its own state (chosen at init)
plus its variable file `infra/service/env/<environment>.tfvars` (passed with -var-file). Each use
case (`Config.name`) has its own: state and plans under `<state>/terraform/<use case>/<environment>/`,
service files under `<state>/services/<use case>/`, and ports recorded in `<state>/services/ports.json`.
What each comes back on when the stack restarts is `environment_restore`'s.
"""

from __future__ import annotations

import fcntl
import json
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlops.adapters import registry, service_checks
from mlops.adapters import terraform as infra
from mlops.config import CAPTURE_DIR, PROJECT_ROOT, Config

INFRA_DIR = PROJECT_ROOT / "infra"
ROOT_MODULE = "service"  # under infra/
SERVICE_OUTPUT = "service"  # the root's one output: an object of what runs and where
SERVICE_ADDRESS = "terraform_data.service"  # the root's one resource: replaced when its process is gone
PLAN_FILE = "service.tfplan"  # in the environment's work dir
NAMES = ("staging", "production")


def known(environment: str) -> str:
    """`environment`, when it is one of NAMES; else a ValueError naming them."""
    if environment not in NAMES:
        raise ValueError(f"unknown environment {environment!r}; choose from {list(NAMES)}")
    return environment


def state_file(state_dir: Path, use_case: str, environment: str) -> Path:
    """Where a use case's environment keeps its Terraform state: `<state>/terraform/<use case>/<env>/terraform.tfstate`."""
    return state_dir / "terraform" / use_case / known(environment) / "terraform.tfstate"


def work_dir(config: Config, environment: str, state_dir: Path | None = None) -> Path:
    """Where a use case's environment keeps its state and saved plans: `<state>/terraform/<use case>/<env>/`."""
    path = state_file(state_dir or config.state_dir, config.name, environment).parent
    path.mkdir(parents=True, exist_ok=True)
    return path


def applied_use_cases(state_dir: Path) -> list[str]:
    """The use cases with an environment state under `state_dir` (what `down`, `up` and `status` look after)."""
    found = {
        p.parent.parent.name for env in NAMES for p in (state_dir / "terraform").glob(f"*/{env}/terraform.tfstate")
    }
    return sorted(found)


def adopt_single_use_case_layout(state_dir: Path, use_case: str) -> list[str]:
    """Move states of the one-use-case layout (`<state>/terraform/<env>/`) under `use_case`; the environments moved.

    A stack made before use cases had their own environments keeps serving what it served.
    """
    moved = []
    for env in NAMES:
        old, new = state_dir / "terraform" / env, state_file(state_dir, use_case, env).parent
        if (old / "terraform.tfstate").exists() and not new.exists():
            new.parent.mkdir(parents=True, exist_ok=True)
            old.rename(new)
            moved.append(env)
            state = json.loads((new / "terraform.tfstate").read_text())
            endpoint = state.get("outputs", {}).get(SERVICE_OUTPUT, {}).get("value", {}).get("endpoint")
            if endpoint:  # it keeps the port it serves on
                with _port_records(state_dir) as recorded:
                    recorded.setdefault(f"{use_case}/{env}", int(endpoint.rsplit(":", 1)[1]))
    shutil.rmtree(state_dir / "terraform" / "infra" / "staging", ignore_errors=True)  # the old working copies
    shutil.rmtree(state_dir / "terraform" / "infra" / "production", ignore_errors=True)
    return moved


PORTS_FILE = "ports.json"  # under <state>/services/: "<use case>/<environment>" -> port
PORT_SEARCH = 200  # ports tried above the configured one before giving up


def service_port(config: Config, environment: str, state_dir: Path | None = None) -> int:
    """The port of a use case's environment, recorded in `<state>/services/ports.json`.

    The port its config names (`serving.<env>_port`), unless another use case has it recorded or, when it
    is new to this use case, something else listens on it: then the port this use case was given before,
    or the next free one above (nothing recorded and nothing listening). Recorded under a file lock, so concurrent deliveries of different use cases never get one
    port twice; an edit of the config's port applies at the next delivery.
    """
    key = f"{config.name}/{known(environment)}"
    wanted = config.serving.staging_port if environment == "staging" else config.serving.production_port
    with _port_records(state_dir or config.state_dir) as recorded:
        others = {port for other, port in recorded.items() if other != key}
        if recorded.get(key) == wanted or (wanted not in others and _free(config.serving.host, wanted)):
            recorded[key] = wanted  # its own service may be listening there: it is this use case's port
            return wanted
        if key in recorded:
            return recorded[key]
        for port in range(wanted + 1, min(wanted + PORT_SEARCH, 65536)):
            if port not in others and _free(config.serving.host, port):
                recorded[key] = port
                return port
    raise RuntimeError(f"no free port for {key} in {wanted}..{wanted + PORT_SEARCH - 1}")


@contextmanager
def _port_records(state_dir: Path) -> Iterator[dict[str, int]]:
    """The recorded ports, held under an exclusive file lock; what the block adds is written back atomically."""
    directory = state_dir / "services"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PORTS_FILE
    with open(directory / (PORTS_FILE + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        recorded: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        before = dict(recorded)
        yield recorded
        if recorded != before:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(recorded, indent=1, sort_keys=True))
            tmp.replace(path)


def recorded_ports(state_dir: Path) -> dict[str, int]:
    """Every port `service_port` recorded, by "<use case>/<environment>"."""
    path = state_dir / "services" / PORTS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _free(host: str, port: int) -> bool:
    """Nothing listens on host:port (a bind would succeed)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def var_file(root_dir: Path, environment: str) -> Path:
    """The environment's variable file in the root module `root_dir`: `env/<environment>.tfvars`."""
    return Path(root_dir) / "env" / f"{known(environment)}.tfvars"


def service_outputs(root_dir: Path) -> dict[str, Any]:
    """What an initialised environment serves now: the root's `service` output; {} when nothing is applied.

    The flat dict every reader uses: endpoint, environment, model_version, model_uri, pid_file,
    log_file. A state applied before the module was folded into the root holds these as six
    outputs of their own until its next apply, so those are read as they are.
    """
    current = infra.outputs(root_dir)
    return dict(current.get(SERVICE_OUTPUT, current))


def service_variables(
    config: Config,
    environment: str,
    model_name: str,
    version: str,
    *,
    shadow: str | None = None,
    state_dir: Path | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """The `-var` values for one environment serving one model version (and `shadow`, a version scored beside it
    off the answers' path); they win over its var file.

    The port is the use case's (`service_port`: the config's `serving.<env>_port` unless another use
    case holds it), not the var file's default. `environment` repeats the var file's, so a plan made without the var file
    still describes the right environment. `state_dir` and `tracking_uri` name a stack other than
    the one the config and the environment point at (`mlops up` restoring its own services).
    """
    state_dir = state_dir or config.state_dir
    return {
        "environment": environment,
        "model_name": model_name,
        "model_version": str(version),
        "model_uri": f"models:/{model_name}/{version}",
        "shadow_model_uri": f"models:/{model_name}/{shadow}" if shadow else "",
        # `mlops serve` through the warm starter's client (mlops/platform/warmstart.py): on the stack, a fork of a
        # process that imported MLflow, scikit-learn and skops already (≈ 3.5 s of CPU less per start); without
        # one (MLOPS_WARM_SOCKET unset, or it does not answer), the client execs `python -m mlops.platform.cli`.
        "serve_command": shlex.join(
            [
                sys.executable,
                *("-m", "mlops.platform.warmstart", "--module", "mlops.platform.cli", "serve"),
                *("--use-case", config.name, "--environment", environment),
                *("--capture-dir", str(state_dir / CAPTURE_DIR)),
            ]
        ),
        # Both provisioners start and stop the service through this interpreter's process owner.
        "process_command": shlex.join([sys.executable, "-m", "mlops.processes"]),
        "tracking_uri": tracking_uri or registry.tracking_uri(config),
        "run_dir": str(state_dir / "services" / config.name),
        "port": service_port(config, environment, state_dir),
        "workers": config.serving.workers,
    }


def initialise(config: Config, environment: str, state_dir: Path | None = None) -> Path:
    """`terraform init` of the service root with the environment's local state; returns the root's directory.

    Terraform runs in a copy of infra/ in the environment's work dir, so its
    `.terraform/` working files (which remember the state path) never land in the repo, and two
    environments or two stacks (a user's and a test's) never share them.
    """
    copy = work_dir(config, environment, state_dir) / "infra"
    shutil.rmtree(copy, ignore_errors=True)  # exactly what the repo holds now, nothing stale
    shutil.copytree(INFRA_DIR, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    root_dir = copy / ROOT_MODULE
    infra.init(root_dir, work_dir(config, environment, state_dir) / "terraform.tfstate")
    return root_dir


def destroy(config: Config, environment: str, state_dir: Path | None = None) -> bool:
    """Destroy an environment (its service stops); False when there was nothing to destroy."""
    if not (work_dir(config, environment, state_dir) / "terraform.tfstate").exists():
        return False
    root_dir = initialise(config, environment, state_dir)
    current = service_outputs(root_dir)
    if not current:
        return False
    name = current["model_uri"].removeprefix("models:/").split("/")[0]
    variables = service_variables(config, environment, name, current["model_version"])
    infra.destroy(root_dir, variables, var_file=var_file(root_dir, environment))
    return True


def current_service(config: Config, environment: str, state_dir: Path | None = None) -> dict[str, Any]:
    """What a use case's environment serves, as `service_outputs`."""
    return served_by(state_dir or config.state_dir, config.name, environment)


def served_by(state_dir: Path, use_case: str, environment: str) -> dict[str, Any]:
    """What `use_case`'s environment serves, as `service_outputs`, read without touching the copy CD plans in.

    `initialise` rebuilds the environment's working copy, which would pull it from under a CD
    run applying there; a reader (`mlops status`, `mlops down`) initialises a throwaway copy.
    """
    state = state_file(state_dir, use_case, environment)
    if not state.exists():
        return {}
    with tempfile.TemporaryDirectory(prefix=f"mlops-{environment}-") as tmp:
        copy = Path(tmp) / "infra"
        shutil.copytree(INFRA_DIR, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
        infra.init(copy / ROOT_MODULE, state)
        return service_outputs(copy / ROOT_MODULE)


def plan_service(
    root_dir: Path, environment: str, variables: dict[str, Any], plan_file: Path
) -> tuple[infra.PlanSummary, bool]:
    """Plan `variables` into `plan_file`; when that changes nothing but the service does not answer, plan its replacement.

    Returns the plan and whether it replaces a service the state holds but that is gone
    (stopped by `mlops down`, crashed).
    """
    env_file = var_file(root_dir, environment)
    summary = infra.plan(root_dir, variables, plan_file, var_file=env_file)
    if summary.has_changes or service_checks.is_healthy(service_outputs(root_dir)["endpoint"]):
        return summary, False
    return infra.plan(root_dir, variables, plan_file, replace=[SERVICE_ADDRESS], var_file=env_file), True
