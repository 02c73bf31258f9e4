"""Typed configuration: YAML in configs/, overridden by HMMTRADER_* variables and .env.

Load once at the edge (CLI, flow, server) with `load_settings()` and pass it in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from trading.config_sources import (
    ENV_PREFIX,
    check_variable_names,
    describe_source_error,
    describe_validation_error,
    read_variables,
    read_yaml_mapping,
)
from trading.errors import ConfigError, InputError
from trading.features.descriptor import (
    BarParams,
    FeatureParams,
    FeatureSet,
    bars_v1,
    features_v1,
)
from trading.frozen import DAY_S, Frozen
from trading.nightly.config import FlowSettings
from trading.quality.checks import CHECK_NAMES, DEFAULT_SEVERITY, Severity
from trading.regime.config import DriftSettings, PolicySettings, RegimeSettings, RegistrySettings
from trading.strategy.config import BacktestSettings, CanarySettings, StrategySettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "configs"


def _blank_is_none(value: Any) -> Any:
    """`TOKEN=` (empty, as in .env.example) means no token, not an empty one."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


class SymbolSpec(Frozen):
    """Exchange metadata of one spot instrument."""

    base: str = Field(min_length=1)
    quote: str = Field(min_length=1)
    tick_size: float = Field(gt=0)
    lot_size: float = Field(gt=0)
    min_qty: float = Field(gt=0)
    max_qty: float = Field(gt=0)
    min_notional_usd: float = Field(ge=0)
    maker_fee: float = Field(ge=-0.01, le=0.01)
    taker_fee: float = Field(ge=0, le=0.01)

    @model_validator(mode="after")
    def _qty_bounds(self) -> SymbolSpec:
        if self.min_qty > self.max_qty:
            raise ValueError(f"min_qty {self.min_qty} exceeds max_qty {self.max_qty}")
        return self

    @property
    def price_precision(self) -> int:
        return _decimals(self.tick_size)

    @property
    def size_precision(self) -> int:
        return _decimals(self.lot_size)


def _decimals(step: float) -> int:
    text = f"{step:.12f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


class SymbolsConfig(Frozen):
    venue: str = Field(default="BINANCE", pattern=r"^[A-Z0-9_]+$")
    symbols: dict[str, SymbolSpec]

    @field_validator("symbols")
    @classmethod
    def _symbol_names(cls, value: dict[str, SymbolSpec]) -> dict[str, SymbolSpec]:
        if not value:
            raise ValueError("at least one symbol is required")
        for name in value:
            if not name.isalnum() or name.upper() != name:
                raise ValueError(f"symbol {name!r} must be upper-case letters and digits")
        return value


class ArchiveSettings(Frozen):
    base_url: str = "https://data.binance.vision"
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_s: float = Field(default=1.0, ge=0, le=3600)


class RestSettings(Frozen):
    base_url: str = "https://api.binance.com"
    timeout_s: float = Field(default=10.0, gt=0, le=3600)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_s: float = Field(default=0.5, ge=0, le=3600)  # first retry delay; doubles, at most 30 s
    weight_limit_1m: int = Field(default=6000, gt=0)
    weight_headroom: float = Field(default=0.8, gt=0, le=1)
    max_retry_after_s: float = Field(default=120.0, gt=0, le=DAY_S)


class SyntheticSettings(Frozen):
    n_regimes: int = Field(default=4, ge=3, le=5)
    quote_rate_hz: float = Field(default=10.0, gt=0, le=100)
    # every regime's trade rate times this: below 1 a thinner tape (demos, tests)
    trade_rate_scale: float = Field(default=1.0, ge=0.05, le=10)
    mean_dwell_s: float = Field(default=1200.0, gt=10, le=7 * DAY_S)
    correlation: float = Field(default=0.8, ge=-1, le=1)
    # latent momentum: order-flow bursts that drift the price (see trading/data/synthetic.py)
    momentum_bp_per_s: float = Field(default=0.28, ge=0, le=5)  # std of the drift; 0: off
    momentum_halflife_s: float = Field(default=30.0, gt=0, le=86_400)  # decay of a burst
    momentum_bursts_per_h: float = Field(default=2.0, ge=0, le=3600)  # 0: Gaussian shocks
    momentum_flow: float = Field(default=0.15, ge=0, le=10)  # buyer prob. per bp/s of drift
    momentum_book: float = Field(default=0.9, ge=0, le=100)  # log(bid/ask size) per bp/s
    momentum_correlation: float = Field(default=0.9, ge=0, le=1)  # between symbols
    # each day runs from midnight for this long: shorter days for demos and tests
    day_seconds: int = Field(default=86_400, ge=3600, le=86_400)


class _RowLimits(Frozen):
    min_rows: int = Field(default=100, ge=0)  # per symbol-day file
    max_rows: int = Field(default=50_000_000, ge=1)
    # coverage: the share of the day's expected time the data covers; below this the day
    # is flagged. The expected time is the UTC day, up to now for today, and a synthetic
    # day's own length (a 3-hour test day is fully covered by 3 hours of data).
    min_coverage: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _row_bounds(self) -> _RowLimits:
        if self.min_rows > self.max_rows:
            raise ValueError(f"min_rows {self.min_rows} exceeds max_rows {self.max_rows}")
        return self


class _KindLimits(_RowLimits):
    max_gap_s: float = Field(gt=0)  # longest allowed time between consecutive rows


class _JumpLimits(Frozen):
    # price_jump: a price further than max_jump_ratio x scale from the median of the 5
    # prices before it, scale = max(jump_floor_bp, 1.4826 x the median |log return| of the
    # jump_window_rows before it). Real Binance ticks stay below 1 (floor-bound); a real
    # month of 1-minute closes below 60; a x1000 unit error is about 6,900.
    max_jump_ratio: float = Field(default=100.0, gt=0, le=1_000_000)
    jump_floor_bp: float = Field(default=10.0, gt=0, le=10_000)
    jump_window_rows: int = Field(default=300, ge=2, le=1_000_000)


class _PriceKindLimits(_KindLimits, _JumpLimits):
    pass


class QuoteLimits(_PriceKindLimits):
    max_gap_s: float = Field(default=60.0, gt=0)
    # the lower end of the sane spread range is "bid < ask" (check crossed_book)
    max_spread_bp: float = Field(default=500.0, gt=0)


class TradeLimits(_PriceKindLimits):
    max_gap_s: float = Field(default=300.0, gt=0)


class FeatureLimits(_KindLimits):
    max_gap_s: float = Field(default=5.0, gt=0)


class BarLimits(_RowLimits, _JumpLimits):
    """1-minute bars (klines): the jump check runs on the close."""

    # more missing bars in a row than this is a gap (Binance spot Jan 2024 misses none)
    max_gap_bars: int = Field(default=5, ge=0, le=1440)
    # a UTC day has 1,440 one-minute bars; coverage counts bars present / bars expected
    min_rows: int = Field(default=0, ge=0)
    max_rows: int = Field(default=1440, ge=1)
    # bar archives come in whole days: a day missing over 10 % of its bars is truncated
    min_coverage: float = Field(default=0.9, ge=0, le=1)


class QualitySettings(Frozen):
    """Thresholds and severities of the data-quality gate (`hmmtrader validate`)."""

    quotes: QuoteLimits = QuoteLimits()
    trades: TradeLimits = TradeLimits()
    features: FeatureLimits = FeatureLimits()
    bars: BarLimits = BarLimits()
    # Binance book updates (and trades) share milliseconds: by default timestamps only
    # must not decrease; trade ids must strictly increase either way.
    strict_quote_timestamps: bool = False
    strict_trade_timestamps: bool = False
    max_issue_rows_per_check: int = Field(default=10_000, ge=0)  # CSV rows; counts stay exact
    # check name -> block | warn; names left out keep their default
    checks: dict[str, Severity] = Field(default_factory=lambda: dict(DEFAULT_SEVERITY))

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        unknown = sorted(set(value) - set(CHECK_NAMES))
        if unknown:
            raise ValueError(
                f"unknown check(s) {', '.join(unknown)}: known checks are {', '.join(CHECK_NAMES)}"
            )
        return {**DEFAULT_SEVERITY, **value}

    def severity(self, check: str) -> Severity:
        return self.checks[check]


class ServingSettings(Frozen):
    """The inference server (`hmmtrader serve`) and the client the node uses to reach it."""

    host: str = "127.0.0.1"
    port: int = Field(default=8010, ge=1, le=65535)
    alias: str = Field(default="production", pattern=r"^[a-z][a-z0-9_\-]*$")  # served alias
    poll_interval_s: float = Field(default=10.0, gt=0, le=3600)  # hot-swap watcher
    # admin endpoints (/load, /promote, /rollback, /reload) need "Authorization: Bearer <token>";
    # without a token they are disabled. Set it in the environment (HMMTRADER_SERVING__TOKEN)
    token: SecretStr | None = None
    max_batch_rows: int = Field(default=4096, ge=1, le=1_000_000)  # rows per /infer request
    max_body_bytes: int = Field(default=4_194_304, ge=1024)  # larger bodies get 413
    max_streams: int = Field(default=256, ge=1, le=100_000)  # (session, symbol) filter streams
    # rows kept per stream so a newly swapped-in model takes over with the filter state it
    # would have had (the drift window is 3600 one-second rows by default)
    history_rows: int = Field(default=3600, ge=0, le=100_000)
    # a row with a standardized value beyond +-max_abs_z is out of distribution (HOLD,
    # confidence 0); None: the served model's feature-set z_clip (10 by default)
    max_abs_z: float | None = Field(default=None, gt=0)
    infer_threads: int = Field(default=1, ge=1, le=64)  # /infer computing at once (threads)
    infer_queue: int = Field(default=32, ge=0, le=10_000)  # waiting beyond: 503 + Retry-After
    body_timeout_s: float = Field(default=10.0, gt=0, le=600)  # body not in by then: 408
    keep_alive_s: float = Field(default=5.0, gt=0, le=600)  # idle keep-alive connections close
    # client side (the node's remote inference)
    url: str = "http://127.0.0.1:8010"
    timeout_s: float = Field(default=2.0, gt=0, le=600)
    connect_retries: int = Field(default=2, ge=0, le=10)  # only where nothing was sent

    _token = field_validator("token", mode="before")(_blank_is_none)


NodeMode = Literal["replay", "paper", "testnet", "live"]


class NodeSettings(Frozen):
    """The trading node (`hmmtrader node`): modes, inference, replay, kill switch, recording."""

    mode: NodeMode = "paper"  # safe default; live needs TRADING_ENABLED=true and --live
    symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"], min_length=1)
    trader_id: str = Field(default="HMMTRADER-001", pattern=r"^[A-Z0-9]+-[0-9]{3}$")
    inference: Literal["in_process", "remote"] = "in_process"  # remote: serving.url
    model_poll_s: float = Field(default=10.0, gt=0, le=3600)  # in process: alias hot reload
    history_rows: int = Field(default=3600, ge=0, le=100_000)  # replayed into a new version
    inference_retry_s: float = Field(default=1.0, ge=0, le=600)  # after a failure, wait
    # replay: the lake window and the speed (1: real time, 60: a minute per second, 0: as
    # fast as the node keeps up); start/end default to the lake's last day
    speed: float = Field(default=0.0, ge=0, le=1_000_000)
    start: str | None = None
    end: str | None = None
    starting_balance_usd: float = Field(default=10_000.0, gt=0)  # sandbox account (replay, paper)
    # paper/testnet: a Binance-compatible exchange at http://HOST:PORT (`hmmtrader exchange`)
    # instead of Binance; a live node ignores it unless --live-exchange-url is given
    exchange_url: str | None = None
    # after the venue's rate-limit answer (429/418): no new entries this long, doubling
    # while they keep coming (a 418's ban end when it says one)
    rate_limit_backoff_s: float = Field(default=30.0, gt=0, le=600)
    # paper/testnet/live: quotes and trades arrive on two connections, not always in time
    # order; each tick waits this long (market time) so they are used in order
    reorder_s: float = Field(default=0.25, ge=0, le=60)
    # no tick of any symbol for this long (wall): a market-data outage (counted, and no
    # new entry until ticks come again)
    stale_after_s: float = Field(default=5.0, gt=0, le=3600)
    kill_db: Path | None = None  # default HMMTRADER_HOME/node/node.db
    start_enabled: bool = True  # a fresh kill-switch database starts with trading enabled
    switch_poll_s: float = Field(default=0.25, gt=0, le=10)
    heartbeat_s: float = Field(default=1.0, gt=0, le=60)
    record_ticks: bool = True  # paper/testnet/live: write received ticks into the lake
    record_lake: Path | None = None  # another lake root to record into (replay too); None: home
    record_flush_s: float = Field(default=60.0, gt=0, le=3600)
    # Prometheus /metrics of the node (trading.node.metrics); port 0 turns it off
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=8070, ge=0, le=65535)
    history_points: int = Field(default=20_000, ge=100, le=1_000_000)  # dashboard history kept

    @field_validator("symbols")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [v.strip().upper().removesuffix(".BINANCE") for v in value]


class OpsSettings(Frozen):
    """The ops API (`hmmtrader ops serve`) and its CLI client (`hmmtrader ops ...`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8060, ge=1, le=65535)
    url: str = "http://127.0.0.1:8060"  # where `hmmtrader ops status|kill|enable|retrain` go
    # POSTs need it: HMMTRADER_OPS__TOKEN (environment or .env, never in the YAML)
    token: SecretStr | None = None
    prefect_api_url: str | None = None  # None: PREFECT_API_URL
    deployment: str = "nightly-retrain/nightly-retrain"  # what POST /retrain runs
    stale_after_s: float = Field(default=10.0, gt=0, le=DAY_S)  # heartbeat older: not running
    timeout_s: float = Field(default=5.0, gt=0, le=600)

    _token = field_validator("token", "prefect_api_url", mode="before")(_blank_is_none)


class DashboardSettings(Frozen):
    """The live dashboard (`hmmtrader dashboard`): the ops API plus the page, on its own port.
    Its POSTs (the kill button) use ops.token."""

    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    url: str = "http://127.0.0.1:8050"  # where `hmmtrader quickcheck` looks for it
    push_s: float = Field(default=1.0, gt=0, le=60)  # WebSocket update interval
    history_points: int = Field(default=3600, ge=10, le=100_000)  # sent to a new page
    runs_dir: Path | None = None  # past runs to open; None: HMMTRADER_HOME/runs
    max_points: int = Field(default=2000, ge=100, le=100_000)  # per series of a past run


class Settings(BaseSettings):
    """Application settings; `symbols` comes from configs/symbols.yaml."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )

    home: Path = Path("var")
    archive: ArchiveSettings = ArchiveSettings()
    rest: RestSettings = RestSettings()
    synthetic: SyntheticSettings = SyntheticSettings()
    features: FeatureParams = FeatureParams()
    bars: BarParams = BarParams()
    quality: QualitySettings = QualitySettings()
    regime: RegimeSettings = RegimeSettings()
    policy: PolicySettings = PolicySettings()
    drift: DriftSettings = DriftSettings()
    registry: RegistrySettings = RegistrySettings()
    strategy: StrategySettings = StrategySettings()
    backtest: BacktestSettings = BacktestSettings()
    canary: CanarySettings = CanarySettings()
    flows: FlowSettings = FlowSettings()
    serving: ServingSettings = ServingSettings()
    node: NodeSettings = NodeSettings()
    ops: OpsSettings = OpsSettings()
    dashboard: DashboardSettings = DashboardSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (the YAML file's content, passed by load_settings) has the lowest priority.
        # .env also holds variables of other tools (TRADING_ENABLED, BINANCE_*, PREFECT_*):
        # only HMMTRADER_* keys are ours
        return env_settings, _OwnDotEnv(dotenv_settings), init_settings


class _OwnDotEnv(PydanticBaseSettingsSource):
    """The .env source without the keys that are not settings fields (unprefixed ones)."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self.inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        return {k: v for k, v in self.inner().items() if k in fields}


class AppConfig(Frozen):
    """Everything loaded at the edge: settings plus instruments."""

    settings: Settings
    instruments: SymbolsConfig
    config_dir: Path

    @property
    def home(self) -> Path:
        return self.settings.home

    def symbol(self, name: str) -> SymbolSpec:
        spec = self.instruments.symbols.get(name.upper())
        if spec is None:
            known = ", ".join(sorted(self.instruments.symbols))
            raise ConfigError(
                f"unknown symbol {name!r}: configured symbols are {known} "
                f"(add it to {self.config_dir / 'symbols.yaml'})"
            )
        return spec


def load_settings(config_dir: Path | None = None) -> AppConfig:
    """Load configs/settings.yaml and configs/symbols.yaml; raise ConfigError on bad values
    (naming the file or the HMMTRADER_* variable they came from)."""
    config_dir = Path(config_dir or os.environ.get(ENV_PREFIX + "CONFIG_DIR") or DEFAULT_CONFIG_DIR)
    settings_path = config_dir / "settings.yaml"
    symbols_path = config_dir / "symbols.yaml"
    variables = read_variables(Settings)
    check_variable_names(variables, Settings)
    try:
        settings = Settings(**read_yaml_mapping(settings_path))
    except SettingsError as exc:  # a variable's JSON (a section or a list) does not parse
        raise ConfigError(describe_source_error(exc, variables)) from None
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, settings_path, variables)) from None
    try:
        instruments = SymbolsConfig(**read_yaml_mapping(symbols_path))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, symbols_path)) from None
    return AppConfig(settings=settings, instruments=instruments, config_dir=config_dir)


def configured_feature_set(config: AppConfig, name: str | None = None) -> FeatureSet:
    """The feature set `name` (features_v1 or bars_v1, any case) if given, else
    regime.feature_set; its parameters come from the features: / bars: settings."""
    s = config.settings
    chosen = (name or s.regime.feature_set).lower()
    if chosen not in ("features_v1", "bars_v1"):
        raise InputError(f"unknown feature set {name!r}: features_v1 or bars_v1")
    return features_v1(s.features) if chosen == "features_v1" else bars_v1(s.bars)
