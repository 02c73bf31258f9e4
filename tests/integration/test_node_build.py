"""Paper and testnet nodes build offline (no connection is attempted), live refuses without
both opt-ins, and the Binance environment is always the adapter's enum: no combination of
strings and environment variables reaches live endpoints unless live was requested."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli_env import cli, config_for, isolated_env
from tests.integration.serving_env import model_and_rows, register, registry_at
from tests.integration.worlds import served_home
from trading.errors import InputError
from trading.node.session import NodeOptions, run_node
from trading.node.venues import (
    LIVE_HOSTS,
    NodeSecrets,
    VenueConfigs,
    binance_configs,
    check_mode,
    endpoints,
)

pytestmark = [pytest.mark.integration]

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
ENV_COMBOS = [
    {},
    {"HMMTRADER_NODE__MODE": "live"},
    {"TRADING_ENABLED": "true"},
    {"BINANCE_API_KEY": "live-key", "BINANCE_API_SECRET": "live-secret"},
    {"BINANCE_ENVIRONMENT": "LIVE", "BINANCE_TESTNET": "false"},
    {"TRADING_ENABLED": "true", "HMMTRADER_NODE__MODE": "live", "BINANCE_API_KEY": "k",
     "BINANCE_API_SECRET": "s"},
]  # fmt: skip
TESTNET_KEYS = {"BINANCE_TESTNET_API_KEY": "tn-key", "BINANCE_TESTNET_API_SECRET": "tn-secret"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared served world: version 1 (k=4) in production, version 2 (k=3)."""
    with isolated_env({}):
        return served_home(tmp_path_factory.mktemp("node-build") / "home")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any attempt to open a network connection is recorded and fails."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts


def _live_hosts(urls: dict[str, str]) -> list[str]:
    return [u for u in urls.values() if any(h in u for h in LIVE_HOSTS)]


@pytest.mark.parametrize("env", ENV_COMBOS, ids=lambda e: ",".join(e) or "plain")
@pytest.mark.parametrize("mode", ["paper", "testnet"])
def test_environment_is_the_enum_and_never_live_unless_asked(
    mode: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nautilus_trader.adapters.binance.common.enums import BinanceEnvironment

    for key, value in {**env, **TESTNET_KEYS}.items():
        monkeypatch.setenv(key, value)
    configs = binance_configs(check_mode(mode), SYMBOLS, NodeSecrets())
    urls = endpoints(configs)
    assert isinstance(configs.data.environment, BinanceEnvironment)
    if mode == "testnet":
        assert configs.data.environment is BinanceEnvironment.TESTNET
        assert configs.execution.environment is BinanceEnvironment.TESTNET
        assert _live_hosts(urls) == [], urls
        assert configs.data.api_key == "tn-key"  # never the live key
    else:  # paper: the live public market data, no keys, fills in the sandbox
        assert configs.execution is None and configs.data.api_key is None
        assert urls["execution_http"].startswith("sandbox")
        assert _live_hosts({k: v for k, v in urls.items() if k.startswith("execution")}) == []


def test_a_plain_string_would_have_been_live() -> None:
    """The trap the enum avoids: the adapter accepts the string and resolves it to LIVE."""
    from nautilus_trader.adapters.binance import BinanceAccountType, BinanceDataClientConfig

    bad = BinanceDataClientConfig(account_type=BinanceAccountType.SPOT, environment="TESTNET")
    assert _live_hosts(endpoints(VenueConfigs(bad, None)))
    for text in ("TESTNET", "Testnet", "LIVE", "demo", ""):
        with pytest.raises(InputError, match="unknown node mode"):
            check_mode(text)


@pytest.mark.parametrize(
    ("env", "flag", "missing"),
    [
        ({}, False, ["TRADING_ENABLED=true", "--live flag"]),
        ({"TRADING_ENABLED": "true"}, False, ["--live flag"]),
        ({"TRADING_ENABLED": "false"}, True, ["TRADING_ENABLED=true"]),
        ({}, True, ["TRADING_ENABLED=true"]),
    ],
)
def test_live_refuses_without_both_opt_ins(
    home: Path,
    env: dict[str, str],
    flag: bool,
    missing: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_network: list[object],
) -> None:
    monkeypatch.delenv("TRADING_ENABLED", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = ["node", "--mode", "live", "--symbols", "BTCUSDT"] + (["--live"] if flag else [])
    assert cli(home, *args) == 1
    err = capsys.readouterr().err
    assert "refusing to start a LIVE node" in err
    for item in missing:
        assert item in err
    assert no_network == []


def test_live_flag_with_another_mode_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(home, "node", "--mode", "paper", "--live") == 1
    assert "--live is only for --mode live" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["paper", "testnet"])
def test_paper_and_testnet_nodes_build_offline(
    mode: str, home: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[object]
) -> None:
    for key, value in TESTNET_KEYS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HMMTRADER_NODE__KILL_DB", str(home / f"{mode}.db"))
    with isolated_env({"HMMTRADER_NODE__KILL_DB": str(home / f"{mode}.db")}):
        config = config_for(home)
        lines: list[str] = []
        result = run_node(
            config, NodeOptions(mode=mode, symbols=SYMBOLS, build_only=True), echo=lines.append
        )
    assert no_network == []  # built without a single connection attempt
    clients = result.summary["clients"]
    assert clients["data"] == "BinanceDataClientConfig"
    expected_exec = (
        "SimVenueConfig" if mode == "paper" else "SpotExecClientConfig"
    )  # the Binance exec client config, with the journal
    assert clients["execution"] == expected_exec
    assert clients["environment"] == (
        "BinanceEnvironment.TESTNET" if mode == "testnet" else "BinanceEnvironment.LIVE"
    )
    text = "\n".join(lines)
    assert f"node {mode}" in text
    if mode == "testnet":
        assert "testnet.binance.vision" in text and "api.binance.com" not in text
    else:
        assert "sandbox" in text


def test_in_process_inference_follows_the_production_alias(home: Path) -> None:
    """The node's in-process inference hot-reloads when `production` moves (taking over the
    streams' history) and never takes a version that fails to load or to fit."""
    import numpy as np

    from tests.integration.serving_env import broken
    from trading.node.inference import ReloadingInference
    from trading.strategy.inference import InProcessInference

    with isolated_env({}):
        registry = registry_at(home)
        inference = ReloadingInference(registry, "production", poll_s=3600, history_rows=500)
        v1 = inference.version
        model3, ts, X = model_and_rows(3)
        v2 = 2  # the served world's K=3 version
        assert registry.load(v2)[0].n_states == model3.n_states == 3
        for i in range(200):
            inference.step("BTCUSDT", X[i], int(ts[i]))
        inference.check_now()
        assert inference.version == v1  # the alias has not moved
        registry.promote(v2, force=True, reason="test")
        inference.check_now()
        out = inference.step("BTCUSDT", X[200], int(ts[200]))
        assert inference.version == str(v2) and inference.swaps == 1
        # the new version continued the stream as if it had seen it from the start
        fresh = InProcessInference(registry.load(v2)[0], v2)
        for i in range(200):
            fresh.step("BTCUSDT", X[i], int(ts[i]))
        assert np.array_equal(out, fresh.step("BTCUSDT", X[200], int(ts[200])))
        v3 = register(registry, broken(model3), ts, X, "reload-broken")
        # promote refuses it (load, then move); an out-of-band move (the MLflow UI) does not
        registry.client.set_registered_model_alias(registry.name, "production", str(v3))
        inference.check_now()
        inference.step("BTCUSDT", X[201], int(ts[201]))
        assert inference.version == str(v2)  # still trading v2
        # the guard did not follow the alias: version 3 has no passed canary (never loaded)
        assert f"moved to version {v3} outside promote/rollback" in inference.anomaly
        assert f"version {v2} is still served" in inference.anomaly
        assert inference.last_error is None


LIVE_OPT_INS = {"TRADING_ENABLED": "true", "BINANCE_API_KEY": "k", "BINANCE_API_SECRET": "s"}


@pytest.mark.parametrize("mode", ["paper", "testnet"])
def test_an_exchange_url_points_paper_and_testnet_elsewhere(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--exchange-url` (or node.exchange_url): REST there, market streams at ws://host:port,
    the WebSocket API at /ws-api/v3; the environment stays the enum (keys, account type)."""
    from nautilus_trader.adapters.binance.common.enums import BinanceEnvironment

    for key, value in TESTNET_KEYS.items():
        monkeypatch.setenv(key, value)
    configs = binance_configs(mode, SYMBOLS, NodeSecrets(), "http://127.0.0.1:8090")
    urls = endpoints(configs)
    assert urls["data_http"] == "http://127.0.0.1:8090"
    assert urls["data_ws"] == "ws://127.0.0.1:8090"
    assert _live_hosts(urls) == []
    if mode == "testnet":
        assert urls["execution_ws"] == "ws://127.0.0.1:8090/ws-api/v3"
        assert configs.execution.environment is BinanceEnvironment.TESTNET


@pytest.mark.parametrize("source", ["flag", "config"])
def test_an_exchange_url_is_never_applied_silently_to_live(
    tmp_path: Path,
    source: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_network: list[object],
) -> None:
    """Live with both opt-ins and an exchange URL (on the command line or in the
    configuration) is refused unless --live-exchange-url says so; then it is built with
    that URL, and without any override live resolves to Binance's live hosts."""
    with isolated_env({}):  # a copy of its own: other tests here move production
        home = served_home(tmp_path / "home")
    for key, value in LIVE_OPT_INS.items():
        monkeypatch.setenv(key, value)
    url = "http://127.0.0.1:8090"
    args = ["node", "--mode", "live", "--live", "--symbols", "btcusdt"]
    if source == "flag":
        args += ["--exchange-url", url]
    else:
        monkeypatch.setenv("HMMTRADER_NODE__EXCHANGE_URL", url)
    assert cli(home, *args) == 1
    err = capsys.readouterr().err
    assert "refusing to point a LIVE node at http://127.0.0.1:8090" in err
    assert "--live-exchange-url" in err
    assert no_network == []

    config = config_for(home)
    opts = NodeOptions(mode="live", symbols=["BTCUSDT"], live=True, build_only=True,
                       exchange_url=url if source == "flag" else None,
                       live_exchange_url=True)  # fmt: skip
    said: list[str] = []
    result = run_node(config, opts, echo=said.append)
    assert "market data: ws://127.0.0.1:8090; execution: http://127.0.0.1:8090" in said
    assert (
        result.summary["clients"]["execution"] == "SpotExecClientConfig"
    )  # the Binance exec client config, with the journal
    monkeypatch.delenv("HMMTRADER_NODE__EXCHANGE_URL", raising=False)
    live = endpoints(binance_configs("live", SYMBOLS, NodeSecrets()))
    assert len(_live_hosts(live)) == 4, live  # no override: Binance's live hosts
    assert no_network == []


def test_a_malformed_exchange_url_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["node", "--mode", "paper", "--symbol", "BTCUSDT.BINANCE",  # the old form still works
            "--exchange-url", "127.0.0.1:8090/api"]  # fmt: skip
    assert cli(home, *args) == 1
    assert "write it as http://HOST:PORT" in capsys.readouterr().err
