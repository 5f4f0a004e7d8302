"""CI tasks: check a commit out, run its test suites, check the model and the infrastructure, report, emit."""

from __future__ import annotations

import os
import time
from pathlib import Path
from xml.etree.ElementTree import ParseError

from mlflow.models import get_model_info
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger

from mlops import ci, render
from mlops.adapters import registry, sources
from mlops.config import USE_CASE_LABEL, Config, use_cases
from mlops.domain.checks import Check
from mlops.domain.split import split_frame

CI_PASSED = "mlops.ci.passed"  # continuous-training/retrain's trigger in prefect.yaml expects this name


@task
def checkout_commit(repo: Path, sha: str | None, workdir: Path) -> ci.Checkout:
    """Check the commit out privately and make sure the suites will import its code, not the installed project's."""
    found = ci.checkout(repo, sha, workdir / "checkout")
    imported = ci.import_root(found.path, ci.suite_env(os.environ, found.path, workdir / "sandbox" / "import"))
    if imported != found.path.resolve():
        raise ci.CheckoutError(f"code in {found.path} imports mlops from {imported}, not from the checkout")
    get_run_logger().info("testing %s from %s in %s", found.sha, repo, found.path)
    return found


@task
def run_test_suite(checkout: ci.Checkout, marker: str, workdir: Path) -> Check:
    """`pytest -m <marker>` in the checkout; the JUnit report becomes a table of failures and slowest tests."""
    logger = get_run_logger()
    junit_xml = workdir / "reports" / f"{marker}.xml"
    started = time.perf_counter()
    returncode, output = ci.run_suite(
        checkout.path, marker, junit_xml, ci.suite_env(os.environ, checkout.path, workdir / "sandbox" / marker)
    )
    seconds = round(time.perf_counter() - started, 1)
    try:
        report = ci.parse_junit(junit_xml.read_bytes()) if junit_xml.exists() else None
    except ParseError as exc:
        report, output = None, f"unreadable JUnit report {junit_xml}: {exc}\n{output}"
    result = ci.suite_result(marker, returncode, report, output, seconds)
    if report is not None:
        create_table_artifact(
            key=f"ci-{marker}-tests",
            table=render.suite_rows(report),
            description=f"{marker} tests at {checkout.sha[:12]}: {report.counts()} in {report.seconds:.1f} s",
        )
    else:
        create_markdown_artifact(key=f"ci-{marker}-tests", markdown=render.suite_output_markdown(marker, output))
    (logger.info if result.passed else logger.error)("%s: %s (%.1f s)", result.name, result.detail, seconds)
    return result


@task  # no task retries: MLflow's client retries its own HTTP calls, and a retry here would retrain
def check_model(config: Config) -> Check:
    """The champion (or, with none, a small fresh model) on a holdout: floors, schema, determinism, latency."""
    logger = get_run_logger()
    started = time.perf_counter()
    champion = registry.champion(registry.connect(config), config.tracking.model_name)
    if champion is not None:
        # The holdout CT evaluated it on, rebuilt from its lineage (the config's window without one).
        test = split_frame(sources.load_labelled_window(config, champion.data_window).frame, config)[1]
        model, signature = registry.load_model(champion), get_model_info(champion.uri).signature
        subject = (
            f"champion {champion.name} v{champion.version} on its holdout ({champion.data_window or 'config window'})"
        )
    else:
        train, test = split_frame(
            sources.load_window(config, months=1).frame, config
        )  # one month ending at window.as_of
        model, signature = ci.fit_small_model(train, config), None
        subject = f"no champion: a fresh model trained on {len(train)} rows, tested on {len(test)}"
    logger.info("model check: %s", subject)
    steps, latency = ci.model_checks(model, test, config, signature)
    create_table_artifact(key="ci-model-check", table=render.check_rows(steps), description=subject)
    create_table_artifact(
        key="ci-model-latency",
        table=render.latency_rows(latency),
        description="In-process prediction time (median of repeats) and throughput",
    )
    return ci.steps_result("model check", steps, round(time.perf_counter() - started, 1), subject)


@task
def check_infrastructure(checkout: ci.Checkout, workdir: Path) -> Check:
    """`terraform fmt -check`, `validate` and `test` on a copy of the checkout's infra/."""
    started = time.perf_counter()
    steps = ci.terraform_checks(checkout.path / "infra", workdir / "terraform")
    create_table_artifact(
        key="ci-infra", table=render.check_rows(steps), description=f"Terraform checks at {checkout.sha[:12]}"
    )
    return ci.steps_result("infrastructure", steps, round(time.perf_counter() - started, 1))


@task
def publish_summary(summary: ci.Summary) -> None:
    """Each check, its result and its duration, as the run's summary artifact."""
    create_markdown_artifact(
        key="ci-summary", markdown=render.ci_summary_markdown(summary), description=f"CI for {summary.sha}"
    )
    logger = get_run_logger()
    (logger.info if summary.passed else logger.error)(
        "CI %s for %s", "passed" if summary.passed else f"FAILED ({', '.join(summary.failed)})", summary.sha
    )


@task
def emit_ci_passed(summary: ci.Summary, retrain: list[str]) -> None:
    """`mlops.ci.passed` for `mlops.commit.<sha>`, one per use case in `retrain` (its `mlops.use-case` label): the
    trigger on continuous-training/retrain starts CT of that use case with this commit. With none to retrain,
    one event without the label, which the trigger does not match."""
    resource = {"prefect.resource.id": f"mlops.commit.{summary.sha}", "prefect.resource.name": summary.sha[:12]}
    folders = use_cases()
    for name in retrain or [None]:
        labels = {USE_CASE_LABEL: name} if name else {}
        use_case = name if name in folders else None
        emit_event(event=CI_PASSED, resource={**resource, **labels}, payload=ci.event_payload(summary, use_case))
    get_run_logger().info(
        "emitted %s for mlops.commit.%s: retrain %s", CI_PASSED, summary.sha, ", ".join(retrain) or "nothing"
    )
