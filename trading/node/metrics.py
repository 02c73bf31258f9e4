"""The trading node's Prometheus metrics (the operator handbook's names), in a registry of
their own, served by the node on `node.metrics_port` (default 8070, path /metrics).

Fed by the node: every model step, guardrail block, order and fill through the journaling
recorder, every inference call through `MeteredInference`, and PnL, equity, staleness and
the kill switch at each heartbeat. The names and labels are the contract of
deploy/prometheus/alerts.yml and deploy/grafana/dashboards/hmmtrader.json (a test checks
that every metric named there is exported here or by the inference/ops servers).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trading.regime import kernel

# perpetual futures fund every 8 hours at these UTC hours (Binance USD-M)
FUNDING_HOURS_UTC = (0, 8, 16)
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def seconds_to_funding(now: dt.datetime) -> float:
    """Seconds from `now` (aware) to the next funding time."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for hour in (*FUNDING_HOURS_UTC, 24 + FUNDING_HOURS_UTC[0]):
        at = day + dt.timedelta(hours=hour)
        if at > now:
            return (at - now).total_seconds()
    raise AssertionError("unreachable: the next day's first funding is always later")


class NodeMetrics:
    def __init__(self, symbols: list[str], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.symbols = list(symbols)
        self.pnl_realized = Gauge(
            "pnl_realized", "Realized PnL net of fees since the node started (USD)", ["symbol"],
            registry=r,
        )  # fmt: skip
        self.pnl_unrealized = Gauge(
            "pnl_unrealized", "Open positions marked to mid (USD)", ["symbol"], registry=r
        )
        self.equity = Gauge("equity_usd", "Account equity: balance + unrealized PnL", registry=r)
        self.drift = Gauge(
            "drift_score", "Drift of recent features against the training reference", ["symbol"],
            registry=r,
        )  # fmt: skip
        self.guardrail = Counter(
            "guardrail_trigger", "Entries blocked by a guardrail", ["reason", "symbol"],
            registry=r,
        )  # fmt: skip
        self.state_active = Gauge(
            "state_active", "1 for the active regime state, 0 otherwise", ["symbol", "state"],
            registry=r,
        )  # fmt: skip
        self.state_posterior = Gauge(
            "state_posterior", "Filtered posterior of each regime state", ["symbol", "state"],
            registry=r,
        )  # fmt: skip
        self.transitions = Counter(
            "state_transitions", "Regime state changes", ["symbol", "from_state", "to_state"],
            registry=r,
        )  # fmt: skip
        self.confidence = Gauge(
            "model_confidence", "Policy confidence of the last step", ["symbol"], registry=r
        )
        self.latency = Histogram(
            "inference_latency_seconds", "Inference call latency", ["symbol"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.orders = Counter("orders", "Orders sent", ["symbol", "kind"], registry=r)
        self.fills = Counter("fills", "Order fills", ["symbol", "side"], registry=r)
        self.staleness = Gauge(
            "data_staleness_seconds", "Wall seconds since the last tick of the symbol",
            ["symbol"], registry=r,
        )  # fmt: skip
        self.kill = Gauge(
            "kill_switch_engaged", "1: trading disabled by the kill switch", registry=r
        )
        self.model_info = Gauge(
            "model_version_info", "The model version the node trades",
            ["model", "version", "inference"], registry=r,
        )  # fmt: skip
        self.model_created = Gauge(
            "model_created_timestamp_seconds", "When the traded version was registered (unix s)",
            registry=r,
        )  # fmt: skip
        self.funding = Gauge(
            "funding_proximity_seconds", "Seconds to the next perpetual funding time",
            ["symbol"], registry=r,
        )  # fmt: skip
        self.outages = Counter(
            "market_data_outages", "Times the market data went silent for node.stale_after_s",
            registry=r,
        )  # fmt: skip
        self.outage_seconds = Gauge(
            "market_data_outage_seconds",
            "Wall seconds of the current market-data outage, else of the last one", registry=r,
        )  # fmt: skip
        self.outage_seconds.set(0.0)
        self.stale_since: float | None = None  # wall time the current outage began
        self.outage_count = 0
        self.model_created.set(math.nan)
        # the last step per symbol (also the dashboard's regime panel, via the status)
        self.last: dict[str, dict[str, Any]] = {}
        self._tick_seen: dict[str, tuple[int, float]] = {}  # market ts, wall time it changed
        self._model_key: tuple[str, str, str] | None = None
        for symbol in self.symbols:  # every series exists from the start
            self.pnl_realized.labels(symbol).set(0.0)
            self.pnl_unrealized.labels(symbol).set(0.0)
            self.staleness.labels(symbol).set(math.nan)

    # ---- per event ----
    def step(self, symbol: str, out: np.ndarray) -> None:
        state = int(out[kernel.OUT_STATE])
        posterior = [float(p) for p in out[kernel.OUT_POSTERIOR :]]
        prev = self.last.get(symbol)
        if prev is not None and prev["state"] != state:
            self.transitions.labels(symbol, str(prev["state"]), str(state)).inc()
        for k, p in enumerate(posterior):
            self.state_posterior.labels(symbol, str(k)).set(p)
            self.state_active.labels(symbol, str(k)).set(1.0 if k == state else 0.0)
        confidence, drift = float(out[kernel.OUT_CONFIDENCE]), float(out[kernel.OUT_DRIFT])
        self.confidence.labels(symbol).set(confidence)
        self.drift.labels(symbol).set(drift)
        self.last[symbol] = {
            "state": state,
            "posterior": [round(p, 6) for p in posterior],
            "confidence": _finite(confidence),
            "drift": _finite(drift),
            "action": int(out[kernel.OUT_ACTION]),
        }

    def block(self, symbol: str, reason: str) -> None:
        self.guardrail.labels(reason, symbol).inc()

    def order(self, symbol: str, kind: str) -> None:
        self.orders.labels(symbol, kind).inc()

    def fill(self, symbol: str, side: str) -> None:
        self.fills.labels(symbol, side).inc()

    def inference_latency(self, symbol: str, seconds: float) -> None:
        self.latency.labels(symbol).observe(seconds)

    # ---- per heartbeat ----
    def heartbeat(
        self,
        status: dict[str, Any],
        tick_ts_ns: dict[str, int],
        kill_engaged: bool,
        now_wall: float | None = None,
    ) -> None:
        now_wall = time.time() if now_wall is None else now_wall
        realized = status.get("realized_by_symbol", {})
        unrealized = status.get("unrealized_by_symbol", {})
        funding = seconds_to_funding(dt.datetime.fromtimestamp(now_wall, dt.UTC))
        for symbol in self.symbols:
            self.pnl_realized.labels(symbol).set(float(realized.get(symbol, 0.0)))
            self.pnl_unrealized.labels(symbol).set(float(unrealized.get(symbol, 0.0)))
            self.funding.labels(symbol).set(funding)
            ts = tick_ts_ns.get(symbol, 0)
            seen = self._tick_seen.get(symbol)
            if ts and (seen is None or seen[0] != ts):
                self._tick_seen[symbol] = seen = (ts, now_wall)
            if seen is not None:
                self.staleness.labels(symbol).set(max(0.0, now_wall - seen[1]))
        self._track_outage(now_wall)
        if status.get("equity_usd") is not None:
            self.equity.set(float(status["equity_usd"]))
        self.kill.set(1.0 if kill_engaged else 0.0)

    stale_after_s = 5.0  # node.stale_after_s

    def _track_outage(self, now_wall: float) -> None:
        """An outage: no tick of any symbol for stale_after_s (wall); counted once, its
        length kept until the next one."""
        seen = [w for _, w in self._tick_seen.values()]
        if not seen:
            return
        silent = now_wall - max(seen)
        if silent >= self.stale_after_s:
            if self.stale_since is None:
                self.stale_since = max(seen)
                self.outage_count += 1
                self.outages.inc()
            self.outage_seconds.set(now_wall - self.stale_since)
        elif self.stale_since is not None:
            self.outage_seconds.set(max(seen) - self.stale_since)
            self.stale_since = None

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    def model(self, name: str, version: str, inference: str, created_s: float | None) -> None:
        key = (name, version, inference)
        if key != self._model_key:
            if self._model_key is not None:
                self.model_info.remove(*self._model_key)
            self.model_info.labels(*key).set(1.0)
            self._model_key = key
        self.model_created.set(math.nan if created_s is None else created_s)

    def serve(self, host: str, port: int) -> Any:
        """Start the /metrics HTTP server in a daemon thread; returns (server, thread)."""
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class MeteredInference:
    """The node's inference seam, timed: each `step` observes `inference_latency_seconds`
    (failed calls too: a timeout is the latency a guardrail saw). Everything else is the
    wrapped inference's."""

    def __init__(self, inner: Any, metrics: NodeMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def step(self, symbol: str, row: np.ndarray, ts_ns: int) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self._inner.step(symbol, row, ts_ns)
        finally:
            self._metrics.inference_latency(symbol, time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
