"""Guardrails: one plain function per limit, each returning a Block (reason code + detail)
or None. `check_entry` runs them in a fixed order before every entry order.

Exits (closing a position) are never blocked: they reduce risk.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from trading.strategy.config import Limits, SymbolLimits


class Reason(StrEnum):
    KILL = "KILL"
    LATENCY = "LATENCY"
    DRIFT = "DRIFT"
    MIN_CONF = "MIN_CONF"
    SPREAD = "SPREAD"
    DAILY = "DAILY"
    DD = "DD"
    COOLDOWN = "COOLDOWN"
    POS = "POS"
    MIN_NOTIONAL = "MIN_NOTIONAL"
    VWAP = "VWAP"  # the execution rule, not a limit; counted the same way
    RATE_LIMIT = "RATE_LIMIT"  # the venue answered 429/418: no new orders until it allows


@dataclass(frozen=True, slots=True)
class Block:
    reason: Reason
    detail: str


def check_kill(engaged: bool) -> Block | None:
    return Block(Reason.KILL, "kill switch engaged") if engaged else None


def check_latency(data_age_ms: float, inference_ms: float, limits: Limits) -> Block | None:
    if data_age_ms > limits.max_data_age_ms:
        return Block(
            Reason.LATENCY, f"data age {data_age_ms:.0f} ms > {limits.max_data_age_ms:.0f} ms"
        )
    if inference_ms > limits.max_inference_ms:
        return Block(
            Reason.LATENCY, f"inference {inference_ms:.1f} ms > {limits.max_inference_ms:.0f} ms"
        )
    return None


def check_drift(drift_score: float, limits: Limits, model_limit: float = 0.0) -> Block | None:
    """Blocks above max_drift, or above the model's calibrated threshold where that is
    higher: a model whose own training window scores above max_drift (1-minute bars, whose
    hour-long windows hold 60 rows) does not block on its normal."""
    cap = max(limits.max_drift, model_limit)
    if not drift_score <= cap:  # NaN blocks too
        return Block(Reason.DRIFT, f"drift {drift_score:.3f} > {cap:.3g}")
    return None


def check_min_conf(confidence: float, limits: Limits) -> Block | None:
    if not confidence >= limits.min_conf:
        return Block(Reason.MIN_CONF, f"confidence {confidence:.3f} < {limits.min_conf}")
    return None


def max_spread_bp(vol_bp: float, limits: Limits) -> float:
    return limits.max_spread_bp + limits.spread_vol_factor * max(0.0, vol_bp)


def check_spread(spread_bp: float, vol_bp: float, limits: Limits) -> Block | None:
    cap = max_spread_bp(vol_bp, limits)
    if not spread_bp <= cap:
        return Block(Reason.SPREAD, f"spread {spread_bp:.2f} bp > {cap:.2f} bp (vol {vol_bp:.1f})")
    return None


def check_daily(daily_loss_usd: float, limits: Limits) -> Block | None:
    if daily_loss_usd >= limits.daily_loss_usd:
        return Block(
            Reason.DAILY, f"daily loss {daily_loss_usd:.2f} >= budget {limits.daily_loss_usd}"
        )
    return None


def check_state_drawdown(state: int, state_loss_usd: float, limits: Limits) -> Block | None:
    if state_loss_usd >= limits.state_drawdown_usd:
        return Block(
            Reason.DD,
            f"state {state} loss {state_loss_usd:.2f} >= cap {limits.state_drawdown_usd}",
        )
    return None


def check_cooldown(
    now_ns: int,
    last_entry_ns: int | None,
    last_symbol_entry_ns: int | None,
    limits: Limits,
    symbol: SymbolLimits,
) -> Block | None:
    if last_entry_ns is not None and now_ns - last_entry_ns < limits.flip_cooldown_s * 1e9:
        waited = (now_ns - last_entry_ns) / 1e9
        return Block(
            Reason.COOLDOWN,
            f"global: {waited:.2f} s since the last entry < {limits.flip_cooldown_s} s",
        )
    if last_symbol_entry_ns is not None and now_ns - last_symbol_entry_ns < symbol.cooldown_s * 1e9:
        waited = (now_ns - last_symbol_entry_ns) / 1e9
        return Block(
            Reason.COOLDOWN, f"symbol: {waited:.2f} s since its last entry < {symbol.cooldown_s} s"
        )
    return None


def check_position(
    order_usd: float,
    symbol_open_usd: float,
    total_open_usd: float,
    limits: Limits,
    symbol: SymbolLimits,
) -> Block | None:
    if symbol_open_usd + order_usd > symbol.max_position_usd + 1e-9:
        return Block(
            Reason.POS,
            f"symbol position {symbol_open_usd + order_usd:.2f} > cap {symbol.max_position_usd}",
        )
    if total_open_usd + order_usd > limits.max_total_position_usd + 1e-9:
        return Block(
            Reason.POS,
            f"total position {total_open_usd + order_usd:.2f} > cap {limits.max_total_position_usd}",
        )
    return None


def check_min_notional(order_usd: float, min_notional_usd: float) -> Block | None:
    if not order_usd >= min_notional_usd:
        return Block(
            Reason.MIN_NOTIONAL, f"order {order_usd:.2f} USD < min notional {min_notional_usd}"
        )
    return None


def check_vwap_anchor(
    side: int, microprice: float, vwap: float | None, limits: Limits
) -> Block | None:
    """Buy only below VWAP, sell only above it, by at least vwap_anchor_bp."""
    if not limits.vwap_anchor:
        return None
    if vwap is None or not vwap > 0:
        return Block(Reason.VWAP, "no VWAP yet")
    distance_bp = side * (vwap - microprice) / vwap * 1e4
    if distance_bp < limits.vwap_anchor_bp:
        return Block(
            Reason.VWAP,
            f"microprice {microprice:.2f} vs VWAP {vwap:.2f}: {distance_bp:.2f} bp "
            f"< anchor {limits.vwap_anchor_bp} bp",
        )
    return None
