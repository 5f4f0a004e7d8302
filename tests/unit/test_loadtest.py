import math

import pytest

from mlops.adapters import loadtest
from mlops.config import Slo

pytestmark = pytest.mark.unit

HEADER = "Type,Name,Request Count,Failure Count,Requests/s,50%,95%,99%\n"


def test_a_run_in_which_no_request_finished_fails_every_slo_instead_of_crashing(tmp_path):
    # Locust writes N/A percentiles when nothing finished (a busy machine, a service that never answered).
    (tmp_path / "stats.csv").write_text(HEADER + ",Aggregated,0,0,0.0,N/A,N/A,N/A\n")
    result = loadtest.parse_stats(tmp_path / "stats.csv")
    assert result.requests == 0 and math.isnan(result.p95_ms) and result.error_rate == 1.0
    assert not any(check.passed for check in loadtest.check_slos(result, Slo()))


def test_the_aggregated_row_is_read_by_column_name(tmp_path):
    (tmp_path / "stats.csv").write_text(HEADER + "POST,/invocations,10,1,5.0,7,9,11\n,Aggregated,100,1,50.0,8,20,30\n")
    result = loadtest.parse_stats(tmp_path / "stats.csv")
    assert (result.requests, result.failures, result.p95_ms, result.p99_ms) == (100, 1, 20.0, 30.0)
    assert [c.passed for c in loadtest.check_slos(result, Slo(min_rps=40))] == [True, True, True, True]
