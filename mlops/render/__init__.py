"""Every Prefect artifact's markdown and table rows, in one place. Pure: typed results in, text out.

Tasks publish what these functions return; none of them touches Prefect, MLflow or a file. One
module per stage of the loop, all named here: `from mlops import render; render.gates_markdown(...)`.
"""

from mlops.render.ci import ci_summary_markdown, latency_rows, suite_output_markdown, suite_rows
from mlops.render.common import (
    check_rows,
    checks_summary,
    checks_table,
    key_values,
    number,
    table,
    verdict,
    violations_markdown,
)
from mlops.render.delivery import (
    gates_markdown,
    history_rows,
    history_table,
    plan_markdown,
    reconciliation_markdown,
)
from mlops.render.monitoring import drift_markdown, feedback_markdown, scoring_markdown, scoring_refused_markdown
from mlops.render.training import (
    DELIVERY_HEADING,
    ct_summary_markdown,
    decision_markdown,
    evaluation_rows,
    model_card,
    with_delivery,
)

__all__ = [
    "DELIVERY_HEADING",
    "check_rows",
    "checks_summary",
    "checks_table",
    "ci_summary_markdown",
    "ct_summary_markdown",
    "decision_markdown",
    "drift_markdown",
    "evaluation_rows",
    "feedback_markdown",
    "gates_markdown",
    "history_rows",
    "history_table",
    "key_values",
    "latency_rows",
    "model_card",
    "number",
    "plan_markdown",
    "reconciliation_markdown",
    "scoring_markdown",
    "scoring_refused_markdown",
    "suite_output_markdown",
    "suite_rows",
    "table",
    "verdict",
    "violations_markdown",
    "with_delivery",
]
