"""`hmmtrader node`: build and run a NautilusTrader `TradingNode` with the one strategy.

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

import asyncio
import datetime as dt
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trading.errors import InputError
from trading.node.state import NodeState, StartResult, open_state
from trading.node.venues import (
    binance_configs,
    check_mode,
    endpoints,
    load_secrets,
    require_live_opt_in,
)
from trading.settings import AppConfig

log = logging.getLogger(__name__)
NS = 1_000_000_000


@dataclass
class NodeOptions:
    mode: str
    symbols: list[str]
    live: bool = False  # the --live flag
    speed: float | None = None  # replay; None: node.speed
    start: str | None = None  # replay window; None: node.start or the lake's last day
    end: str | None = None
    inference: str | None = None  # in_process | remote; None: node.inference
    run_dir: Path | None = None  # replay reports; None: HOME/runs/node-<mode>-<time>
    max_seconds: float | None = None  # stop after this long (wall); None: until the end/signal
    gate: bool = True  # replay: the data-quality gate on the window first, as a backtest
    build_only: bool = False  # build the TradingNode (clients, strategy) and stop: no connection


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


def _replay_window(config: AppConfig, opts: NodeOptions, symbols: list[str]) -> Any:
    from trading.backtest.engine import window_of
    from trading.data.lake import Lake

    node = config.settings.node
    start, end = opts.start or node.start, opts.end or node.end
    if start is None or end is None:
        lake = Lake(config.home / "lake")
        days = lake.days(config.instruments.venue, symbols[0], "quotes")
        if not days:
            raise InputError(
                f"the lake under {config.home / 'lake'} has no {symbols[0]} quotes to replay: "
                "ingest some (hmmtrader ingest synthetic|archive|files) or run the demo first"
            )
        start = start or days[-1].isoformat()
        end = end or start
    return window_of(start, end)


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


def run_node(
    config: AppConfig,
    opts: NodeOptions,
    echo: Callable[[str], None] = print,
) -> NodeResult:
    t_start = time.monotonic()
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
    window = None
    ticks: list[Any] = []
    instruments: list[Any] = []
    venue_configs = None
    if mode == "replay":
        from trading.backtest.engine import check_data, load_ticks
        from trading.data.lake import Lake

        window = _replay_window(config, opts, symbols)
        lake = Lake(config.home / "lake")
        check_data(config, lake, symbols, window)
        if opts.run_dir is None:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            opts.run_dir = config.home / "runs" / f"node-replay-{stamp}"
        opts.run_dir.mkdir(parents=True, exist_ok=True)
        if opts.gate:
            from trading.backtest.engine import quality_gate

            echo(f"data-quality gate on {window} ...")
            quality_gate(config, lake, symbols, window, opts.run_dir)
        warm_start = window.start_ns - int(s.backtest.warmup_s * NS)
        instruments, ticks, _ = load_ticks(config, lake, symbols, warm_start, window.end_ns)
        prefix = f"replay:{','.join(symbols)}:{window.start_ns}:{window.end_ns}"
    else:
        venue_configs = binance_configs(mode, symbols, secrets)
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
    started: StartResult = state.start_session(mode, run_key)
    sid = started.session.id
    if started.unclean:
        echo(
            f"kill switch ENGAGED: {started.switch.reason}. Enable trading with "
            "`hmmtrader ops enable --reason ...` once you have checked the positions."
        )
    clean = False
    inference = None
    try:
        inference = _inference(config, inference_kind)
        echo(
            f"node {mode}: {', '.join(symbols)}; model version {inference.version} "
            f"({inference_kind.replace('_', ' ')}); trading "
            f"{'DISABLED (' + started.switch.reason + ')' if started.switch.engaged else 'enabled'}"
        )
        if venue_configs is not None:
            hosts = endpoints(venue_configs)
            echo(f"market data: {hosts['data_ws']}; execution: {hosts['execution_http']}")
        result = _run(
            config,
            opts,
            mode,
            symbols,
            limits,
            inference,
            state,
            started,
            run_key,
            recover_until,
            window,
            instruments,
            ticks,
            venue_configs,
            echo,
        )
        clean = True
    finally:
        if inference is not None and hasattr(inference, "stop"):
            inference.stop()
        if clean:
            state.end_session(sid)
    result.elapsed_s = round(time.monotonic() - t_start, 1)
    return result


def _run(
    config: AppConfig,
    opts: NodeOptions,
    mode: str,
    symbols: list[str],
    limits: Any,
    inference: Any,
    state: NodeState,
    started: StartResult,
    run_key: str,
    recover_until: int,
    window: Any,
    instruments: list[Any],
    ticks: list[Any],
    venue_configs: Any,
    echo: Callable[[str], None],
) -> NodeResult:
    from nautilus_trader.config import (
        LiveExecEngineConfig,
        LiveRiskEngineConfig,
        LoggingConfig,
        TradingNodeConfig,
    )
    from nautilus_trader.live.node import TradingNode

    from trading.node.actors import (
        JournalingRecorder,
        Supervisor,
        SupervisorConfig,
        TickRecorder,
        TickRecorderConfig,
    )
    from trading.node.replay import (
        ReplayDataClientConfig,
        ReplayDataClientFactory,
        SimVenueConfig,
        SimVenueExecClientFactory,
        forget_client,
        replay_client,
    )
    from trading.strategy.strategy import RegimeStrategy, RegimeStrategyConfig

    s = config.settings
    bt, node_s = s.backtest, s.node
    venue = config.instruments.venue
    sid = started.session.id
    sandbox = mode in ("replay", "paper")
    key = f"replay-{uuid.uuid4().hex}"
    if mode == "replay":
        data_factory: Any = ReplayDataClientFactory
        speed = node_s.speed if opts.speed is None else opts.speed
        data_cfg: Any = ReplayDataClientConfig(key=key, venue=venue, speed=speed)
    else:
        from nautilus_trader.adapters.binance import BinanceLiveDataClientFactory

        data_factory, data_cfg = BinanceLiveDataClientFactory, venue_configs.data
    if sandbox:
        exec_factory: Any = SimVenueExecClientFactory
        exec_cfg: Any = SimVenueConfig(
            venue=venue,
            starting_balances=[f"{node_s.starting_balance_usd} USDT"],
            base_currency="USDT",
            oms_type="HEDGING",
            account_type="MARGIN",
            slippage_bp=bt.slippage_bp,
            latency_ms=bt.latency_ms,
            seed=bt.seed,
        )
    else:
        from nautilus_trader.adapters.binance import BinanceLiveExecClientFactory

        exec_factory, exec_cfg = BinanceLiveExecClientFactory, venue_configs.execution
    node = TradingNode(
        TradingNodeConfig(
            trader_id=node_s.trader_id,
            logging=LoggingConfig(log_level=os.environ.get("HMMTRADER_NODE_LOG_LEVEL", "WARNING")),
            data_clients={venue: data_cfg},
            exec_clients={venue: exec_cfg},
            risk_engine=LiveRiskEngineConfig(
                # a replay runs hours of orders in seconds: the wall-clock rate limit would deny
                max_order_submit_rate="100000/00:00:01" if mode == "replay" else "100/00:00:01",
            ),
            exec_engine=LiveExecEngineConfig(
                reconciliation=not sandbox,
                inflight_check_interval_ms=0 if sandbox else 2_000,
            ),
            timeout_connection=30.0,
            timeout_disconnection=10.0,
            timeout_post_stop=1.0 if sandbox else 5.0,
        )
    )
    node.add_data_client_factory(venue, data_factory)
    node.add_exec_client_factory(venue, exec_factory)

    from trading.data.nautilus import instrument_id

    ids = tuple(instrument_id(sym, venue) for sym in symbols)
    client_holder: dict[str, Any] = {}

    def cursor() -> int:
        client = client_holder.get("client")
        return int(client.cursor_ns) if client is not None else time.time_ns()

    sup_holder: dict[str, Any] = {}

    def kill_engaged() -> bool:
        if recover_until and cursor() <= recover_until:
            return False  # recovery re-derives what was decided before the crash
        sup = sup_holder.get("sup")
        return bool(sup.engaged) if sup is not None else started.switch.engaged

    def flatten_engaged() -> bool:
        sup = sup_holder.get("sup")
        return kill_engaged() and sup is not None and bool(sup.flatten)

    from trading.node.metrics import MeteredInference, NodeMetrics

    metrics = NodeMetrics(symbols)
    inference = MeteredInference(inference, metrics)
    recorder = JournalingRecorder(state, run_key, sid, metrics)
    strategy_cfg = RegimeStrategyConfig(
        instrument_ids=ids,
        limits=limits,
        trade_from_ns=window.start_ns if window is not None else 0,
        trade_until_ns=(
            window.end_ns - int(bt.flatten_before_end_s * NS) if window is not None else None
        ),
        measure_inference_latency=True,
        inference_retry_s=node_s.inference_retry_s,
    )
    strategy = RegimeStrategy(
        strategy_cfg,
        inference=inference,
        kill_engaged=kill_engaged,
        recorder=recorder,
        flatten_engaged=flatten_engaged,
    )
    status = _status_fn(
        mode, symbols, node_s.trader_id, inference, strategy, node, recorder, metrics, venue
    )
    model_created = _ModelCreated(config)

    def on_beat(body: dict[str, Any]) -> None:
        ticks = {slot.name: slot.book.last_ts_ns for slot in strategy._symbols.values()}
        metrics.heartbeat(body, ticks, kill_engaged())
        version = str(inference.version)
        metrics.model(s.registry.model_name, version, inference_kind(inference),
                      model_created.get(version))  # fmt: skip

    supervisor = Supervisor(
        SupervisorConfig(
            switch_poll_s=node_s.switch_poll_s,
            heartbeat_s=node_s.heartbeat_s,
            history_points=node_s.history_points,
        ),
        state,
        sid,
        strategy,
        status,
        cursor,
        on_beat,
    )
    sup_holder["sup"] = supervisor
    node.trader.add_actor(supervisor)
    tick_recorder = None
    if node_s.record_ticks and (mode != "replay" or node_s.record_lake is not None):
        from trading.data.lake import Lake

        tick_recorder = TickRecorder(
            TickRecorderConfig(instrument_ids=ids, flush_s=node_s.record_flush_s),
            Lake(node_s.record_lake or config.home / "lake"),
            venue,
            f"node:{mode}",
        )
        node.trader.add_actor(tick_recorder)
    node.trader.add_strategy(strategy)
    node.build()

    result = NodeResult(mode, None, sid, started.unclean, not started.switch.engaged)
    result.recovered_until_ns = recover_until
    if mode == "replay":
        for instrument in instruments:
            node.kernel.cache.add_instrument(instrument)
        client = replay_client(key)
        client_holder["client"] = client
        wanted = {(k, str(i)) for i in ids for k in ("quotes", "trades")}
        client.load(ticks, wanted)
        del ticks
        client.fast_until_ns = recover_until
        if recover_until:
            echo(
                "recovering the interrupted replay: replaying up to "
                f"{dt.datetime.fromtimestamp(recover_until / NS, dt.UTC):%Y-%m-%d %H:%M:%S} UTC "
                "at full speed to rebuild positions and PnL"
            )
        kernel = node.kernel

        async def drain() -> None:
            # quiet = every engine queue empty and nothing ready to run on the loop: the
            # engines enqueue with loop.call_soon, so a message can sit in the loop's ready
            # queue while every queue reads 0
            de, re_, ee = kernel.data_engine, kernel.risk_engine, kernel.exec_engine
            loop = asyncio.get_running_loop()
            ready = getattr(loop, "_ready", None)
            quiet = 0
            for _ in range(100_000):
                await asyncio.sleep(0)
                busy = (
                    de.data_qsize()
                    or de.cmd_qsize()
                    or re_.cmd_qsize()
                    or re_.evt_qsize()
                    or ee.cmd_qsize()
                    or ee.evt_qsize()
                    or (ready is not None and len(ready) > 0)
                )
                quiet = 0 if busy else quiet + 1
                if quiet >= (1 if ready is not None else 3):
                    return

        def finished() -> None:
            result.finished = True
            node.stop()

        client.drain = drain
        client.on_finished = finished

    if opts.build_only:
        result.summary["clients"] = {
            "data": type(data_cfg).__name__,
            "execution": type(exec_cfg).__name__,
            "environment": str(getattr(data_cfg, "environment", None)),
        }
        node.dispose()
        forget_client(key)
        return result
    metrics_server = None
    if node_s.metrics_port:
        try:
            metrics_server = metrics.serve(node_s.metrics_host, node_s.metrics_port)
        except OSError as exc:
            node.dispose()
            forget_client(key)
            raise InputError(
                f"cannot serve the node's metrics on {node_s.metrics_host}:"
                f"{node_s.metrics_port}: {exc.strerror or exc}; set node.metrics_port "
                "(HMMTRADER_NODE__METRICS_PORT) to a free port, or 0 to turn them off"
            ) from None
        echo(f"metrics on http://{node_s.metrics_host}:{node_s.metrics_port}/metrics")
    if opts.max_seconds is not None:
        node.kernel.loop.call_later(opts.max_seconds, node.stop)
    if hasattr(inference, "start"):
        inference.start()
    try:
        t_run = time.perf_counter()
        node.run()
        result.run_s = time.perf_counter() - t_run
        if mode == "replay":
            client = client_holder["client"]
            result.ticks = client.played
            if window is not None:
                result.run_dir = _write_replay_reports(
                    config, opts, node, strategy, recorder, instruments, window, symbols, result
                )
        result.new_orders = recorder.new_orders
        result.recovered_orders = recorder.recovered_orders
        result.summary.setdefault("status", status())
    finally:
        node.dispose()
        forget_client(key)
        if metrics_server is not None:
            metrics_server[0].shutdown()
    return result


class _NodeView:
    """What the report writer reads of a backtest engine, from a trading node."""

    def __init__(self, node: Any) -> None:
        self.trader = node.trader
        self.portfolio = node.portfolio
        self.cache = node.cache


def _write_replay_reports(
    config: AppConfig,
    opts: NodeOptions,
    node: Any,
    strategy: Any,
    recorder: Any,
    instruments: list[Any],
    window: Any,
    symbols: list[str],
    result: NodeResult,
) -> Path:
    from trading.backtest.report import write_reports

    s = config.settings
    assert opts.run_dir is not None
    run_dir = opts.run_dir
    result.summary = write_reports(
        _NodeView(node),
        strategy,
        recorder,
        instruments,
        window,
        run_dir,
        starting_balance_usd=s.node.starting_balance_usd,
        extra={
            "mode": "replay",
            "model_version": strategy.inference.version if strategy.inference else None,
            "symbols": symbols,
            "events": result.ticks,
            "run_s": round(result.run_s, 3),
            "events_per_s": round(result.ticks / result.run_s, 1) if result.run_s > 0 else None,
            "finished": result.finished,
            "session": result.session_id,
            "recovered_until_ns": result.recovered_until_ns,
            "settings": {"backtest": s.backtest.model_dump(), "strategy": s.strategy.model_dump()},
        },
    )
    return run_dir


def _money(value: Any) -> float:
    if value is None:
        return 0.0
    try:
        return float(value.as_double())
    except AttributeError:
        return float(str(value).split()[0])


def inference_kind(inference: Any) -> str:
    return "remote" if hasattr(inference, "client") else "in_process"


class _ModelCreated:
    """When each model version was registered (for `model_created_timestamp_seconds`),
    looked up off the event loop: the registry may be a remote MLflow server."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.created: dict[str, float | None] = {}

    def get(self, version: str) -> float | None:
        if version not in self.created:
            self.created[version] = None
            threading.Thread(
                target=self._lookup, args=(version,), name="model-created", daemon=True
            ).start()
        return self.created[version]

    def _lookup(self, version: str) -> None:
        try:
            from trading.regime.registry import Registry

            registry = Registry(self.config.settings.registry, Path(self.config.home))
            self.created[version] = registry.info(int(version)).created.timestamp()
        except Exception as exc:  # the metric stays NaN; trading goes on
            log.warning("cannot read when model version %s was registered: %s", version, exc)


def _equity(cache: Any, venue: str) -> float | None:
    """The venue account's USDT balance plus open PnL (sandbox and Binance alike)."""
    try:
        from nautilus_trader.model.currencies import USDT
        from nautilus_trader.model.identifiers import Venue

        account = cache.account_for_venue(Venue(venue))
        if account is not None:
            return float(account.balance_total(USDT).as_double())
    except Exception:  # no account yet (before the first connection)
        pass
    return None


def _status_fn(
    mode: str,
    symbols: list[str],
    trader_id: str,
    inference: Any,
    strategy: Any,
    node: Any,
    recorder: Any,
    metrics: Any,
    venue: str,
) -> Callable[[], dict[str, Any]]:
    def status() -> dict[str, Any]:
        cache = node.kernel.cache
        positions, unrealized, realized = [], 0.0, 0.0
        realized_by = dict.fromkeys(symbols, 0.0)
        unrealized_by = dict.fromkeys(symbols, 0.0)
        mids = strategy._mids
        for position in cache.positions():
            pnl = _money(position.realized_pnl)
            realized += pnl
            realized_by[position.instrument_id.symbol.value] += pnl
        for position in cache.positions_open():
            symbol = position.instrument_id.symbol.value
            mid = mids.get(symbol)
            upnl = 0.0
            if mid is not None:
                side = 1.0 if position.is_long else -1.0
                upnl = side * (mid - float(position.avg_px_open)) * float(position.quantity)
            unrealized += upnl
            unrealized_by[symbol] += upnl
            positions.append(
                {
                    "symbol": symbol,
                    "side": "LONG" if position.is_long else "SHORT",
                    "qty": float(position.quantity),
                    "avg_px": float(position.avg_px_open),
                    "unrealized_pnl_usd": round(upnl, 6),
                }
            )
        balance = _equity(cache, venue)
        decider = strategy.decider
        blocks = dict(decider.blocks) if decider is not None else {}
        book_ts = max((slot.book.last_ts_ns for slot in strategy._symbols.values()), default=0)
        return {
            "mode": mode,
            "symbols": symbols,
            "trader_id": trader_id,
            "pid": os.getpid(),
            "model": {
                "inference": inference_kind(inference),
                "version": inference.version,
                "healthy": strategy.inference_error is None,
                "last_error": strategy.inference_error or getattr(inference, "last_error", None),
                "failures": strategy.inference_failures,
                "latency_blocks": blocks.get("LATENCY", 0),
            },
            "positions": positions,
            "realized_pnl_usd": round(realized, 6),
            "unrealized_pnl_usd": round(unrealized, 6),
            "realized_by_symbol": {k: round(v, 6) for k, v in realized_by.items()},
            "unrealized_by_symbol": {k: round(v, 6) for k, v in unrealized_by.items()},
            "equity_usd": None if balance is None else round(balance + unrealized, 6),
            "regime": {k: dict(v) for k, v in metrics.last.items()},
            "orders": len(recorder.orders),
            "market_time": (
                dt.datetime.fromtimestamp(book_ts / NS, dt.UTC).isoformat() if book_ts else None
            ),
            "blocks": blocks,
        }

    return status
