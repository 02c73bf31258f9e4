"""`hmmtrader node`: the trading node (replay, paper, testnet, live)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from hmmtrader.cli.common import console, load_config
from hmmtrader.cli.evaluate import print_summary

app = typer.Typer()  # top-level command: node


def _symbols(symbols: str | None, old: list[str] | None) -> list[str]:
    """--symbols A,B (as every command), plus the old repeated --symbol X.BINANCE."""
    names = [s for s in (symbols or "").split(",") if s.strip()] + list(old or [])
    return [s.strip().upper().removesuffix(".BINANCE") for s in names]


@app.command("node")
def node_cmd(
    mode: Annotated[
        Literal["replay", "paper", "testnet", "live"] | None,
        typer.Option(help="replay: the lake, offline (default node.mode)."),
    ] = None,
    symbols: Annotated[
        str | None,
        typer.Option(
            "--symbols", help="Comma-separated, e.g. BTCUSDT,ETHUSDT (default node.symbols)."
        ),
    ] = None,
    symbol: Annotated[
        list[str] | None, typer.Option("--symbol", hidden=True, help="Old form of --symbols.")
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Required (with TRADING_ENABLED=true) for live mode.")
    ] = False,
    speed: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Replay pace of the window (its warm-up plays unpaced): 1 real time, 60 a minute per second, 0 as fast as possible.",
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Replay: first UTC day or time (default: last lake day).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Replay: last UTC day or end time.")] = None,
    inference: Annotated[
        Literal["in_process", "remote"] | None,
        typer.Option(help="in_process: registry, hot reload; remote: serving.url."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Replay run directory (default <home>/runs/node-replay-*).")
    ] = None,
    gate: Annotated[
        bool, typer.Option(help="Replay: run the data-quality gate on the window first.")
    ] = True,
    exchange_url: Annotated[
        str | None,
        typer.Option(
            help="Paper/testnet: a Binance-compatible exchange at http://HOST:PORT, e.g. "
            "`hmmtrader exchange` (default node.exchange_url; unset: Binance)."
        ),
    ] = None,
    live_exchange_url: Annotated[
        bool,
        typer.Option(
            "--live-exchange-url", help="Let a live node use the exchange URL override too."
        ),
    ] = False,
    max_seconds: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this many seconds (wall clock).")
    ] = None,
) -> None:
    """Run the NautilusTrader trading node with the regime strategy. Stop with Ctrl-C or
    SIGTERM (a clean stop); after a crash it starts with trading disabled."""
    from trading.node.session import NodeOptions, run_node

    config = load_config()
    node = config.settings.node
    opts = NodeOptions(
        mode=mode or node.mode,
        symbols=_symbols(symbols, symbol) or list(node.symbols),
        live=live,
        speed=speed,
        start=start,
        end=end,
        inference=inference,
        run_dir=out,
        max_seconds=max_seconds,
        gate=gate,
        exchange_url=exchange_url,
        live_exchange_url=live_exchange_url,
    )
    result = run_node(config, opts, echo=lambda text: console.print(text, highlight=False))
    if result.summary.get("net_pnl_usd") is not None:
        print_summary(result.summary, f"node {result.mode}")
    status = result.summary.get("status", {})
    console.print(
        f"node {result.mode} stopped cleanly after {result.elapsed_s:.1f} s: "
        f"{result.ticks:,} ticks, {result.new_orders} new orders"
        + (f", {result.recovered_orders} recovered" if result.recovered_orders else "")
        + f"; realized PnL {status.get('realized_pnl_usd', 0.0):+.2f} USD"
        + (f"; run directory {result.run_dir}" if result.run_dir else ""),
        highlight=False,
    )
