"""Integration-test helpers: run the CLI in this process on a state root, build the config
it builds, and isolate the environment (the test profile, no inherited HMMTRADER_*
sections, the MLflow URIs that Registry writes into os.environ restored afterwards)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hmmtrader.cli import run
from tests.profile import PROFILE
from trading.settings import AppConfig, load_settings

_INHERITED = re.compile(
    r"HMMTRADER_(REGIME|POLICY|DRIFT|REGISTRY|FEATURES|STRATEGY|BACKTEST|CANARY|FLOWS|SYNTHETIC)__"
)


@contextmanager
def isolated_env(overrides: dict[str, str]) -> Iterator[None]:
    """The test profile plus `overrides`, for the block (and nothing inherited)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key == "HMMTRADER_HOME" or _INHERITED.match(key):
                mp.delenv(key)
        for key, value in {**PROFILE, **overrides}.items():
            mp.setenv(key, value)
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield
    import mlflow

    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def cli(home: Path, *args: str) -> int:
    return run(["--home", str(home), *args])


def config_for(home: Path) -> AppConfig:
    """What the CLI builds for --home (settings from configs/ and the environment)."""
    config = load_settings()
    return config.model_copy(update={"settings": config.settings.model_copy(update={"home": home})})
