"""The live dashboard (`hmmtrader dashboard`, default 127.0.0.1:8050): the ops API (same
endpoints, same token) plus a page that needs no build step.

GET / (the page), GET /api/live (status + history), WebSocket /ws (the same, then an update
every `dashboard.push_s`), GET /api/runs and /api/runs/{name} (past backtest and replay run
directories: summary, equity, state timeline, guardrail counts). The node writes its status
and a history point into the state file at each heartbeat; this app reads them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from serving.ops.app import StatusResponse, build_status, create_ops_app
from trading.jsonsafe import json_safe
from trading.node.state import NodeState
from trading.settings import AppConfig

log = logging.getLogger("hmmtrader.dashboard")
STATIC = Path(__file__).parent / "static" / "dashboard"
RUN_FILES = ("summary.json", "equity.csv", "state_timeline.csv", "guardrails.csv", "trades.csv")


REPORT = "report.html"  # trading.backtest.html_report.REPORT (not imported: pandas)
MAX_TRADES = 5000  # a run's trade list (the newest, when it has more)


class HistoryPoint(BaseModel):
    id: int = Field(default=0, description="increasing with every point the node writes")
    at: str = Field(description="wall time of the heartbeat (UTC)")
    market_time: str | None = None
    equity_usd: float | None = None
    realized_pnl_usd: float | None = None
    unrealized_pnl_usd: float | None = None
    states: dict[str, dict[str, Any]] = Field(default_factory=dict)
    session_id: int | None = None


class LiveResponse(BaseModel):
    status: StatusResponse
    history: list[HistoryPoint]


class RunInfo(BaseModel):
    name: str
    mode: str | None = None
    model_version: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    net_pnl_usd: float | None = None
    trades: int | None = None
    modified: float = Field(description="unix time of its summary.json")
    report: str | None = Field(default=None, description="URL of its report.html")


class RunDetail(BaseModel):
    name: str
    summary: dict[str, Any]
    equity: list[tuple[str, float]] = Field(description="(time, equity USD)")
    states: dict[str, list[tuple[str, int]]] = Field(description="per symbol: (time, state)")
    confidence: dict[str, list[tuple[str, float]]] = Field(description="per symbol")
    guardrails: dict[str, dict[str, int]] = Field(description="reason -> symbol -> count")
    trades: list[dict[str, Any]] = Field(description="every trade (up to max_trades), oldest first")
    prices: dict[str, list[tuple[str, float]]] = Field(
        default_factory=dict, description="per symbol: (time, mid), downsampled"
    )
    pnl: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="net PnL of the trades (USD) by 'day' (exit day, UTC), 'symbol', 'state'",
    )
    report: str | None = Field(default=None, description="URL of its report.html")
    compare: dict[str, list[tuple[str, float]]] = Field(
        default_factory=dict, description="a canary: production's equity (time, USD) by label"
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _every(n: int, limit: int) -> int:
    return max(1, math.ceil(n / limit))


def _report_url(run_dir: Path) -> str | None:
    return f"/runs/{run_dir.name}/report.html" if (run_dir / REPORT).is_file() else None


def _main_dir(run_dir: Path) -> Path:
    """Where a run's summary.json is: the run directory, or a canary's candidate side."""
    return run_dir / "candidate" if (run_dir / "verdict.json").is_file() else run_dir


def list_runs(root: Path) -> list[RunInfo]:
    """Run directories (a backtest's or replay's summary.json, a canary's verdict.json)
    under `root`, newest first."""
    runs: list[RunInfo] = []
    if not root.is_dir():
        return runs
    found = [p.parent for p in root.glob("*/summary.json")]
    found += [p.parent for p in root.glob("*/verdict.json") if p.parent not in found]
    for run_dir in found:
        summary_path = _main_dir(run_dir) / "summary.json"
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            continue  # a run still being written, or not ours
        canary = (run_dir / "verdict.json").is_file()
        runs.append(
            RunInfo(
                name=run_dir.name,
                mode="canary" if canary else summary.get("mode") or "backtest",
                model_version=_text(summary.get("model_version")),
                window_start=summary.get("window_start"),
                window_end=summary.get("window_end"),
                net_pnl_usd=json_safe(summary.get("net_pnl_usd")),
                trades=summary.get("trades"),
                modified=summary_path.stat().st_mtime,
                report=_report_url(run_dir),
            )
        )
    return sorted(runs, key=lambda r: r.modified, reverse=True)


def read_run(root: Path, name: str, max_points: int) -> RunDetail:
    import pandas as pd

    top = (root / name).resolve()
    run_dir = _main_dir(top)
    if top.parent != root.resolve() or not (run_dir / "summary.json").is_file():
        raise HTTPException(404, f"no run {name!r} under {root} (GET /api/runs lists them)")
    summary = json_safe(json.loads((run_dir / "summary.json").read_text()))
    summary.pop("settings", None)

    from trading.backtest.html_report import data_dir

    def equity_of(side: Path) -> list[tuple[str, float]]:
        directory = data_dir(side)  # a reused canary side: the run it points at
        if directory is None:
            return []
        frame = pd.read_csv(directory / "equity.csv")
        frame = frame.iloc[:: _every(len(frame), max_points)]
        return [(str(t), float(e)) for t, e in zip(frame["time"], frame["equity_usd"], strict=True)]

    equity = equity_of(run_dir)
    compare: dict[str, list[tuple[str, float]]] = {}
    if run_dir != top:  # a canary: its verdict, and production on the same window
        verdict = json.loads((top / "verdict.json").read_text())
        summary["mode"] = f"canary ({verdict.get('verdict')})"
        if (top / "production" / "summary.json").is_file():
            compare[f"production v{verdict.get('production_version')}"] = equity_of(
                top / "production"
            )
    states: dict[str, list[tuple[str, int]]] = {}
    confidence: dict[str, list[tuple[str, float]]] = {}
    prices: dict[str, list[tuple[str, float]]] = {}
    if (run_dir / "state_timeline.csv").is_file():
        cols = ("time", "symbol", "state", "confidence", "mid")
        timeline = pd.read_csv(run_dir / "state_timeline.csv", usecols=lambda c: c in cols)
        for symbol, rows in timeline.groupby("symbol", sort=True):
            rows = rows.iloc[:: _every(len(rows), max_points)]
            if "mid" in rows:
                prices[str(symbol)] = [
                    (str(t), float(m)) for t, m in zip(rows["time"], rows["mid"], strict=True)
                ]
            states[str(symbol)] = [
                (str(t), int(s)) for t, s in zip(rows["time"], rows["state"], strict=True)
            ]
            confidence[str(symbol)] = [
                (str(t), round(float(c), 4) if math.isfinite(c) else 0.0)
                for t, c in zip(rows["time"], rows["confidence"], strict=True)
            ]
    guardrails: dict[str, dict[str, int]] = {}
    if (run_dir / "guardrails.csv").is_file():
        blocks = pd.read_csv(run_dir / "guardrails.csv", usecols=["symbol", "reason"])
        for (reason, symbol), count in blocks.groupby(["reason", "symbol"]).size().items():
            guardrails.setdefault(str(reason), {})[str(symbol)] = int(count)
    trades: list[dict[str, Any]] = []
    pnl: dict[str, dict[str, float]] = {}
    if (run_dir / "trades.csv").is_file():
        frame = pd.read_csv(run_dir / "trades.csv")
        if len(frame):
            by = {"day": frame["exit_time"].astype(str).str[:10], "symbol": frame["symbol"],
                  "state": "S" + frame["state"].astype(str)}  # fmt: skip
            pnl = {name: {str(k): round(float(v), 6) for k, v in
                          frame["pnl_usd"].groupby(key).sum().items()}
                   for name, key in by.items()}  # fmt: skip
        trades = json_safe(json.loads(frame.tail(MAX_TRADES).to_json(orient="records")))
    return RunDetail(
        name=name,
        summary=summary,
        equity=equity,
        states=states,
        confidence=confidence,
        guardrails=guardrails,
        trades=trades,
        prices=prices,
        pnl=pnl,
        report=_report_url(top),
        compare=compare,
    )


def _push_key(status: StatusResponse) -> tuple[Any, ...]:
    """What makes a WebSocket update worth sending at once: a new heartbeat snapshot, a
    switch change, or a change in the node's life (a new session, a stop, silence)."""
    node = status.node
    return (status.snapshot_at, status.kill_switch.changed_at, node.session, node.running,
            node.ended_cleanly)  # fmt: skip


def create_dashboard_app(config: AppConfig) -> FastAPI:
    app = create_ops_app(config)
    app.title = "hmm-trader dashboard"
    settings = config.settings.dashboard
    ops = config.settings.ops
    state: NodeState = app.state.node_state
    runs_root = settings.runs_dir or config.home / "runs"

    def live() -> LiveResponse:
        points = state.history(settings.history_points)
        return LiveResponse(
            status=build_status(state, ops),
            history=[HistoryPoint.model_validate(p) for p in points],
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/live", response_model=LiveResponse, summary="Status and history")
    async def api_live() -> LiveResponse:
        return await asyncio.to_thread(live)

    @app.get("/api/runs", response_model=list[RunInfo], summary="Past run directories")
    async def api_runs() -> list[RunInfo]:
        return await asyncio.to_thread(list_runs, runs_root)

    @app.get("/api/runs/{name}", response_model=RunDetail, summary="One past run")
    async def api_run(name: str) -> RunDetail:
        return await asyncio.to_thread(read_run, runs_root, name, settings.max_points)

    @app.get("/runs/{name}/report.html", include_in_schema=False)
    async def run_report(name: str) -> FileResponse:
        report = (runs_root / name / REPORT).resolve()
        if report.parent.parent != runs_root.resolve() or not report.is_file():
            raise HTTPException(404, f"no report of run {name!r}")
        return FileResponse(report, media_type="text/html")

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        """A snapshot (status + history) at connect, then every push_s an update with the
        status and the history points written since (when the node's snapshot, the switch or
        the node's life (started, stopped, gone silent) changed; a keep-alive status every 10
        pushes otherwise)."""
        await socket.accept()
        try:
            first = await asyncio.to_thread(live)
            await socket.send_json({"type": "snapshot", **first.model_dump(mode="json")})
            last_id = first.history[-1].id if first.history else 0
            last_key = _push_key(first.status)
            idle = 0
            while True:
                await asyncio.sleep(settings.push_s)
                status = await asyncio.to_thread(build_status, state, ops)
                key = _push_key(status)
                idle = 0 if key != last_key else idle + 1
                if key == last_key and idle % 10:
                    continue
                last_key = key
                points = await asyncio.to_thread(
                    state.history, settings.history_points, None, last_id
                )
                if points:
                    last_id = points[-1]["id"]
                await socket.send_json(
                    {
                        "type": "update",
                        "status": status.model_dump(mode="json"),
                        "points": [HistoryPoint.model_validate(p).model_dump() for p in points],
                    }
                )
        except (WebSocketDisconnect, RuntimeError):
            return  # the page went away

    return app
