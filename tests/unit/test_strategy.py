"""The inference seam, the canary's holdout choice and gate rules, and the report KPIs
(pure functions; the engine runs in tests/integration/test_backtest.py)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.regime_fixtures import fast_settings, fitted_model
from trading.backtest.canary import evaluate, holdout_window
from trading.backtest.paired import BETTER, INSUFFICIENT, NOT_BETTER, PairedTest
from trading.backtest.report import realized_limit_usage
from trading.data.lake import Lake, day_start_ns
from trading.data.window import parse_time, window_of
from trading.errors import InputError
from trading.features.descriptor import bars_v1
from trading.regime import kernel
from trading.settings import AppConfig
from trading.strategy.config import CanarySettings, GuardrailSettings
from trading.strategy.inference import InProcessInference

NS = 1_000_000_000


def test_in_process_inference_matches_the_models_online_form() -> None:
    model, _ = fitted_model(settings=fast_settings())
    inference = InProcessInference(model, 7)
    assert (inference.version, inference.n_states) == ("7", model.n_states)
    assert inference.horizon_s == model.policy_settings.horizon_s
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(50, len(model.columns)))
    rows[:, len(model.feature_set.columns) :] = (
        np.abs(rows[:, len(model.feature_set.columns) :]) + 1
    )
    ts = np.arange(50, dtype=np.int64) * NS
    batch = model.predict_array(rows, ts)
    for symbol in ("BTCUSDT", "ETHUSDT"):  # one filter per symbol
        out = np.vstack(
            [inference.step(symbol, r, int(t)).copy() for r, t in zip(rows, ts, strict=True)]
        )
        np.testing.assert_array_equal(out, batch)
    assert batch[:, kernel.OUT_ACTION].min() >= -1


def test_a_bars_model_runs_in_process() -> None:
    model, _ = fitted_model(settings=fast_settings())
    model.feature_set = bars_v1()
    inference = InProcessInference(model, 3)  # the strategy computes BARS_V1 from bars
    assert inference.feature_set.name == "BARS_V1"
    assert inference.horizon_s == model.horizon_s == 60 * model.step_ns / 1e9  # 60 rows
    assert inference.drift_limit == model.drift_limit()


def test_times_and_windows() -> None:
    assert parse_time("2025-01-02") == day_start_ns(dt.date(2025, 1, 2))
    assert parse_time("2025-01-02", end=True) == day_start_ns(dt.date(2025, 1, 3))
    assert parse_time("2025-01-02T06:30") == day_start_ns(dt.date(2025, 1, 2)) + 6.5 * 3600 * NS
    window = window_of("2025-01-02T06:00", "2025-01-02T07:00")
    assert window.end_ns - window.start_ns == 3600 * NS
    assert str(window) == "2025-01-02 06:00 .. 2025-01-02 07:00 UTC"
    with pytest.raises(InputError, match="bad time '02/01/2025'"):
        parse_time("02/01/2025")
    with pytest.raises(InputError, match="is not after"):
        window_of("2025-01-02T07:00", "2025-01-02T06:00")


def _quotes_day(lake: Lake, symbol: str, day: dt.date, last_s: int = 86_390) -> None:
    ts = day_start_ns(day) + np.array([0, 1, last_s], dtype=np.int64) * NS
    table = pa.table(
        {
            "ts_ns": ts,
            "bid": [100.0, 100.0, 100.0],
            "ask": [100.1, 100.1, 100.1],
            "bid_size": [1.0, 1.0, 1.0],
            "ask_size": [1.0, 1.0, 1.0],
        }
    )
    lake.write("BINANCE", symbol, "quotes", table, "test")


def test_holdout_is_the_latest_days_after_training(config: AppConfig, lake: Lake) -> None:
    for day in (1, 2, 3, 4):
        _quotes_day(lake, "BTCUSDT", dt.date(2025, 1, day))
    _quotes_day(lake, "ETHUSDT", dt.date(2025, 1, 3))  # ETH only on the 3rd
    window = holdout_window(config, ["BTCUSDT"], dt.date(2025, 1, 1), 2)
    assert (window.start, window.end) == (
        dt.datetime(2025, 1, 3, tzinfo=dt.UTC),
        dt.datetime(2025, 1, 5, tzinfo=dt.UTC),
    )
    both = holdout_window(config, ["BTCUSDT", "ETHUSDT"], dt.date(2025, 1, 1), 1)
    assert both.start.date() == dt.date(2025, 1, 3)  # days every symbol has
    # a partly recorded last day: the window ends at the minute after its last quote
    _quotes_day(lake, "BTCUSDT", dt.date(2025, 1, 4), last_s=6 * 3600 - 1)
    short = holdout_window(config, ["BTCUSDT"], dt.date(2025, 1, 1), 2)
    assert str(short) == "2025-01-03 00:00 .. 2025-01-04 06:00 UTC"
    with pytest.raises(
        InputError, match=r"no holdout data.*ends 2025-01-04.*latest lake day 2025-01-04"
    ):
        holdout_window(config, ["BTCUSDT"], dt.date(2025, 1, 4), 1)


def _summary(**values: float) -> dict[str, object]:
    base: dict[str, object] = {
        "net_pnl_usd": 5.0,
        "trades": 10,
        "state_entropy": 1.0,
        "nan_count": 0,
        "max_daily_loss_usd": 3.0,
        "max_state_drawdown_usd": 2.0,
        "guardrail_blocks": {},
        "sharpe": 2.0,
        "max_drawdown_usd": 4.0,
    }
    return {**base, **values}


def test_gate_rules() -> None:
    settings, limits = CanarySettings(), GuardrailSettings()
    rules, production_rules = evaluate(_summary(), None, settings, limits)
    assert all(r.passed for r in rules) and {r.kind for r in rules} == {"floor"}
    assert production_rules is None
    failing, _ = evaluate(
        _summary(
            net_pnl_usd=-0.01,
            nan_count=1,
            max_state_drawdown_usd=20.5,
            guardrail_blocks={"KILL": 1},
        ),
        None,
        settings,
        limits,
    )
    assert {r.name for r in failing if not r.passed} == {
        "net_pnl",
        "nan",
        "state_drawdown_limit",
        "kill_switch",
    }
    # against production: its floors on the same window, and the paired rule
    production = _summary(net_pnl_usd=-20.0)
    better, worse = _paired(BETTER), _paired(NOT_BETTER)
    rules, theirs = evaluate(_summary(), production, settings, limits, better)
    assert all(r.passed for r in rules) and rules[-1].name == "paired_vs_production"
    assert theirs is not None and [r.name for r in theirs if not r.passed] == ["net_pnl"]
    assert {r.name: r.production for r in rules}["net_pnl"] == -20.0
    rules, _ = evaluate(_summary(), production, settings, limits, worse)
    assert [r.name for r in rules if not r.passed] == ["paired_vs_production"]


def _paired(verdict: str) -> PairedTest:
    low = {BETTER: 0.01, NOT_BETTER: -0.02, INSUFFICIENT: math.nan}[verdict]
    return PairedTest(verdict, "test", 72, 300, 0.05, low, 0.09, 0.9, 0.97, 5.0, -20.0, 12, 9,
                      2000, 6, 7)  # fmt: skip


def test_realized_limit_usage_per_day_and_state() -> None:
    day = 86_400 * NS
    trades = pd.DataFrame(
        {
            "exit_ns": [1, 2, 3, 4, day + 1, day + 2],
            "pnl_usd": [-3.0, 5.0, -4.0, -2.0, -1.0, -1.5],
            "state": [0, 1, 1, 0, 0, 0],
        }
    )
    worst_day, worst_state = realized_limit_usage(trades)
    # day 0 cumulative: -3, 2, -2, -4 -> worst -4; day 1: -1, -2.5
    assert worst_day == pytest.approx(4.0)
    # day 0 state 0: -3, -5 (dd 5); state 1: +5, +1 (dd 4); day 1 state 0: dd 2.5
    assert worst_state == pytest.approx(5.0)
    assert realized_limit_usage(trades.iloc[:0]) == (0.0, 0.0)


def test_a_live_venues_ticks_are_used_in_time_order() -> None:
    """Quotes and trades of a live venue come on two sockets, out of order by a little:
    held for reorder_s of market time, they go on in the backtest's order (time, then
    symbol, then quotes before trades); one that comes after its turn is counted late."""
    from nautilus_trader.model.data import QuoteTick, TradeTick
    from nautilus_trader.model.enums import AggressorSide
    from nautilus_trader.model.identifiers import InstrumentId, TradeId
    from nautilus_trader.model.objects import Price, Quantity

    from trading.settings import load_settings
    from trading.strategy.config import limits_of
    from trading.strategy.strategy import RegimeStrategy, RegimeStrategyConfig

    btc, eth = InstrumentId.from_str("BTCUSDT.BINANCE"), InstrumentId.from_str("ETHUSDT.BINANCE")
    limits = limits_of(load_settings().settings.strategy, ["BTCUSDT", "ETHUSDT"])
    config = RegimeStrategyConfig(instrument_ids=(btc, eth), limits=limits, reorder_s=1.0)
    strategy = RegimeStrategy(config, inference=object())  # type: ignore[arg-type]
    strategy._order = {btc: 0, eth: 1}
    used: list[tuple[int, str, str]] = []
    strategy._on_quote = lambda t: used.append((t.ts_event, t.instrument_id.symbol.value, "q"))
    strategy._on_trade = lambda t: used.append((t.ts_event, t.instrument_id.symbol.value, "t"))
    s = 1_000_000_000

    def quote(i: InstrumentId, ts: int) -> QuoteTick:
        px, qty = Price.from_str("100.00"), Quantity.from_str("1.00000")
        return QuoteTick(i, px, px, qty, qty, ts, ts)

    def trade(i: InstrumentId, ts: int) -> TradeTick:
        return TradeTick(i, Price.from_str("100.00"), Quantity.from_str("1.00000"),
                         AggressorSide.BUYER, TradeId(str(ts)), ts, ts)  # fmt: skip

    # arrival order (the trade socket ahead of the quote socket)
    strategy.on_trade_tick(trade(btc, 2 * s))
    strategy.on_trade_tick(trade(eth, 2 * s))
    strategy.on_quote_tick(quote(eth, 2 * s))
    strategy.on_quote_tick(quote(btc, int(1.5 * s)))
    strategy.on_quote_tick(quote(btc, 2 * s))
    assert used == []  # nothing is 1 s old yet
    strategy.on_quote_tick(quote(btc, int(3.2 * s)))  # releases everything up to 2.2 s
    assert used == [(int(1.5 * s), "BTCUSDT", "q"), (2 * s, "BTCUSDT", "q"),
                    (2 * s, "BTCUSDT", "t"), (2 * s, "ETHUSDT", "q"), (2 * s, "ETHUSDT", "t")]  # fmt: skip
    assert strategy.late_ticks == 0
    strategy.on_trade_tick(trade(btc, int(1.9 * s)))  # after its turn: late, used as it comes
    assert strategy.late_ticks == 1 and strategy.first_late_ns == int(1.9 * s)
    assert used[-1] == (int(1.9 * s), "BTCUSDT", "t")
    strategy._release(strategy._newest_ns)  # the stop: the rest goes on
    assert used[-1] == (int(3.2 * s), "BTCUSDT", "q")
