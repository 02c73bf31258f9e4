"""The synthetic regime market: determinism, microstructure invariants, regime statistics,
bars, and the lake ingest. Runs are truncated (`seconds=`) to keep the file fast."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace as dataclass_replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trading.data import synthetic
from trading.data.lake import Lake
from trading.data.synthetic import (
    RegimeParams,
    SyntheticDay,
    SyntheticDayLengthError,
    SyntheticState,
    default_regimes,
    generate,
    ingest_synthetic,
    ingest_synthetic_day,
    read_synthetic_state,
    stored_day_seconds,
)
from trading.errors import ConfigError, DataFormatError, InputError
from trading.settings import AppConfig, Settings, SymbolsConfig, SymbolSpec, SyntheticSettings

SPECS = {
    "BTCUSDT": SymbolSpec(
        base="BTC",
        quote="USDT",
        tick_size=0.01,
        lot_size=0.00001,
        min_qty=0.00001,
        max_qty=9000.0,
        min_notional_usd=5.0,
        maker_fee=0.001,
        taker_fee=0.001,
    ),
    "ETHUSDT": SymbolSpec(
        base="ETH",
        quote="USDT",
        tick_size=0.01,
        lot_size=0.0001,
        min_qty=0.0001,
        max_qty=9000.0,
        min_notional_usd=5.0,
        maker_fee=0.001,
        taker_fee=0.001,
    ),
}
START = dt.date(2024, 3, 1)
SETTINGS = SyntheticSettings()  # 4 regimes, 10 Hz quotes, 1200 s dwell, correlation 0.8, momentum
SIX_HOURS = 6 * 3600
NS = 1_000_000_000


def _run(days: int = 1, seed: int = 5, seconds: int = 600, **kwargs: object) -> list[SyntheticDay]:
    settings = SyntheticSettings(**kwargs)  # type: ignore[arg-type]
    return list(generate(SPECS, START, days, seed, settings, seconds=seconds))


@pytest.fixture(scope="module")
def six_hours() -> dict[str, SyntheticDay]:
    """Both symbols, default settings, the first 6 hours of one day."""
    return {d.symbol: d for d in generate(SPECS, START, 1, 11, SETTINGS, seconds=SIX_HOURS)}


def _second_of(ts_ns: np.ndarray, day: dt.date) -> np.ndarray:
    return (ts_ns - synthetic.day_start_ns(day)) // NS


def _mid_each_second(day: SyntheticDay, every: int = 1) -> np.ndarray:
    """Mid of the last quote at or before each (every-th) second."""
    q_ts = day.quotes.column("ts_ns").to_numpy()
    mid = (day.quotes.column("bid").to_numpy() + day.quotes.column("ask").to_numpy()) / 2
    at = np.searchsorted(q_ts, day.regimes.column("ts_ns").to_numpy()[::every], side="right") - 1
    return mid[at]


def _corr(pair: list[np.ndarray]) -> float:
    first, second = pair
    return float(np.corrcoef(first, second)[0, 1])


def _on_grid(values: np.ndarray, step: float) -> bool:
    units = values / step
    return bool(np.all(np.abs(units - np.rint(units)) < 1e-6))


# --- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 5])
def test_default_regimes_are_ordered_and_realistic(n: int) -> None:
    regimes = default_regimes(n)
    assert len(regimes) == n
    vol = [r.vol_bp_per_sqrt_s for r in regimes]
    spread = [r.spread_bp for r in regimes]
    rate = [r.trade_rate_hz for r in regimes]
    assert vol == sorted(vol) and len(set(vol)) == n
    assert spread == sorted(spread) and len(set(spread)) == n
    assert rate == sorted(rate)
    assert min(vol) >= 0.5 and max(vol) <= 6.0
    assert min(spread) >= 0.2 and max(spread) <= 5.0
    assert min(rate) >= 1.0 and max(rate) <= 15.0
    assert all(0.35 <= r.buy_prob <= 0.65 for r in regimes)
    assert len({r.buy_prob for r in regimes}) == n


def test_regime_params_are_validated() -> None:
    with pytest.raises(ValueError, match="buy_prob"):
        RegimeParams(1.0, 1.0, 1.0, 1.2, 0.0)
    with pytest.raises(ValueError, match="positive"):
        RegimeParams(0.0, 1.0, 1.0, 0.5, 0.0)


def test_generate_checks_its_arguments_before_iterating() -> None:
    with pytest.raises(InputError, match="days"):
        generate(SPECS, START, 0, 1, SETTINGS)
    with pytest.raises(InputError, match="seconds"):
        generate(SPECS, START, 1, 1, SETTINGS, seconds=86_401)
    with pytest.raises(InputError, match="seed"):
        generate(SPECS, START, 1, -1, SETTINGS)


# --- determinism and days -----------------------------------------------------------------


def test_same_seed_gives_identical_tables_other_seed_differs() -> None:
    first, again, other = _run(seed=5), _run(seed=5), _run(seed=6)
    for a, b, c in zip(first, again, other, strict=True):
        for kind in ("quotes", "trades", "bars", "regimes"):
            assert getattr(a, kind).equals(getattr(b, kind)), kind
        assert not a.quotes.equals(c.quotes)
        assert not a.trades.equals(c.trades)


def test_first_day_does_not_depend_on_following_days() -> None:
    alone = _run(days=1)
    together = _run(days=2)
    assert [(d.symbol, d.day) for d in together] == [
        ("BTCUSDT", START),
        ("ETHUSDT", START),
        ("BTCUSDT", START + dt.timedelta(days=1)),
        ("ETHUSDT", START + dt.timedelta(days=1)),
    ]
    for a, b in zip(alone, together[:2], strict=True):
        assert a.quotes.equals(b.quotes) and a.trades.equals(b.trades) and a.bars.equals(b.bars)


def test_consecutive_days_continue_prices_ids_and_regimes() -> None:
    days = _run(days=2, seconds=1800)
    for first, second in ((days[0], days[2]), (days[1], days[3])):
        end = first.quotes.slice(first.quotes.num_rows - 1).to_pylist()[0]
        begin = second.quotes.slice(0, 1).to_pylist()[0]
        end_mid, begin_mid = (end["bid"] + end["ask"]) / 2, (begin["bid"] + begin["ask"]) / 2
        assert abs(begin_mid / end_mid - 1) < 20e-4  # no jump back to the start price
        assert begin["ts_ns"] == synthetic.day_start_ns(second.day)  # opening snapshot
        ids = np.concatenate(
            [first.trades["trade_id"].to_numpy(), second.trades["trade_id"].to_numpy()]
        )
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
        assert second.bars["ts_ns"][0].as_py() == synthetic.day_start_ns(second.day)
    # the regime path is market-wide: both symbols carry the same one
    assert days[0].regimes.equals(days[1].regimes) and days[2].regimes.equals(days[3].regimes)


# --- quotes and trades --------------------------------------------------------------------


def test_quote_rate_and_strictly_increasing_timestamps(six_hours: dict[str, SyntheticDay]) -> None:
    for day in six_hours.values():
        ts = day.quotes["ts_ns"].to_numpy()
        rate = len(ts) / SIX_HOURS
        assert abs(rate / SETTINGS.quote_rate_hz - 1) < 0.15, rate
        assert np.all(np.diff(ts) > 0)
        assert ts[0] == synthetic.day_start_ns(START)
        assert ts[-1] < synthetic.day_start_ns(START) + SIX_HOURS * NS
        trade_ts = day.trades["ts_ns"].to_numpy()
        assert np.all(np.diff(trade_ts) > 0)
        assert trade_ts[-1] < synthetic.day_start_ns(START) + SIX_HOURS * NS


def test_quotes_on_tick_and_lot_grids(six_hours: dict[str, SyntheticDay]) -> None:
    for symbol, day in six_hours.items():
        spec = SPECS[symbol]
        bid, ask = day.quotes["bid"].to_numpy(), day.quotes["ask"].to_numpy()
        assert np.all(ask > bid)
        assert np.all(ask - bid >= spec.tick_size * (1 - 1e-6))
        assert _on_grid(bid, spec.tick_size) and _on_grid(ask, spec.tick_size)
        for column in ("bid_size", "ask_size"):
            size = day.quotes[column].to_numpy()
            assert np.all(size >= spec.lot_size) and _on_grid(size, spec.lot_size)
        qty = day.trades["qty"].to_numpy()
        assert np.all(qty >= spec.min_qty) and _on_grid(qty, spec.lot_size)
        assert _on_grid(day.trades["price"].to_numpy(), spec.tick_size)
    start_mid = {s: float(d.quotes["bid"][0].as_py()) for s, d in six_hours.items()}
    assert 50_000 < start_mid["BTCUSDT"] < 70_000 and 2_500 < start_mid["ETHUSDT"] < 3_500


def test_trades_print_at_the_prevailing_quote(six_hours: dict[str, SyntheticDay]) -> None:
    for day in six_hours.values():
        q_ts = day.quotes["ts_ns"].to_numpy()
        t_ts = day.trades["ts_ns"].to_numpy()
        at = np.searchsorted(q_ts, t_ts, side="right") - 1
        assert np.all(at >= 0)
        side = day.trades["aggressor_side"].to_numpy()
        assert set(np.unique(side)) == {-1, 1}
        expected = np.where(
            side == 1, day.quotes["ask"].to_numpy()[at], day.quotes["bid"].to_numpy()[at]
        )
        np.testing.assert_array_equal(day.trades["price"].to_numpy(), expected)
        np.testing.assert_array_equal(
            day.trades["trade_id"].to_numpy(), np.arange(1, len(t_ts) + 1)
        )


def test_book_imbalance_leans_with_order_flow(six_hours: dict[str, SyntheticDay]) -> None:
    day = six_hours["BTCUSDT"]
    regimes = default_regimes(SETTINGS.n_regimes)
    regime = day.regimes["regime"].to_numpy()[_second_of(day.quotes["ts_ns"].to_numpy(), START)]
    log_ratio = np.log(day.quotes["bid_size"].to_numpy() / day.quotes["ask_size"].to_numpy())
    lean = [log_ratio[regime == k].mean() for k in range(len(regimes))]
    buy = [r.buy_prob for r in regimes]
    assert np.corrcoef(lean, buy)[0, 1] > 0.95
    assert lean[int(np.argmax(buy))] > 0.2 and lean[int(np.argmin(buy))] < -0.2


# --- regime statistics --------------------------------------------------------------------


def test_regime_path_switches_with_the_configured_dwell(six_hours: dict[str, SyntheticDay]) -> None:
    table = six_hours["BTCUSDT"].regimes
    assert table.num_rows == SIX_HOURS
    assert str(table.schema.field("regime").type) == "int8"
    np.testing.assert_array_equal(
        table["ts_ns"].to_numpy(), synthetic.day_start_ns(START) + np.arange(SIX_HOURS) * NS
    )
    regime = table["regime"].to_numpy()
    assert len(np.unique(regime)) >= 3
    assert regime.min() >= 0 and regime.max() < SETTINGS.n_regimes
    switches = np.count_nonzero(np.diff(regime))
    mean_dwell = SIX_HOURS / (switches + 1)
    assert 0.5 * SETTINGS.mean_dwell_s < mean_dwell < 2 * SETTINGS.mean_dwell_s, mean_dwell


def test_short_dwell_gives_a_matching_mean_dwell() -> None:
    day = _run(seconds=SIX_HOURS, mean_dwell_s=60.0)[0]
    regime = day.regimes["regime"].to_numpy()
    mean_dwell = SIX_HOURS / (np.count_nonzero(np.diff(regime)) + 1)
    assert abs(mean_dwell / 60.0 - 1) < 0.15, mean_dwell
    assert len(np.unique(regime)) == SETTINGS.n_regimes


def test_volatility_and_spread_rise_with_the_regime(six_hours: dict[str, SyntheticDay]) -> None:
    regimes = default_regimes(SETTINGS.n_regimes)
    for day in six_hours.values():
        regime = day.regimes["regime"].to_numpy()
        returns = np.diff(np.log(_mid_each_second(day)))
        inside = regime[1:] == regime[:-1]  # both ends of the second in one regime
        vol_bp = []
        for k in range(len(regimes)):
            chosen = returns[inside & (regime[1:] == k)]
            assert len(chosen) > 300, (k, len(chosen))
            vol_bp.append(chosen.std() / 1e-4)
        assert np.all(np.diff(vol_bp) > 0), vol_bp
        if day.symbol == "BTCUSDT":  # vol multiplier 1: the configured values come back
            for measured, r in zip(vol_bp, regimes, strict=True):
                assert abs(measured / r.vol_bp_per_sqrt_s - 1) < 0.15, (measured, r)
        q_regime = regime[_second_of(day.quotes["ts_ns"].to_numpy(), START)]
        bid, ask = day.quotes["bid"].to_numpy(), day.quotes["ask"].to_numpy()
        spread_bp = (ask - bid) / ((ask + bid) / 2) / 1e-4
        mean_spread = [spread_bp[q_regime == k].mean() for k in range(len(regimes))]
        assert np.all(np.diff(mean_spread) > 0.2), mean_spread


def test_buyer_share_tracks_buy_probability(six_hours: dict[str, SyntheticDay]) -> None:
    regimes = default_regimes(SETTINGS.n_regimes)
    for day in six_hours.values():
        regime = day.regimes["regime"].to_numpy()[_second_of(day.trades["ts_ns"].to_numpy(), START)]
        side = day.trades["aggressor_side"].to_numpy()
        for k, r in enumerate(regimes):
            share = float(np.mean(side[regime == k] == 1))
            assert abs(share - r.buy_prob) < 0.02, (day.symbol, k, share, r.buy_prob)


def test_cross_symbol_correlation_of_returns(six_hours: dict[str, SyntheticDay]) -> None:
    one_s = [np.diff(np.log(_mid_each_second(d))) for d in six_hours.values()]
    corr_1s = _corr(one_s)
    assert abs(corr_1s - SETTINGS.correlation) < 0.1, corr_1s
    ten_s = [np.diff(np.log(_mid_each_second(d, every=10))) for d in six_hours.values()]
    corr_10s = _corr(ten_s)
    assert abs(corr_10s - SETTINGS.correlation) < 0.05, corr_10s


def test_negative_correlation_for_two_symbols() -> None:
    days = _run(seconds=1800, correlation=-0.6)
    returns = [np.diff(np.log(_mid_each_second(d, every=10))) for d in days]
    assert abs(_corr(returns) + 0.6) < 0.1


# --- momentum -----------------------------------------------------------------------------

MINUTE = 60


def _excess_flow_and_book(day: SyntheticDay, window: int = 10) -> tuple[np.ndarray, ...]:
    """Per second t, over the trades and quotes of seconds t - window + 1 .. t: the mean
    aggressor side and the mean log(bid_size / ask_size), each minus what the regime
    alone explains, and the number of trades."""
    buy = np.array([r.buy_prob for r in default_regimes(SETTINGS.n_regimes)])
    regime = day.regimes["regime"].to_numpy()
    n = len(regime)
    t_sec = _second_of(day.trades["ts_ns"].to_numpy(), START)
    side = day.trades["aggressor_side"].to_numpy() - (2 * buy[regime[t_sec]] - 1)
    q_sec = _second_of(day.quotes["ts_ns"].to_numpy(), START)
    log_ratio = np.log(day.quotes["bid_size"].to_numpy() / day.quotes["ask_size"].to_numpy())
    log_ratio -= 2 * synthetic._IMBALANCE * (buy[regime[q_sec]] - 0.5)
    hi = np.arange(n) + 1
    lo = np.maximum(hi - window, 0)

    def trailing(sec: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = np.concatenate([[0.0], np.cumsum(np.bincount(sec, weights=values, minlength=n))])
        count = np.concatenate([[0], np.cumsum(np.bincount(sec, minlength=n))])
        rows = count[hi] - count[lo]
        return (total[hi] - total[lo]) / np.maximum(rows, 1), rows

    flow, trades = trailing(t_sec, side)
    book, _ = trailing(q_sec, log_ratio)
    return flow, book, trades


def test_order_flow_and_book_predict_the_next_minute(six_hours: dict[str, SyntheticDay]) -> None:
    """With momentum (the default) a last 10 s of one-sided trading beyond the regime's own
    lean is followed by a move its way and the book leans with it; without, neither."""
    off = SyntheticSettings(momentum_bp_per_s=0.0)
    quiet = {d.symbol: d for d in generate(SPECS, START, 1, 11, off, seconds=SIX_HOURS)}
    for label, days in (("on", six_hours), ("off", quiet)):
        for symbol, day in days.items():
            flow, book, trades = _excess_flow_and_book(day)
            mid = _mid_each_second(day)  # mid[t + 1]: just after the window of second t
            fwd_bp = np.log(mid[1 + MINUTE :] / mid[1:-MINUTE]) / 1e-4
            flow, book, trades = flow[: -MINUTE - 1], book[: -MINUTE - 1], trades[: -MINUTE - 1]
            strong = (np.abs(flow) > 0.5) & (trades >= 10)
            follow_bp = float(np.mean(np.sign(flow[strong]) * fwd_bp[strong]))
            lean = _corr([flow, book])
            print(label, symbol, int(strong.sum()), round(follow_bp, 2), round(lean, 3))
            if label == "on":
                assert strong.sum() > 200
                assert follow_bp > 4.0
                assert lean > 0.1
            else:
                assert abs(follow_bp) < 2.0
                assert abs(lean) < 0.05


def test_momentum_is_shared_across_symbols(six_hours: dict[str, SyntheticDay]) -> None:
    """The symbols' books lean together (`momentum_correlation` 0.9 by default); with 0
    each symbol has its own bursts. (The book, 10 quotes a second, shows the momentum
    with less sampling noise than the trade flow.)"""
    apart = SyntheticSettings(momentum_correlation=0.0)
    alone = {d.symbol: d for d in generate(SPECS, START, 1, 11, apart, seconds=SIX_HOURS)}
    together = _corr([_excess_flow_and_book(d)[1] for d in six_hours.values()])
    separate = _corr([_excess_flow_and_book(d)[1] for d in alone.values()])
    print(round(together, 3), round(separate, 3))
    assert together > 0.3
    assert abs(separate) < 0.05


@pytest.mark.parametrize("bursts_per_h", [2.0, 0.0])
def test_momentum_factor_statistics(bursts_per_h: float) -> None:
    """Unit variance, autocorrelation 1/2 at the half-life, the variance of hourly sums an
    AR(1) has, and the configured number of bursts (0: Gaussian shocks)."""
    halflife, days = 30.0, 20
    phi = 0.5 ** (1 / halflife)
    rng = np.random.default_rng(0)
    z = synthetic._momentum_path(rng, days * 86_400, 0.0, halflife, bursts_per_h / 3600)
    assert abs(z.std() - 1) < 0.1, z.std()
    lag = int(halflife)
    assert abs(np.corrcoef(z[:-lag], z[lag:])[0, 1] - 0.5) < 0.05
    hour = 3600
    sums = z.reshape(-1, hour).sum(axis=1)
    expected = hour * (1 + phi) / (1 - phi) - 2 * phi * (1 - phi**hour) / (1 - phi) ** 2
    assert abs(sums.var() / expected - 1) < 0.25, (sums.var(), expected)
    shocks = z[1:] - phi * z[:-1]
    kurtosis = float(np.mean(z**4) / np.mean(z**2) ** 2)
    if bursts_per_h:
        bursts = np.count_nonzero(np.abs(shocks) > 1e-6) / (days * 24)
        assert abs(bursts / bursts_per_h - 1) < 0.1, bursts
        assert kurtosis > 5  # rare large bursts, not Gaussian
    else:
        assert abs(kurtosis - 3) < 0.3
    # the value of the second before carries over (across midnight, for the generator)
    carried = synthetic._momentum_path(rng, 3, 5.0, halflife, 1e-12)
    np.testing.assert_allclose(carried, 5.0 * phi ** np.arange(1, 4), rtol=1e-12)


def test_momentum_has_its_own_random_streams() -> None:
    """Turning momentum off changes prices, sides and book sizes only: the regime path and
    every arrival time and trade size are the same."""
    on, off = _run(seconds=1800), _run(seconds=1800, momentum_bp_per_s=0.0)
    for a, b in zip(on, off, strict=True):
        assert a.regimes.equals(b.regimes)
        assert a.quotes["ts_ns"].equals(b.quotes["ts_ns"])
        assert a.trades["ts_ns"].equals(b.trades["ts_ns"])
        assert a.trades["qty"].equals(b.trades["qty"])
        assert not a.quotes["bid"].equals(b.quotes["bid"])
        assert not a.trades["aggressor_side"].equals(b.trades["aggressor_side"])


# --- bars ---------------------------------------------------------------------------------


def test_bars_aggregate_the_trades(six_hours: dict[str, SyntheticDay]) -> None:
    for day in six_hours.values():
        bars, trades = day.bars.to_pandas(), day.trades.to_pandas()
        assert len(bars) == SIX_HOURS // 60
        np.testing.assert_array_equal(
            bars["ts_ns"].to_numpy(), synthetic.day_start_ns(START) + np.arange(len(bars)) * 60 * NS
        )
        assert bars["volume"].sum() == pytest.approx(trades["qty"].sum(), rel=1e-9)
        assert bars["n_trades"].sum() == len(trades)
        assert bars["quote_volume"].sum() == pytest.approx(
            (trades["price"] * trades["qty"]).sum(), rel=1e-9
        )
        buys = trades.loc[trades["aggressor_side"] == 1, "qty"].sum()
        assert bars["taker_buy_volume"].sum() == pytest.approx(buys, rel=1e-9)
        minute = (trades["ts_ns"] - synthetic.day_start_ns(START)) // (60 * NS)
        grouped = trades.groupby(minute)["price"].agg(["first", "max", "min", "last"])
        full = bars.iloc[grouped.index.to_numpy()]
        np.testing.assert_array_equal(full["open"].to_numpy(), grouped["first"].to_numpy())
        np.testing.assert_array_equal(full["high"].to_numpy(), grouped["max"].to_numpy())
        np.testing.assert_array_equal(full["low"].to_numpy(), grouped["min"].to_numpy())
        np.testing.assert_array_equal(full["close"].to_numpy(), grouped["last"].to_numpy())


def test_minutes_without_trades_carry_the_previous_close() -> None:
    sparse = [RegimeParams(1.0, 1.0, 0.004, 0.5, 0.0), RegimeParams(2.0, 2.0, 0.008, 0.5, 0.0)]
    days = list(generate(SPECS, START, 2, 3, SETTINGS, seconds=3600, regimes=sparse))
    first, second = days[0].bars.to_pandas(), days[2].bars.to_pandas()
    for bars, previous_close in ((first, None), (second, first["close"].iloc[-1])):
        empty = bars["n_trades"] == 0
        assert 0 < empty.sum() < len(bars)
        assert (bars.loc[empty, "volume"] == 0).all() and (
            bars.loc[empty, "quote_volume"] == 0
        ).all()
        flat = bars.loc[empty, ["open", "high", "low", "close"]]
        assert (flat.nunique(axis=1) == 1).all()
        prev = bars["close"].shift(1)
        if previous_close is not None:
            prev.iloc[0] = previous_close
        check = empty & prev.notna()
        np.testing.assert_array_equal(bars.loc[check, "close"], prev[check])
        assert bars[["open", "high", "low", "close"]].notna().all().all()


# --- lake ingest --------------------------------------------------------------------------


def _config(home: Path) -> AppConfig:
    return AppConfig(
        settings=Settings(home=home),
        instruments=SymbolsConfig(venue="BINANCE", symbols=SPECS),
        config_dir=home,
    )


def test_ingest_writes_every_kind_and_rerun_replaces(tmp_path: Path) -> None:
    config, lake = _config(tmp_path), Lake(tmp_path / "lake")
    # 10-minute days keep this fast
    written = ingest_synthetic(config, lake, ["BTCUSDT", "ethusdt"], START, 2, 9, seconds=600)
    days = [START, START + dt.timedelta(days=1)]
    kinds = ("quotes", "trades", "bars", "regimes")
    assert {(w.symbol, w.kind, w.day) for w in written} == {
        (s, k, d) for s in SPECS for k in kinds for d in days
    }
    assert len(written) == 16 and all(w.venue == "BINANCE" and w.rows > 0 for w in written)
    first = {(s, k): lake.read("BINANCE", s, k) for s in SPECS for k in kinds}
    for (symbol, kind), table in first.items():
        assert table.num_rows == sum(
            w.rows for w in written if (w.symbol, w.kind) == (symbol, kind)
        )
        assert lake.days("BINANCE", symbol, kind) == days
    assert first["BTCUSDT", "regimes"].num_rows == 2 * 600
    meta = pq.read_schema(lake.path("BINANCE", "BTCUSDT", "trades", START)).metadata
    assert meta[b"hmmtrader.source"] == b"synthetic:seed=9"

    reports: list[tuple[str, int, int | None]] = []
    again = ingest_synthetic(
        config, lake, ["BTCUSDT", "ETHUSDT"], START, 2, 9, progress=lambda *r: reports.append(r),
        seconds=600,
    )  # fmt: skip
    assert [w.rows for w in again] == [w.rows for w in written]
    for key, table in first.items():
        assert lake.read("BINANCE", *key).equals(table), key  # replaced, not duplicated
    # one progress report per symbol-day, counting up to the total
    assert reports == [
        (f"synthetic {s} {d}", i + 1, 4)
        for i, (d, s) in enumerate((d, s) for d in days for s in ("BTCUSDT", "ETHUSDT"))
    ]


def test_ingest_rejects_bad_arguments(tmp_path: Path) -> None:
    config, lake = _config(tmp_path), Lake(tmp_path / "lake")
    for days in (0, 367):
        with pytest.raises(InputError, match="between 1 and 366"):
            ingest_synthetic(config, lake, ["BTCUSDT"], START, days, 1)
    with pytest.raises(ConfigError, match="unknown symbol"):
        ingest_synthetic(config, lake, ["DOGEUSDT"], START, 1, 1)
    with pytest.raises(InputError):
        ingest_synthetic(config, lake, [], START, 1, 1)
    assert not (tmp_path / "lake").exists()


# --- resuming from a state ----------------------------------------------------------------

KINDS = ("quotes", "trades", "bars", "regimes")
SHORT = 1800  # seconds of a day in the resume tests
DAY = dt.timedelta(days=1)


def _assert_same_days(got: list[SyntheticDay], expected: list[SyntheticDay]) -> None:
    assert [(d.symbol, d.day) for d in got] == [(d.symbol, d.day) for d in expected]
    for a, b in zip(got, expected, strict=True):
        for kind in KINDS:
            assert getattr(a, kind).equals(getattr(b, kind)), (a.symbol, a.day, kind)
        assert a.state == b.state, (a.symbol, a.day)


@pytest.mark.parametrize("correlation", [0.8, -0.6])
def test_resuming_from_day_one_gives_the_one_go_day_two(correlation: float) -> None:
    settings = SyntheticSettings(correlation=correlation)
    one_go = list(generate(SPECS, START, 2, 5, settings, seconds=SHORT))
    ends = {d.symbol: SyntheticState.from_json(d.state.to_json()) for d in one_go[:2]}
    assert all(s.day == START and s.origin == START and s.seed == 5 for s in ends.values())
    resumed = list(generate(SPECS, START + DAY, 1, 5, settings, seconds=SHORT, resume=ends))
    _assert_same_days(resumed, one_go[2:])
    assert all(d.state.origin == START for d in resumed)  # the chain keeps its origin
    for name, spec in SPECS.items():  # each symbol resumed on its own, too
        alone = generate(
            {name: spec},
            START + DAY,
            1,
            5,
            settings,
            seconds=SHORT,
            sign_order=list(SPECS),
            resume={name: ends[name]},
        )
        _assert_same_days(list(alone), [d for d in one_go[2:] if d.symbol == name])


@pytest.mark.parametrize("correlation", [0.8, -0.6])
def test_one_symbol_alone_equals_the_joint_generation(correlation: float) -> None:
    settings = SyntheticSettings(correlation=correlation)
    order = list(SPECS)
    joint = list(generate(SPECS, START, 2, 5, settings, seconds=SHORT))
    for name, spec in SPECS.items():
        alone = generate({name: spec}, START, 2, 5, settings, seconds=SHORT, sign_order=order)
        _assert_same_days(list(alone), [d for d in joint if d.symbol == name])
    # the sign order, not the mapping's order, decides the negative loading
    backwards = dict(reversed(SPECS.items()))
    swapped = list(generate(backwards, START, 1, 5, settings, seconds=SHORT, sign_order=order))
    _assert_same_days(sorted(swapped, key=lambda d: order.index(d.symbol)), joint[:2])
    eth_first = list(generate({"ETHUSDT": SPECS["ETHUSDT"]}, START, 1, 5, settings, seconds=SHORT))
    assert eth_first[0].quotes.equals(joint[1].quotes) == (correlation > 0)


def test_resume_states_are_checked() -> None:
    days = list(generate(SPECS, START, 1, 5, SETTINGS, seconds=60))
    ends = {d.symbol: d.state for d in days}
    nxt = START + DAY

    def resume(states: dict[str, SyntheticState], **kwargs: object) -> None:
        args: dict[str, object] = {"start": nxt, "seed": 5, "settings": SETTINGS, "seconds": 60}
        args.update(kwargs)
        generate(SPECS, days=1, resume=states, **args)  # type: ignore[arg-type]

    resume(ends)  # the matching case passes
    with pytest.raises(InputError, match="missing ETHUSDT"):
        resume({"BTCUSDT": ends["BTCUSDT"]})
    with pytest.raises(InputError, match="next day"):
        resume(ends, start=nxt + DAY)
    with pytest.raises(InputError, match="seed 5, not 6"):
        resume(ends, seed=6)
    for other in ({"seconds": 120}, {"settings": SyntheticSettings(n_regimes=3)}):
        with pytest.raises(InputError, match="other settings"):
            resume(ends, **other)
    with pytest.raises(InputError, match="other settings"):  # another sign for ETHUSDT
        negative = SyntheticSettings(correlation=-0.5)
        states = {d.symbol: d.state for d in generate(SPECS, START, 1, 5, negative, seconds=60)}
        resume(states, settings=negative, sign_order=["ETHUSDT", "BTCUSDT"])
    with pytest.raises(InputError, match="belongs to BTCUSDT"):
        resume({"BTCUSDT": ends["BTCUSDT"], "ETHUSDT": ends["BTCUSDT"]})
    with pytest.raises(InputError, match="sign_order"):
        generate(SPECS, START, 1, 5, SETTINGS, sign_order=["BTCUSDT"])


def test_state_json_round_trip_is_exact() -> None:
    state = next(iter(generate(SPECS, START, 1, 5, SETTINGS, seconds=SHORT))).state
    assert SyntheticState.from_json(state.to_json()) == state
    awkward = [0.1 + 0.2, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]
    awkward += [float(np.nextafter(np.log(60_000.0), 20.0)), 1 / 3]
    for value in awkward:
        tricky = SyntheticState(
            "BTCUSDT", START, START, 1, "f" * 64, value, 2**53 + 1, value, -value, 3, value
        )
        back = SyntheticState.from_json(tricky.to_json().encode())
        assert back == tricky
        for name in ("log_mid", "last_close", "momentum", "shared_momentum"):
            assert getattr(back, name).hex() == getattr(tricky, name).hex(), (name, value)
    none_close = SyntheticState.from_json(dataclass_replace(state, last_close=None).to_json())
    assert none_close.last_close is None
    for bad in (
        "not json",
        "[]",
        '{"version": 99}',
        state.to_json().replace('"seed":5', '"seed":"5"'),
    ):
        with pytest.raises(DataFormatError):
            SyntheticState.from_json(bad)
    with pytest.raises(ValueError):  # NaN never gets written
        dataclass_replace(state, momentum=float("nan")).to_json()


# --- nightly ingest: one day per symbol, resumed from the lake ----------------------------

NIGHT = 600  # seconds of a day in the nightly ingest tests


def _config_with(home: Path, settings: SyntheticSettings) -> AppConfig:
    return AppConfig(
        settings=Settings(home=home, synthetic=settings),
        instruments=SymbolsConfig(venue="BINANCE", symbols=SPECS),
        config_dir=home,
    )


def _files(lake: Lake) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in lake.root.rglob("*") if p.is_file()}


def _assert_lakes_agree(got: Lake, expected: Lake, symbol: str, days: list[dt.date]) -> None:
    """Same rows and same schema metadata (kind, source, state) in every file."""
    for kind in KINDS:
        assert got.days("BINANCE", symbol, kind) == days
        for day in days:
            a = pq.read_table(got.path("BINANCE", symbol, kind, day))
            b = pq.read_table(expected.path("BINANCE", symbol, kind, day))
            assert a.equals(b, check_metadata=True), (symbol, kind, day)


def test_ingest_day_fills_from_the_origin_then_adds_one_day_per_night(tmp_path: Path) -> None:
    config = _config_with(tmp_path, SyntheticSettings(correlation=-0.6))  # ETHUSDT: negative
    lake, one_go = Lake(tmp_path / "nightly"), Lake(tmp_path / "one_go")
    day = START + 3 * DAY
    origin = START
    for symbol in SPECS:  # symbols ingested separately
        written = ingest_synthetic_day(config, lake, symbol, day, 9, origin, seconds=NIGHT)
        assert sorted((w.symbol, w.kind, w.day) for w in written) == sorted(
            (symbol, k, origin + i * DAY) for k in KINDS for i in range(4)
        )
        written = ingest_synthetic_day(config, lake, symbol, day + DAY, 9, origin, seconds=NIGHT)
        assert sorted((w.kind, w.day) for w in written) == sorted((k, day + DAY) for k in KINDS)
        assert all(w.symbol == symbol and w.rows > 0 for w in written)
    # the reference: all days of both symbols in one go (symbols listed the other way round)
    ingest_synthetic(config, one_go, list(reversed(SPECS)), origin, 5, 9, seconds=NIGHT)
    days = [origin + i * DAY for i in range(5)]
    for symbol in SPECS:
        _assert_lakes_agree(lake, one_go, symbol, days)
    state = read_synthetic_state(lake, "BINANCE", "ETHUSDT", day + DAY)
    assert state is not None and (state.day, state.origin, state.seed) == (day + DAY, origin, 9)
    meta = pq.read_schema(lake.path("BINANCE", "ETHUSDT", "regimes", day)).metadata
    assert meta[b"hmmtrader.kind"] == b"regimes"
    assert meta[b"hmmtrader.source"] == b"synthetic:seed=9"

    before = _files(lake)
    for symbol in SPECS:
        for night in (origin, day, day + DAY):  # re-running a night writes nothing
            assert ingest_synthetic_day(config, lake, symbol, night, 9, origin, seconds=NIGHT) == []
    assert _files(lake) == before


def test_ingest_day_resumes_from_the_latest_state_and_repairs_a_day(tmp_path: Path) -> None:
    config = _config_with(tmp_path, SETTINGS)
    lake, one_go = Lake(tmp_path / "nightly"), Lake(tmp_path / "one_go")
    ingest_synthetic(config, lake, ["BTCUSDT"], START, 2, 9, seconds=NIGHT)
    last = START + 4 * DAY
    written = ingest_synthetic_day(config, lake, "BTCUSDT", last, 9, START, seconds=NIGHT)
    assert sorted({w.day for w in written}) == [START + i * DAY for i in (2, 3, 4)]
    assert len(written) == 12
    # a lost file makes its day incomplete: that day alone is generated again
    lake.path("BINANCE", "BTCUSDT", "trades", START + 3 * DAY).unlink()
    written = ingest_synthetic_day(
        config, lake, "BTCUSDT", START + 3 * DAY, 9, START, seconds=NIGHT
    )
    assert sorted((w.kind, w.day) for w in written) == sorted((k, START + 3 * DAY) for k in KINDS)
    ingest_synthetic(config, one_go, ["BTCUSDT"], START, 5, 9, seconds=NIGHT)
    _assert_lakes_agree(lake, one_go, "BTCUSDT", [START + i * DAY for i in range(5)])


def test_ingest_day_does_not_resume_another_market(tmp_path: Path) -> None:
    """A state of another seed, origin or settings is not resumed: every day from the
    origin is generated again and replaces what the lake held."""
    config = _config_with(tmp_path, SETTINGS)
    lake, one_go = Lake(tmp_path / "nightly"), Lake(tmp_path / "one_go")
    day = START + 3 * DAY
    assert (
        len(ingest_synthetic_day(config, lake, "BTCUSDT", day - DAY, 9, START, seconds=NIGHT)) == 12
    )
    written = ingest_synthetic_day(config, lake, "BTCUSDT", day, 10, START, seconds=NIGHT)
    assert sorted({w.day for w in written}) == [START + i * DAY for i in range(4)]
    assert len(written) == 16
    ingest_synthetic(config, one_go, ["BTCUSDT"], START, 4, 10, seconds=NIGHT)
    _assert_lakes_agree(lake, one_go, "BTCUSDT", [START + i * DAY for i in range(4)])
    later_origin = ingest_synthetic_day(
        config, lake, "BTCUSDT", day, 10, START + DAY, seconds=NIGHT
    )
    assert sorted({w.day for w in later_origin}) == [START + i * DAY for i in (1, 2, 3)]
    with pytest.raises(SyntheticDayLengthError, match=f"{NIGHT} s long, not {NIGHT // 2} s"):
        ingest_synthetic_day(config, lake, "BTCUSDT", day, 10, START, seconds=NIGHT // 2)
    shorter = ingest_synthetic_day(
        config, lake, "BTCUSDT", day, 10, START, seconds=NIGHT // 2, overwrite=True
    )
    assert len(shorter) == 16  # other seconds: other settings, every day replaced
    other = _config_with(tmp_path, SyntheticSettings(mean_dwell_s=600.0))
    short = NIGHT // 2
    assert len(ingest_synthetic_day(other, lake, "BTCUSDT", day, 10, START, seconds=short)) == 16


def _fake_features(lake: Lake, symbol: str, day: dt.date) -> Path:
    path = lake.path("BINANCE", symbol, "features_v1", day)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"ts_ns": [0]}), path)
    return path


def test_another_day_length_is_refused_and_overwrite_drops_the_features(tmp_path: Path) -> None:
    config, lake = _config_with(tmp_path, SETTINGS), Lake(tmp_path / "lake")
    ingest_synthetic(config, lake, ["BTCUSDT", "ETHUSDT"], START, 2, 9, seconds=NIGHT)
    assert stored_day_seconds(lake, "BINANCE", "BTCUSDT", START) == NIGHT
    features = {
        (symbol, day): _fake_features(lake, symbol, day)
        for symbol in SPECS
        for day in (START, START + DAY, START + 2 * DAY)
    }
    before = _files(lake)

    with pytest.raises(SyntheticDayLengthError) as refused:
        ingest_synthetic(config, lake, ["BTCUSDT"], START, 2, 9, seconds=NIGHT // 2)
    assert str(refused.value) == (
        f"synthetic BTCUSDT {START}: the lake holds this day {NIGHT} s long, not {NIGHT // 2} s "
        "(synthetic.day_seconds, HMMTRADER_SYNTHETIC__DAY_SECONDS or --day-seconds); "
        "regenerating it would replace it under the features made from it. Use a new home "
        f"for another day length (--home or HMMTRADER_HOME), set the length back to {NIGHT}, "
        "or, to replace the days and delete their features, add --overwrite to `hmmtrader "
        "ingest synthetic` (overwrite=True)"
    )
    with pytest.raises(SyntheticDayLengthError, match="--seed 9 --overwrite"):
        ingest_synthetic_day(config, lake, "BTCUSDT", START + DAY, 9, START, seconds=NIGHT // 2)
    assert _files(lake) == before  # nothing written, nothing deleted

    notices: list[str] = []
    written = ingest_synthetic(
        config, lake, ["BTCUSDT"], START, 2, 9, seconds=NIGHT // 2, overwrite=True,
        notice=notices.append,
    )  # fmt: skip
    assert len(written) == 8
    regimes = pq.read_table(lake.path("BINANCE", "BTCUSDT", "regimes", START))
    assert regimes.num_rows == NIGHT // 2
    assert stored_day_seconds(lake, "BINANCE", "BTCUSDT", START + DAY) == NIGHT // 2
    # BTCUSDT's features of both days and of the day after (warmed up on the last) are gone
    gone = {key for key, path in features.items() if not path.exists()}
    assert gone == {("BTCUSDT", START + i * DAY) for i in range(3)}
    assert notices == [
        f"deleted {features['BTCUSDT', START + i * DAY]} (made from the data this ingest replaced)"
        for i in (0, 1, 2)
    ]
    assert not features["BTCUSDT", START].parent.exists()  # no empty date directory left

    # the same market again: the same rows, so the features made from them stay
    kept = _fake_features(lake, "BTCUSDT", START)
    ingest_synthetic(config, lake, ["BTCUSDT"], START, 1, 9, seconds=NIGHT // 2)
    assert kept.exists()
    # another seed of the same length replaces the rows: their features go
    ingest_synthetic(config, lake, ["BTCUSDT"], START, 1, 10, seconds=NIGHT // 2)
    assert not kept.exists()


def test_day_length_of_a_lake_written_before_the_length_was_recorded(tmp_path: Path) -> None:
    config, lake = _config_with(tmp_path, SETTINGS), Lake(tmp_path / "lake")
    ingest_synthetic(config, lake, ["BTCUSDT"], START, 1, 9, seconds=NIGHT)
    for kind in KINDS:  # as written before: no day-length key
        path = lake.path("BINANCE", "BTCUSDT", kind, START)
        table = pq.read_table(path)
        meta = dict(table.schema.metadata)
        del meta[synthetic.DAY_SECONDS_METADATA_KEY]
        pq.write_table(table.replace_schema_metadata(meta), path)
    assert stored_day_seconds(lake, "BINANCE", "BTCUSDT", START) == NIGHT  # a regime a second
    with pytest.raises(SyntheticDayLengthError, match=f"{NIGHT} s long, not {NIGHT * 2} s"):
        ingest_synthetic(config, lake, ["BTCUSDT"], START, 1, 9, seconds=NIGHT * 2)
    assert stored_day_seconds(lake, "BINANCE", "ETHUSDT", START) is None  # nothing there


def test_ingest_day_rejects_bad_arguments(tmp_path: Path) -> None:
    config, lake = _config_with(tmp_path, SETTINGS), Lake(tmp_path / "lake")
    with pytest.raises(InputError, match="before the synthetic market's origin"):
        ingest_synthetic_day(config, lake, "BTCUSDT", START - DAY, 1, START, seconds=60)
    too_far = START + synthetic.MAX_DAYS * DAY  # MAX_DAYS + 1 days from an empty lake
    with pytest.raises(InputError, match="exceeds 366"):
        ingest_synthetic_day(config, lake, "BTCUSDT", too_far, 1, START, seconds=60)
    with pytest.raises(ConfigError, match="unknown symbol"):
        ingest_synthetic_day(config, lake, "DOGEUSDT", START, 1, START, seconds=60)
    with pytest.raises(InputError, match="seconds"):
        ingest_synthetic_day(config, lake, "BTCUSDT", START, 1, START, seconds=0)
    with pytest.raises(InputError, match="seed"):
        ingest_synthetic_day(config, lake, "BTCUSDT", START, -1, START, seconds=60)
    assert not (tmp_path / "lake").exists()


def test_trade_rate_scale_thins_the_tape_and_leaves_the_quotes() -> None:
    full = {d.symbol: d for d in _run(1, 5, 3600)}
    thin = {d.symbol: d for d in _run(1, 5, 3600, trade_rate_scale=0.2)}
    for symbol, day in full.items():
        assert thin[symbol].quotes.equals(day.quotes)  # trades are drawn after the quotes
        ratio = thin[symbol].trades.num_rows / day.trades.num_rows
        assert 0.15 < ratio < 0.25, (symbol, ratio)
