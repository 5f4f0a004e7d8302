"""The shadow gate's task: production serves the champion with the candidate in shadow; once production traffic
gave the candidate enough rows, compare the two (mlops/domain/shadow.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from mlops import waiting
from mlops.config import Config
from mlops.domain import shadow
from mlops.domain.checks import Check
from mlops.serving.capture import count_captured, read_captured
from tasks.feedback import PRODUCTION, kept_labels, model_classes

POLL_S = 2.0  # the capture is written every serving.capture.flush_seconds: a faster poll finds nothing more


@task
def judge_shadow(config: Config, champion: str, candidate: str, since: datetime) -> list[Check]:
    """Wait until production traffic since `since` gave `delivery.shadow_requests` rows answered by both (or
    `delivery.shadow_seconds` passed), then check the candidate against the champion on those rows."""
    logger = get_run_logger()
    where = {"environment": f"{PRODUCTION}-shadow", "versions": [candidate], "since": since}
    wanted = config.delivery.shadow_requests

    def enough() -> int | None:
        rows = count_captured(config.capture_dir, config.name, **where)
        return rows if rows >= wanted else None

    try:
        waiting.wait_for(
            enough,
            timeout=config.delivery.shadow_seconds,
            interval=POLL_S,
            what=f"{wanted} rows of production traffic scored by v{candidate} in shadow",
        )
    except waiting.TimedOut as exc:
        logger.warning("%s: judging on what came", exc)
    served = read_captured(config.capture_dir, config.name, environment=PRODUCTION, versions=[champion], since=since)
    unseen = read_captured(config.capture_dir, config.name, **where)
    found = shadow.evidence(served, unseen, kept_labels(config), model_classes(config, [candidate]), config)
    gates = shadow.checks(found, config)
    create_table_artifact(
        key="shadow-evidence",
        table=[{"": k, "value": v} for k, v in found.model_dump().items()],
        description=f"v{candidate} in shadow beside champion v{champion} on production traffic since "
        f"{since:%Y-%m-%d %H:%M:%S} UTC",
    )
    logger.info("shadow v%s beside v%s: %s", candidate, champion, found.model_dump())
    return gates


def now() -> datetime:
    return datetime.now(UTC)
