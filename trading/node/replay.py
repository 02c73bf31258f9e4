"""Replay mode's venue: a market-data client that plays lake ticks into a live
`TradingNode`, and the sandbox execution client configured like the backtest venue.

The data client sorts quotes and trades of all symbols by time exactly as the backtest
engine does (stable, by `ts_init`) and hands each tick to the data engine, then waits
until the node has drained its queues (data, risk, execution commands and events) before
the next one. So every order decided on a tick reaches the simulated venue before the
next tick, as in a backtest, and the same ticks give the same decisions. `speed` paces
the ticks against the wall clock (1: real time; 0: as fast as the node keeps up) from
`fast_until_ns` on: the warm-up before the window (and a recovery) plays unpaced.

The sandbox client is Nautilus' `SandboxExecutionClient` (a `SimulatedExchange` that
fills on the market data the node receives, in the data's time) with the backtest's fill
model (`slippage_bp` beyond the touch), fees and order latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nautilus_trader.adapters.sandbox.config import SandboxExecutionClientConfig
from nautilus_trader.adapters.sandbox.execution import SandboxExecutionClient
from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.config import LiveDataClientConfig
from nautilus_trader.live.data_client import LiveMarketDataClient
from nautilus_trader.live.factories import LiveDataClientFactory, LiveExecClientFactory
from nautilus_trader.model.identifiers import ClientId, Venue

# clients by `ReplayDataClientConfig.key`: the runner reaches its client through it
_CLIENTS: dict[str, ReplayDataClient] = {}


class Pacer:
    """How long to wait before a tick: none up to `fast_until_ns` (market time) or at speed
    0; after it, market time runs `speed` times the wall clock from the first paced tick."""

    def __init__(self, speed: float, fast_until_ns: int) -> None:
        self.speed = speed
        self.fast_until_ns = fast_until_ns
        self._t0: tuple[int, float] | None = None  # (market ns, wall s) of the first paced

    def wait_s(self, ts_ns: int, now_s: float) -> float:
        if self.speed <= 0 or ts_ns <= self.fast_until_ns:
            return 0.0
        if self._t0 is None:
            self._t0 = (ts_ns, now_s)
        t0_ns, t0_wall = self._t0
        return max(0.0, t0_wall + (ts_ns - t0_ns) / 1e9 / self.speed - now_s)


class ReplayDataClientConfig(LiveDataClientConfig, frozen=True):
    key: str = ""  # unique per node run
    venue: str = "BINANCE"
    speed: float = 0.0  # 1: real time; 0: no pacing


class ReplayDataClient(LiveMarketDataClient):
    def __init__(self, loop: asyncio.AbstractEventLoop, config: ReplayDataClientConfig, **kw: Any):
        super().__init__(
            loop=loop,
            client_id=ClientId(config.venue),
            venue=Venue(config.venue),
            instrument_provider=InstrumentProvider(),
            config=config,
            **kw,
        )
        self.speed = config.speed
        self.ticks: list[Any] = []
        self.wanted: set[tuple[str, str]] = set()  # (kind, instrument id) to subscribe
        self.subscribed: set[tuple[str, str]] = set()
        self.drain: Callable[[], Awaitable[None]] | None = None
        self.on_finished: Callable[[], None] | None = None
        self.fast_until_ns = 0  # no pacing up to this market time (warm-up, recovery)
        self.cursor_ns = 0  # ts of the last tick handed to the node
        self.played = 0
        self.finished = False
        self._task: asyncio.Task | None = None

    def load(self, ticks: list[Any], wanted: set[tuple[str, str]]) -> None:
        """Ticks of all symbols (the backtest's order: sorted stably by ts_init)."""
        self.ticks = sorted(ticks, key=lambda t: t.ts_init)
        self.wanted = wanted

    async def _connect(self) -> None:
        pass

    async def _disconnect(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _subscribe_quote_ticks(self, command: Any) -> None:
        self._subscribed("quotes", command.instrument_id)

    async def _subscribe_trade_ticks(self, command: Any) -> None:
        self._subscribed("trades", command.instrument_id)

    async def _subscribe_bars(self, command: Any) -> None:
        self._subscribed("bars", command.bar_type.instrument_id)

    async def _unsubscribe_bars(self, command: Any) -> None:
        pass

    async def _unsubscribe_quote_ticks(self, command: Any) -> None:
        pass

    async def _unsubscribe_trade_ticks(self, command: Any) -> None:
        pass

    def _subscribed(self, kind: str, instrument_id: Any) -> None:
        self.subscribed.add((kind, str(instrument_id)))
        if self.wanted <= self.subscribed and self._task is None:
            self._task = self._loop.create_task(self._play(), name="replay")

    async def _play(self) -> None:
        drain = self.drain
        pacer = Pacer(self.speed, self.fast_until_ns)
        try:
            for tick in self.ticks:
                ts = tick.ts_init
                wait = pacer.wait_s(ts, time.monotonic())
                if wait > 0:
                    await asyncio.sleep(wait)
                self._handle_data(tick)
                self.cursor_ns = ts
                self.played += 1
                if drain is not None:
                    await drain()
                else:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            return
        self.finished = True
        self._log.info(f"replay finished: {self.played} ticks")
        if self.on_finished is not None:
            self.on_finished()


class ReplayDataClientFactory(LiveDataClientFactory):
    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: ReplayDataClientConfig,
        msgbus: Any,
        cache: Any,
        clock: Any,
    ) -> ReplayDataClient:
        client = ReplayDataClient(loop, config, msgbus=msgbus, cache=cache, clock=clock)
        _CLIENTS[config.key] = client
        return client


def replay_client(key: str) -> ReplayDataClient:
    return _CLIENTS[key]


def forget_client(key: str) -> None:
    _CLIENTS.pop(key, None)


class SimVenueConfig(SandboxExecutionClientConfig, frozen=True, kw_only=True):
    """The sandbox venue with the backtest's slippage, fees and latency."""

    slippage_bp: float = 1.0
    latency_ms: float = 50.0
    seed: int = 42


class SimVenueExecutionClient(SandboxExecutionClient):
    """Submitted orders wait `latency_ms` of market time (the time of the last tick the
    venue saw) and then fill on the first tick at or after it, after that tick moved the
    book: the backtest venue's order latency. (Nautilus' own latency queue keys on the
    command's wall-clock time, which a replay must not use.)"""

    def __init__(self, *args: Any, latency_ns: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.latency_ns = latency_ns
        self._held: list[tuple[int, Any]] = []

    def submit_order(self, command: Any) -> None:
        due = self.test_clock.timestamp_ns() + self.latency_ns
        self._held.append((due, command))

    def on_data(self, data: Any) -> None:
        super().on_data(data)
        if self._held:
            now = self.test_clock.timestamp_ns()
            ready = [c for due, c in self._held if due <= now]
            if ready:
                self._held = [(due, c) for due, c in self._held if due > now]
                for command in ready:
                    self._client.submit_order(command)


class SimVenueExecClientFactory(LiveExecClientFactory):
    # Nautilus 1.231's node builder passes the portfolio only to a factory of exactly this
    # name (node_builder.build_exec_clients); see the assignment below the class
    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: SimVenueConfig,
        portfolio: Any,
        msgbus: Any,
        cache: Any,
        clock: Any,
    ) -> SandboxExecutionClient:
        from trading.backtest.fills import BasisPointSlippageFillModel

        client = SimVenueExecutionClient(
            loop=loop,
            clock=clock,
            portfolio=portfolio,
            msgbus=msgbus,
            cache=cache,
            config=config,
            latency_ns=int(config.latency_ms * 1_000_000),
        )
        client.exchange.set_fill_model(BasisPointSlippageFillModel(config.slippage_bp, config.seed))
        return client


SimVenueExecClientFactory.__name__ = "SandboxLiveExecClientFactory"
