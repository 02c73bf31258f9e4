"""Process-wide environment defaults: no telemetry from any library we embed, and no
caches written outside the checkout and the system temp directory."""

import os
import tempfile

_OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # matplotlib keeps its font cache here instead of ~/.cache/matplotlib
    "MPLCONFIGDIR": os.path.join(tempfile.gettempdir(), "hmmtrader-matplotlib"),
}


def offline_defaults() -> dict[str, str]:
    """The variables that keep every embedded library offline (for a child's environment)."""
    return dict(_OFFLINE_DEFAULTS)


def disable_telemetry() -> None:
    for key, value in _OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
