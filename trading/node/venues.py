"""Which venue each node mode talks to, and the opt-ins live trading needs.

The Binance adapter takes `environment=BinanceEnvironment.*`; a plain string such as
"TESTNET" is accepted without a word and resolves to LIVE endpoints and keys (see
LIBRARY_NOTES). So the environment is derived here from the validated mode, only ever as
the enum, and `endpoints()` reports the hosts a built configuration would reach.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trading.errors import ConfigError, InputError

MODES = ("replay", "paper", "testnet", "live")
LIVE_HOSTS = ("api.binance.com", "stream.binance.com", "ws-api.binance.com")
LIVE_OPT_IN = "TRADING_ENABLED"
# how a boolean is often spelled: echoed back in the error (any other value is not)
_BOOLEAN_LOOKING = frozenset(
    {"1", "0", "y", "n", "t", "f", "yes", "no", "on", "off", "true", "false", "enabled", "disabled"}
)


class NodeSecrets(BaseSettings):
    """Plain (unprefixed) variables from the environment or `.env`: the live opt-in and
    the Binance keys. Never logged. Names are case-sensitive, and the opt-in has exactly
    one spelling, TRADING_ENABLED=true (false, empty or unset: off; anything else is
    refused rather than guessed)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    trading_enabled: bool = Field(default=False, validation_alias=LIVE_OPT_IN)
    binance_api_key: SecretStr | None = Field(default=None, validation_alias="BINANCE_API_KEY")
    binance_api_secret: SecretStr | None = Field(
        default=None, validation_alias="BINANCE_API_SECRET"
    )
    binance_testnet_api_key: SecretStr | None = Field(
        default=None, validation_alias="BINANCE_TESTNET_API_KEY"
    )
    binance_testnet_api_secret: SecretStr | None = Field(
        default=None, validation_alias="BINANCE_TESTNET_API_SECRET"
    )

    @field_validator("trading_enabled", mode="before")
    @classmethod
    def _one_spelling(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if value in ("true", "false", ""):
            return value == "true"
        shown = f"{value!r}" if str(value).strip().lower() in _BOOLEAN_LOOKING else "another value"
        raise ValueError(
            f"must be exactly true (live trading allowed) or false, got {shown}: other "
            "spellings (1, yes, on, True, ...) are refused, not guessed"
        )


def load_secrets() -> NodeSecrets:
    from pydantic import ValidationError

    _refuse_other_case()
    try:
        return NodeSecrets()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(f"{name} {str(err['msg']).removeprefix('Value error, ')}") from None


def _refuse_other_case() -> None:
    """`trading_enabled=true` or `Binance_Api_Key=...` are not read (the names are
    case-sensitive): say so by name instead of ignoring them."""
    from pydantic_settings import DotEnvSettingsSource

    names = {str(info.validation_alias) for info in NodeSecrets.model_fields.values()}
    dotenv = DotEnvSettingsSource(NodeSecrets, case_sensitive=True).env_vars
    for where, found in (("the environment", os.environ), (".env", dotenv)):
        for name in found:
            if name != name.upper() and name.upper() in names:
                raise ConfigError(
                    f"variable {name} in {where} is not read: variable names are "
                    f"case-sensitive, write {name.upper()}"
                )


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"unknown node mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def require_live_opt_in(mode: str, live_flag: bool, secrets: NodeSecrets) -> None:
    """Live trading needs both TRADING_ENABLED=true and --live; say exactly what is missing.
    --live with another mode is refused too (it would be a typo with real money)."""
    if mode != "live":
        if live_flag:
            raise InputError(f"--live is only for --mode live (this node is --mode {mode})")
        return
    missing = []
    if not secrets.trading_enabled:
        missing.append("TRADING_ENABLED=true in the environment or .env")
    if not live_flag:
        missing.append("the --live flag on the command line")
    if missing:
        raise InputError(
            "refusing to start a LIVE node (real orders, real money): missing "
            + " and ".join(missing)
            + ". Both opt-ins are required; use --mode paper or --mode testnet to try it first."
        )
    if secrets.binance_api_key is None or secrets.binance_api_secret is None:
        raise InputError(
            "live mode needs BINANCE_API_KEY and BINANCE_API_SECRET in the environment or .env"
        )


def binance_environment(mode: str) -> Any:
    """The adapter's enum for a mode's market data (paper reads the live public feed)."""
    from nautilus_trader.adapters.binance.common.enums import BinanceEnvironment

    check_mode(mode)
    if mode == "testnet":
        return BinanceEnvironment.TESTNET
    if mode in ("paper", "live"):
        return BinanceEnvironment.LIVE
    raise InputError("replay mode has no Binance environment (it plays the lake)")


@dataclass(frozen=True)
class VenueConfigs:
    data: Any  # BinanceDataClientConfig
    execution: Any | None  # BinanceExecClientConfig; None: sandbox fills (paper)


def exchange_urls(url: str) -> dict[str, str]:
    """The adapter's base URLs for an exchange at `url` (http://host:port): REST there,
    market streams at ws://host:port, the WebSocket API at ws://host:port/ws-api/v3."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise InputError(
            f"exchange URL {url!r}: write it as http://HOST:PORT (e.g. http://127.0.0.1:8090, "
            "where `hmmtrader exchange` listens)"
        )
    ws = ("wss" if parts.scheme == "https" else "ws") + "://" + parts.netloc
    return {"http": f"{parts.scheme}://{parts.netloc}", "ws": ws, "ws_api": ws + "/ws-api/v3"}


def check_exchange_url(mode: str, url: str | None, live_flag: bool) -> str | None:
    """A base-URL override is for paper and testnet; a live node takes one only with the
    explicit --live-exchange-url flag, never from configuration alone."""
    if url is None or mode != "live" or live_flag:
        return url
    raise InputError(
        f"refusing to point a LIVE node at {url}: an exchange URL override (--exchange-url or "
        "node.exchange_url) applies to paper and testnet only; for live, also pass "
        "--live-exchange-url, or unset it to trade on Binance"
    )


def binance_configs(
    mode: str, symbols: list[str], secrets: NodeSecrets, exchange_url: str | None = None
) -> VenueConfigs:
    """Binance data (and, for testnet and live, execution) client configurations. Paper
    uses the public live market data without keys; testnet uses the spot testnet with
    BINANCE_TESTNET_API_KEY/SECRET; live uses BINANCE_API_KEY/SECRET. `exchange_url`
    points both clients at another Binance-compatible exchange (`hmmtrader exchange`);
    the environment enum still decides the key variables."""
    from nautilus_trader.adapters.binance import BinanceAccountType, BinanceDataClientConfig
    from nautilus_trader.config import InstrumentProviderConfig

    from trading.node.spot import SpotExecClientConfig

    environment = binance_environment(mode)
    provider = InstrumentProviderConfig(load_ids=frozenset(f"{s}.BINANCE" for s in symbols))
    if mode == "testnet":
        key, secret = secrets.binance_testnet_api_key, secrets.binance_testnet_api_secret
        if key is None or secret is None:
            raise InputError(
                "testnet mode needs BINANCE_TESTNET_API_KEY and BINANCE_TESTNET_API_SECRET "
                "(create them on testnet.binance.vision) in the environment or .env"
            )
    elif mode == "live":
        key, secret = secrets.binance_api_key, secrets.binance_api_secret
    else:
        key = secret = None  # paper: public market data only, never an account
    api_key = key.get_secret_value() if key else None
    api_secret = secret.get_secret_value() if secret else None
    urls = exchange_urls(exchange_url) if exchange_url else None
    data = BinanceDataClientConfig(
        api_key=api_key,
        api_secret=api_secret,
        account_type=BinanceAccountType.SPOT,
        environment=environment,
        instrument_provider=provider,
        base_url_http=urls["http"] if urls else None,
        base_url_ws=urls["ws"] if urls else None,
    )
    execution = None
    if mode in ("testnet", "live"):
        execution = SpotExecClientConfig(
            api_key=api_key,
            api_secret=api_secret,
            account_type=BinanceAccountType.SPOT,
            environment=environment,
            instrument_provider=provider,
            base_url_http=urls["http"] if urls else None,
            base_url_ws=urls["ws_api"] if urls else None,
            symbols=tuple(symbols),
        )
    return VenueConfigs(data, execution)


def account_of(mode: str, configs: VenueConfigs) -> str:
    """The venue account a session trades: its mode (the keys) and where its orders go."""
    return f"{mode}@{endpoints(configs)['execution_http']}"


def with_journal(
    configs: VenueConfigs, state_db: str, session_id: int, account: str
) -> VenueConfigs:
    """The execution client told where the session's order journal is (its spot
    positions are rebuilt from it after a crash)."""
    import msgspec

    if configs.execution is None:
        return configs
    execution = msgspec.structs.replace(
        configs.execution, state_db=state_db, session_id=session_id, account=account
    )
    return VenueConfigs(configs.data, execution)


def endpoints(configs: VenueConfigs) -> dict[str, str]:
    """The hosts the built clients would reach, resolved the way the adapter resolves them
    (`environment or LIVE`, then its URL tables), without connecting."""
    from nautilus_trader.adapters.binance.common.urls import get_http_base_url, get_ws_base_url

    out = {}
    for name, cfg in (("data", configs.data), ("execution", configs.execution)):
        if cfg is None:
            out[f"{name}_http"] = out[f"{name}_ws"] = "sandbox (simulated, in process)"
            continue
        from nautilus_trader.adapters.binance.common.enums import BinanceEnvironment

        env = cfg.environment or BinanceEnvironment.LIVE
        out[f"{name}_http"] = cfg.base_url_http or get_http_base_url(cfg.account_type, env, False)
        out[f"{name}_ws"] = cfg.base_url_ws or get_ws_base_url(cfg.account_type, env, False)
    return out
