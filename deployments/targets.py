"""prefect.yaml for a Kubernetes or Docker work pool, made from the one prefect.yaml: same flows, triggers, schedules.

prefect.yaml stays the only place the deployments are described. For a cluster, this rewrites
what differs there, and nothing else: each deployment's work pool (name and job variables: the
image with this repository's code, the environment that points flow runs at the shared servers)
and its pull step (the code is in the image's working directory, not in a clone on the worker's
machine). Print it, review it, deploy it:

    python -m deployments.targets kubernetes --image registry.example.com/prefect-mlops:1.4.0 > prefect.kubernetes.yaml
    prefect work-pool create k8s --type kubernetes      # needs prefect-kubernetes where the worker runs
    prefect deploy --all --prefect-file prefect.kubernetes.yaml

The servers' addresses are Prefect variables (`{{ prefect.variables.mlflow_tracking_uri }}`), which
`prefect deploy` resolves into the deployment. Credentials are not: whatever `prefect deploy`
resolves is stored in the deployment, readable by anyone who can read it. They come from the
platform instead, into every flow run's environment: a Kubernetes Secret named in the work pool's
base job template (`envFrom: [{secretRef: {name: mlflow-credentials}}]`), or Docker's env file on
the worker's host. What cannot be checked here (no cluster, registry or Docker daemon is
reachable from this machine) is said in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

import yaml

from mlops.config import PROJECT_ROOT
from mlops.platform.deploy import load_prefect_yaml

TARGETS = ("kubernetes", "docker")
WORKDIR = "/opt/prefect-mlops"  # where the image holds the repository (its Dockerfile's WORKDIR)
# What a flow run needs to find the shared servers (no credentials: see above); resolved by `prefect deploy`.
SERVER_ENV = {
    "MLFLOW_TRACKING_URI": "{{ prefect.variables.mlflow_tracking_uri }}",
    "MLOPS_PROFILE": "scale",  # the candidate search on Dask (tasks/compute.py)
    "DASK_SCHEDULER_ADDRESS": "{{ prefect.variables.dask_scheduler_address }}",
    "MLOPS_STATE_DIR": "/mnt/mlops-state",  # a shared volume: CT hands its Dask workers feature files by path
}
POOL_NAMES = {"kubernetes": "k8s", "docker": "docker"}


def job_variables(target: str, image: str, local: dict[str, Any]) -> dict[str, Any]:
    """The job variables of `target`'s default base job template, keeping the local pool's environment."""
    env = {**local.get("env", {}), **SERVER_ENV}
    if target == "kubernetes":
        # prefect-kubernetes' default template: image, namespace, service_account_name, env, image_pull_policy, ...
        return {
            "image": image,
            "namespace": "mlops",
            "service_account_name": "prefect-mlops",
            "image_pull_policy": "IfNotPresent",
            "finished_job_ttl": 3600,
            "env": env,
        }
    # prefect-docker's default template: image, env, networks, volumes, mem_limit, auto_remove, ...
    return {
        "image": image,
        "env": env,
        "networks": ["mlops"],
        "volumes": ["mlops-state:/mnt/mlops-state"],
        "mem_limit": "4g",
        "auto_remove": True,
    }


def for_target(prefect_yaml: dict[str, Any], target: str, image: str) -> dict[str, Any]:
    """A copy of `prefect_yaml` whose deployments run on `target`'s work pool from `image`."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {list(TARGETS)}")
    out = copy.deepcopy(prefect_yaml)
    out.pop("definitions", None)  # its anchors are already expanded by the YAML loader
    for deployment in out["deployments"]:
        local = deployment.get("work_pool") or {}
        deployment["work_pool"] = {
            "name": POOL_NAMES[target],
            "job_variables": job_variables(target, image, local.get("job_variables") or {}),
        }
        deployment["pull"] = [{"prefect.deployments.steps.set_working_directory": {"directory": WORKDIR}}]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--image", required=True, help="the image holding this repository at " + WORKDIR)
    args = parser.parse_args(argv)
    rendered = for_target(load_prefect_yaml(PROJECT_ROOT), args.target, args.image)
    sys.stdout.write(
        f"# Made by `python -m deployments.targets {args.target} --image {args.image}` from prefect.yaml; "
        "edit prefect.yaml, not this.\n"
    )
    sys.stdout.write(yaml.safe_dump(rendered, sort_keys=False, width=120))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
