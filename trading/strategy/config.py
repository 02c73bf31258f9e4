"""Strategy, backtest and canary settings (YAML `strategy:`, `backtest:`, `canary:`).

Validated here with pydantic at the edge; `limits_of` turns them into the plain frozen
dataclasses the guardrail functions and the Nautilus strategy read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, model_validator

from trading.frozen import DAY_S, MAX_BP, Frozen
from trading.regime.config import MAX_DRIFT


class SymbolRisk(Frozen):
    """Per-symbol sizing and caps (the operator handbook's per-symbol block)."""

    min_notional_usd: float = Field(default=10.0, ge=0)  # ours; the exchange's applies too
    base_qty: float = Field(gt=0)  # k in qty = k * |exp_edge_bp| / vol_bp, base units
    max_position_usd: float = Field(gt=0)  # cap of this symbol's open position
    cooldown_s: float = Field(default=5.0, ge=0, le=DAY_S)  # between two entries of this symbol


class GuardrailSettings(Frozen):
    """Hard limits checked before every entry order; each has a reason code."""

    min_conf: float = Field(default=0.4, ge=0, le=1)  # MIN_CONF
    # SPREAD: max = max_spread_bp + spread_vol_factor * vol_bp
    max_spread_bp: float = Field(default=3.0, gt=0, le=MAX_BP)
    spread_vol_factor: float = Field(default=0.25, ge=0, le=100)
    max_total_position_usd: float = Field(default=2000.0, gt=0)  # POS (all symbols)
    flip_cooldown_s: float = Field(default=1.5, ge=0, le=DAY_S)  # COOLDOWN between any two entries
    # LATENCY: last tick age at decision (at most 10 minutes) and inference time (a minute)
    max_data_age_ms: float = Field(default=2000.0, gt=0, le=600_000)
    max_inference_ms: float = Field(default=250.0, gt=0, le=60_000)
    state_drawdown_usd: float = Field(default=20.0, gt=0)  # DD: per state and UTC day
    daily_loss_usd: float = Field(default=100.0, gt=0)  # DAILY: all symbols, UTC day
    max_drift: float = Field(default=0.5, gt=0, le=MAX_DRIFT)  # DRIFT: drift score above it blocks
    flatten_on_kill: bool = True  # KILL: close open positions when the switch engages


class ExecutionSettings(Frozen):
    # enter only when the microprice is on the good side of VWAP (buy below, sell above).
    # Off by default: on the synthetic momentum market it removes the trades with edge.
    vwap_anchor: bool = False
    vwap_anchor_bp: float = Field(default=0.0, ge=0, le=MAX_BP)  # ... by at least this much
    vwap_window_s: float = Field(default=300.0, gt=0, le=DAY_S)
    hold_s: float | None = Field(default=None, gt=0, le=DAY_S)  # None: the model's label horizon
    allow_short: bool = True  # margin account; False: SELL signals only close longs


class StrategySettings(Frozen):
    symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"], min_length=1)
    model: str = "production"  # registry reference the strategy trades
    guardrails: GuardrailSettings = GuardrailSettings()
    execution: ExecutionSettings = ExecutionSettings()
    per_symbol: dict[str, SymbolRisk] = Field(
        default_factory=lambda: {
            "BTCUSDT": SymbolRisk(base_qty=0.002, max_position_usd=1000.0),
            "ETHUSDT": SymbolRisk(base_qty=0.03, max_position_usd=1000.0),
        }
    )

    @model_validator(mode="after")
    def _every_symbol_has_limits(self) -> StrategySettings:
        missing = [s for s in self.symbols if s not in self.per_symbol]
        if missing:
            raise ValueError(
                f"no per_symbol risk limits for {', '.join(missing)}: add "
                "strategy.per_symbol.<SYMBOL> with base_qty and max_position_usd"
            )
        return self


class BacktestSettings(Frozen):
    starting_balance_usd: float = Field(default=10_000.0, gt=0)
    slippage_bp: float = Field(default=1.0, ge=0, le=MAX_BP)  # every fill, beyond the touch
    latency_ms: float = Field(default=50.0, ge=0, le=60_000)  # order to venue
    # features and filter warm up, no trading; close everything this long before the end
    warmup_s: float = Field(default=4500.0, ge=0, le=7 * DAY_S)
    flatten_before_end_s: float = Field(default=60.0, ge=0, le=DAY_S)
    seed: int = 42
    progress_every_s: float = Field(default=900.0, gt=0, le=DAY_S)  # simulated time between updates


class CanaryFloors(Frozen):
    min_net_pnl_usd: float = 0.0  # net of fees and slippage
    min_state_entropy: float = Field(default=0.05, ge=0)  # nats, over the holdout timeline
    max_nan: int = Field(default=0, ge=0)
    max_kill_blocks: int = Field(default=0, ge=0)  # the kill switch stopped an entry
    # the realized daily loss and per-state drawdown stay within the strategy's DAILY and
    # DD limits (strategy.guardrails daily_loss_usd, state_drawdown_usd)
    min_trades: int = Field(default=1, ge=0)


class PairedSettings(Frozen):
    """The relative rule: candidate against production on the same holdout, their net PnL
    per interval compared with a seeded circular moving-block bootstrap
    (trading/backtest/paired.py)."""

    interval_s: int = Field(default=300, ge=60, le=DAY_S)  # per-interval net PnL
    block: int = Field(default=12, ge=1, le=1_000)  # consecutive intervals drawn together
    resamples: int = Field(default=2_000, ge=100, le=100_000)
    seed: int = 7
    # the candidate is better when the two-sided interval at this confidence lies above 0
    confidence: float = Field(default=0.9, gt=0.5, lt=1)
    # fewer trades (both backtests together) or intervals: "insufficient evidence"
    min_trades: int = Field(default=10, ge=0)
    min_intervals: int = Field(default=12, ge=2)


class CanarySettings(Frozen):
    holdout_days: int = Field(default=1, ge=1, le=31)  # most recent days after training
    # candidate and production backtests at once, in separate processes (1: one after the
    # other in this process)
    workers: int = Field(default=2, ge=1, le=2)
    floors: CanaryFloors = CanaryFloors()
    paired: PairedSettings = PairedSettings()
    # alert: say so everywhere (verdict, artifacts, models, metric, alert rule);
    # disable_trading: also engage the node's kill switch with the reason; promote_if_better:
    # also promote a candidate that wins the paired test although it fails only floors
    # production fails too
    on_production_failure: Literal["alert", "disable_trading", "promote_if_better"] = "alert"

    @model_validator(mode="before")
    @classmethod
    def _no_tolerances(cls, data: object) -> object:
        if isinstance(data, dict) and "tolerances" in data:
            raise ValueError(
                "canary.tolerances (point comparisons with production) was replaced by "
                "canary.paired, a paired bootstrap of per-interval net PnL: remove "
                "`tolerances:` and set canary.paired.confidence instead"
            )
        return data


# ---- the plain, frozen form the guardrails and the Nautilus strategy read ----


@dataclass(frozen=True, slots=True)
class SymbolLimits:
    min_notional_usd: float
    base_qty: float
    max_position_usd: float
    cooldown_s: float


@dataclass(frozen=True, slots=True)
class Limits:
    min_conf: float
    max_spread_bp: float
    spread_vol_factor: float
    max_total_position_usd: float
    flip_cooldown_s: float
    max_data_age_ms: float
    max_inference_ms: float
    state_drawdown_usd: float
    daily_loss_usd: float
    max_drift: float
    flatten_on_kill: bool
    vwap_anchor: bool
    vwap_anchor_bp: float
    vwap_window_s: float
    hold_s: float | None
    allow_short: bool
    symbols: dict[str, SymbolLimits] = field(default_factory=dict)


def limits_of(settings: StrategySettings, symbols: list[str] | None = None) -> Limits:
    chosen = symbols or settings.symbols
    missing = [s for s in chosen if s not in settings.per_symbol]
    if missing:
        from trading.errors import ConfigError

        raise ConfigError(
            f"no per_symbol risk limits for {', '.join(missing)}: add "
            "strategy.per_symbol.<SYMBOL> (base_qty, max_position_usd) to configs/settings.yaml"
        )
    return Limits(
        **settings.guardrails.model_dump(),
        **settings.execution.model_dump(),
        symbols={s: SymbolLimits(**settings.per_symbol[s].model_dump()) for s in chosen},
    )
