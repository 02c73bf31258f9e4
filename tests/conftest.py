"""Shared fixtures: every test gets its own state root; nothing touches ./var."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from trading.data.lake import Lake
from trading.env import disable_telemetry
from trading.settings import AppConfig, load_settings

FIXTURES = Path(__file__).parent / "fixtures"
BINANCE_SAMPLES = FIXTURES / "binance"

disable_telemetry()
# Prefect keeps its home (profiles, local results) in the temp directory, never ~/.prefect;
# no test talks to a Prefect API it did not start.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="hmmtrader-test-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "home"
    monkeypatch.setenv("HMMTRADER_HOME", str(state))
    return state


@pytest.fixture
def config(home: Path) -> AppConfig:
    loaded = load_settings()
    assert loaded.home == home
    return loaded


@pytest.fixture
def lake(home: Path) -> Lake:
    return Lake(home / "lake")


def lake_files(root: Path) -> list[Path]:
    """Every file under a lake root, temp files included."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
