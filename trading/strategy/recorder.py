"""What the strategy saw and decided, kept in memory for the reports: the state timeline
(one row per symbol and grid step), guardrail blocks, and the context of every order."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class OrderContext:
    """The market and the model when an order was decided."""

    client_order_id: str
    symbol: str
    kind: str  # entry, or the close reason: hold, flip, kill, session_end
    ts_ns: int
    side: int
    touch_px: float  # the price it takes at decision time (ask for a buy, bid for a sell)
    mid: float
    spread_bp: float
    vol_bp: float
    l1_depth_usd: float
    state: int
    confidence: float
    exp_edge_bp: float


# the market side of a timeline row; the model side is the kernel's output row
TIMELINE_FIELDS = (
    "ts_ns",  # the grid step
    "decided_ns",  # when the row was complete (the first tick after the step): the decision time
    "symbol",
    "mid",
    "spread_bp",
    "vol_bp",
)


@dataclass
class Recorder:
    timeline: list[tuple[object, ...]] = field(default_factory=list)
    outputs: list[np.ndarray] = field(default_factory=list)  # kernel.OUT_* rows
    blocks: list[tuple[int, str, str, str]] = field(default_factory=list)
    orders: dict[str, OrderContext] = field(default_factory=dict)
    nan_steps: int = 0

    def step(
        self,
        ts_ns: int,
        decided_ns: int,
        symbol: str,
        out: np.ndarray,
        mid: float,
        spread_bp: float,
        vol_bp: float,
    ) -> None:
        self.timeline.append((ts_ns, decided_ns, symbol, mid, spread_bp, vol_bp))
        self.outputs.append(out.copy())

    def block(self, ts_ns: int, symbol: str, reason: str, detail: str) -> None:
        self.blocks.append((ts_ns, symbol, reason, detail))

    def order(self, context: OrderContext) -> None:
        self.orders[context.client_order_id] = context

    def fill(self, symbol: str, side: str, qty: float, price: float) -> None:
        """An order of the strategy filled (the reports read fills from the engine; the
        node's recorder counts them for its metrics)."""
