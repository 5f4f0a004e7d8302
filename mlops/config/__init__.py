"""The one config a team writes for its use case, `mlops.yaml`, validated by pydantic; and where the stack lives.

Every layer imports its names from here: the sections (sections.py: data and model; operations.py: how it runs),
`Config` (model.py), loading (loading.py) and the stack's settings (stack.py).
"""

from mlops.config.loading import (
    DEFAULT_CONFIG,
    check_user_code,
    config_for_model,
    config_named,
    config_path,
    load_config,
    stack_settings,
    stack_use_cases,
    use_case_parameter,
    use_cases,
)
from mlops.config.model import (
    DRIFT_SWEEP,
    METRICS,
    OPERATIONAL_SECTIONS,
    POLICY_KINDS,
    USE_CASE_LABEL,
    Config,
    PolicyKind,
)
from mlops.config.operations import (
    CAPTURE_DIR,
    CAPTURE_PARTITIONS,
    CAPTURED_AT,
    LATENCY_MS,
    NOTIFICATION_EVENTS,
    PREDICTION,
    REQUEST_ID,
    ROW,
    WEBHOOK_URL_ENV,
    CaptureSettings,
    Delivery,
    Feedback,
    LoadTest,
    ModelCard,
    Notifications,
    Serving,
    Slo,
    Tracking,
    captured_column,
)
from mlops.config.sections import (
    BUILTIN_ESTIMATORS,
    IMPORT_PATH,
    Compute,
    ConfigError,
    CustomMetric,
    Dataset,
    Drift,
    Features,
    FileSource,
    Gates,
    PythonSource,
    Quality,
    Source,
    Split,
    SqlSource,
    Strict,
    Training,
    Window,
)
from mlops.config.stack import Stack, StackSettings
from mlops.usercode import PROJECT_ROOT

__all__ = [
    "BUILTIN_ESTIMATORS", "CAPTURED_AT", "CAPTURE_DIR", "CAPTURE_PARTITIONS", "DEFAULT_CONFIG", "DRIFT_SWEEP",
    "IMPORT_PATH", "LATENCY_MS", "METRICS", "NOTIFICATION_EVENTS", "OPERATIONAL_SECTIONS", "POLICY_KINDS",
    "PREDICTION", "PROJECT_ROOT", "REQUEST_ID", "ROW", "USE_CASE_LABEL", "WEBHOOK_URL_ENV", "CaptureSettings",
    "Compute", "Config", "ConfigError", "CustomMetric", "Dataset", "Delivery", "Drift", "Features", "Feedback",
    "FileSource", "Gates", "LoadTest", "ModelCard", "Notifications", "PolicyKind", "PythonSource", "Quality",
    "Serving", "Slo", "Source", "Split", "SqlSource", "Stack", "StackSettings", "Strict", "Tracking", "Training",
    "Window", "captured_column", "check_user_code", "config_for_model", "config_named", "config_path", "load_config",
    "stack_settings", "stack_use_cases", "use_case_parameter", "use_cases",
]  # fmt: skip
