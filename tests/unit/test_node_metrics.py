"""The node's Prometheus metrics: what each event does to them, and the heartbeat's gauges."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from trading.node.metrics import MeteredInference, NodeMetrics, seconds_to_funding
from trading.regime import kernel


def _out(state: int, posterior: list[float], confidence: float = 0.7, drift: float = 0.2):
    out = np.zeros(kernel.OUT_POSTERIOR + len(posterior))
    out[kernel.OUT_STATE] = state
    out[kernel.OUT_CONFIDENCE] = confidence
    out[kernel.OUT_DRIFT] = drift
    out[kernel.OUT_ACTION] = 1
    out[kernel.OUT_POSTERIOR :] = posterior
    return out


def _samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_steps_set_the_active_state_posterior_and_count_transitions() -> None:
    m = NodeMetrics(["BTCUSDT"])
    m.step("BTCUSDT", _out(1, [0.1, 0.8, 0.1]))
    m.step("BTCUSDT", _out(1, [0.1, 0.7, 0.2]))
    m.step("BTCUSDT", _out(2, [0.0, 0.3, 0.7], confidence=0.9, drift=0.6))
    s = _samples(m)
    active = {k[1][0][1]: v for k, v in s.items() if k[0] == "state_active"}
    assert active == {"0": 0.0, "1": 0.0, "2": 1.0}
    assert s[("state_posterior", (("state", "2"), ("symbol", "BTCUSDT")))] == pytest.approx(0.7)
    # one change 1 -> 2; staying in 1 is not a transition
    transitions = {k[1]: v for k, v in s.items() if k[0] == "state_transitions_total"}
    assert transitions == {(("from_state", "1"), ("symbol", "BTCUSDT"), ("to_state", "2")): 1.0}
    assert s[("model_confidence", (("symbol", "BTCUSDT"),))] == pytest.approx(0.9)
    assert s[("drift_score", (("symbol", "BTCUSDT"),))] == pytest.approx(0.6)
    assert m.last["BTCUSDT"]["state"] == 2 and m.last["BTCUSDT"]["posterior"] == [0.0, 0.3, 0.7]


def test_blocks_orders_fills_and_latency() -> None:
    m = NodeMetrics(["BTCUSDT", "ETHUSDT"])
    for _ in range(3):
        m.block("ETHUSDT", "SPREAD")
    m.block("BTCUSDT", "LATENCY")
    m.order("BTCUSDT", "entry")
    m.order("BTCUSDT", "kill")
    m.fill("BTCUSDT", "BUY")
    m.inference_latency("BTCUSDT", 0.003)
    m.inference_latency("BTCUSDT", 0.3)
    s = _samples(m)
    assert s[("guardrail_trigger_total", (("reason", "SPREAD"), ("symbol", "ETHUSDT")))] == 3
    assert s[("guardrail_trigger_total", (("reason", "LATENCY"), ("symbol", "BTCUSDT")))] == 1
    assert s[("orders_total", (("kind", "kill"), ("symbol", "BTCUSDT")))] == 1
    assert s[("fills_total", (("side", "BUY"), ("symbol", "BTCUSDT")))] == 1
    assert s[("inference_latency_seconds_count", (("symbol", "BTCUSDT"),))] == 2
    le = (("le", "0.005"), ("symbol", "BTCUSDT"))
    assert s[("inference_latency_seconds_bucket", le)] == 1  # 3 ms in, 300 ms out


def test_heartbeat_pnl_equity_kill_staleness_and_funding() -> None:
    m = NodeMetrics(["BTCUSDT", "ETHUSDT"])
    status = {
        "realized_by_symbol": {"BTCUSDT": 1.5, "ETHUSDT": -0.25},
        "unrealized_by_symbol": {"BTCUSDT": 0.0, "ETHUSDT": 0.1},
        "equity_usd": 10_001.35,
    }
    t0 = dt.datetime(2026, 1, 1, 7, 59, 0, tzinfo=dt.UTC).timestamp()
    m.heartbeat(status, {"BTCUSDT": 100, "ETHUSDT": 0}, kill_engaged=False, now_wall=t0)
    m.heartbeat(status, {"BTCUSDT": 100, "ETHUSDT": 0}, kill_engaged=True, now_wall=t0 + 4)
    s = _samples(m)
    assert s[("pnl_realized", (("symbol", "ETHUSDT"),))] == -0.25
    assert s[("pnl_unrealized", (("symbol", "ETHUSDT"),))] == pytest.approx(0.1)
    assert s[("equity_usd", ())] == pytest.approx(10_001.35)
    assert s[("kill_switch_engaged", ())] == 1.0
    # BTC's last tick did not change for 4 s; ETH never had one
    assert s[("data_staleness_seconds", (("symbol", "BTCUSDT"),))] == pytest.approx(4.0)
    assert math.isnan(s[("data_staleness_seconds", (("symbol", "ETHUSDT"),))])
    assert s[("funding_proximity_seconds", (("symbol", "BTCUSDT"),))] == pytest.approx(56.0)


def test_model_info_follows_the_version_and_its_creation_time() -> None:
    m = NodeMetrics(["BTCUSDT"])
    m.model("hmm-regime", "1", "in_process", None)
    assert math.isnan(_samples(m)[("model_created_timestamp_seconds", ())])
    m.model("hmm-regime", "1", "in_process", 1_700_000_000.0)  # the lookup came back
    m.model("hmm-regime", "2", "in_process", 1_700_086_400.0)
    s = _samples(m)
    info = [k[1] for k in s if k[0] == "model_version_info"]
    assert info == [(("inference", "in_process"), ("model", "hmm-regime"), ("version", "2"))]
    assert s[("model_created_timestamp_seconds", ())] == 1_700_086_400.0


@pytest.mark.parametrize(
    ("now", "seconds"),
    [
        ("00:00:00", 8 * 3600),
        ("07:59:30", 30),
        ("08:00:00", 8 * 3600),
        ("15:00:00", 3600),
        ("23:30:00", 1800),
    ],
)
def test_seconds_to_funding(now: str, seconds: float) -> None:
    at = dt.datetime.fromisoformat(f"2026-03-01T{now}+00:00")
    assert seconds_to_funding(at) == seconds


def test_metered_inference_times_every_call_and_passes_errors_through() -> None:
    class Flaky:
        version, client = "7", object()

        def __init__(self) -> None:
            self.calls = 0

        def step(self, symbol: str, row: np.ndarray, ts_ns: int) -> np.ndarray:
            self.calls += 1
            if self.calls == 2:
                raise TimeoutError("slow")
            return row

    m = NodeMetrics(["BTCUSDT"])
    inner = Flaky()
    metered = MeteredInference(inner, m)
    assert metered.version == "7" and hasattr(metered, "client")  # the seam's attributes
    metered.step("BTCUSDT", np.ones(3), 1)
    with pytest.raises(TimeoutError):
        metered.step("BTCUSDT", np.ones(3), 2)
    assert _samples(m)[("inference_latency_seconds_count", (("symbol", "BTCUSDT"),))] == 2


def test_a_silent_feed_is_one_outage_with_its_length() -> None:
    """No tick of any symbol for stale_after_s (wall) opens an outage, counted once; its
    length grows while it lasts and stays once ticks come again."""
    m = NodeMetrics(["BTCUSDT", "ETHUSDT"])
    m.stale_after_s = 5.0
    body = {"realized_by_symbol": {}, "unrealized_by_symbol": {}}
    m.heartbeat(body, {"BTCUSDT": 1, "ETHUSDT": 1}, False, now_wall=100.0)
    m.heartbeat(body, {"BTCUSDT": 2, "ETHUSDT": 1}, False, now_wall=103.0)
    assert not m.stale
    for wall in (107.9, 110.0, 115.0):  # ETH silent since 100, BTC since 103
        m.heartbeat(body, {"BTCUSDT": 2, "ETHUSDT": 1}, False, now_wall=wall)
    assert m.stale and m.outage_count == 1
    assert _samples(m)[("market_data_outage_seconds", ())] == pytest.approx(12.0)
    m.heartbeat(body, {"BTCUSDT": 3, "ETHUSDT": 1}, False, now_wall=121.0)  # a tick again
    assert not m.stale
    samples = _samples(m)
    assert samples[("market_data_outages_total", ())] == 1.0
    assert samples[("market_data_outage_seconds", ())] == pytest.approx(18.0)  # 103 -> 121
