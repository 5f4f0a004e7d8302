"""CT → CD through the automations on the scale profile: Prefect and MLflow on PostgreSQL, the search on Dask.

The same prefect.yaml, automations, flows and mlops.yaml as the embedded stack; only MLOPS_PROFILE
differs. Where PostgreSQL is missing and cannot be installed, `up` fails and so does this test,
naming what to install.
"""

from __future__ import annotations

import pytest

from mlops.config import load_config
from mlops.platform import postgres
from mlops.platform.stack import parts, status, up
from tests.e2e.conftest import CD_DEPLOYMENT, CT_DEPLOYMENT, one_flow_run, served_version

pytestmark = pytest.mark.e2e


def _rows(stack, database: str, query: str, *params: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(stack.postgres_url(database), connect_timeout=10) as connection:
        return connection.execute(query, params).fetchall()


def test_ct_then_cd_through_the_automations_on_postgresql_with_the_search_on_dask(
    stack, prefect_client, wait_for_flow_run, mlflow_client, capsys
):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId
    from prefect.deployments import run_deployment

    assert status(stack) == 0
    shown = capsys.readouterr().out
    assert f"health ok   {postgres.shown_url(stack)}" in shown, shown
    assert not (stack.prefect_home / "prefect.db").exists() and not (stack.mlflow_dir / "mlflow.db").exists()

    ct = run_deployment(CT_DEPLOYMENT, parameters={"reason": "scale"}, timeout=0)
    state = wait_for_flow_run(ct.id, timeout=420)
    assert state.is_completed(), f"CT: {state.name}: {state.message}"
    searches = prefect_client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["candidate-search"])))
    [search] = [s for s in searches if prefect_client.read_task_run(s.parent_task_run_id).flow_run_id == ct.id]
    assert search.state.is_completed()
    ct_logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[ct.id]))
    logs = " ".join(log.message for log in prefect_client.read_logs(log_filter=ct_logs))
    assert "on a Dask LocalCluster of 2 processes" in logs, logs[-2000:]

    name = load_config().tracking.model_name
    [version] = mlflow_client.search_model_versions(f"name = '{name}' and tags.prefect_flow_run_id = '{ct.id}'")
    cd = one_flow_run(prefect_client, CD_DEPLOYMENT, f"version {version.version}", timeout=180, version=version.version)
    state = wait_for_flow_run(cd.id, timeout=420)
    assert state.name == "Completed", f"CD: {state.name}: {state.message}"
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == str(version.version)
    assert served_version(load_config().serving.production_port) == str(version.version)

    # What the servers wrote is in PostgreSQL.
    assert _rows(stack, "prefect", "SELECT state_name FROM flow_run WHERE id = %s", cd.id) == [("Completed",)]
    assert _rows(
        stack,
        "mlflow",
        "SELECT count(*) FROM model_versions WHERE name = %s AND version = %s",
        name,
        int(version.version),
    ) == [(1,)]


def test_up_again_leaves_the_running_postgresql_and_servers_alone(stack, capsys):
    before = {key: part.running().pid for key, part in parts(stack).items()}
    assert up(stack) == 0
    shown = capsys.readouterr().out
    assert (
        f"postgres: already running (pid {before['postgres']})" in shown
        and "databases prefect, mlflow, mlflow_auth\n" in shown
    )
    assert {key: part.running().pid for key, part in parts(stack).items()} == before
