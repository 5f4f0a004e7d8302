"""CT's candidate search on a Dask LocalCluster (prefect-dask) finds what the search in threads finds."""

from __future__ import annotations

import pytest
from prefect import flow

from flows.continuous_training import search_candidates
from mlops.config import DEFAULT_CONFIG, Compute, load_config
from tasks.data import extract_window, split_data
from tasks.training import engineer_features

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]


@flow(name="search-under-test")
def _search(config, features):
    return search_candidates(config, features)


def test_the_search_on_a_dask_local_cluster_equals_the_search_in_threads(isolated, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    config = load_config(DEFAULT_CONFIG)
    split = split_data(config, extract_window(config, "2013-02-01", 1, tmp_path))
    features = engineer_features(config, split)

    in_threads = _search(config.model_copy(update={"compute": Compute(search_runner="threads")}), features)
    on_dask = _search(
        config.model_copy(update={"compute": Compute(search_runner="dask", dask_workers=2)}),
        features,
        return_state=True,
    )

    assert len(in_threads) == 4 and on_dask.result() == in_threads  # same params, same scores, same order
    with get_client(sync_client=True) as client:  # only the Dask path runs the candidate-search subflow
        searches = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["candidate-search"])))
        mine = [
            s
            for s in searches
            if client.read_task_run(s.parent_task_run_id).flow_run_id == on_dask.state_details.flow_run_id
        ]
    assert len(mine) == 1 and mine[0].state.is_completed(), searches
