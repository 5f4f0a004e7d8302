import asyncio

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_backend():
    """Flows called in-process record their runs and artifacts in a throwaway Prefect database."""
    with prefect_test_harness(server_startup_timeout=60):
        yield


def read_artifacts(flow_run_id) -> dict[str, str]:
    """The artifacts a flow run published, by key."""
    async def read():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
            return {a.key: str(a.data) for a in found if a.key}

    return asyncio.run(read())


def read_flow_run_tags(flow_run_id) -> list[str]:
    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).tags

    return asyncio.run(read())
