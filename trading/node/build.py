"""Build the NautilusTrader `TradingNode` of a session: data and execution clients of the
mode (lake replay or Binance; sandbox fills or Binance), the strategy, the supervisor
(kill switch, heartbeat, status) and the tick recorder."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trading.data.window import NS, Window
from trading.node.state import NodeState, StartResult
from trading.settings import AppConfig


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
    exchange_url: str | None = (
        None  # paper/testnet: a Binance-compatible exchange; None: node.exchange_url
    )
    live_exchange_url: bool = False  # the explicit flag a live node needs to take exchange_url


@dataclass
class Replay:
    """A replay's window and its ticks (warm-up included), loaded from the lake; for a
    BARS_V1 model, its bars and each bar's open quote (trading.data.nautilus.load_bars)."""

    window: Window
    instruments: list[Any]
    ticks: list[Any]
    bars: bool = False


@dataclass
class NodeSession:
    """Everything decided before the node is built: the mode and symbols, their risk limits,
    the session in the state file (and how far a crashed replay is recovered), and where
    the market data comes from."""

    config: AppConfig
    opts: NodeOptions
    mode: str
    symbols: list[str]
    limits: Any  # trading.strategy.config.Limits
    state: NodeState
    started: StartResult
    run_key: str
    recover_until_ns: int  # a recovered replay re-derives its orders up to here
    replay: Replay | None  # replay mode
    venue_configs: Any  # paper, testnet, live: the Binance client configs
    echo: Callable[[str], None] = print

    @property
    def session_id(self) -> int:
        return self.started.session.id


@dataclass
class BuiltNode:
    node: Any  # TradingNode
    strategy: Any  # RegimeStrategy
    recorder: Any  # JournalingRecorder
    metrics: Any  # NodeMetrics
    status: Callable[[], dict[str, Any]]
    data_config: Any
    exec_config: Any
    replay_key: str
    replay_client: Any = None  # the lake replay's data client
    replay_done: bool = False  # the replay reached the end of its window


class KillSwitchView:
    """The strategy's view of the kill switch: the supervisor's (persisted) state, except
    while a recovered replay re-derives what was decided before the crash."""

    def __init__(self, session: NodeSession, cursor: Callable[[], int]) -> None:
        self.session = session
        self.cursor = cursor
        self.supervisor: Any = None  # set once built

    def engaged(self) -> bool:
        until = self.session.recover_until_ns
        if until and self.cursor() <= until:
            return False
        if self.supervisor is None:
            return bool(self.session.started.switch.engaged)
        return bool(self.supervisor.engaged)

    def flatten(self) -> bool:
        return self.engaged() and self.supervisor is not None and bool(self.supervisor.flatten)


def _clients(session: NodeSession, key: str) -> tuple[Any, Any, Any, Any]:
    """(data factory, data config, exec factory, exec config) of the session's mode."""
    from trading.node.replay import (
        ReplayDataClientConfig,
        ReplayDataClientFactory,
        SimVenueConfig,
        SimVenueExecClientFactory,
    )

    s = session.config.settings
    venue = session.config.instruments.venue
    if session.mode == "replay":
        speed = s.node.speed if session.opts.speed is None else session.opts.speed
        data: tuple[Any, Any] = (
            ReplayDataClientFactory,
            ReplayDataClientConfig(key=key, venue=venue, speed=speed),
        )
    else:
        from nautilus_trader.adapters.binance import BinanceLiveDataClientFactory

        data = (BinanceLiveDataClientFactory, session.venue_configs.data)
    if session.mode in ("replay", "paper"):
        bt = s.backtest
        execution: tuple[Any, Any] = (
            SimVenueExecClientFactory,
            SimVenueConfig(
                venue=venue,
                starting_balances=[f"{s.node.starting_balance_usd} USDT"],
                base_currency="USDT",
                oms_type="HEDGING",
                account_type="MARGIN",
                slippage_bp=bt.slippage_bp,
                latency_ms=bt.latency_ms,
                seed=bt.seed,
                # bars feed the strategy; the venue fills on quotes (a bar model's replay:
                # each bar's open quote)
                bar_execution=False,
            ),
        )
    else:
        from trading.node.spot import SpotExecClientFactory

        execution = (SpotExecClientFactory, session.venue_configs.execution)
    return (*data, *execution)


def _trading_node(session: NodeSession, data_config: Any, exec_config: Any) -> Any:
    from nautilus_trader.config import (
        LiveExecEngineConfig,
        LiveRiskEngineConfig,
        LoggingConfig,
        TradingNodeConfig,
    )
    from nautilus_trader.live.node import TradingNode

    sandbox = session.mode in ("replay", "paper")
    venue = session.config.instruments.venue
    # a loop of its own: in a process that ran asyncio before (asyncio.run leaves no
    # current loop), asking for the current one fails
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return TradingNode(
        loop=loop,
        config=TradingNodeConfig(
            trader_id=session.config.settings.node.trader_id,
            logging=LoggingConfig(log_level=os.environ.get("HMMTRADER_NODE_LOG_LEVEL", "WARNING")),
            data_clients={venue: data_config},
            exec_clients={venue: exec_config},
            risk_engine=LiveRiskEngineConfig(
                # a replay runs hours of orders in seconds: the wall-clock rate limit would deny
                max_order_submit_rate=(
                    "100000/00:00:01" if session.mode == "replay" else "100/00:00:01"
                ),
            ),
            exec_engine=LiveExecEngineConfig(
                reconciliation=not sandbox,
                inflight_check_interval_ms=0 if sandbox else 2_000,
            ),
            timeout_connection=30.0,
            timeout_disconnection=10.0,
            timeout_post_stop=1.0 if sandbox else 5.0,
        ),
    )


def build_node(session: NodeSession, inference: Any) -> BuiltNode:
    """The node with its clients, strategy and actors, built (not connected)."""
    from trading.data.nautilus import instrument_id
    from trading.node.actors import JournalingRecorder, Supervisor, SupervisorConfig
    from trading.node.metrics import MeteredInference, NodeMetrics
    from trading.node.status import ModelCreated, StatusReporter, inference_kind
    from trading.strategy.strategy import RegimeStrategy, RegimeStrategyConfig

    config, s = session.config, session.config.settings
    venue = config.instruments.venue
    key = f"replay-{uuid.uuid4().hex}"
    data_factory, data_config, exec_factory, exec_config = _clients(session, key)
    node = _trading_node(session, data_config, exec_config)
    node.add_data_client_factory(venue, data_factory)
    node.add_exec_client_factory(venue, exec_factory)

    ids = tuple(instrument_id(sym, venue) for sym in session.symbols)
    built_client: dict[str, Any] = {}

    def cursor() -> int:  # market time: the replay's position, else the wall clock
        client = built_client.get("client")
        return int(client.cursor_ns) if client is not None else time.time_ns()

    switch = KillSwitchView(session, cursor)
    metrics = NodeMetrics(session.symbols)
    metered = MeteredInference(inference, metrics)
    recorder = JournalingRecorder(session.state, session.run_key, session.session_id, metrics)
    window = session.replay.window if session.replay is not None else None
    bt = s.backtest
    strategy = RegimeStrategy(
        RegimeStrategyConfig(
            instrument_ids=ids,
            limits=session.limits,
            trade_from_ns=window.start_ns if window is not None else 0,
            trade_until_ns=(
                window.end_ns - int(bt.flatten_before_end_s * NS) if window is not None else None
            ),
            measure_inference_latency=True,
            inference_retry_s=s.node.inference_retry_s,
            # paper, testnet and live: a bar model subscribes quotes too, for the venue's
            # fills (a replay plays each bar's open quote to the venue itself)
            venue_quotes=session.mode != "replay",
            # one position per entry, as in backtests, also on Binance spot (a NETTING
            # venue): each round trip keeps its own realized PnL
            oms_type="HEDGING",
            # orders of these instruments found open on the venue at start (a crash, or
            # placed by hand) become the strategy's: reported, and cancelled by the kill
            # switch like its own
            external_order_claims=list(ids) if session.mode != "replay" else None,
            rate_limit_backoff_s=s.node.rate_limit_backoff_s,
            reorder_s=s.node.reorder_s if session.mode != "replay" else 0.0,
        ),
        inference=metered,
        kill_engaged=switch.engaged,
        recorder=recorder,
        flatten_engaged=switch.flatten,
    )
    status = StatusReporter(
        session.mode, session.symbols, s.node.trader_id, venue, metered, strategy,
        node.kernel.cache, recorder, metrics,
    )  # fmt: skip
    model_created = ModelCreated(config)

    metrics.stale_after_s = s.node.stale_after_s

    def on_beat(body: dict[str, Any]) -> None:
        metrics.heartbeat(body, strategy.snapshot().last_tick_ns, switch.engaged())
        strategy.market_stale(metrics.stale, metrics.outage_count)
        version = str(metered.version)
        metrics.model(s.registry.model_name, version, inference_kind(metered),
                      model_created.get(version))  # fmt: skip

    supervisor = Supervisor(
        SupervisorConfig(
            switch_poll_s=s.node.switch_poll_s,
            heartbeat_s=s.node.heartbeat_s,
            history_points=s.node.history_points,
        ),
        session.state,
        session.session_id,
        strategy,
        status,
        cursor,
        on_beat,
    )
    switch.supervisor = supervisor
    node.trader.add_actor(supervisor)
    _add_tick_recorder(session, node, ids)
    node.trader.add_strategy(strategy)
    node.build()
    built = BuiltNode(node, strategy, recorder, metrics, status, data_config, exec_config, key)
    if session.replay is not None:
        built.replay_client = built_client["client"] = _wire_replay(session, built)
    return built


def session_run_dir(config: AppConfig, opts: NodeOptions, mode: str) -> Path:
    """Where a session's reports go: --out, else HOME/runs/node-<mode>-<UTC time>."""
    if opts.run_dir is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        opts.run_dir = config.home / "runs" / f"node-{mode}-{stamp}"
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    return opts.run_dir


def _add_tick_recorder(session: NodeSession, node: Any, ids: tuple[Any, ...]) -> None:
    """Paper, testnet and live record what they receive into the lake (a replay only into
    another lake, node.record_lake)."""
    node_s = session.config.settings.node
    if not node_s.record_ticks or (session.mode == "replay" and node_s.record_lake is None):
        return
    if session.replay is not None and session.replay.bars:
        return  # a bar replay's quotes are the bars' opens, not ticks worth recording
    from trading.data.lake import Lake
    from trading.node.actors import TickRecorder, TickRecorderConfig

    root = node_s.record_lake
    if root is None:
        # what a node receives from another exchange than Binance (`hmmtrader exchange`
        # replaying this very lake) is not market history: it goes to the session's folder
        configs = session.venue_configs
        elsewhere = configs is not None and configs.data.base_url_http is not None
        root = (
            session_run_dir(session.config, session.opts, session.mode) / "lake"
            if elsewhere
            else session.config.home / "lake"
        )

    node.trader.add_actor(
        TickRecorder(
            TickRecorderConfig(instrument_ids=ids, flush_s=node_s.record_flush_s),
            Lake(root),
            session.config.instruments.venue,
            f"node:{session.mode}",
        )
    )


def _wire_replay(session: NodeSession, built: BuiltNode) -> Any:
    """Hand the replay's ticks to its data client, with the fast-forward of the warm-up (and
    of a recovery) and the engines' drain between two ticks."""
    from trading.node.replay import replay_client

    assert session.replay is not None
    node = built.node
    for instrument in session.replay.instruments:
        node.kernel.cache.add_instrument(instrument)
    client = replay_client(built.replay_key)
    kinds = ("bars",) if session.replay.bars else ("quotes", "trades")
    wanted = {(k, str(i.id)) for i in session.replay.instruments for k in kinds}
    client.load(session.replay.ticks, wanted)
    session.replay.ticks = []  # the client holds them now
    # the warm-up before the window plays unpaced (no decision is made on it; a user asked
    # for the window's pace), and so does a recovery's replay up to where it stopped
    client.fast_until_ns = max(session.recover_until_ns, session.replay.window.start_ns - 1)
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
        built.replay_done = True
        node.stop()

    client.drain = drain
    client.on_finished = finished
    return client
