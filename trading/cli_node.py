"""`hmmtrader node`: the trading node (replay, paper, testnet, live)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trading.cli import _config, app, console
from trading.cli_backtest import _print_summary
from trading.errors import InputError


@app.command("node")
def node_cmd(
    mode: Annotated[
        str | None,
        typer.Option(help="replay (lake, offline), paper, testnet or live (default node.mode)."),
    ] = None,
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbol", help="Instrument, repeatable: BTCUSDT.BINANCE (default node.symbols)."
        ),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Required (with TRADING_ENABLED=true) for live mode.")
    ] = False,
    speed: Annotated[
        float | None,
        typer.Option(
            min=0, help="Replay pace: 1 real time, 60 a minute per second, 0 as fast as possible."
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Replay: first UTC day or time (default: last lake day).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Replay: last UTC day or end time.")] = None,
    inference: Annotated[
        str | None,
        typer.Option(help="in_process (registry, hot reload) or remote (serving.url)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Replay run directory (default <home>/runs/node-replay-*).")
    ] = None,
    gate: Annotated[
        bool, typer.Option(help="Replay: run the data-quality gate on the window first.")
    ] = True,
    max_seconds: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this many seconds (wall clock).")
    ] = None,
) -> None:
    """Run the NautilusTrader trading node with the regime strategy. Stop with Ctrl-C or
    SIGTERM (a clean stop); after a crash it starts with trading disabled."""
    from trading.node.runner import NodeOptions, run_node

    config = _config()
    node = config.settings.node
    opts = NodeOptions(
        mode=mode or node.mode,
        symbols=list(symbol) if symbol else list(node.symbols),
        live=live,
        speed=speed,
        start=start,
        end=end,
        inference=inference,
        run_dir=out,
        max_seconds=max_seconds,
        gate=gate,
    )
    result = run_node(config, opts, echo=lambda text: console.print(text, highlight=False))
    if result.summary.get("net_pnl_usd") is not None:
        _print_summary(result.summary, f"node {result.mode}")
    status = result.summary.get("status", {})
    console.print(
        f"node {result.mode} stopped cleanly after {result.elapsed_s:.1f} s: "
        f"{result.ticks:,} ticks, {result.new_orders} new orders"
        + (f", {result.recovered_orders} recovered" if result.recovered_orders else "")
        + f"; realized PnL {status.get('realized_pnl_usd', 0.0):+.2f} USD"
        + (f"; run directory {result.run_dir}" if result.run_dir else ""),
        highlight=False,
    )


@app.command("quickcheck")
def quickcheck_cmd(
    check: Annotated[
        list[str] | None,
        typer.Option(
            "--check",
            help="Run only these (repeatable): inference, backtest, dashboard, ops, canary.",
        ),
    ] = None,
    hours: Annotated[
        float,
        typer.Option(min=0.25, max=24, help="Backtest and canary window: the lake's last hours."),
    ] = 1.0,
    candidate: Annotated[
        str | None, typer.Option(help="Canary candidate version (default: the newest).")
    ] = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote", help="Promote the candidate when its canary passes (default: dry run)."
        ),
    ] = False,
) -> None:
    """The full-stack check, one line each: inference server healthy, a backtest writes its
    CSVs, dashboard /metrics reachable, ops API answers, canary + promote cycle. Exit 1 when
    any check fails."""
    from trading.quickcheck import CHECKS, TITLES, CheckResult, QuickcheckOptions, run_checks

    chosen = tuple(check) if check else CHECKS
    unknown = [c for c in chosen if c not in CHECKS]
    if unknown:
        raise InputError(f"unknown check {unknown[0]!r}: use {', '.join(CHECKS)}")
    config = _config()
    opts = QuickcheckOptions(
        checks=chosen, hours=hours, candidate=candidate, promote=promote,
        timeout_s=config.settings.ops.timeout_s,
    )  # fmt: skip

    def show(result: CheckResult) -> None:
        mark = "[green]✔ PASS[/]" if result.ok else "[red]✘ FAIL[/]"
        console.print(
            f"{mark} {TITLES[result.name]} ({result.seconds:.1f} s): {result.detail}",
            highlight=False,
            soft_wrap=True,
        )

    results = run_checks(config, opts, show)
    failed = [r.name for r in results if not r.ok]
    console.print(
        f"quickcheck: {len(results) - len(failed)} passed, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else ""),
        highlight=False,
    )
    if failed:
        raise typer.Exit(1)
