"""report.html: one self-contained page per backtest, canary and simulate run (inline CSS
and SVG charts, no script, nothing loaded from anywhere), for a person to read.

- A backtest: the KPIs of summary.json, the equity curve against flat and buy-and-hold,
  the drawdown, per regime state (time in state, trades, PnL, hit rate), the distribution
  of trade PnL, and the guardrail blocks by reason.
- A canary: the verdict and its rules, candidate and production side by side, and their
  equity curves overlaid.
- A simulate run: each policy's cumulative PnL per day, and its totals.

Every number shown carries its exact value in `data-value` (`data-key` names it), so a
test can compare the page with summary.json. Buy-and-hold is drawn marked to the mid (the
starting balance split evenly over the symbols at the window's first mid); the table gives
summary.json's figure, which pays the fills' slippage and fees."""

from __future__ import annotations

import html
import itertools
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPORT = "report.html"
REUSED_FROM = "reused_from.json"  # a canary side whose KPIs were reused: where its files are
log = logging.getLogger("hmmtrader.report")
MAX_POINTS = 1500  # per series: enough for a 1,000-pixel chart
# the state colour scale of the dashboard and of the MLflow state plots: matplotlib's
# coolwarm, S0 (the calmest) blue to the most volatile red
COOLWARM = ("#3b4cc0", "#6282ea", "#8db0fe", "#b9d0f9", "#dddcdc", "#f5c4ac", "#f4987a",
            "#dd5f4b", "#b40426")  # fmt: skip


def state_color(state: int, k: int) -> str:
    at = min(1.0, max(0.0, state / max(1, k - 1))) * (len(COOLWARM) - 1)
    return COOLWARM[int(at + 0.5)]


SERIES_COLORS = ("#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#9467bd", "#8c564b")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;
color:#1d2329;background:#fff;max-width:1180px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5b6670;margin-bottom:16px}
table{border-collapse:collapse;margin:6px 0 12px}td,th{padding:4px 10px;border-bottom:1px solid
#e3e7ea;text-align:right}th{background:#f4f6f8}td:first-child,th:first-child{text-align:left}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:24px}.chart{margin:6px 0}
svg text{font:11px system-ui,sans-serif;fill:#5b6670}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:14px;
height:3px;margin-right:5px;vertical-align:middle}
"""


def write_report(writer: Callable[..., Path], *args: Any) -> Path | None:
    """Run a report writer; a failure is logged with its traceback and leaves the run's
    results (summary.json, verdict.json) as they are: the page is for reading, the
    verdict does not depend on it."""
    try:
        return writer(*args)
    except Exception:
        log.exception("report.html of %s could not be written", args[0])
        return None


# ---- formatting ---------------------------------------------------------------------
def _num(value: Any, fmt: str = "{:+,.2f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def _cell(key: str, value: Any, fmt: str = "{:+,.2f}", suffix: str = "") -> str:
    shown = _num(value, fmt) + (suffix if value is not None else "")
    data = html.escape(json.dumps(value), quote=True)
    return f'<td data-key="{html.escape(key)}" data-value="{data}">{html.escape(shown)}</td>'


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _thin(x: np.ndarray, *ys: np.ndarray) -> tuple[np.ndarray, ...]:
    if len(x) <= MAX_POINTS:
        return (x, *ys)
    idx = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).astype(int))
    return (x[idx], *(y[idx] for y in ys))


# ---- charts (inline SVG) --------------------------------------------------------------
def line_chart(
    series: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    title: str,
    chart_id: str,
    width: int = 1100,
    height: int = 260,
    unit: str = "USD",
    bands: Sequence[tuple[float, float, str]] = (),
) -> str:
    """Lines (name, x in ns, y) on shared axes, optional background bands (x0, x1,
    colour). Each line is a <polyline data-series=name data-points=n>."""
    drawn: list[tuple[str, np.ndarray, np.ndarray]] = []
    for name, x, y in series:
        if len(x):
            tx, ty = _thin(np.asarray(x, np.float64), np.asarray(y, np.float64))
            drawn.append((name, tx, ty))
    pad_l, pad_r, pad_t, pad_b = 70, 12, 22, 28
    out = [f'<svg id="{chart_id}" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
           f'<text x="{pad_l}" y="14" style="font-weight:600;fill:#1d2329">{_esc(title)}</text>']  # fmt: skip
    if not drawn:
        out.append(f'<text x="{pad_l}" y="{height // 2}">no data</text></svg>')
        return "".join(out)
    x0 = min(float(x.min()) for _, x, _ in drawn)
    x1 = max(float(x.max()) for _, x, _ in drawn)
    finite = [y[np.isfinite(y)] for _, _, y in drawn]
    y0 = min((float(v.min()) for v in finite if len(v)), default=0.0)
    y1 = max((float(v.max()) for v in finite if len(v)), default=1.0)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    span_x = (x1 - x0) or 1.0
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def px(x: np.ndarray | float) -> Any:
        return pad_l + (np.asarray(x) - x0) / span_x * w

    def py(y: np.ndarray | float) -> Any:
        return pad_t + (1 - (np.asarray(y) - y0) / (y1 - y0)) * h

    for b0, b1, colour in bands:
        a, b = float(px(max(b0, x0))), float(px(min(b1, x1)))
        if b > a:
            out.append(f'<rect x="{a:.1f}" y="{pad_t}" width="{b - a:.1f}" height="{h}" '
                       f'fill="{colour}" opacity="0.13"/>')  # fmt: skip
    for frac in (0.0, 0.5, 1.0):
        v = y0 + frac * (y1 - y0)
        yy = float(py(v))
        out.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{yy:.1f}" y2="{yy:.1f}" '
                   f'stroke="#e3e7ea"/><text x="{pad_l - 6}" y="{yy + 4:.1f}" '
                   f'text-anchor="end">{v:,.2f}</text>')  # fmt: skip
    for frac in (0.0, 0.5, 1.0):
        t = pd.Timestamp(int(x0 + frac * span_x), tz="UTC").strftime("%Y-%m-%d %H:%M")
        xx = float(px(x0 + frac * span_x))
        anchor = ("start", "middle", "end")[int(frac * 2)]
        out.append(f'<text x="{xx:.1f}" y="{height - 8}" text-anchor="{anchor}">{t}</text>')
    for i, (name, x, y) in enumerate(drawn):
        ok = np.isfinite(y)
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(x[ok]), py(y[ok]), strict=True))
        colour = SERIES_COLORS[i % len(SERIES_COLORS)]
        dash = ' stroke-dasharray="5,4"' if "buy-and-hold" in name or name == "flat" else ""
        out.append(f'<polyline data-series="{_esc(name)}" data-points="{int(ok.sum())}" '
                   f'fill="none" stroke="{colour}" stroke-width="1.6"{dash} points="{pts}"/>')  # fmt: skip
    out.append(f"</svg><div class='legend'>{_legend([n for n, _, _ in drawn])} ({unit})</div>")
    return "".join(out)


def _legend(names: Sequence[str]) -> str:
    return "".join(f'<span><i style="background:{SERIES_COLORS[i % len(SERIES_COLORS)]}"></i>'
                   f"{_esc(n)}</span>" for i, n in enumerate(names))  # fmt: skip


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, chart_id: str,
              width: int = 520, height: int = 220) -> str:  # fmt: skip
    """Vertical bars, one <rect data-label data-value> each."""
    pad_l, pad_b, pad_t = 50, 40, 22
    out = [f'<svg id="{chart_id}" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">'
           f'<text x="{pad_l}" y="14" style="font-weight:600;fill:#1d2329">{_esc(title)}</text>']  # fmt: skip
    if not values:
        return "".join(out) + f'<text x="{pad_l}" y="{height // 2}">none</text></svg>'
    top = max(max(values), 0.0) or 1.0
    bottom = min(min(values), 0.0)
    h = height - pad_t - pad_b
    slot = (width - pad_l - 10) / len(values)
    zero = pad_t + top / (top - bottom) * h
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        bar_h = abs(v) / (top - bottom) * h
        y = zero - bar_h if v >= 0 else zero
        x = pad_l + i * slot + slot * 0.1
        colour = "#1f77b4" if v >= 0 else "#d62728"
        out.append(f'<rect data-label="{_esc(label)}" data-value="{v}" x="{x:.1f}" y="{y:.1f}" '
                   f'width="{slot * 0.8:.1f}" height="{max(bar_h, 0.5):.1f}" fill="{colour}"/>')  # fmt: skip
        if len(values) <= 16:
            out.append(f'<text x="{x + slot * 0.4:.1f}" y="{height - pad_b + 14}" '
                       f'text-anchor="middle">{_esc(label)}</text>')  # fmt: skip
    out.append(f'<line x1="{pad_l}" x2="{width - 10}" y1="{zero:.1f}" y2="{zero:.1f}" '
               'stroke="#5b6670"/></svg>')  # fmt: skip
    return "".join(out)


# ---- a backtest run ---------------------------------------------------------------------
KPI_ROWS = (
    ("net_pnl_usd", "net PnL (after fees, slippage)", "{:+,.2f}", " USD"),
    ("gross_pnl_usd", "gross PnL", "{:+,.2f}", " USD"),
    ("fees_usd", "fees", "{:,.2f}", " USD"),
    ("slippage_usd", "slippage", "{:,.2f}", " USD"),
    ("return_pct", "return", "{:+.3f}", " %"),
    ("sharpe", "Sharpe (1-min returns, annualized)", "{:.2f}", ""),
    ("sortino", "Sortino", "{:.2f}", ""),
    ("max_drawdown_usd", "max drawdown", "{:,.2f}", " USD"),
    ("trades", "trades", "{:,}", ""),
    ("hit_rate", "hit rate", "{:.1%}", ""),
    ("avg_pnl_usd", "average trade", "{:+,.3f}", " USD"),
    ("turnover_usd", "turnover", "{:,.0f}", " USD"),
    ("exposure", "exposure", "{:.1%}", ""),
    ("guardrail_blocks_total", "guardrail blocks", "{:,}", ""),
    ("state_entropy", "state entropy", "{:.3f}", " nats"),
)


def _kpi_table(s: dict[str, Any], prefix: str = "") -> str:
    rows = [f"<tr><td>{_esc(label)}</td>{_cell(prefix + key, s.get(key), fmt, suffix)}</tr>"
            for key, label, fmt, suffix in KPI_ROWS]  # fmt: skip
    b = s.get("benchmarks") or {}
    if b:
        rows.append(
            f"<tr><td>flat (no trade)</td>{_cell(prefix + 'flat_pnl_usd', b.get('flat_pnl_usd'), suffix=' USD')}</tr>"
        )
        rows.append(
            f"<tr><td>buy-and-hold (with costs)</td>{_cell(prefix + 'buy_hold_pnl_usd', b.get('buy_hold_pnl_usd'), suffix=' USD')}</tr>"
        )
    return "<table><tr><th>KPI</th><th>value</th></tr>" + "".join(rows) + "</table>"


def _bands(timeline: pd.DataFrame, k: int) -> list[tuple[float, float, str]]:
    """Background bands of the first symbol's regime state (state changes only)."""
    if timeline.empty or "state" not in timeline:
        return []
    first = timeline[timeline["symbol"] == timeline["symbol"].iloc[0]]
    ts, st = first["ts_ns"].to_numpy(np.int64), first["state"].to_numpy()
    change = np.flatnonzero(np.diff(st) != 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(ts) - 1]])
    if len(starts) > 400:  # too many changes to draw: no bands
        return []
    return [(float(ts[a]), float(ts[b]), state_color(int(st[a]), k))
            for a, b in zip(starts, ends, strict=True)]  # fmt: skip


def buy_hold_curve(timeline: pd.DataFrame, balance: float) -> tuple[np.ndarray, np.ndarray]:
    """The starting balance split evenly over the symbols at the first mid, marked to the mid
    (no costs), on the first symbol's timestamps."""
    if timeline.empty:
        return np.array([]), np.array([])
    symbols = list(dict.fromkeys(timeline["symbol"]))
    grid = timeline[timeline["symbol"] == symbols[0]]["ts_ns"].to_numpy(np.int64)
    value = np.zeros(len(grid))
    for sym in symbols:
        g = timeline[timeline["symbol"] == sym]
        ts, mid = g["ts_ns"].to_numpy(np.int64), g["mid"].to_numpy(np.float64)
        at = np.clip(np.searchsorted(ts, grid, side="right") - 1, 0, len(ts) - 1)
        value += balance / len(symbols) * (mid[at] / mid[0] - 1)
    return grid, value


def regime_table(trades: pd.DataFrame, s: dict[str, Any]) -> tuple[str, pd.DataFrame]:
    occupancy = {int(k): float(v) for k, v in (s.get("state_occupancy") or {}).items()}
    states = sorted(set(occupancy) | {int(x) for x in trades.get("state", pd.Series([])).dropna()})
    rows = []
    for st in states:
        t = trades[trades["state"] == st] if len(trades) else trades
        n = len(t)
        rows.append({"state": st, "time": occupancy.get(st, 0.0), "trades": n,
                     "pnl": float(t["pnl_usd"].sum()) if n else 0.0,
                     "hit": float((t["pnl_usd"] > 0).mean()) if n else None})  # fmt: skip
    frame = pd.DataFrame(rows)
    body = "".join(
        f"<tr><td><i style='display:inline-block;width:10px;height:10px;background:"
        f"{state_color(r.state, len(frame))}'></i> state {r.state}</td>"
        f"{_cell(f'state_{r.state}_time', r.time, '{:.1%}')}"
        f"{_cell(f'state_{r.state}_trades', r.trades, '{:,}')}"
        f"{_cell(f'state_{r.state}_pnl_usd', round(r.pnl, 6), '{:+,.2f}')}"
        f"{_cell(f'state_{r.state}_hit_rate', r.hit, '{:.1%}')}</tr>"
        for r in frame.itertuples()
    )
    return ("<table><tr><th>regime state</th><th>time in state</th><th>trades</th>"
            f"<th>PnL USD</th><th>hit rate</th></tr>{body}</table>"), frame  # fmt: skip


def data_dir(side: Path) -> Path | None:
    """The directory with a backtest's equity.csv, trades.csv and timeline: `side` itself,
    or, for a canary side whose KPIs were reused, the run it points at (if still there)."""
    if (side / "equity.csv").is_file():
        return side
    try:
        source = Path(json.loads((side / REUSED_FROM).read_text())["run_dir"])
    except (OSError, ValueError, KeyError):
        return None
    return source if (source / "equity.csv").is_file() else None


def run_sections(
    side: Path,
    s: dict[str, Any],
    key: str = "run",
    frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None,
) -> str:
    """The body of one backtest's report (also used per side of a canary). `frames`:
    (equity, trades, timeline) when the caller holds them (the backtest that just wrote
    them), else they are read from the run directory."""
    if frames is not None:
        equity, trades, timeline = frames
    else:
        run_dir = data_dir(side)
        if run_dir is None:
            return ("<p>This backtest's equity, trades and timeline are not here (its KPIs "
                    "were reused from an earlier run that is gone).</p>")  # fmt: skip
        equity = pd.read_csv(run_dir / "equity.csv")
        trades = pd.read_csv(run_dir / "trades.csv")
        timeline = pd.read_csv(run_dir / "state_timeline.csv",
                               usecols=lambda c: c in ("ts_ns", "symbol", "state", "mid"))  # fmt: skip
    balance = float(s.get("starting_balance_usd") or 0.0)
    ts, eq = equity["ts_ns"].to_numpy(np.int64), equity["equity_usd"].to_numpy(np.float64)
    pnl = eq - balance
    series = [("strategy net PnL", ts, pnl)]
    if s.get("benchmarks"):
        series.append(("flat", ts[[0, -1]] if len(ts) else ts, np.zeros(min(len(ts), 2))))
        bx, by = buy_hold_curve(timeline, balance)
        series.append(("buy-and-hold (marked to mid)", bx, by))
    drawdown = eq - np.maximum.accumulate(eq) if len(eq) else eq
    regimes, _ = regime_table(trades, s)
    blocks = s.get("guardrail_blocks") or {}
    hist_labels, hist_values = _histogram(trades)
    return "".join([
        "<h2>Equity and benchmarks</h2>",
        line_chart(series, title="PnL over the window (background: regime state of "
                   f"{_esc(timeline['symbol'].iloc[0]) if len(timeline) else '-'})",
                   chart_id=f"{key}-equity", bands=_bands(timeline, len(s.get("state_occupancy") or {}))),
        line_chart([("drawdown", ts, drawdown)], title="Drawdown from the running peak",
                   chart_id=f"{key}-drawdown", height=170),
        "<h2>Per regime state</h2>", regimes,
        "<div class='grid'>",
        bar_chart(hist_labels, hist_values, title="Trades by net PnL (USD)",
                  chart_id=f"{key}-trades"),
        bar_chart(list(blocks), [float(v) for v in blocks.values()],
                  title="Guardrail blocks by reason", chart_id=f"{key}-guardrails"),
        "</div>",
        "<table><tr><th>guardrail</th><th>blocks</th></tr>"
        + "".join(f"<tr><td>{_esc(k)}</td>{_cell(f'guardrail_{k}', v, '{:,}')}</tr>"
                  for k, v in blocks.items())
        + "</table>",
    ])  # fmt: skip


def _histogram(trades: pd.DataFrame, bins: int = 12) -> tuple[list[str], list[float]]:
    if trades.empty:
        return [], []
    counts, edges = np.histogram(trades["pnl_usd"].to_numpy(np.float64), bins=bins)
    return [f"{(a + b) / 2:+.2f}" for a, b in itertools.pairwise(edges)], [float(c) for c in counts]


def _page(title: str, subtitle: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}"
            f"</title><style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>"
            f"<div class='sub'>{subtitle}</div>{body}</body></html>")  # fmt: skip


def write_backtest_report(
    run_dir: Path,
    title: str | None = None,
    frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None,
) -> Path:
    """report.html of a backtest run directory (summary.json, and equity.csv, trades.csv,
    state_timeline.csv unless `frames` holds them: see run_sections)."""
    s = json.loads((run_dir / "summary.json").read_text())
    title = title or f"Backtest of model version {s.get('model_version')}"
    sub = (f"{_esc(', '.join(s.get('symbols') or []))} · {_esc(s.get('window_start'))} .. "
           f"{_esc(s.get('window_end'))} · {_esc(s.get('data', ''))} · run directory "
           f"{_esc(run_dir)}")  # fmt: skip
    body = "<h2>Key figures</h2>" + _kpi_table(s) + run_sections(run_dir, s, frames=frames)
    out = run_dir / REPORT
    out.write_text(_page(title, sub, body), encoding="utf-8")
    return out


# ---- a canary -------------------------------------------------------------------------
def write_canary_report(canary_dir: Path) -> Path:
    """report.html of a canary: the verdict, candidate and production side by side, their
    equity curves overlaid, then each side's sections."""
    verdict = json.loads((canary_dir / "verdict.json").read_text())
    sides = {name: canary_dir / name for name in ("candidate", "production")
             if (canary_dir / name / "summary.json").is_file()}  # fmt: skip
    summaries = {n: json.loads((d / "summary.json").read_text()) for n, d in sides.items()}
    rules = "".join(
        f"<tr><td>{_esc(r['name'])}</td><td style='text-align:left'>{_esc(r.get('text', ''))}"
        f"</td>{_cell('rule_' + r['name'] + '_candidate', r.get('candidate'), '{:,.4g}')}"
        f"{_cell('rule_' + r['name'] + '_production', r.get('production'), '{:,.4g}')}"
        f"<td class='{'pass' if r.get('passed') else 'fail'}' data-key='rule_{_esc(r['name'])}'>"
        f"{'passed' if r.get('passed') else 'FAILED'}{' (waived)' if r.get('waived') else ''}"
        "</td></tr>"
        for r in verdict.get("rules", [])
    )
    side_by_side = "<table><tr><th>KPI</th>" + "".join(
        f"<th>{n} (v{_esc(summaries[n].get('model_version'))})</th>" for n in summaries
    ) + "</tr>" + "".join(
        f"<tr><td>{_esc(label)}</td>"
        + "".join(_cell(f"{n}_{key}", summaries[n].get(key), fmt, suffix) for n in summaries)
        + "</tr>"
        for key, label, fmt, suffix in KPI_ROWS
    ) + "</table>"  # fmt: skip
    overlay = []
    for n, side in sides.items():
        d = data_dir(side)
        if d is None:
            continue
        eq = pd.read_csv(d / "equity.csv")
        balance = float(summaries[n].get("starting_balance_usd") or 0.0)
        overlay.append((f"{n} v{summaries[n].get('model_version')}", eq["ts_ns"].to_numpy(np.int64),
                        eq["equity_usd"].to_numpy(np.float64) - balance))  # fmt: skip
    word = verdict.get("verdict", "?")
    cls = "pass" if word == "passed" else "fail"
    title = f"Canary of model version {verdict.get('version')}"
    sub = (
        f"<span class='{cls}' data-key='verdict'>{_esc(word)}</span> against "
        f"{'version ' + _esc(verdict['production_version']) if verdict.get('production_version') else 'the floors only'}"
        f" · {_esc(verdict.get('window_start'))} .. {_esc(verdict.get('window_end'))} · "
        f"{_esc(canary_dir)}"
    )
    body = ["<h2>Rules</h2><table><tr><th>rule</th><th>requires</th><th>candidate</th>"
            f"<th>production</th><th>result</th></tr>{rules}</table>",
            "<h2>Candidate and production</h2>", side_by_side,
            line_chart(overlay, title="Net PnL over the holdout: candidate and production",
                       chart_id="canary-overlay")]  # fmt: skip
    for n, d in sides.items():
        body.append(
            f"<h2 style='font-size:19px'>{n}: version {_esc(summaries[n].get('model_version'))}</h2>"
        )
        body.append(run_sections(d, summaries[n], key=n))
    out = canary_dir / REPORT
    out.write_text(_page(title, sub, "".join(body)), encoding="utf-8")
    return out


# ---- a simulate run -------------------------------------------------------------------
def write_simulate_report(run_dir: Path, summary: dict[str, Any]) -> Path:
    """report.html of a simulate run: each policy's cumulative PnL per day and totals
    (summary: the run's summary.json)."""
    per_day = [d for d in summary.get("per_day") or [] if not d.get("skipped")]
    totals = summary.get("net_pnl_usd") or {}
    day_ns = [pd.Timestamp(d["day"], tz="UTC").value for d in per_day]
    series = []
    for p in totals:
        values = np.cumsum([float((d.get("pnl") or {}).get(p) or 0.0) for d in per_day])
        series.append((p, np.asarray(day_ns, np.int64), values))
    table = "<table><tr><th>policy</th><th>net PnL over the days</th></tr>" + "".join(
        f"<tr><td>{_esc(p)}</td>{_cell('total_' + p, v, '{:+,.2f}', ' USD')}</tr>"
        for p, v in totals.items()
    ) + "</table>"  # fmt: skip
    body = ("<h2>Totals</h2>" + table +
            line_chart(series, title="Cumulative net PnL per policy (one point per day)",
                       chart_id="simulate-policies"))  # fmt: skip
    out = run_dir / REPORT
    sub = f"{len(per_day)} trading days · {_esc(run_dir)}"
    out.write_text(_page(f"Simulated retrain policies: {summary.get('model', '')}", sub, body),
                   encoding="utf-8")  # fmt: skip
    return out


def write_any_report(run_dir: Path) -> Path:
    """The report of whatever run `run_dir` is: a canary (verdict.json), a simulate run
    (summary.json with per_day), or a backtest or replay (summary.json, equity.csv)."""
    from trading.errors import InputError

    if (run_dir / "verdict.json").is_file():
        return write_canary_report(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{run_dir} has no summary.json or verdict.json: not a run directory")
    summary = json.loads(summary_path.read_text())
    if "per_day" in summary:
        return write_simulate_report(run_dir, summary)
    if not (run_dir / "equity.csv").is_file():
        raise InputError(f"{run_dir} has no equity.csv: the run did not finish")
    return write_backtest_report(run_dir)
