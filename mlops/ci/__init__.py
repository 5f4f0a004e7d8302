"""Continuous integration checks: test suites by marker, Terraform, and the model. No Prefect here.

`tasks/ci.py` wraps these functions as tasks and `flows/continuous_integration.py` composes them.
CI tests a commit, not a working tree: `checkout` makes a private checkout of the commit, and each
pytest suite runs there as a subprocess of this interpreter, importing that checkout's code, in an
environment cut off from any local stack (its own MLflow file, Prefect home and state dir).
Every verdict, of a whole check or of one step in it, is a `mlops.domain.checks.Check`; the
artifacts' text is in `mlops.render`.

- `commit`: the private checkout, the suites' environment, one pytest run
- `junit`: the JUnit report and a suite's verdict
- `infra_check`: `terraform fmt -check`, `validate`, `test`
- `model_check`: floors, schema, determinism, latency
- `verdict`: which checks run, a check made of steps, the summary and the event payload
"""

from mlops.ci.commit import (
    GIT_TIMEOUT_S,
    SUITE_TIMEOUT_S,
    Checkout,
    CheckoutError,
    changed_paths,
    checkout,
    import_root,
    pytest_command,
    resolve_commit,
    run_suite,
    suite_env,
)
from mlops.ci.infra_check import terraform_checks
from mlops.ci.junit import TestCase, TestReport, parse_junit, suite_result
from mlops.ci.model_check import (
    Latency,
    fit_small_model,
    measure_latency,
    model_checks,
    schema_problems,
)
from mlops.ci.verdict import (
    CHECKS,
    TEST_SUITES,
    CheckName,
    CIFailed,
    Summary,
    event_payload,
    select_checks,
    steps_result,
    summarize,
    summary_json,
    use_cases_to_retrain,
)

__all__ = [
    "CHECKS",
    "GIT_TIMEOUT_S",
    "SUITE_TIMEOUT_S",
    "TEST_SUITES",
    "CIFailed",
    "CheckName",
    "Checkout",
    "CheckoutError",
    "Latency",
    "Summary",
    "TestCase",
    "TestReport",
    "changed_paths",
    "checkout",
    "event_payload",
    "fit_small_model",
    "import_root",
    "measure_latency",
    "model_checks",
    "parse_junit",
    "pytest_command",
    "resolve_commit",
    "run_suite",
    "schema_problems",
    "select_checks",
    "steps_result",
    "suite_env",
    "suite_result",
    "summarize",
    "summary_json",
    "terraform_checks",
    "use_cases_to_retrain",
]
