from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trading.errors import ConfigError
from trading.settings import DEFAULT_CONFIG_DIR, load_settings


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    return target


def test_defaults_have_real_binance_metadata() -> None:
    config = load_settings()
    btc = config.symbol("btcusdt")
    eth = config.symbol("ETHUSDT")
    assert (btc.tick_size, btc.lot_size, btc.min_notional_usd) == (0.01, 0.00001, 5.0)
    assert (eth.tick_size, eth.lot_size) == (0.01, 0.0001)
    assert btc.price_precision == 2 and btc.size_precision == 5 and eth.size_precision == 4
    assert btc.taker_fee == 0.001
    assert config.instruments.venue == "BINANCE"


def test_bad_yaml_value_names_file_key_and_reason(config_dir: Path) -> None:
    path = config_dir / "symbols.yaml"
    path.write_text(path.read_text().replace("tick_size: 0.01", "tick_size: -0.01", 1))
    with pytest.raises(ConfigError) as err:
        load_settings(config_dir)
    message = str(err.value)
    assert str(path) in message
    assert "symbols.BTCUSDT.tick_size" in message
    assert "greater than 0" in message


def test_unknown_key_is_rejected(config_dir: Path) -> None:
    path = config_dir / "settings.yaml"
    path.write_text(path.read_text() + "\nrest_typo: 1\n")
    with pytest.raises(
        ConfigError, match=r"settings.yaml: rest_typo: Extra inputs are not permitted"
    ):
        load_settings(config_dir)


def test_broken_yaml_is_a_config_error(config_dir: Path) -> None:
    (config_dir / "settings.yaml").write_text("home: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config_dir)


def test_environment_overrides_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HMMTRADER_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HMMTRADER_REST__BASE_URL", "http://127.0.0.1:9")
    config = load_settings()
    assert config.home == tmp_path / "state"
    assert config.settings.rest.base_url == "http://127.0.0.1:9"
    # untouched nested keys keep the YAML value
    assert config.settings.rest.weight_limit_1m == 6000


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HMMTRADER_SYNTHETIC__N_REGIMES", "9")
    with pytest.raises(ConfigError, match="environment variable HMMTRADER_SYNTHETIC__N_REGIMES"):
        load_settings()


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HMMTRADER_HOME", raising=False)
    (tmp_path / ".env").write_text("HMMTRADER_HOME=/tmp/from-dotenv\n")
    assert load_settings(DEFAULT_CONFIG_DIR).home == Path("/tmp/from-dotenv")


def test_unknown_symbol_lists_configured_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown symbol 'DOGEUSDT'.*BTCUSDT, ETHUSDT"):
        load_settings().symbol("DOGEUSDT")


def test_dotenv_with_other_tools_variables_and_empty_tokens(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A .env made from .env.example: unprefixed variables (TRADING_ENABLED, BINANCE_*,
    PREFECT_*) are not settings, and an empty token means no token."""
    for key in ("HMMTRADER_SERVING__TOKEN", "HMMTRADER_OPS__TOKEN", "HMMTRADER_NODE__MODE"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / ".env").write_text(
        "TRADING_ENABLED=false\nBINANCE_API_KEY=\nPREFECT_API_URL=http://127.0.0.1:4200/api\n"
        "HMMTRADER_SERVING__TOKEN=\nHMMTRADER_OPS__TOKEN=  \nHMMTRADER_NODE__MODE=replay\n"
    )
    monkeypatch.chdir(tmp_path)
    settings = load_settings().settings
    assert settings.node.mode == "replay"
    assert settings.serving.token is None and settings.ops.token is None
    (tmp_path / ".env").write_text("HMMTRADER_NODE__MODE=LIVE\n")
    with pytest.raises(ConfigError, match=r"node\.mode"):
        load_settings()
