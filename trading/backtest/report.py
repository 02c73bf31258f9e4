"""Run-directory reports of a backtest: trades.csv, guardrails.csv, state_timeline.csv,
equity.csv + equity.png and summary.json (KPIs).

Trades are Nautilus' closed positions (HEDGING: one per entry), joined with the strategy's
order context (state, confidence, spread, volatility and depth when it decided). PnL is
Nautilus' realized PnL, net of both fees; slippage is measured against the touch at
decision time. The equity curve is marked to market each minute on the strategy's mids.

Every summary carries two benchmarks on the same window (`benchmarks`): flat (no trade,
0 USD) and buy-and-hold: the starting balance split evenly over the traded symbols, bought
at the window's first ask (a bar model: the first bar's open) and sold at its last bid (the
last bar's close), each fill `slippage_bp` beyond that price and paying the instrument's
taker fee, once in and once out, as the strategy's own fills do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trading.regime.model import output_table
from trading.strategy.recorder import TIMELINE_FIELDS, Recorder

MINUTES_PER_YEAR = 365 * 24 * 60
NS_PER_MIN = 60_000_000_000

TRADE_COLUMNS = [
    "symbol",
    "side",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "qty",
    "notional_usd",
    "gross_pnl_usd",
    "fees_usd",
    "pnl_usd",
    "slippage_usd",
    "vol_bp",
    "spread_bp",
    "l1_depth_usd",
    "state",
    "confidence",
    "exp_edge_bp",
    "exit_reason",
    "decision_time",
    "entry_ns",
    "exit_ns",
]


def _money(value: Any) -> float:
    """'1.23 USDT' / Money / [Money] -> 1.23."""
    if isinstance(value, list):
        return sum(_money(v) for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0.0
    return float(str(value).split()[0])


def trades_frame(engine: Any, recorder: Recorder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(closed trades, positions still open) from the engine's reports."""
    positions = engine.trader.generate_positions_report()
    fills = engine.trader.generate_order_fills_report()
    fee_of = {str(k): _money(v) for k, v in fills["commissions"].items()} if len(fills) else {}
    if len(positions) == 0:
        return pd.DataFrame(columns=TRADE_COLUMNS), pd.DataFrame()
    positions = positions[~positions["is_snapshot"].astype(bool)]
    closed = positions[positions["ts_closed"].notna()]
    still_open = positions[positions["ts_closed"].isna()]
    rows = []
    for _, p in closed.iterrows():
        entry = recorder.orders.get(str(p["opening_order_id"]))
        exit_ = recorder.orders.get(str(p["closing_order_id"]))
        side = 1 if p["entry"] == "BUY" else -1
        qty = float(p["peak_qty"])
        entry_px, exit_px = float(p["avg_px_open"]), float(p["avg_px_close"])
        fees = fee_of.get(str(p["opening_order_id"]), 0.0) + fee_of.get(
            str(p["closing_order_id"]), 0.0
        )
        slippage = 0.0
        if entry is not None:
            slippage += side * (entry_px - entry.touch_px) * qty
        if exit_ is not None:
            slippage += side * (exit_.touch_px - exit_px) * qty
        entry_ns = int(pd.Timestamp(p["ts_opened"]).value)
        exit_ns = int(pd.Timestamp(p["ts_closed"]).value)
        rows.append(
            {
                "symbol": str(p["instrument_id"]).split(".")[0],
                "side": "LONG" if side > 0 else "SHORT",
                "entry_time": pd.Timestamp(entry_ns, tz="UTC").isoformat(),
                "exit_time": pd.Timestamp(exit_ns, tz="UTC").isoformat(),
                "entry_price": entry_px,
                "exit_price": exit_px,
                "qty": qty,
                "notional_usd": round(entry_px * qty, 6),
                "gross_pnl_usd": round(side * (exit_px - entry_px) * qty, 8),
                "fees_usd": round(fees, 8),
                "pnl_usd": _money(p["realized_pnl"]),
                "slippage_usd": round(slippage, 8),
                "vol_bp": entry.vol_bp if entry else math.nan,
                "spread_bp": entry.spread_bp if entry else math.nan,
                "l1_depth_usd": entry.l1_depth_usd if entry else math.nan,
                "state": entry.state if entry else -1,
                "confidence": entry.confidence if entry else math.nan,
                "exp_edge_bp": entry.exp_edge_bp if entry else math.nan,
                "exit_reason": exit_.kind if exit_ else "",
                "decision_time": pd.Timestamp(entry.ts_ns, tz="UTC").isoformat() if entry else "",
                "entry_ns": entry_ns,
                "exit_ns": exit_ns,
            }
        )
    trades = pd.DataFrame(rows, columns=TRADE_COLUMNS).sort_values("entry_ns", kind="stable")
    return trades.reset_index(drop=True), still_open


def timeline_frame(recorder: Recorder) -> pd.DataFrame:
    """Market columns around the model's output columns (`output_table`, as the pyfunc)."""
    market = pd.DataFrame.from_records(recorder.timeline, columns=list(TIMELINE_FIELDS))
    if not recorder.outputs:
        return market
    model = pd.DataFrame(output_table(np.vstack(recorder.outputs)))
    keys, quotes = market[["ts_ns", "decided_ns", "symbol"]], market[["mid", "spread_bp", "vol_bp"]]
    return pd.concat([keys, model, quotes], axis=1)


def equity_curve(
    trades: pd.DataFrame, timeline: pd.DataFrame, start_ns: int, end_ns: int, balance: float
) -> pd.DataFrame:
    """Equity at the end of every minute: balance + realized PnL of closed trades +
    open trades marked at the mid (their entry fee already paid)."""
    minutes = np.arange(start_ns + NS_PER_MIN, end_ns + 1, NS_PER_MIN, dtype=np.int64)
    if len(minutes) == 0 or minutes[-1] != end_ns:
        minutes = np.append(minutes, end_ns)
    equity = np.full(len(minutes), balance, dtype=np.float64)
    if len(trades):
        mids = {
            sym: (g["ts_ns"].to_numpy(np.int64), g["mid"].to_numpy(np.float64))
            for sym, g in timeline.groupby("symbol")
        }
        for t in trades.itertuples():
            side = 1 if t.side == "LONG" else -1
            closed = minutes >= t.exit_ns
            equity[closed] += t.pnl_usd
            open_ = (minutes >= t.entry_ns) & ~closed
            if open_.any() and t.symbol in mids:
                ts, mid = mids[t.symbol]
                at = np.searchsorted(ts, minutes[open_], side="right") - 1
                marks = np.where(at >= 0, mid[np.maximum(at, 0)], t.entry_price)
                entry_fee = t.fees_usd * t.entry_price / (t.entry_price + t.exit_price)
                equity[open_] += side * (marks - t.entry_price) * t.qty - entry_fee
    return pd.DataFrame({"ts_ns": minutes, "equity_usd": equity})


def realized_limit_usage(trades: pd.DataFrame) -> tuple[float, float]:
    """The worst realized loss of any UTC day and the worst drawdown of any regime state
    within a day, from closed trades in exit order: what DAILY and DD limit."""
    if len(trades) == 0:
        return 0.0, 0.0
    ordered = trades.sort_values("exit_ns", kind="stable")
    day = ordered["exit_ns"].to_numpy() // (86_400 * 1_000_000_000)
    pnl = ordered["pnl_usd"].to_numpy()
    state = ordered["state"].to_numpy()
    worst_day = worst_state = 0.0
    for d in np.unique(day):
        in_day = day == d
        worst_day = max(worst_day, -float(np.minimum.accumulate(np.cumsum(pnl[in_day])).min()))
        for s in np.unique(state[in_day]):
            path = np.concatenate([[0.0], np.cumsum(pnl[in_day & (state == s)])])
            worst_state = max(worst_state, float((np.maximum.accumulate(path) - path).max()))
    return max(0.0, worst_day), worst_state


def kpis(
    trades: pd.DataFrame,
    equity: pd.DataFrame,
    timeline: pd.DataFrame,
    blocks: dict[str, int],
    window_ns: int,
    n_symbols: int,
    balance: float,
    nan_steps: int,
) -> dict[str, Any]:
    eq = np.concatenate([[balance], equity["equity_usd"].to_numpy()])
    returns = np.diff(eq) / eq[:-1]
    std = float(returns.std(ddof=1)) if len(returns) > 1 else 0.0
    downside = returns[returns < 0]
    down_std = float(np.sqrt(np.mean(downside**2))) if len(downside) else 0.0
    scale = math.sqrt(MINUTES_PER_YEAR)
    mean = float(returns.mean()) if len(returns) else 0.0
    peak = np.maximum.accumulate(eq)
    drawdown = peak - eq
    pnl = trades["pnl_usd"].to_numpy() if len(trades) else np.zeros(0)
    durations = (trades["exit_ns"] - trades["entry_ns"]).to_numpy() if len(trades) else np.zeros(0)
    turnover = (
        float((trades["qty"] * (trades["entry_price"] + trades["exit_price"])).sum())
        if len(trades)
        else 0.0
    )
    states = timeline["state"].to_numpy() if len(timeline) else np.zeros(0, dtype=int)
    counts = np.bincount(states[states >= 0]) if len(states) else np.zeros(0, dtype=np.int64)
    share = counts / max(1, int(counts.sum()))
    occupied = share[share > 0]
    numeric = timeline.select_dtypes("number") if len(timeline) else timeline
    nan_count = (
        int(numeric.isna().to_numpy().sum())
        + int(trades[["pnl_usd"]].isna().to_numpy().sum())
        + nan_steps
    )
    worst_day, worst_state = realized_limit_usage(trades)
    return {
        "net_pnl_usd": round(float(pnl.sum()), 6),
        "gross_pnl_usd": round(float(trades["gross_pnl_usd"].sum()), 6) if len(trades) else 0.0,
        "fees_usd": round(float(trades["fees_usd"].sum()), 6) if len(trades) else 0.0,
        "slippage_usd": round(float(trades["slippage_usd"].sum()), 6) if len(trades) else 0.0,
        "final_equity_usd": round(float(eq[-1]), 6),
        "return_pct": round(float(eq[-1] / balance - 1) * 100, 6),
        "sharpe": round(mean / std * scale, 4) if std > 0 else 0.0,
        "sortino": round(mean / down_std * scale, 4) if down_std > 0 else 0.0,
        "max_drawdown_usd": round(float(drawdown.max()), 6),
        "max_drawdown_pct": round(float((drawdown / peak).max()) * 100, 6),
        "trades": len(trades),
        "hit_rate": round(float((pnl > 0).mean()), 6) if len(pnl) else 0.0,
        "avg_pnl_usd": round(float(pnl.mean()), 6) if len(pnl) else 0.0,
        "turnover_usd": round(turnover, 2),
        "turnover_x": round(turnover / balance, 6),
        "exposure": round(float(durations.sum()) / (window_ns * n_symbols), 6),
        "avg_hold_s": round(float(durations.mean()) / 1e9, 3) if len(durations) else 0.0,
        "max_daily_loss_usd": round(worst_day, 6),
        "max_state_drawdown_usd": round(worst_state, 6),
        "guardrail_blocks": dict(sorted(blocks.items())),
        "guardrail_blocks_total": int(sum(blocks.values())),
        "state_entropy": round(float(-(occupied * np.log(occupied)).sum()), 6),
        "state_occupancy": {k: round(float(v), 6) for k, v in enumerate(share)},
        "nan_count": nan_count,
        "steps": len(timeline),
        "sharpe_basis": "mean/std of per-minute equity returns x sqrt(525600)",
    }


def write_equity_png(equity: pd.DataFrame, trades: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    times = pd.to_datetime(equity["ts_ns"], utc=True)
    ax.plot(times, equity["equity_usd"], lw=1.2, color="#1f77b4")
    ax.set_title(title)
    ax.set_ylabel("equity (USDT)")
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_reports(
    engine: Any,
    strategy: Any,
    recorder: Recorder,
    instruments: list[Any],
    window: Any,
    run_dir: Path,
    *,
    starting_balance_usd: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    from nautilus_trader.model.currencies import USDT

    trades, still_open = trades_frame(engine, recorder)
    timeline = timeline_frame(recorder)
    timeline = timeline[timeline["ts_ns"] >= window.start_ns].reset_index(drop=True)  # no warm-up
    equity = equity_curve(trades, timeline, window.start_ns, window.end_ns, starting_balance_usd)
    blocks = strategy.snapshot().blocks
    summary = kpis(
        trades,
        equity,
        timeline,
        blocks,
        window.end_ns - window.start_ns,
        len(instruments),
        starting_balance_usd,
        recorder.nan_steps,
    )
    account = engine.portfolio.account(instruments[0].id.venue)
    summary["account_final_balance_usd"] = float(account.balance_total(USDT)) if account else None
    summary["open_positions_at_end"] = len(still_open)
    summary.update(
        {
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "starting_balance_usd": starting_balance_usd,
            **extra,
        }
    )
    trades.drop(columns=["entry_ns", "exit_ns"]).to_csv(run_dir / "trades.csv", index=False)
    guard = pd.DataFrame.from_records(
        recorder.blocks, columns=["ts_ns", "symbol", "reason", "detail"]
    )
    guard.insert(0, "time", pd.to_datetime(guard["ts_ns"], utc=True).map(lambda t: t.isoformat()))
    guard.to_csv(run_dir / "guardrails.csv", index=False)
    timeline.insert(
        0, "time", pd.to_datetime(timeline["ts_ns"], utc=True).map(lambda t: t.isoformat())
    )
    timeline.to_csv(run_dir / "state_timeline.csv", index=False, float_format="%.8g")
    equity.insert(0, "time", pd.to_datetime(equity["ts_ns"], utc=True).map(lambda t: t.isoformat()))
    equity.to_csv(run_dir / "equity.csv", index=False)
    write_equity_png(
        equity,
        trades,
        run_dir / "equity.png",
        f"model v{extra.get('model_version')} {', '.join(extra.get('symbols', []))}: "
        f"net {summary['net_pnl_usd']:+.2f} USDT, {summary['trades']} trades",
    )
    if not (run_dir / "data_quality_issues.csv").exists():
        (run_dir / "data_quality_issues.csv").write_text("symbol,kind,day,check,severity,detail\n")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    from trading.backtest.html_report import write_backtest_report, write_report

    # the frames just written: the report does not read them back
    write_report(write_backtest_report, run_dir, None, (equity, trades, timeline))
    return summary


def benchmarks(
    data: list[Any],
    window: Any,
    starting_balance_usd: float,
    slippage_bp: float,
    instruments: dict[Any, Any],
    *,
    bars: bool = False,
) -> dict[str, Any]:
    """Flat and buy-and-hold on the window, from the backtest's own market events (see the
    module's docstring; `bars`: the events of a bar model, which exits at the last bar's
    close). A symbol without a price inside the window is left out."""
    from nautilus_trader.model.data import Bar, QuoteTick

    from trading.data.nautilus import BAR_NS

    entry: dict[Any, float] = {}
    exit_: dict[Any, float] = {}
    for item in data:  # the first ask (a bar model: the first bar's open) in the window
        if bars and isinstance(item, Bar):
            key, price = item.bar_type.instrument_id, item.open.as_double()
            ts = item.ts_event - BAR_NS  # the bar's open time
        elif not bars and isinstance(item, QuoteTick):
            key, price, ts = item.instrument_id, item.ask_price.as_double(), item.ts_event
        else:
            continue
        if key not in entry and window.start_ns <= ts < window.end_ns:
            entry[key] = price
            if len(entry) == len(instruments):
                break
    for item in reversed(data):  # the last bid (a bar model: the last bar's close)
        if bars and isinstance(item, Bar):
            key, price, ts = item.bar_type.instrument_id, item.close.as_double(), item.ts_event
        elif not bars and isinstance(item, QuoteTick):
            key, price, ts = item.instrument_id, item.bid_price.as_double(), item.ts_event
        else:
            continue
        if key not in exit_ and window.start_ns < ts <= window.end_ns:
            exit_[key] = price
            if len(exit_) == len(instruments):
                break
    keys = [k for k in instruments if k in entry and k in exit_]
    slip = slippage_bp / 1e4
    per_symbol = {}
    total = 0.0
    for key in keys:
        fee = float(instruments[key].taker_fee)
        budget = starting_balance_usd / len(keys)
        qty = budget / (entry[key] * (1 + slip) * (1 + fee))
        pnl = qty * exit_[key] * (1 - slip) * (1 - fee) - budget
        total += pnl
        per_symbol[key.symbol.value] = {
            "entry_price": entry[key],
            "exit_price": exit_[key],
            "pnl_usd": round(pnl, 6),
        }
    return {
        "flat_pnl_usd": 0.0,
        "buy_hold_pnl_usd": round(total, 6),
        "buy_hold_return_pct": round(100 * total / starting_balance_usd, 6)
        if starting_balance_usd
        else 0.0,
        "buy_hold": per_symbol,
    }
