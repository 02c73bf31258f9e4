"""Request weights and order counts, as Binance Spot counts them, with its answers past
the limits: 429 (-1003 or -1015) with Retry-After, and 418 (an IP ban, doubling each time)
for a client that keeps sending during a 429's Retry-After."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Verdict:
    status: int  # 200, 429 or 418
    code: int = 0
    msg: str = ""
    retry_after_s: int = 0
    used_weight: int = 0
    order_count: int = 0


@dataclass
class RateLimiter:
    """Weight per `window_s` (Binance: 60 s) and orders per `order_window_s` (Binance: 10 s),
    for one client (the exchange serves one account on loopback)."""

    weight_limit: int = 6000
    window_s: float = 60.0
    order_limit: int = 100
    order_window_s: float = 10.0
    ban_s: float = 120.0  # the first 418's ban; doubles with each further one
    clock: Callable[[], float] = time.monotonic
    _weights: deque[tuple[float, int]] = field(default_factory=deque)
    _orders: deque[float] = field(default_factory=deque)
    _retry_until: float = 0.0  # a 429 told the client to wait until then
    banned_until: float = 0.0
    bans: int = 0
    counts: dict[int, int] = field(default_factory=lambda: {429: 0, 418: 0})
    throttled_until: float = 0.0  # a fault: every request refused (429) until then
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _used(self, now: float) -> int:
        while self._weights and self._weights[0][0] <= now - self.window_s:
            self._weights.popleft()
        while self._orders and self._orders[0] <= now - self.order_window_s:
            self._orders.popleft()
        return sum(w for _, w in self._weights)

    def check(self, weight: int, is_order: bool = False) -> Verdict:
        """Count one request; say whether it is served."""
        with self._lock:
            now = self.clock()
            used = self._used(now)
            if now < self.banned_until:
                return self._refuse(418, now, used, self.banned_until - now)
            if now < self._retry_until:  # sending while told to wait: banned
                self._retry_until = 0.0  # the ban replaces the wait
                self.bans += 1
                self.banned_until = now + self.ban_s * 2 ** (self.bans - 1)
                return self._refuse(418, now, used, self.banned_until - now)
            if now < self.throttled_until:
                self._retry_until = self.throttled_until
                return self._refuse(429, now, used, self.throttled_until - now)
            if used + weight > self.weight_limit:
                wait = self._weights[0][0] + self.window_s - now if self._weights else self.window_s
                self._retry_until = now + wait
                return self._refuse(429, now, used, wait)
            if is_order and len(self._orders) >= self.order_limit:
                wait = self._orders[0] + self.order_window_s - now
                self._retry_until = now + wait
                return self._refuse(429, now, used, wait, orders=True)
            self._weights.append((now, weight))
            if is_order:
                self._orders.append(now)
            return Verdict(200, used_weight=used + weight, order_count=len(self._orders))

    def throttle(self, seconds: float) -> None:
        """Refuse every request for `seconds` (429 with Retry-After; 418 for a client that
        sends again before then), as a venue under load or a client over its limits."""
        with self._lock:
            self.throttled_until = self.clock() + seconds

    def _refuse(
        self, status: int, now: float, used: int, wait_s: float, orders: bool = False
    ) -> Verdict:
        self.counts[status] += 1
        retry = max(1, math.ceil(wait_s))
        if status == 418:
            msg = (
                f"Way too many requests; IP banned until {int(time.time() + wait_s) * 1000}. "
                "Please use the websocket for live updates to avoid bans."
            )
            return Verdict(418, -1003, msg, retry, used)
        if orders:
            msg = f"Too many new orders; current limit is {self.order_limit} orders per {self.order_window_s:g} SECOND."  # fmt: skip
            return Verdict(429, -1015, msg, retry, used, len(self._orders))
        msg = (
            f"Too much request weight used; current limit is {self.weight_limit} request "
            f"weight per {self.window_s:g} SECOND. Please use WebSocket Streams for live "
            "updates to avoid polling the API."
        )
        return Verdict(429, -1003, msg, retry, used)
