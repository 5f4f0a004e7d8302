"""The registry's listings: every version of a model, production history, undelivered versions.

The same error policy as `registry`: no such model is an empty list; any other registry error raises.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops.adapters.registry import VersionRef, _missing, _ref, champion
from mlops.domain.history import Change, production_history

DECISION_TAG = "deployment"  # CD writes it on every decision: promoted | rejected | rolled_back


@dataclass(frozen=True)
class Registration:
    """A registered version and when the registry recorded it (UTC)."""

    ref: VersionRef
    registered_at: float  # seconds since the epoch


def registrations(client: MlflowClient, name: str) -> list[Registration]:
    """Every version of `name`, whatever its status or decision, oldest first; [] when there is no such model."""
    found, token = [], None
    while True:
        try:
            page = client.search_model_versions(f"name = '{name}'", page_token=token)
        except MlflowException as exc:
            if _missing(exc):
                return []
            raise
        found += list(page)
        token = page.token
        if not token:
            break
    found.sort(key=lambda v: int(v.version))
    return [Registration(ref=_ref(v), registered_at=(v.creation_timestamp or 0) / 1000) for v in found]


def history(client: MlflowClient, name: str) -> list[Change]:
    """Production history of `name` from the decisions CD tagged on its versions (`domain.history`)."""
    serving = champion(client, name)
    return production_history(
        [(r.ref.version, r.ref.tags) for r in registrations(client, name)], serving.version if serving else None
    )


def undelivered_versions(client: MlflowClient, name: str) -> list[Registration]:
    """READY versions of `name` without a delivery decision (no `deployment` tag), oldest first.

    Facts only: versions still registering or that failed to are left out, everything else is
    listed, the champion and versions older than it included. What to do with each (deliver,
    leave a superseded one alone) is the reconciliation's policy, `tasks/reconciliation.py`.
    No model yet is an empty list; any other registry error raises.
    """
    return [r for r in registrations(client, name) if r.ref.status == "READY" and DECISION_TAG not in r.ref.tags]
