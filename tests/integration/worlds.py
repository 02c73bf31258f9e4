"""The integration tests' shared worlds (built once per run, see tests.shared), on the
test profile (6-hour synthetic days, small HMM search), and private copies of them.

trained  two synthetic days (2025-01-01, -02) of BTCUSDT and ETHUSDT, validated, FEATURES_V1
         of the first, version 1 trained on it through the CLI (the `candidate`; no
         production)
thin     the same on a thinner market (2 quotes/s), version 1 promoted (forced) and
         version 2 a partial fit of it (the newest): the node, dashboard and quickcheck
         tests' world (what they test is the node and the stack, not the market)
served   a registry only: version 1 (K=4, production) and version 2 (K=3), fitted on six
         synthetic hours of BTCUSDT and registered directly
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.cli_env import cli, isolated_env
from tests.integration.serving_env import model_and_rows, register, registry_at
from tests.profile import DAY1, DAY2, SYMBOLS, THIN
from tests.shared import copy_world, shared_dir

_SYMBOLS = ",".join(SYMBOLS)


def _ingest_and_train(home: Path) -> None:
    assert cli(home, "ingest", "synthetic", "--symbols", _SYMBOLS, "--start", DAY1,
               "--days", "2", "--seed", "7") == 0  # fmt: skip
    # the gate's recorded results travel with every copy: a backtest or replay of these
    # days in a copy is not validated again
    assert cli(home, "validate", "--symbols", _SYMBOLS, "--start", DAY1, "--end", DAY2,
               "--kinds", "quotes,trades") == 0  # fmt: skip
    assert cli(home, "features", "--symbols", _SYMBOLS, "--start", DAY1, "--end", DAY1) == 0
    assert cli(home, "train", "--symbols", _SYMBOLS, "--start", DAY1, "--end", DAY1) == 0


def _build_trained(home: Path) -> None:
    with isolated_env({}):
        _ingest_and_train(home)


def _build_thin(home: Path) -> None:
    with isolated_env(THIN):
        _ingest_and_train(home)
        assert cli(home, "promote", "1", "--force", "--reason", "shared test world") == 0
        assert cli(home, "train", "--symbols", _SYMBOLS, "--start", DAY1, "--end", DAY1,
                   "--update", "production") == 0  # fmt: skip


def _build_served(home: Path) -> None:
    with isolated_env({}):
        m4, ts, X = model_and_rows(4)
        m3, _, _ = model_and_rows(3)
        registry = registry_at(home)
        assert register(registry, m4, ts, X, "k4") == 1
        assert register(registry, m3, ts, X, "k3") == 2
        registry.promote(1, force=True, reason="shared test world")


def trained_world() -> Path:
    """The `trained` world itself: read it, never write to it."""
    return shared_dir("trained", _build_trained)


def trained_home(dest: Path) -> Path:
    """A private copy of the `trained` world."""
    return copy_world(trained_world(), dest)


def thin_home(dest: Path) -> Path:
    return copy_world(shared_dir("thin", _build_thin), dest)


def served_home(dest: Path) -> Path:
    return copy_world(shared_dir("served", _build_served), dest)
