"""`hmmtrader bench features`: batch FEATURES_V1 (numba kernel) vs a pandas implementation
of the same features; the online form's cost per tick and per grid step."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from hmmtrader.bench import BenchResult, best_of

if TYPE_CHECKING:
    import pandas as pd

    from trading.features.v1 import OnlineFeatures
    from trading.settings import AppConfig


def pandas_features(quotes: pa.Table, trades: pa.Table, fs_params: dict[str, Any]) -> pd.DataFrame:
    """The baseline: FEATURES_V1 written the straightforward pandas way (resample to the
    grid, rolling windows, ewm), one continuous segment, no tick validation."""
    import pandas as pd

    p = fs_params
    grid = f"{round(p['grid_s'] * 1000)}ms"

    def steps(seconds: float) -> int:
        return max(1, round(seconds / p["grid_s"]))

    q = quotes.to_pandas()
    q.index = pd.to_datetime(q.pop("ts_ns"), unit="ns")
    t = trades.to_pandas()
    t.index = pd.to_datetime(t.pop("ts_ns"), unit="ns")
    pb, pa_, pbs, pas = (q[c].shift() for c in ("bid", "ask", "bid_size", "ask_size"))
    eb = np.where(q.bid > pb, q.bid_size, np.where(q.bid == pb, q.bid_size - pbs, -pbs))
    ea = np.where(q.ask < pa_, q.ask_size, np.where(q.ask == pa_, q.ask_size - pas, -pas))
    q["eb"], q["ea"] = np.nan_to_num(eb), np.nan_to_num(ea)
    rq = q.resample(grid, label="right", closed="right")
    book = rq[["bid", "ask", "bid_size", "ask_size"]].last().ffill()
    acc = rq[["eb", "ea"]].sum()
    t["nb"] = (t.aggressor_side > 0).astype(float)
    t["ns"] = (t.aggressor_side < 0).astype(float)
    t["vb"] = t.qty * t.nb
    t["vs"] = t.qty * t.ns
    flow = t[["nb", "ns", "vb", "vs"]].resample(grid, label="right", closed="right").sum()
    frame = (
        book.join(acc)
        .join(flow, how="left")
        .fillna({"nb": 0, "ns": 0, "vb": 0, "vs": 0, "eb": 0, "ea": 0})
    )
    out = pd.DataFrame(index=frame.index)
    mid = (frame.bid + frame.ask) / 2
    depth = frame.bid_size + frame.ask_size
    out["mid"] = mid
    out["spread_bp"] = (frame.ask - frame.bid) / mid * 1e4
    out["imbalance"] = (frame.bid_size - frame.ask_size) / depth
    micro = (frame.bid * frame.ask_size + frame.ask * frame.bid_size) / depth
    out["microprice_bp"] = (micro - mid) / mid * 1e4
    r = (np.log(mid).diff() * 1e4).fillna(0.0)
    out["rv_bp"] = np.sqrt((r**2).rolling(steps(p["vol_window_s"]), min_periods=1).sum())
    w = steps(p["flow_window_s"])
    n_b, n_s = frame.nb.rolling(w, min_periods=1).sum(), frame.ns.rolling(w, min_periods=1).sum()
    v_b, v_s = frame.vb.rolling(w, min_periods=1).sum(), frame.vs.rolling(w, min_periods=1).sum()
    out["sign_imbalance"] = ((n_b - n_s) / (n_b + n_s)).fillna(0.0)
    out["signed_delta"] = ((v_b - v_s) / (v_b + v_s)).fillna(0.0)
    decay = 0.5 ** (p["grid_s"] / p["queue_halflife_s"])
    out["bid_queue"] = frame.eb.ewm(alpha=1 - decay, adjust=False).mean() / (1 - decay)
    out["ask_queue"] = frame.ea.ewm(alpha=1 - decay, adjust=False).mean() / (1 - decay)
    wa = steps(p["autocorr_window_s"])
    r2 = (r**2).rolling(wa, min_periods=1).sum()
    out["autocorr_1"] = ((r * r.shift(1)).rolling(wa, min_periods=1).sum() / r2).clip(-1, 1)
    out["autocorr_2"] = ((r * r.shift(2)).rolling(wa, min_periods=1).sum() / r2).clip(-1, 1)
    out = out.fillna(0.0)
    wz, mz = steps(p["standardize_window_s"]), steps(p["standardize_min_s"])
    roll = out.rolling(wz, min_periods=mz)
    z = ((out - roll.mean().shift(1)) / roll.std(ddof=0).shift(1)).clip(-p["z_clip"], p["z_clip"])
    return z.add_suffix("_z").join(out)


def bench_features(
    config: AppConfig, days: int, repeats: int, online_ticks: int, console: Console
) -> BenchResult:
    """Batch FEATURES_V1 (numba kernel) vs the pandas baseline on the same synthetic ticks;
    plus the online form's median cost per tick and per grid step."""
    import datetime as dt

    from trading.data.synthetic import generate
    from trading.features.descriptor import features_v1
    from trading.features.v1 import OnlineFeatures, compute_batch

    specs = {"BTCUSDT": config.symbol("BTCUSDT")}
    console.print(f"generating {days} synthetic BTCUSDT day(s) ...")
    parts = list(generate(specs, dt.date(2024, 1, 1), days, 7, config.settings.synthetic))
    quotes = pa.concat_tables([d.quotes for d in parts])
    trades = pa.concat_tables([d.trades for d in parts])
    ticks = quotes.num_rows + trades.num_rows
    fs = features_v1(config.settings.features)
    compute_batch(fs, quotes.slice(0, 1000), trades.slice(0, 1000))  # compile / load cache
    ours_s, rows = best_of(repeats, lambda: len(compute_batch(fs, quotes, trades).rows))
    pandas_s, pd_rows = best_of(repeats, lambda: len(pandas_features(quotes, trades, fs.params)))

    # the two implementations agree once both standardization windows are full
    ours = compute_batch(fs, quotes, trades).rows
    base = pandas_features(quotes, trades, fs.params)
    skip = round(fs.params["standardize_window_s"] / fs.params["grid_s"]) + 400
    n = min(len(ours), len(base))
    z_ours = ours[skip:n, 2 + len(fs.columns) :]
    z_base = base[[f"{c}_z" for c in fs.columns]].to_numpy()[skip:n]
    agree = float(np.nanmax(np.abs(z_ours - z_base)))

    tick_ns, step_ns = _online_costs(OnlineFeatures(fs), quotes, trades, online_ticks)
    table = Table(
        title=f"bench features: {ticks:,} ticks ({days} day(s)), {rows:,} grid rows, "
        f"best of {repeats}"
    )
    for column in ("implementation", "seconds", "ticks/s"):
        table.add_column(column)
    table.add_row("project batch (numba kernel)", f"{ours_s:.3f}", f"{ticks / ours_s:,.0f}")
    table.add_row(
        "baseline: pandas resample/rolling", f"{pandas_s:.3f}", f"{ticks / pandas_s:,.0f}"
    )
    console.print(table)
    console.print(
        f"pandas vs project z-scores after warm-up: max abs difference {agree:.2e} "
        f"({pd_rows:,} pandas rows)"
    )
    console.print(
        f"online form over {online_ticks:,} ticks: median {tick_ns / 1000:.2f} µs per tick "
        f"(goal <= 3), median {step_ns / 1000:.2f} µs per grid step (goal <= 30)"
    )
    value, baseline = ticks / ours_s, ticks / pandas_s
    return BenchResult(
        "features_v1_batch", round(value), "ticks/s", round(baseline), round(value / baseline, 2)
    )


def _online_costs(
    online: OnlineFeatures, quotes: pa.Table, trades: pa.Table, limit: int
) -> tuple[float, float]:
    """Median ns of an on_quote/on_trade call that completes no row, and of one grid row
    for calls that complete rows (the call's time divided by the rows it emitted)."""
    q = quotes.slice(0, limit)
    t = trades.slice(0, limit)
    q_cols = [q.column(c).to_pylist() for c in ("ts_ns", "bid", "ask", "bid_size", "ask_size")]
    t_cols = [t.column(c).to_pylist() for c in ("ts_ns", "price", "qty", "aggressor_side")]
    events = sorted(
        [(ts, 1, i) for i, ts in enumerate(q_cols[0])]
        + [(ts, 2, i) for i, ts in enumerate(t_cols[0])]
    )[:limit]
    quiet: list[int] = []
    per_step: list[float] = []
    clock = time.perf_counter_ns
    on_quote, on_trade = online.on_quote, online.on_trade
    for ts, kind, i in events:
        if kind == 1:
            a, b, c, d = q_cols[1][i], q_cols[2][i], q_cols[3][i], q_cols[4][i]
            began = clock()
            out = on_quote(ts, a, b, c, d)
            spent = clock() - began
        else:
            a, b, c = t_cols[1][i], t_cols[2][i], t_cols[3][i]
            began = clock()
            out = on_trade(ts, a, b, c)
            spent = clock() - began
        if out:
            per_step.append(spent / len(out))
        else:
            quiet.append(spent)
    return float(np.median(quiet)), float(np.median(per_step))
