"""`hmmtrader node`: one session of the trading node, start to clean stop.

Modes: replay (lake ticks through the live runtime, sandbox fills: offline), paper (live
Binance market data, sandbox fills), testnet (Binance spot testnet, keys), live (Binance,
both opt-ins). Every start is a session in the node's state file (`trading.node.state`):
after an unclean end the kill switch comes back engaged. A replay that crashed is
recovered when started again with the same window: its ticks are replayed from the start
at full speed up to where it stopped, re-deriving the same orders (the journal counts them
once) so the simulated venue's positions and PnL are what they were, then it goes on with
trading disabled until a person enables it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trading.data.lake import Lake
from trading.data.window import MINUTE_NS, NS, Window, market_kinds, require_ticks, window_of
from trading.errors import InputError
from trading.node.build import (
    BuiltNode,
    NodeOptions,
    NodeSession,
    Replay,
    build_node,
    session_run_dir,
)
from trading.node.state import open_state
from trading.node.venues import (
    account_of,
    binance_configs,
    check_exchange_url,
    check_mode,
    endpoints,
    load_secrets,
    require_live_opt_in,
    with_journal,
)
from trading.settings import AppConfig

__all__ = ["NodeOptions", "NodeResult", "lake_window", "run_node"]

log = logging.getLogger(__name__)


@dataclass
class NodeResult:
    mode: str
    run_dir: Path | None
    session_id: int
    unclean_start: bool
    trading_enabled_at_start: bool
    summary: dict[str, Any] = field(default_factory=dict)
    ticks: int = 0
    new_orders: int = 0
    recovered_orders: int = 0
    recovered_until_ns: int = 0
    finished: bool = False  # replay reached its end
    elapsed_s: float = 0.0
    run_s: float = 0.0  # the node's run (wall)


def _replay_window(
    config: AppConfig, opts: NodeOptions, symbols: list[str], bars: bool = False
) -> Window:
    node = config.settings.node
    kind = market_kinds(bars)[0]
    return lake_window(config, symbols[0], kind, opts.start or node.start, opts.end or node.end)


def lake_window(
    config: AppConfig, symbol: str, kind: str, start: str | None, end: str | None
) -> Window:
    """The window to replay: [start, end], by default the lake's last day of `symbol`'s
    `kind` (a replay node's and the local exchange's default)."""
    if start is None or end is None:
        lake = Lake(config.home / "lake")
        days = lake.days(config.instruments.venue, symbol, kind)
        if not days:
            raise InputError(
                f"the lake under {config.home / 'lake'} has no {symbol} {kind} to replay: "
                "ingest some (hmmtrader ingest synthetic|archive|files) or run the demo first"
            )
        start = start or days[-1].isoformat()
        end = end or start
    return window_of(start, end)


def _load_replay(
    config: AppConfig, opts: NodeOptions, symbols: list[str], echo: Callable[[str], None]
) -> Replay:
    """The replay's window checked against the lake (and its data-quality gate), and its
    ticks from the warm-up on."""
    from trading.backtest.engine import quality_gate, warmup_ns
    from trading.data.nautilus import load_bars, load_ticks
    from trading.features.descriptor import bars_v1, features_v1

    bars = _model_trades_bars(config)
    window = _replay_window(config, opts, symbols, bars)
    lake = Lake(config.home / "lake")
    require_ticks(lake, config.instruments.venue, symbols, window, market_kinds(bars))
    if opts.run_dir is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        opts.run_dir = config.home / "runs" / f"node-replay-{stamp}"
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    if opts.gate:
        echo(f"data-quality gate on {window} ...")
        quality_gate(config, lake, symbols, window, opts.run_dir, bars=bars)
    s = config.settings
    fs = bars_v1(s.bars) if bars else features_v1(s.features)
    warm_start = window.start_ns - warmup_ns(config, fs)
    if bars:
        latency_ns = int(s.backtest.latency_ms * 1_000_000)
        instruments, ticks, _ = load_bars(
            config, lake, symbols, warm_start, window.end_ns, latency_ns
        )
    else:
        instruments, ticks, _ = load_ticks(config, lake, symbols, warm_start, window.end_ns)
    return Replay(window, instruments, ticks, bars)


def _model_trades_bars(config: AppConfig) -> bool:
    """Whether the model the node will trade (strategy.model's version) is a BARS_V1 model,
    by its feature_version tag; False when the registry cannot say (loading the model
    later gives the error)."""
    from trading.backtest.canary import trades_bars
    from trading.errors import HmmTraderError
    from trading.regime.registry import Registry

    try:
        registry = Registry(config.settings.registry, config.home)
        return trades_bars(registry.info(registry.resolve(config.settings.strategy.model)).tags)
    except HmmTraderError:
        return False


def _inference(config: AppConfig, kind: str) -> Any:
    if kind == "remote":
        from trading.strategy.remote import RemoteInference, ServingClient, ServingError

        s = config.settings
        token = s.serving.token.get_secret_value() if s.serving.token is not None else None
        # an answer slower than the latency budget is useless: time out there
        timeout = s.strategy.guardrails.max_inference_ms / 1000.0
        client = ServingClient(s.serving.url, token=token, timeout_s=timeout, connect_retries=0)
        try:
            return RemoteInference(client, session=f"node-{uuid.uuid4().hex[:8]}")
        except ServingError as exc:
            raise InputError(
                f"{exc}; start it (hmmtrader serve) or use node.inference: in_process"
            ) from None
    from trading.node.inference import registry_inference

    return registry_inference(config)


def _open_session(
    config: AppConfig, opts: NodeOptions, echo: Callable[[str], None]
) -> tuple[NodeSession, str]:
    """Check the options, load a replay's data, start the session in the state file (a
    crashed replay of the same window is recovered). Returns the session and the
    inference kind."""
    s = config.settings
    mode = check_mode(opts.mode)
    secrets = load_secrets()
    require_live_opt_in(mode, opts.live, secrets)
    symbols = [x.strip().upper().removesuffix(".BINANCE") for x in opts.symbols]
    for symbol in symbols:
        config.symbol(symbol)  # a clear error for an unknown symbol
    from trading.strategy.config import limits_of

    limits = limits_of(s.strategy, symbols)
    inference_kind = opts.inference or s.node.inference
    if inference_kind not in ("in_process", "remote"):
        raise InputError(f"unknown inference {inference_kind!r}: use in_process or remote")

    state = open_state(config)
    replay, venue_configs, account = None, None, None
    if mode == "replay":
        replay = _load_replay(config, opts, symbols, echo)
        prefix = f"replay:{','.join(symbols)}:{replay.window.start_ns}:{replay.window.end_ns}"
    else:
        url = check_exchange_url(
            mode, opts.exchange_url or s.node.exchange_url, opts.live_exchange_url
        )
        venue_configs = binance_configs(mode, symbols, secrets, url)
        account = account_of(mode, venue_configs)
        prefix = f"{mode}:{','.join(symbols)}"
    previous = state.last_session()
    recover = (
        mode == "replay"
        and previous is not None
        and not previous.clean
        and previous.run_key.startswith(prefix + "#")
    )
    run_key = previous.run_key if recover and previous else f"{prefix}#{uuid.uuid4().hex[:8]}"
    recover_until = state.last_cursor(run_key) if recover else 0
    started = state.start_session(mode, run_key, account=account)
    if venue_configs is not None and account is not None:
        venue_configs = with_journal(venue_configs, str(state.path), started.session.id, account)
    session = NodeSession(
        config, opts, mode, symbols, limits, state, started, run_key, recover_until, replay,
        venue_configs, echo,
    )  # fmt: skip
    return session, inference_kind


def run_node(
    config: AppConfig,
    opts: NodeOptions,
    echo: Callable[[str], None] = print,
) -> NodeResult:
    t_start = time.monotonic()
    session, inference_kind = _open_session(config, opts, echo)
    started = session.started
    if started.unclean:
        echo(
            f"kill switch ENGAGED: {started.switch.reason}. Enable trading with "
            "`hmmtrader ops enable --reason ...` once you have checked the positions."
        )
    clean = False
    ran = False  # the node started: from here a failure leaves the session unclean
    inference = None
    try:
        inference = _inference(config, inference_kind)
        trading = (
            "DISABLED (" + started.switch.reason + ")" if started.switch.engaged else "enabled"
        )
        echo(
            f"node {session.mode}: {', '.join(session.symbols)}; model version "
            f"{inference.version} ({inference_kind.replace('_', ' ')}); trading {trading}"
        )
        if session.venue_configs is not None:
            hosts = endpoints(session.venue_configs)
            echo(f"market data: {hosts['data_ws']}; execution: {hosts['execution_http']}")
        built = build_node(session, inference)
        ran = True
        result = _run(session, built, inference)
        clean = True
    finally:
        if inference is not None and hasattr(inference, "stop"):
            inference.stop()
        if clean or not ran:  # a failure before the node ran placed no order
            session.state.end_session(session.session_id)
    result.elapsed_s = round(time.monotonic() - t_start, 1)
    return result


def _run(session: NodeSession, built: BuiltNode, inference: Any) -> NodeResult:
    """Run the built node until its replay ends, max_seconds pass, or a signal stops it."""
    from trading.node.replay import forget_client

    node_s = session.config.settings.node
    opts, node = session.opts, built.node
    started = session.started
    result = NodeResult(
        session.mode, None, session.session_id, started.unclean, not started.switch.engaged
    )
    result.recovered_until_ns = session.recover_until_ns
    if session.recover_until_ns:
        session.echo(
            "recovering the interrupted replay: replaying up to "
            f"{dt.datetime.fromtimestamp(session.recover_until_ns / NS, dt.UTC):%Y-%m-%d %H:%M:%S}"
            " UTC at full speed to rebuild positions and PnL"
        )
    if opts.build_only:
        result.summary["clients"] = {
            "data": type(built.data_config).__name__,
            "execution": type(built.exec_config).__name__,
            "environment": str(getattr(built.data_config, "environment", None)),
        }
        node.dispose()
        forget_client(built.replay_key)
        return result
    metrics_server = None
    if node_s.metrics_port:
        try:
            metrics_server = built.metrics.serve(node_s.metrics_host, node_s.metrics_port)
        except OSError as exc:
            node.dispose()
            forget_client(built.replay_key)
            raise InputError(
                f"cannot serve the node's metrics on {node_s.metrics_host}:"
                f"{node_s.metrics_port}: {exc.strerror or exc}; set node.metrics_port "
                "(HMMTRADER_NODE__METRICS_PORT) to a free port, or 0 to turn them off"
            ) from None
        session.echo(f"metrics on http://{node_s.metrics_host}:{node_s.metrics_port}/metrics")
    if opts.max_seconds is not None:
        node.kernel.loop.call_later(opts.max_seconds, node.stop)
    if hasattr(inference, "start"):
        inference.start()
    try:
        t_run = time.perf_counter()
        node.run()
        result.run_s = time.perf_counter() - t_run
        result.finished = built.replay_done
        if session.replay is not None:
            result.ticks = built.replay_client.played
            result.run_dir = _write_replay_reports(session, built, result)
        else:
            result.ticks = built.strategy.ticks_seen
            result.run_dir = _write_session_reports(session, built, result)
        result.new_orders = built.recorder.new_orders
        result.recovered_orders = built.recorder.recovered_orders
        result.summary.setdefault("status", built.status())
    finally:
        node.dispose()
        forget_client(built.replay_key)
        if metrics_server is not None:
            metrics_server[0].shutdown()
    return result


class _NodeView:
    """What the report writer reads of a backtest engine, from a trading node."""

    def __init__(self, node: Any) -> None:
        self.trader = node.trader
        self.portfolio = node.portfolio
        self.cache = node.cache


def _write_replay_reports(session: NodeSession, built: BuiltNode, result: NodeResult) -> Path:
    from trading.backtest.report import benchmarks, write_reports

    s = session.config.settings
    run_dir = session.opts.run_dir
    assert run_dir is not None and session.replay is not None
    strategy = built.strategy
    window = session.replay.window
    cursor_ns = int(built.replay_client.cursor_ns or 0)
    if not result.finished and window.start_ns < cursor_ns < window.end_ns:
        # a stopped replay reports what it replayed: its equity curve and time span end
        # at the minute of its last tick, not at the window's end
        window = Window(window.start_ns, (cursor_ns // MINUTE_NS + 1) * MINUTE_NS)
    bench = benchmarks(
        built.replay_client.ticks,  # what the client played (it keeps them)
        window,
        s.node.starting_balance_usd,
        s.backtest.slippage_bp,
        {i.id: i for i in session.replay.instruments},
        bars=session.replay.bars,
    )
    result.summary = write_reports(
        _NodeView(built.node),
        strategy,
        built.recorder,
        session.replay.instruments,
        window,
        run_dir,
        starting_balance_usd=s.node.starting_balance_usd,
        extra={
            "mode": "replay",
            "model_version": strategy.inference.version if strategy.inference else None,
            "symbols": session.symbols,
            "events": result.ticks,
            "benchmarks": bench,
            "run_s": round(result.run_s, 3),
            "events_per_s": round(result.ticks / result.run_s, 1) if result.run_s > 0 else None,
            "finished": result.finished,
            "session": result.session_id,
            "recovered_until_ns": result.recovered_until_ns,
            "settings": {"backtest": s.backtest.model_dump(), "strategy": s.strategy.model_dump()},
        },
    )
    return run_dir


def _write_session_reports(session: NodeSession, built: BuiltNode, result: NodeResult) -> Path:
    """A paper, testnet or live session's record, written at its clean stop:
    - fills.csv: every fill the venue reported (Nautilus' fills report);
    - orders.csv: every order the strategy decided, with its market context;
    - state_timeline.csv: the strategy's decision timeline (one row per symbol and step);
    - guardrails.csv: every block;
    - account.json: the venue account's balances as the node holds them;
    - summary.json: the session's counts and status."""
    import json
    from dataclasses import asdict

    import pandas as pd
    from nautilus_trader.model.identifiers import Venue

    from trading.backtest.report import timeline_frame

    run_dir = session_run_dir(session.config, session.opts, session.mode)
    node, recorder = built.node, built.recorder
    fills = node.trader.generate_fills_report()
    fills.to_csv(run_dir / "fills.csv", index=not fills.empty)
    orders = pd.DataFrame([asdict(c) for c in recorder.orders.values()])
    orders.to_csv(run_dir / "orders.csv", index=False)
    # the decision timeline and the blocks as a backtest writes them (same columns and
    # number format), so the two compare row for row
    timeline = timeline_frame(recorder)
    timeline.insert(0, "time", _iso(timeline["ts_ns"]))
    timeline.to_csv(run_dir / "state_timeline.csv", index=False, float_format="%.8g")
    guard = pd.DataFrame.from_records(
        recorder.blocks, columns=["ts_ns", "symbol", "reason", "detail"]
    )
    guard.insert(0, "time", _iso(guard["ts_ns"]))
    guard.to_csv(run_dir / "guardrails.csv", index=False)
    account = node.cache.account_for_venue(Venue(session.config.instruments.venue))
    balances = {}
    if account is not None:
        for currency, bal in account.balances().items():
            balances[str(currency)] = {
                "total": str(bal.total.as_decimal()),
                "locked": str(bal.locked.as_decimal()),
                "free": str(bal.free.as_decimal()),
            }
    (run_dir / "account.json").write_text(json.dumps(balances, indent=2) + "\n")
    status = built.status()
    summary = {
        "mode": session.mode,
        "session": result.session_id,
        "symbols": session.symbols,
        "orders_decided": len(recorder.orders),
        "fills": len(fills),
        "blocks": len(recorder.blocks),
        "ticks": built.strategy.ticks_seen,
        # ticks that arrived after node.reorder_s had passed them: used out of time order
        "late_ticks": built.strategy.late_ticks,
        "first_late_tick_ns": built.strategy.first_late_ns,
        "new_orders": built.recorder.new_orders,
        "status": status,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    result.summary["status"] = status
    return run_dir


def _iso(ts_ns: Any) -> Any:
    import pandas as pd

    return pd.to_datetime(ts_ns, utc=True).map(lambda t: t.isoformat())
