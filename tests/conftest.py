"""Shared fixtures: every test gets its own state root; nothing touches ./var."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.shared import SHARED_ENV
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


@pytest.fixture(scope="session", autouse=True)
def _shared_worlds(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> None:
    """Where tests.shared builds the run's worlds: the base temp every xdist worker of this
    run shares (the parent of each worker's own)."""
    base = tmp_path_factory.getbasetemp()
    os.environ[SHARED_ENV] = str(base if worker_id == "master" else base.parent)


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


# The heaviest modules first (their measured share of a run), so that the two xdist
# workers (whole files each, in this order) finish close together; the rest keep their
# collection order.
HEAVY_FIRST = (  # longest first (seconds of one worker, 2026-12-05 on this machine)
    "test_flows_nights.py",  # ~200: five flow nights, simulate, the Dask night
    "test_node.py",  # ~110
    "test_exchange_node.py",  # ~100: the exchange hour
    "test_backtest.py",  # ~75
    "test_flows_deploy.py",  # ~70
    "test_registry.py",  # ~60
    "test_demo.py",  # ~55
    "test_serving.py",  # ~50
    "test_real_month.py",  # ~45
    "test_exchange_restart.py",  # ~40
    "test_dashboard.py",  # ~35
    "test_serving_fuzz.py",
    "test_quickcheck.py",
    "test_ops.py",
    "test_node_build.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
