import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_backend():
    """Flows called in-process record their runs and artifacts in a throwaway Prefect database."""
    with prefect_test_harness(server_startup_timeout=60):
        yield
