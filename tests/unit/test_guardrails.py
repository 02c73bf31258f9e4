"""Guardrails, sizing, the Decider's check order, VWAP, the risk book's day roll and the
validation of the risk limits in the configuration.

Plain Python throughout: no Nautilus, no files except the config-dir tests.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from trading.errors import ConfigError
from trading.settings import DEFAULT_CONFIG_DIR, load_settings
from trading.strategy import guardrails as g
from trading.strategy.config import (
    ExecutionSettings,
    GuardrailSettings,
    Limits,
    StrategySettings,
    SymbolLimits,
    SymbolRisk,
    limits_of,
)
from trading.strategy.decide import (
    MIN_VOL_BP,
    Book,
    Close,
    Decider,
    Enter,
    Signal,
    Venue,
    Vwap,
    size_order,
)
from trading.strategy.guardrails import Reason
from trading.strategy.risk import NS_PER_DAY, OpenPosition, RiskBook

BTC, ETH = "BTCUSDT", "ETHUSDT"
S = 1_000_000_000  # ns per second
T0 = 19_700 * NS_PER_DAY + 12 * 3600 * S  # noon UTC: an hour either side is the same day
BTC_VENUE = Venue(lot_size=0.00001, min_qty=0.00001, max_qty=9000.0, min_notional_usd=5.0)
ETH_VENUE = Venue(lot_size=0.0001, min_qty=0.0001, max_qty=9000.0, min_notional_usd=5.0)
VENUES = {BTC: BTC_VENUE, ETH: ETH_VENUE}


def make_limits(**overrides: object) -> Limits:
    """Both symbols, explicit limits (not the YAML's: those may be tuned)."""
    settings = StrategySettings(
        symbols=[BTC, ETH],
        guardrails=GuardrailSettings(
            min_conf=0.4,
            max_spread_bp=3.0,
            spread_vol_factor=0.25,
            max_total_position_usd=2000.0,
            flip_cooldown_s=1.5,
            max_data_age_ms=2000.0,
            max_inference_ms=250.0,
            state_drawdown_usd=20.0,
            daily_loss_usd=100.0,
            max_drift=0.5,
            flatten_on_kill=True,
        ),
        execution=ExecutionSettings(vwap_anchor=True, vwap_anchor_bp=0.0, allow_short=True),
        per_symbol={
            BTC: SymbolRisk(
                min_notional_usd=10.0, base_qty=0.002, max_position_usd=1000.0, cooldown_s=5.0
            ),
            ETH: SymbolRisk(
                min_notional_usd=10.0, base_qty=0.03, max_position_usd=1000.0, cooldown_s=5.0
            ),
        },
    )
    limits = limits_of(settings)
    assert limits.vwap_anchor and limits.vwap_anchor_bp == 0.0 and limits.allow_short
    return dataclasses.replace(limits, **overrides)


def with_symbol(limits: Limits, symbol: str, **overrides: object) -> Limits:
    symbols = dict(limits.symbols)
    symbols[symbol] = dataclasses.replace(symbols[symbol], **overrides)
    return dataclasses.replace(limits, symbols=symbols)


def market(
    mid: float = 50_000.0,
    spread_bp: float = 1.0,
    ts_ns: int = T0,
    bid_size: float = 1.0,
    ask_size: float = 1.0,
) -> Book:
    half = mid * spread_bp / 2e4
    return Book(mid - half, mid + half, bid_size, ask_size, ts_ns)


def signal(
    action: int = 1,
    state: int = 0,
    confidence: float = 0.9,
    edge: float = 5.0,
    drift: float = 0.1,
    vol: float = 10.0,
    inference_ms: float = 1.0,
) -> Signal:
    return Signal(state, action, confidence, edge, drift, vol, inference_ms)


def good_vwap(action: int, mid: float = 50_000.0) -> float:
    """A VWAP that the microprice is on the good side of (by 10 bp)."""
    return mid * (1 + action * 1e-3)


class Kill:
    def __init__(self) -> None:
        self.engaged = False

    def __call__(self) -> bool:
        return self.engaged


def decider(limits: Limits | None = None, kill: Kill | None = None, **kwargs: object) -> Decider:
    return Decider(
        limits or make_limits(), VENUES, hold_s=30.0, kill_engaged=kill or Kill(), **kwargs
    )


def trade(
    book: RiskBook,
    symbol: str,
    state: int,
    pnl: float,
    ts_ns: int,
    side: int = 1,
    qty: float = 0.001,
    px: float = 50_000.0,
) -> None:
    """A complete round trip through the book's events."""
    book.on_entry_submitted(OpenPosition(symbol, side, qty, px, ts_ns, state))
    book.on_entry_filled(symbol, qty, px)
    book.on_closed(symbol, pnl, ts_ns)


def open_position(
    book: RiskBook,
    symbol: str,
    side: int,
    qty: float,
    px: float,
    ts_ns: int,
    state: int = 0,
    filled: bool = True,
) -> OpenPosition:
    position = OpenPosition(symbol, side, qty, px, ts_ns, state)
    book.on_entry_submitted(position)
    if filled:
        book.on_entry_filled(symbol, qty, px)
    return position


# ---------------------------------------------------------------- guardrail functions


def test_kill_blocks_only_when_engaged() -> None:
    assert g.check_kill(False) is None
    block = g.check_kill(True)
    assert block is not None and block.reason is Reason.KILL


def test_min_conf_blocks_below_threshold_and_nan() -> None:
    limits = make_limits(min_conf=0.4)
    assert g.check_min_conf(0.4, limits) is None  # at the threshold: allowed
    assert g.check_min_conf(0.95, limits) is None
    for bad in (0.3999, 0.0, math.nan):
        block = g.check_min_conf(bad, limits)
        assert block is not None and block.reason is Reason.MIN_CONF


def test_spread_cap_scales_with_vol() -> None:
    limits = make_limits(max_spread_bp=3.0, spread_vol_factor=0.25)
    assert g.max_spread_bp(0.0, limits) == 3.0
    assert g.max_spread_bp(20.0, limits) == 8.0
    assert g.max_spread_bp(-20.0, limits) == 3.0  # negative vol does not tighten the cap
    assert g.check_spread(3.0, 0.0, limits) is None
    assert g.check_spread(7.9, 20.0, limits) is None  # allowed only because vol is high
    block = g.check_spread(7.9, 0.0, limits)
    assert block is not None and block.reason is Reason.SPREAD and "7.90" in block.detail
    block = g.check_spread(8.1, 20.0, limits)
    assert block is not None and block.reason is Reason.SPREAD
    block = g.check_spread(math.nan, 20.0, limits)  # no quote yet
    assert block is not None and block.reason is Reason.SPREAD


def test_spread_cap_without_vol_factor_is_flat() -> None:
    limits = make_limits(max_spread_bp=3.0, spread_vol_factor=0.0)
    assert g.check_spread(3.1, 1000.0, limits) is not None


def test_position_cap_per_symbol() -> None:
    limits = make_limits(max_total_position_usd=2000.0)
    sym = limits.symbols[BTC]  # 1000 USD cap
    assert g.check_position(1000.0, 0.0, 0.0, limits, sym) is None  # exactly the cap
    assert g.check_position(400.0, 600.0, 600.0, limits, sym) is None
    block = g.check_position(400.01, 600.0, 600.0, limits, sym)
    assert block is not None and block.reason is Reason.POS and "symbol" in block.detail


def test_position_cap_total_over_symbols() -> None:
    limits = make_limits(max_total_position_usd=1500.0)
    sym = limits.symbols[BTC]
    assert g.check_position(500.0, 0.0, 1000.0, limits, sym) is None
    block = g.check_position(500.01, 0.0, 1000.0, limits, sym)
    assert block is not None and block.reason is Reason.POS and "total" in block.detail


def test_cooldown_global_between_any_two_entries() -> None:
    limits = make_limits(flip_cooldown_s=1.5)
    sym = dataclasses.replace(limits.symbols[BTC], cooldown_s=0.0)
    assert g.check_cooldown(T0, None, None, limits, sym) is None
    block = g.check_cooldown(T0, T0 - int(1.4 * S), None, limits, sym)
    assert block is not None and block.reason is Reason.COOLDOWN and "global" in block.detail
    assert g.check_cooldown(T0, T0 - int(1.5 * S), None, limits, sym) is None


def test_cooldown_per_symbol() -> None:
    limits = make_limits(flip_cooldown_s=1.5)
    sym = limits.symbols[BTC]  # 5 s
    block = g.check_cooldown(T0, T0 - 10 * S, T0 - 4 * S, limits, sym)
    assert block is not None and block.reason is Reason.COOLDOWN and "symbol" in block.detail
    assert g.check_cooldown(T0, T0 - 10 * S, T0 - 5 * S, limits, sym) is None


def test_latency_data_age() -> None:
    limits = make_limits(max_data_age_ms=2000.0)
    assert g.check_latency(2000.0, 0.0, limits) is None
    block = g.check_latency(2000.5, 0.0, limits)
    assert block is not None and block.reason is Reason.LATENCY and "data age" in block.detail


def test_latency_inference_time() -> None:
    limits = make_limits(max_inference_ms=250.0)
    assert g.check_latency(0.0, 250.0, limits) is None
    block = g.check_latency(0.0, 251.0, limits)
    assert block is not None and block.reason is Reason.LATENCY and "inference" in block.detail


def test_state_drawdown_blocks_at_cap() -> None:
    limits = make_limits(state_drawdown_usd=20.0)
    assert g.check_state_drawdown(2, 19.99, limits) is None
    block = g.check_state_drawdown(2, 20.0, limits)
    assert block is not None and block.reason is Reason.DD and "state 2" in block.detail


def test_daily_blocks_at_budget() -> None:
    limits = make_limits(daily_loss_usd=100.0)
    assert g.check_daily(99.99, limits) is None
    block = g.check_daily(100.0, limits)
    assert block is not None and block.reason is Reason.DAILY


def test_min_notional_ours_and_the_exchanges() -> None:
    assert g.check_min_notional(10.0, 10.0) is None
    block = g.check_min_notional(9.99, 10.0)
    assert block is not None and block.reason is Reason.MIN_NOTIONAL
    block = g.check_min_notional(math.nan, 10.0)
    assert block is not None and block.reason is Reason.MIN_NOTIONAL


def test_drift_blocks_above_threshold_and_nan() -> None:
    limits = make_limits(max_drift=0.5)
    assert g.check_drift(0.5, limits) is None
    assert g.check_drift(0.0, limits) is None
    for bad in (0.51, math.inf, math.nan):
        block = g.check_drift(bad, limits)
        assert block is not None and block.reason is Reason.DRIFT


def test_vwap_anchor_buy_below_sell_above() -> None:
    limits = make_limits(vwap_anchor=True, vwap_anchor_bp=2.0)
    vwap = 100.0
    assert g.check_vwap_anchor(1, 99.97, vwap, limits) is None  # 3 bp below: buy ok
    assert g.check_vwap_anchor(-1, 100.03, vwap, limits) is None  # 3 bp above: sell ok
    for side, micro in ((1, 99.99), (1, 100.5), (-1, 100.01), (-1, 99.5)):
        block = g.check_vwap_anchor(side, micro, vwap, limits)
        assert block is not None and block.reason is Reason.VWAP, (side, micro)


def test_vwap_anchor_needs_a_vwap_unless_disabled() -> None:
    limits = make_limits()
    for vwap in (None, 0.0, math.nan):
        block = g.check_vwap_anchor(1, 100.0, vwap, limits)
        assert block is not None and block.reason is Reason.VWAP
    off = make_limits(vwap_anchor=False)
    assert g.check_vwap_anchor(1, 200.0, None, off) is None
    assert g.check_vwap_anchor(1, 200.0, 100.0, off) is None


# ---------------------------------------------------------------- size_order


def size(
    edge: float = 5.0,
    vol: float = 10.0,
    price: float = 50_000.0,
    limits: Limits | None = None,
    venue: Venue = BTC_VENUE,
    symbol_open: float = 0.0,
    total_open: float = 0.0,
) -> tuple[float, g.Block | None]:
    return size_order(
        signal(edge=edge, vol=vol),
        price,
        BTC,
        limits or make_limits(),
        venue,
        symbol_open,
        total_open,
    )


def on_grid(qty: float, lot: float) -> bool:
    return abs(qty / lot - round(qty / lot)) < 1e-6


def test_size_is_base_qty_times_edge_over_vol() -> None:
    qty, block = size(edge=6.0, vol=8.0)  # 0.002 * 6 / 8 = 0.0015 BTC = 75 USD
    assert block is None and qty == pytest.approx(0.0015)
    qty_short, _ = size(edge=-6.0, vol=8.0)  # |edge|: a sell is sized like a buy
    assert qty_short == qty


def test_size_rounds_down_to_the_lot() -> None:
    qty, block = size(edge=7.0, vol=3.0)  # 0.0046666.. -> 0.00466
    assert block is None and qty == pytest.approx(0.00466) and on_grid(qty, BTC_VENUE.lot_size)


def test_size_floors_vol() -> None:
    qty, block = size(edge=0.25, vol=0.0)  # vol 0 -> MIN_VOL_BP: 0.002 * 0.25 / 0.5
    assert block is None and qty == pytest.approx(0.002 * 0.25 / MIN_VOL_BP)
    assert size(edge=0.25, vol=-3.0)[0] == qty


def test_small_edge_is_lifted_to_our_min_notional() -> None:
    qty, block = size(edge=0.01, vol=20.0)  # raw 1e-6 BTC = 0.05 USD
    assert block is None
    assert qty * 50_000.0 >= 10.0
    assert qty == pytest.approx(0.0002)  # 10 USD / 50 000 on the 0.00001 grid


def test_small_edge_is_lifted_to_the_exchanges_min_notional_when_higher() -> None:
    venue = dataclasses.replace(BTC_VENUE, min_notional_usd=25.0)
    qty, block = size(edge=0.01, vol=20.0, venue=venue)
    assert block is None and qty == pytest.approx(0.0005)  # 25 USD, not our 10


def test_min_notional_rounds_up_to_the_next_lot() -> None:
    # 10 USD at 30 000 = 0.000333.. BTC: rounding down would be 9.9 USD, below the floor
    qty, block = size(edge=0.01, vol=20.0, price=30_000.0)
    assert block is None and qty == pytest.approx(0.00034) and qty * 30_000.0 >= 10.0


def test_size_is_clipped_to_the_symbol_cap() -> None:
    qty, block = size(edge=100.0, vol=1.0)  # raw 0.2 BTC = 10 000 USD
    assert block is None and qty == pytest.approx(0.02)  # 1000 USD cap
    assert qty * 50_000.0 <= 1000.0 + 1e-9


def test_size_is_clipped_to_the_total_room() -> None:
    qty, block = size(edge=100.0, vol=1.0, total_open=1700.0)  # 300 USD of room left
    assert block is None and qty == pytest.approx(0.006)


def test_size_is_clipped_to_the_exchanges_max_qty() -> None:
    venue = dataclasses.replace(BTC_VENUE, max_qty=0.005)
    qty, block = size(edge=100.0, vol=1.0, venue=venue)
    assert block is None and qty == pytest.approx(0.005)


def test_no_room_for_the_min_notional_blocks() -> None:
    _, block = size(edge=5.0, vol=10.0, total_open=1995.0)  # 5 USD of room, floor 10
    assert block is not None and block.reason in (Reason.POS, Reason.MIN_NOTIONAL)
    _, block = size(edge=5.0, vol=10.0, symbol_open=1000.0)
    assert block is not None and block.reason is Reason.POS


def test_min_notional_above_the_exchanges_max_qty_blocks() -> None:
    # a 1 USD coin, floor 10 USD -> 10 units, but the exchange takes at most 5 per order
    venue = Venue(lot_size=1.0, min_qty=1.0, max_qty=5.0, min_notional_usd=5.0)
    qty, block = size(edge=1.0, vol=10.0, price=1.0, venue=venue)
    assert block is not None or qty <= venue.max_qty, f"order of {qty} > max_qty 5 not blocked"


# ---------------------------------------------------------------- Vwap


def test_vwap_is_volume_weighted() -> None:
    vwap = Vwap(window_s=300.0)
    assert vwap.value(T0) is None
    vwap.add(T0, 100.0, 1.0)
    vwap.add(T0 + S, 110.0, 3.0)
    assert vwap.value(T0 + S) == pytest.approx(107.5)


def test_vwap_evicts_trades_older_than_the_window() -> None:
    vwap = Vwap(window_s=300.0)
    vwap.add(T0, 100.0, 1.0)
    vwap.add(T0 + 100 * S, 200.0, 1.0)
    vwap.add(T0 + 200 * S, 300.0, 2.0)
    assert vwap.value(T0 + 299 * S) == pytest.approx(225.0)
    assert vwap.value(T0 + 300 * S) == pytest.approx(800 / 3)  # the first is exactly 300 s old
    assert vwap.value(T0 + 450 * S) == pytest.approx(300.0)
    assert vwap.value(T0 + 500 * S) is None  # all gone
    vwap.add(T0 + 501 * S, 50.0, 1.0)  # starts afresh, no residue of the old sums
    assert vwap.value(T0 + 501 * S) == 50.0


def test_vwap_trades_older_than_the_window_leave_by_the_next_value() -> None:
    vwap = Vwap(window_s=10.0)
    vwap.add(T0, 100.0, 5.0)
    vwap.add(T0 + 11 * S, 200.0, 1.0)
    assert vwap.value(T0 + 11 * S) == 200.0


# ---------------------------------------------------------------- RiskBook


def test_risk_book_rolls_at_utc_midnight() -> None:
    midnight = 19_701 * NS_PER_DAY
    book = RiskBook()
    trade(book, BTC, 1, -30.0, midnight - S)
    trade(book, ETH, 1, +5.0, midnight - 1)  # last ns of the day
    book.roll(midnight - 1)
    assert book.realized_today_usd == pytest.approx(-25.0)
    assert book.state_loss_usd(1, {}) == pytest.approx(25.0)
    assert book.daily_loss_usd({}) == pytest.approx(25.0)
    still_open = open_position(book, BTC, 1, 0.001, 50_000.0, midnight - 1, state=1)
    last_entry = book.last_entry_ns

    book.roll(midnight)
    assert book.day == 19_701
    assert book.realized_today_usd == 0.0
    assert book.daily_loss_usd({BTC: 50_000.0}) == 0.0
    assert book.state_loss_usd(1, {BTC: 50_000.0}) == 0.0
    # positions and cooldowns outlive the day; the open loss counts on the new day
    assert book.positions[BTC] is still_open
    assert book.last_entry_ns == last_entry
    assert book.daily_loss_usd({BTC: 49_000.0}) == pytest.approx(1.0)
    assert book.state_loss_usd(1, {BTC: 49_000.0}) == pytest.approx(1.0)


def test_close_after_midnight_counts_on_the_new_day() -> None:
    midnight = 19_701 * NS_PER_DAY
    book = RiskBook()
    trade(book, BTC, 2, -30.0, midnight - S)
    open_position(book, ETH, 1, 0.1, 3000.0, midnight - S, state=2)
    book.on_closed(ETH, -4.0, midnight + S)  # no decision in between: on_closed rolls itself
    assert book.realized_today_usd == pytest.approx(-4.0)
    assert book.state_loss_usd(2, {}) == pytest.approx(4.0)


def test_state_loss_is_a_drawdown_from_todays_peak() -> None:
    book = RiskBook()
    trade(book, BTC, 3, +10.0, T0)
    trade(book, BTC, 3, -4.0, T0 + S)
    assert book.state_loss_usd(3, {}) == pytest.approx(4.0)  # peak 10, now 6
    trade(book, BTC, 3, +1.0, T0 + 2 * S)
    assert book.state_loss_usd(3, {}) == pytest.approx(3.0)
    trade(book, BTC, 3, +20.0, T0 + 3 * S)
    assert book.state_loss_usd(3, {}) == 0.0  # new peak
    assert book.state_loss_usd(4, {}) == 0.0  # another state: untouched


def test_state_loss_counts_open_losses_of_that_state_only() -> None:
    book = RiskBook()
    open_position(book, BTC, 1, 0.01, 50_000.0, T0, state=1)  # -10 USD at 49 000
    open_position(book, ETH, -1, 1.0, 3000.0, T0, state=2)  # -30 USD at 3030
    mids = {BTC: 49_000.0, ETH: 3030.0}
    assert book.state_loss_usd(1, mids) == pytest.approx(10.0)
    assert book.state_loss_usd(2, mids) == pytest.approx(30.0)
    assert book.state_loss_usd(1, {BTC: 51_000.0, ETH: 3030.0}) == 0.0  # a gain is no loss


def test_unfilled_position_has_no_pnl_but_has_notional() -> None:
    book = RiskBook()
    open_position(book, BTC, 1, 0.01, 50_000.0, T0, filled=False)
    assert book.daily_loss_usd({BTC: 10_000.0}) == 0.0
    assert book.open_usd(BTC, 50_000.0) == pytest.approx(500.0)
    assert book.total_open_usd({BTC: 50_000.0}) == pytest.approx(500.0)


def test_daily_loss_is_realized_plus_open_losses() -> None:
    book = RiskBook()
    trade(book, ETH, 0, -3.0, T0)
    open_position(book, BTC, 1, 0.01, 50_000.0, T0)
    assert book.daily_loss_usd({BTC: 49_750.0}) == pytest.approx(5.5)
    # an open gain does not pay back a realized loss
    assert book.daily_loss_usd({BTC: 60_000.0}) == pytest.approx(3.0)
    trade(book, ETH, 0, +10.0, T0 + S)
    assert book.daily_loss_usd({BTC: 50_000.0}) == 0.0  # net realized profit: no loss


def test_daily_loss_counts_each_open_loss() -> None:
    book = RiskBook()
    open_position(book, BTC, 1, 0.01, 50_000.0, T0)  # -60 USD at 44 000
    open_position(book, ETH, 1, 1.0, 3000.0, T0)  # +100 USD at 3100
    mids = {BTC: 44_000.0, ETH: 3100.0}
    assert book.state_loss_usd(0, mids) == pytest.approx(60.0)  # DD: per position
    assert book.daily_loss_usd(mids) == pytest.approx(60.0)  # DAILY: netted to 0


def test_failed_entry_frees_the_symbol() -> None:
    book = RiskBook()
    open_position(book, BTC, 1, 0.01, 50_000.0, T0, filled=False)
    book.on_entry_failed(BTC)
    assert BTC not in book.positions and book.total_open_usd({BTC: 50_000.0}) == 0.0


# ---------------------------------------------------------------- Decider


def test_enter_takes_the_touch_with_the_sized_qty() -> None:
    d = decider()
    m = market()
    buy = d.decide(BTC, T0, signal(action=1), m, {BTC: m.mid}, good_vwap(1))
    assert buy == Enter(1, pytest.approx(0.001), m.ask)
    assert d.book.positions[BTC].entry_px == m.ask and d.book.last_entry_ns == T0
    sell = d.decide(ETH, T0 + 10 * S, signal(action=-1), market(3000.0, ts_ns=T0 + 10 * S),
                    {BTC: m.mid, ETH: 3000.0}, good_vwap(-1, 3000.0))  # fmt: skip
    assert isinstance(sell, Enter) and sell.side == -1
    assert sell.price == market(3000.0).bid


def test_one_position_per_symbol() -> None:
    d = decider()
    m = market()
    assert isinstance(d.decide(BTC, T0, signal(), m, {BTC: m.mid}, good_vwap(1)), Enter)
    later = T0 + 10 * S
    m2 = market(ts_ns=later)
    assert d.decide(BTC, later, signal(), m2, {BTC: m2.mid}, good_vwap(1)) is None  # in flight
    d.book.on_entry_filled(BTC, 0.001, m.ask)
    assert d.decide(BTC, later, signal(), m2, {BTC: m2.mid}, good_vwap(1)) is None  # same side
    assert len(d.book.positions) == 1


def test_hold_action_and_warmup_and_session_end_do_not_trade_or_block() -> None:
    d = decider(trade_from_ns=T0 + S, trade_until_ns=T0 + 100 * S)
    m = market()
    mids = {BTC: m.mid}
    assert d.decide(BTC, T0 + 2 * S, signal(action=0), m, mids, good_vwap(1)) is None
    assert d.decide(BTC, T0, signal(), m, mids, good_vwap(1)) is None
    late = T0 + 100 * S
    assert d.decide(BTC, late, signal(), market(ts_ns=late), mids, good_vwap(1)) is None
    assert d.blocks == {}


def test_no_short_entries_when_shorts_are_off() -> None:
    d = decider(make_limits(allow_short=False))
    m = market()
    assert d.decide(BTC, T0, signal(action=-1), m, {BTC: m.mid}, good_vwap(-1)) is None
    assert d.blocks == {} and not d.book.positions


def _all_bad(fixed: int) -> Reason | Enter:
    """Every check fails except the first `fixed` ones; return what blocks."""
    limits = make_limits(daily_loss_usd=10.0, state_drawdown_usd=5.0, max_total_position_usd=1000.0)
    kill = Kill()
    blocks: list[g.Block] = []
    d = Decider(limits, VENUES, 30.0, kill_engaged=kill, on_block=lambda t, s, b: blocks.append(b))
    now = T0
    earlier = now - 3600 * S
    # 1 KILL
    kill.engaged = fixed < 1
    # 2 LATENCY: the last tick is 10 s old
    ts = now if fixed >= 2 else now - 10 * S
    # 3 DRIFT, 4 MIN_CONF, 5 SPREAD
    drift = 0.1 if fixed >= 3 else 0.9
    confidence = 0.9 if fixed >= 4 else 0.1
    m = market(spread_bp=1.0 if fixed >= 5 else 50.0, ts_ns=ts)
    # 6 DAILY: 10 USD lost today in state 0; fixed by a win in state 4
    trade(d.book, BTC, 0, -10.0, earlier)
    if fixed >= 6:
        trade(d.book, BTC, 4, +10.0, earlier)
    # 7 DD: state 0 is 10 USD below its peak; state 1 is untouched
    state = 1 if fixed >= 7 else 0
    # 9 POS: an ETH order of 1000 USD is in flight (it set the cooldowns too)
    open_position(d.book, ETH, 1, 1000.0 / 3000.0, 3000.0, earlier, filled=False)
    if fixed >= 9:
        d.book.on_entry_failed(ETH)
    # 8 COOLDOWN: an entry 0.1 s ago
    if fixed < 8:
        d.book.last_entry_ns = now - S // 10
    # 10 VWAP
    vwap = good_vwap(1) if fixed >= 10 else None
    mids = {BTC: m.mid, ETH: 3000.0}
    out = d.decide(BTC, now, signal(state=state, drift=drift, confidence=confidence), m, mids, vwap)
    if isinstance(out, Enter):
        assert not blocks
        return out
    assert out is None and len(blocks) == 1 and d.blocks == {blocks[0].reason.value: 1}
    return blocks[0].reason


def test_check_order_kill_beats_everything() -> None:
    order = [_all_bad(fixed) for fixed in range(11)]
    assert order[:10] == [
        Reason.KILL,
        Reason.LATENCY,
        Reason.DRIFT,
        Reason.MIN_CONF,
        Reason.SPREAD,
        Reason.DAILY,
        Reason.DD,
        Reason.COOLDOWN,
        Reason.POS,
        Reason.VWAP,
    ]
    assert isinstance(order[10], Enter)


def test_decider_latency_from_tick_age_and_inference() -> None:
    d = decider()
    stale = market(ts_ns=T0 - 2001 * 1_000_000)
    assert d.decide(BTC, T0, signal(), stale, {BTC: stale.mid}, good_vwap(1)) is None
    m = market()
    assert d.decide(BTC, T0, signal(inference_ms=300.0), m, {BTC: m.mid}, good_vwap(1)) is None
    assert d.blocks == {"LATENCY": 2}


def test_decider_dd_is_per_state() -> None:
    d = decider(make_limits(state_drawdown_usd=20.0))
    trade(d.book, ETH, 2, -20.0, T0 - 3600 * S)
    m = market()
    mids = {BTC: m.mid}
    assert d.decide(BTC, T0, signal(state=2), m, mids, good_vwap(1)) is None
    assert d.blocks == {"DD": 1}
    assert isinstance(d.decide(BTC, T0, signal(state=3), m, mids, good_vwap(1)), Enter)


def test_decider_daily_counts_open_losses_at_mid() -> None:
    d = decider(make_limits(daily_loss_usd=100.0))
    trade(d.book, ETH, 1, -50.0, T0 - 3600 * S)
    open_position(d.book, ETH, 1, 0.1, 3000.0, T0 - 3600 * S, state=1)
    m = market()
    assert d.decide(BTC, T0, signal(), m, {BTC: m.mid, ETH: 2500.0}, good_vwap(1)) is None
    assert d.blocks == {"DAILY": 1}  # 50 realized + 50 open
    out = d.decide(BTC, T0, signal(), m, {BTC: m.mid, ETH: 2510.0}, good_vwap(1))
    assert isinstance(out, Enter)  # 50 realized + 49 open


def test_decider_daily_budget_is_back_after_midnight() -> None:
    d = decider(make_limits(daily_loss_usd=100.0))
    midnight = 19_701 * NS_PER_DAY
    trade(d.book, ETH, 0, -150.0, midnight - 3600 * S)
    before = market(ts_ns=midnight - S)
    assert d.decide(BTC, midnight - S, signal(), before, {BTC: before.mid}, good_vwap(1)) is None
    assert d.blocks == {"DAILY": 1}
    after = market(ts_ns=midnight)
    out = d.decide(BTC, midnight, signal(), after, {BTC: after.mid}, good_vwap(1))
    assert isinstance(out, Enter)


def test_decider_cooldowns_global_and_per_symbol() -> None:
    d = decider(make_limits(flip_cooldown_s=1.5))  # per symbol 5 s
    m = market()
    assert isinstance(d.decide(BTC, T0, signal(), m, {BTC: m.mid}, good_vwap(1)), Enter)
    t1 = T0 + S
    e = market(3000.0, ts_ns=t1)
    mids = {BTC: m.mid, ETH: 3000.0}
    assert d.decide(ETH, t1, signal(), e, mids, good_vwap(1, 3000.0)) is None  # global
    d.book.on_entry_filled(BTC, 0.001, m.ask)
    d.book.on_closed(BTC, 0.0, t1)
    t2 = T0 + 2 * S
    m2 = market(ts_ns=t2)
    assert d.decide(BTC, t2, signal(), m2, mids, good_vwap(1)) is None  # BTC: 2 s < 5 s
    e2 = market(3000.0, ts_ns=t2)
    assert isinstance(d.decide(ETH, t2, signal(), e2, mids, good_vwap(1, 3000.0)), Enter)
    assert d.blocks == {"COOLDOWN": 2}


def test_decider_total_position_cap() -> None:
    d = decider(make_limits(max_total_position_usd=1020.0))
    open_position(d.book, ETH, 1, 1000.0 / 3000.0, 3000.0, T0 - 3600 * S)
    m = market()
    mids = {BTC: m.mid, ETH: 3000.0}
    out = d.decide(BTC, T0, signal(edge=100.0, vol=1.0), m, mids, good_vwap(1))
    assert isinstance(out, Enter) and out.qty * out.price <= 20.0 + 1e-9  # the 20 USD left
    d2 = decider(make_limits(max_total_position_usd=1005.0))
    open_position(d2.book, ETH, 1, 1000.0 / 3000.0, 3000.0, T0 - 3600 * S)
    assert d2.decide(BTC, T0, signal(), m, mids, good_vwap(1)) is None  # 5 USD < 10 floor
    assert d2.blocks == {"POS": 1}


def test_decider_vwap_rule() -> None:
    d = decider()
    m = market()
    mids = {BTC: m.mid}
    assert d.decide(BTC, T0, signal(action=1), m, mids, good_vwap(-1)) is None  # buy above
    assert d.decide(BTC, T0, signal(action=1), m, mids, None) is None  # no VWAP yet
    assert d.blocks == {"VWAP": 2} and not d.book.positions


def _filled_long(d: Decider, at: int = T0) -> Book:
    m = market(ts_ns=at)
    out = d.decide(BTC, at, signal(), m, {BTC: m.mid}, good_vwap(1))
    assert isinstance(out, Enter)
    d.book.on_entry_filled(BTC, out.qty, out.price)
    return m


def _terrible(at: int) -> tuple[Signal, Book]:
    """A signal and market every entry guardrail would block."""
    bad = signal(action=1, confidence=0.0, drift=math.nan, inference_ms=1e6)
    return bad, market(spread_bp=500.0, ts_ns=at - 3600 * S)


def test_close_on_hold_is_never_blocked() -> None:
    d = decider(make_limits(daily_loss_usd=1.0, state_drawdown_usd=1.0))
    _filled_long(d)
    trade(d.book, ETH, 0, -50.0, T0)  # DAILY and DD limits are far exceeded
    bad, m = _terrible(T0 + 29 * S)
    assert d.decide(BTC, T0 + 29 * S, bad, m, {BTC: 40_000.0}, None) is None
    bad, m = _terrible(T0 + 30 * S)
    assert d.decide(BTC, T0 + 30 * S, bad, m, {BTC: 40_000.0}, None) == Close("hold")
    assert d.blocks == {}
    # the close is on its way: no second close, no entry
    assert d.decide(BTC, T0 + 31 * S, bad, m, {BTC: 40_000.0}, None) is None


def test_close_on_flip_is_never_blocked() -> None:
    d = decider()
    _filled_long(d)
    t = T0 + S
    bad, m = _terrible(t)
    flip = dataclasses.replace(bad, action=-1)
    assert d.decide(BTC, t, flip, m, {BTC: 40_000.0}, None) == Close("flip")
    assert d.blocks == {}


def test_hold_s_in_limits_overrides_the_models_horizon() -> None:
    d = decider(make_limits(hold_s=5.0))
    _filled_long(d)
    m = market(ts_ns=T0 + 5 * S)
    assert d.decide(BTC, T0 + 5 * S, signal(), m, {BTC: m.mid}, None) == Close("hold")


def test_kill_flattens_and_blocks_entries() -> None:
    kill = Kill()
    d = decider(kill=kill)
    _filled_long(d)
    kill.engaged = True
    t = T0 + S
    m = market(ts_ns=t)
    mids = {BTC: m.mid, ETH: 3000.0}
    assert d.decide(BTC, t, signal(), m, mids, good_vwap(1)) == Close("kill")
    e = market(3000.0, ts_ns=T0 + 60 * S)
    assert d.decide(ETH, T0 + 60 * S, signal(), e, mids, good_vwap(1, 3000.0)) is None
    assert d.blocks == {"KILL": 1}


def test_kill_without_flatten_keeps_the_position() -> None:
    kill = Kill()
    d = decider(make_limits(flatten_on_kill=False), kill=kill)
    _filled_long(d)
    kill.engaged = True
    m = market(ts_ns=T0 + S)
    assert d.decide(BTC, T0 + S, signal(), m, {BTC: m.mid}, good_vwap(1)) is None
    m = market(ts_ns=T0 + 30 * S)
    assert d.decide(BTC, T0 + 30 * S, signal(), m, {BTC: m.mid}, None) == Close("hold")


def test_session_end_closes() -> None:
    d = decider(trade_until_ns=T0 + 10 * S)
    _filled_long(d)
    m = market(ts_ns=T0 + 10 * S)
    assert d.decide(BTC, T0 + 10 * S, signal(), m, {BTC: m.mid}, None) == Close("session_end")


# ---------------------------------------------------------------- configuration


def test_default_strategy_settings_validate() -> None:
    limits = limits_of(StrategySettings())
    assert set(limits.symbols) == {BTC, ETH}
    assert all(isinstance(s, SymbolLimits) for s in limits.symbols.values())


@pytest.mark.parametrize(
    "field", ["base_qty", "max_position_usd", "min_notional_usd", "cooldown_s"]
)
def test_negative_per_symbol_limit_names_the_field(field: str) -> None:
    risk = {"base_qty": 0.002, "max_position_usd": 1000.0, field: -1}
    with pytest.raises(ValidationError) as err:
        StrategySettings(symbols=[BTC], per_symbol={BTC: risk})
    locs = [e["loc"] for e in err.value.errors()]
    assert ("per_symbol", BTC, field) in locs


@pytest.mark.parametrize("field", ["base_qty", "max_position_usd"])
def test_missing_per_symbol_limit_names_the_field(field: str) -> None:
    risk = {"base_qty": 0.002, "max_position_usd": 1000.0}
    del risk[field]
    with pytest.raises(ValidationError) as err:
        StrategySettings(symbols=[BTC], per_symbol={BTC: risk})
    assert [e["loc"] for e in err.value.errors()] == [("per_symbol", BTC, field)]
    assert err.value.errors()[0]["type"] == "missing"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("daily_loss_usd", -5.0),
        ("daily_loss_usd", 0.0),
        ("state_drawdown_usd", -1.0),
        ("max_total_position_usd", -1.0),
        ("flip_cooldown_s", -0.1),
        ("max_data_age_ms", 0.0),
        ("max_inference_ms", -1.0),
        ("max_spread_bp", 0.0),
        ("spread_vol_factor", -0.5),
        ("max_drift", -0.1),
        ("min_conf", 1.5),
        ("min_conf", -0.1),
    ],
)
def test_bad_guardrail_limit_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as err:
        StrategySettings(guardrails={field: value})
    assert [e["loc"] for e in err.value.errors()] == [("guardrails", field)]


def test_symbol_without_per_symbol_limits_is_rejected() -> None:
    with pytest.raises(ValidationError, match="no per_symbol risk limits for SOLUSDT"):
        StrategySettings(symbols=[BTC, "SOLUSDT"])


def test_limits_of_a_symbol_without_limits_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SOLUSDT"):
        limits_of(StrategySettings(), symbols=[BTC, "SOLUSDT"])


def test_strategy_settings_are_strict() -> None:
    with pytest.raises(ValidationError, match="daily_loss"):
        StrategySettings(guardrails={"daily_loss": 5.0})  # typo: not silently ignored


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "configs"
    target.mkdir()
    for path in DEFAULT_CONFIG_DIR.glob("*.yaml"):
        shutil.copy(path, target / path.name)
    return target


def _edit_settings(config_dir: Path, *keys: str, value: object) -> Path:
    path = config_dir / "settings.yaml"
    data = yaml.safe_load(path.read_text())
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    path.write_text(yaml.safe_dump(data))
    return path


def test_copied_config_dir_loads(config_dir: Path) -> None:
    loaded = load_settings(config_dir)
    limits = limits_of(loaded.settings.strategy)
    assert limits.daily_loss_usd > 0 and set(limits.symbols) == set(
        loaded.settings.strategy.symbols
    )


def test_negative_daily_loss_in_yaml_is_a_config_error(config_dir: Path) -> None:
    path = _edit_settings(config_dir, "strategy", "guardrails", "daily_loss_usd", value=-5)
    with pytest.raises(ConfigError) as err:
        load_settings(config_dir)
    message = str(err.value)
    assert "strategy.guardrails.daily_loss_usd" in message
    assert str(path) in message and "greater than 0" in message and "-5" in message


def test_negative_base_qty_in_yaml_is_a_config_error(config_dir: Path) -> None:
    _edit_settings(config_dir, "strategy", "per_symbol", BTC, "base_qty", value=-1)
    with pytest.raises(ConfigError, match=r"strategy\.per_symbol\.BTCUSDT\.base_qty"):
        load_settings(config_dir)


def test_symbol_without_limits_in_yaml_is_a_config_error(config_dir: Path) -> None:
    _edit_settings(config_dir, "strategy", "symbols", value=[BTC, ETH, "SOLUSDT"])
    with pytest.raises(ConfigError, match=r"strategy: .*no per_symbol risk limits for SOLUSDT"):
        load_settings(config_dir)
