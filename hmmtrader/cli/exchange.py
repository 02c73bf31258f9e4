"""`hmmtrader exchange`: a local Binance Spot exchange (serving.exchange) that replays the
lake, for a testnet or paper node to trade against offline; `hmmtrader exchange-fault`
injects a fault into a running one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from hmmtrader.cli.common import (
    LogLevel,
    check_port,
    configure_logging,
    console,
    load_config,
    run_uvicorn,
)
from trading.errors import InputError

app = typer.Typer()  # top-level commands: exchange, exchange-fault

KEY_HELP = "the same variables a testnet node reads, so both agree"


@app.command("exchange")
def exchange_cmd(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 8090,
    host: Annotated[str, typer.Option(help="Interface (loopback by default).")] = "127.0.0.1",
    speed: Annotated[
        float,
        typer.Option(min=0.001, help="Market replay pace: 1 real time, 60 a minute per second."),
    ] = 1.0,
    start: Annotated[
        str | None,
        typer.Option(help="First UTC day or time of the replay (default: last lake day)."),
    ] = None,
    end: Annotated[str | None, typer.Option(help="Last UTC day or end time of the replay.")] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default node.symbols).")
    ] = None,
    balance: Annotated[
        list[str] | None,
        typer.Option(
            help="Starting balance ASSET=AMOUNT, repeatable (default USDT=10000, BTC=1, ETH=10)."
        ),
    ] = None,
    ledger: Annotated[
        Path | None,
        typer.Option(help="Ledger file, JSON lines (default <home>/exchange/ledger.jsonl)."),
    ] = None,
    slippage_bp: Annotated[
        float | None,
        typer.Option(
            min=0, help="Taker fills move this far past the touch (default backtest.slippage_bp)."
        ),
    ] = None,
    weight_limit: Annotated[
        int, typer.Option(min=1, help="Request weight per window (Binance: 6000 per minute).")
    ] = 6000,
    weight_window: Annotated[
        float, typer.Option(min=0.1, help="Weight window in seconds (Binance: 60).")
    ] = 60.0,
    order_limit: Annotated[int, typer.Option(min=1, help="New orders per 10 s.")] = 100,
    ban_seconds: Annotated[
        float, typer.Option(min=0.1, help="The first 418 ban; doubles after.")
    ] = 120.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="BINANCE_TESTNET_API_KEY", help=f"API key ({KEY_HELP}).", show_default=False
        ),
    ] = None,
    api_secret: Annotated[
        str | None,
        typer.Option(
            envvar="BINANCE_TESTNET_API_SECRET",
            help=f"HMAC secret ({KEY_HELP}).",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevel = "info",
) -> None:
    """Serve a local Binance Spot exchange (REST, market streams, WebSocket API) that
    replays the lake at --speed and matches orders against the replayed book. Point a node
    at it with `hmmtrader node --mode testnet --exchange-url http://127.0.0.1:PORT`."""
    from serving.exchange.app import Keys, build_server, create_app
    from trading.node.session import lake_window

    if not api_key or not api_secret:
        raise InputError(
            "the exchange needs an API key and secret: set BINANCE_TESTNET_API_KEY and "
            "BINANCE_TESTNET_API_SECRET (any values; a testnet node pointed at it reads the "
            "same variables) or pass --api-key and --api-secret"
        )
    config = load_config()
    syms = [
        s.strip().upper()
        for s in (symbols.split(",") if symbols else config.settings.node.symbols)
        if s.strip()
    ]
    for s in syms:
        config.symbol(s)
    balances = {"USDT": "10000", "BTC": "1", "ETH": "10"}
    for item in balance or []:
        asset, sep, amount = item.partition("=")
        try:
            ok = bool(sep) and float(amount) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise InputError(
                f"--balance {item!r}: write ASSET=AMOUNT with a non-negative amount, e.g. USDT=10000"
            )
        balances[asset.strip().upper()] = amount.strip()
    window = lake_window(config, syms[0], "quotes", start, end)
    ledger_path = ledger or config.home / "exchange" / "ledger.jsonl"
    check_port(host, port)
    configure_logging(log_level)
    console.print(f"loading {', '.join(syms)} of {window} from the lake ...", highlight=False)
    server = build_server(
        config, symbols=syms, window=window, speed=speed, keys=Keys(api_key, api_secret),
        balances=balances, ledger_path=ledger_path,
        slippage_bp=config.settings.backtest.slippage_bp if slippage_bp is None else slippage_bp,
        weight_limit=weight_limit, weight_window_s=weight_window, order_limit=order_limit,
        ban_s=ban_seconds,
    )  # fmt: skip
    console.print(
        f"local Binance Spot exchange on http://{host}:{port} (ws://{host}:{port}/stream, "
        f"ws://{host}:{port}/ws-api/v3): {len(server.tape):,} market events at speed {speed:g}, "
        f"starting with the first subscription; ledger {ledger_path}; state at /_exchange/state",
        highlight=False,
    )
    run_uvicorn(
        create_app(server), host, port, log_level, False, graceful_s=2, ws_ping_interval=None
    )


@app.command("exchange-fault")
def exchange_fault_cmd(
    kind: Annotated[
        Literal["drop_ws", "refuse", "delay", "market_cut", "throttle", "clear"],
        typer.Argument(help="throttle: 429 then 418."),
    ],
    url: Annotated[str, typer.Option(help="The exchange.")] = "http://127.0.0.1:8090",
    seconds: Annotated[
        float, typer.Option(min=0, help="refuse, market_cut, throttle: for how long.")
    ] = 20.0,
    delay_ms: Annotated[float, typer.Option(min=0, help="delay: added to every answer.")] = 0.0,
    target: Annotated[
        Literal["market", "user"] | None, typer.Option(help="drop_ws: one side (default both).")
    ] = None,
) -> None:
    """Inject a fault into a running local exchange: drop its WebSockets, refuse
    connections or cut the market streams for --seconds, delay every answer."""
    import httpx

    body = {"kind": kind, "seconds": seconds, "delay_ms": delay_ms, "target": target}
    try:
        r = httpx.post(url.rstrip("/") + "/_exchange/fault", json=body, timeout=10)
    except httpx.HTTPError as exc:
        raise InputError(f"cannot reach the exchange at {url}: {exc}") from None
    if r.status_code != 200:
        raise InputError(f"the exchange refused the fault: {r.text}")
    console.print(json.dumps(r.json()), highlight=False)
