"""Process-wide environment defaults: no telemetry from any library we embed."""

import os

_OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}


def disable_telemetry() -> None:
    for key, value in _OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
