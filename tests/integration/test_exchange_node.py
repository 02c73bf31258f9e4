"""A testnet-mode node against the local Binance exchange, both real processes on loopback:
NautilusTrader's own Binance data and execution clients, unchanged, speak Binance's REST,
market streams and WebSocket API to `hmmtrader exchange`, which replays the lake.

An hour of the shared thin world's market is replayed once per scenario: the orders, fills
and balances of the node and the exchange's ledger agree; the node's decisions equal a
backtest's on the ticks the node received; the kill switch flattens and cancels on the
exchange through the adapter."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pandas as pd
import pytest

from tests.integration.cli_env import cli, config_for, isolated_env
from tests.integration.node_env import DAY, node_env, status_body
from tests.integration.node_env import wait_for as wait
from tests.integration.processes import HMMTRADER, NodeProcess
from tests.integration.worlds import thin_home
from tests.profile import SYMBOLS
from trading.data.lake import Lake
from trading.exchange.ledger import read_ledger
from trading.node.state import NodeState
from trading.process import LOOPBACK, ServerProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# what the exchange replays: the features' 30-minute warm-up, then two hours of trading
START, END = f"{DAY}T00:00", f"{DAY}T02:30"
SPEED = 180  # 2.5 hours in 50 s
KEYS = {"BINANCE_TESTNET_API_KEY": "local-key", "BINANCE_TESTNET_API_SECRET": "local-secret"}
NS = 1_000_000_000
# positions held 15 minutes, so one is open when the kill switch is engaged
HOLD = {"HMMTRADER_STRATEGY__EXECUTION__HOLD_S": "900"}
BAN_S = 2  # the exchange's first 418 ban (wall seconds)
CUT_S = 20.0  # the market-data cut (wall seconds)


@dataclass
class Cut:
    """The market-data cut: its market span, the node's status during it, when its data
    was back (wall seconds after the cut began), and the node's metrics then."""

    market_ms: tuple[int, int]
    status_during: dict[str, Any]
    back_after_s: float
    metrics: str


@dataclass
class Session:
    """One exchange and one testnet node that traded its hour, with the kill switch engaged
    (flatten) and released once on the way."""

    home: Path
    exchange: ServerProcess
    ledger: Path
    run_dir: Path
    node_log: str
    resting: dict[str, Any]  # the order placed by hand before the node started
    killed_ms: int  # market time of the kill (from the node's status)
    enabled_ms: int  # market time trading was enabled again
    state_end: dict[str, Any]  # the exchange's state at the end
    refused: dict[str, int]  # the exchange's 429 and 418 answers during the throttle
    metrics: str  # the node's /metrics after the throttle
    throttled: tuple[int, int]  # market ms: the throttle's start, and its end
    cut: Cut

    def state(self) -> dict[str, Any]:
        return dict(httpx.get(self.exchange.url + "/_exchange/state", timeout=5).json())


def signed(url: str, method: str, path: str, params: dict[str, Any]) -> httpx.Response:
    """A signed Binance REST request, as any client sends it."""
    query = urlencode({**params, "timestamp": int(time.time() * 1000)})
    secret = KEYS["BINANCE_TESTNET_API_SECRET"].encode()
    signature = hmac.new(secret, query.encode(), hashlib.sha256).hexdigest()
    return httpx.request(method, f"{url}{path}?{query}&signature={signature}", timeout=5,
                         headers={"X-MBX-APIKEY": KEYS["BINANCE_TESTNET_API_KEY"]})  # fmt: skip


def start_exchange(home: Path, tmp: Path, env: dict[str, str], *extra: str) -> ServerProcess:
    port = free_port()
    cmd = [HMMTRADER, "--home", str(home), "exchange", "--port", str(port), "--speed",
           str(SPEED), "--start", START, "--end", END, "--ledger", str(tmp / "ledger.jsonl"),
           "--log-level", "warning", "--ban-seconds", str(BAN_S), *extra]  # fmt: skip
    proc = ServerProcess("hmmtrader exchange", cmd, tmp / "exchange.log", env=env,
                         url=f"http://{LOOPBACK}:{port}", health_path="/_exchange/state")  # fmt: skip
    proc.start()
    return proc


def start_node(home: Path, tmp: Path, env: dict[str, str], url: str, name: str) -> NodeProcess:
    cmd = [HMMTRADER, "--home", str(home), "node", "--mode", "testnet",
           "--symbols", "BTCUSDT,ETHUSDT", "--exchange-url", url,
           "--out", str(tmp / name)]  # fmt: skip
    return NodeProcess("hmmtrader node", cmd, tmp / f"{name}.log", env=env).start()


def replayed(exchange: ServerProcess) -> bool:
    replay = httpx.get(exchange.url + "/_exchange/state", timeout=5).json()["replay"]
    return bool(replay["played"] == replay["events"] > 0)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared thin world, version 1 in production."""
    return thin_home(tmp_path_factory.mktemp("exchange") / "home")


def hour_state(exchange: ServerProcess) -> dict[str, Any]:
    return dict(httpx.get(exchange.url + "/_exchange/state", timeout=5).json())


def entries_after(tmp: Path, ts_ms: int) -> bool:
    """An order of the node's accepted by the exchange after market time ts_ms."""
    path = tmp / "ledger.jsonl"
    return any(e["ts_ms"] > ts_ms and e["client_order_id"].startswith("O-")
               for e in read_ledger(path, "order_new"))  # fmt: skip


def market_ms(exchange: ServerProcess) -> int:
    """The exchange's market time (the ledger's ts_ms clock)."""
    return int(httpx.get(exchange.url + "/_exchange/state", timeout=5).json()["market_time_ms"])


@pytest.fixture(scope="module")
def hour(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The hour traded once: a resting order placed by hand is on the exchange before the
    node starts; once a position is open the kill switch is engaged (flatten), then trading
    is enabled again; the node trades to the end of the hour and stops cleanly (SIGTERM,
    as systemd stops it)."""
    tmp = tmp_path_factory.mktemp("hour")
    db = tmp / "node.db"
    metrics_port = free_port()
    env = node_env({**KEYS, **HOLD, "HMMTRADER_NODE__KILL_DB": str(db),
                    "HMMTRADER_NODE__METRICS_PORT": str(metrics_port),
                    "HMMTRADER_NODE__RATE_LIMIT_BACKOFF_S": "1",
                    # ticks reach the node out of order across its two sockets by a few
                    # ms of wall time (more on a loaded machine): 15 s of market time is
                    # 83 ms of wall time at this speed
                    "HMMTRADER_NODE__REORDER_S": "15"})  # fmt: skip
    exchange = start_exchange(home, tmp, env)
    resting = signed(exchange.url, "POST", "/api/v3/order",
                     {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                      "quantity": "0.01000", "price": "1000.00",
                      "newClientOrderId": "by-hand-1"}).json()  # fmt: skip
    assert resting["status"] == "NEW", resting
    node = None
    state = NodeState(db)
    try:
        node = start_node(home, tmp, env, exchange.url, "run")
        wait("an open position", lambda: status_body(db).get("positions"), node)
        state.engage("test: flatten through the adapter", "pytest", flatten=True)
        killed_ms = market_ms(exchange)
        wait("flat, and the resting order cancelled",
             lambda: not status_body(db).get("positions")
             and not httpx.get(exchange.url + "/_exchange/state", timeout=5).json()["open_orders"],
             node, 60)  # fmt: skip
        state.enable("test: resume", "pytest")
        enabled_ms = market_ms(exchange)
        # the venue's rate limit: every request refused for THROTTLE_S (429, then 418 for a
        # client that sends again before Retry-After)
        wait("an entry after enable", lambda: entries_after(tmp, enabled_ms), node)
        throttle = httpx.post(exchange.url + "/_exchange/fault", timeout=5,
                              json={"kind": "throttle", "seconds": 120}).json()  # fmt: skip
        # the node's next order gets 429; one it sends before Retry-After gets 418
        wait("a 429", lambda: hour_state(exchange)["rate_limited"]["429"], node)
        wait("a 418", lambda: hour_state(exchange)["rate_limited"]["418"], node)
        time.sleep(BAN_S)
        httpx.post(exchange.url + "/_exchange/fault", json={"kind": "clear"}, timeout=5)
        refused = hour_state(exchange)["rate_limited"]
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        throttled = (throttle["market_time_ms"], market_ms(exchange))
        wait("an entry after the rate limit", lambda: entries_after(tmp, throttled[1]), node)
        # a 20-second market-data cut: the market streams drop and stay silent; the market
        # goes on at speed 2 meanwhile (40 s, within features.max_gap_s: no new warm-up)
        httpx.post(exchange.url + "/_exchange/speed", json={"speed": 2}, timeout=5)
        cut_wall = time.monotonic()
        cut = httpx.post(exchange.url + "/_exchange/fault", timeout=5,
                         json={"kind": "market_cut", "seconds": CUT_S}).json()  # fmt: skip
        wait("the node sees the outage",
             lambda: status_body(db).get("market_data", {}).get("stale"), node, 15)  # fmt: skip
        during = status_body(db)
        time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_wall)))
        httpx.post(exchange.url + "/_exchange/speed", json={"speed": SPEED}, timeout=5)
        cut_ms = (cut["market_time_ms"], market_ms(exchange))
        wait("ticks again", lambda: not status_body(db)["market_data"]["stale"], node, 60)
        back_s = time.monotonic() - cut_wall
        cut_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        wait("an entry after the cut", lambda: entries_after(tmp, cut_ms[1]), node)
        wait("the exchange's hour replayed", lambda: replayed(exchange), node)
        time.sleep(1.0)  # the last fills' events reach the node
        node.signal(signal.SIGTERM)
        assert node.wait(60) == 0, node.log()[-3000:]
        assert "stopped cleanly" in node.log()
        end = httpx.get(exchange.url + "/_exchange/state", timeout=5).json()
        yield Session(home, exchange, tmp / "ledger.jsonl", tmp / "run", node.log(), resting,
                      killed_ms, enabled_ms, end, refused, metrics, throttled,
                      Cut(cut_ms, during, back_s, cut_metrics))  # fmt: skip
    finally:
        if node is not None:
            node.kill()
        exchange.stop()


def _dec(text: Any) -> Decimal:
    return Decimal(str(text).split(" ")[0])


def test_an_hour_of_trading_agrees_with_the_ledger(hour: Session) -> None:
    """Acceptance 1: every order the strategy sent is in the exchange's ledger once; the
    node's fills are the exchange's, row for row; the balances agree to the cent."""
    ledger = read_ledger(hour.ledger)
    sent = pd.read_csv(hour.run_dir / "orders.csv")
    new = [e for e in ledger if e["event"] == "order_new" and e["client_order_id"] != "by-hand-1"]
    refused = [e for e in ledger if e["event"] == "order_rejected"]
    ids = [e["client_order_id"] for e in new + refused]
    print(f"orders: {len(sent)} sent, {len(new)} accepted, {len(refused)} refused")
    assert len(sent) >= 6
    assert sorted(ids) == sorted(sent["client_order_id"])  # each once, nothing else
    # refused: only the orders the rate-limit test's 429/418 turned away at the door
    assert all(e["code"] == -1003 and e["http_status"] in (429, 418) for e in refused), refused

    fills = pd.read_csv(hour.run_dir / "fills.csv").sort_values("trade_id").reset_index(drop=True)
    theirs = [e for e in ledger if e["event"] == "fill"]
    assert len(fills) == len(theirs) == len(new)
    for (_, ours), t in zip(fills.iterrows(), theirs, strict=True):
        assert ours["client_order_id"] == t["client_order_id"]
        assert str(ours["trade_id"]) == str(t["trade_id"])
        assert ours["order_side"] == t["side"]
        assert _dec(ours["last_px"]) == Decimal(t["price"])
        assert _dec(ours["last_qty"]) == Decimal(t["qty"])
        assert _dec(ours["commission"]) == Decimal(t["commission"])

    node_balances = json.loads((hour.run_dir / "account.json").read_text())
    exchange_balances = hour.state_end["balances"]
    for asset, bal in exchange_balances.items():
        ours = node_balances[asset]
        assert abs(Decimal(ours["total"]) - Decimal(bal["free"]) - Decimal(bal["locked"])) < Decimal("0.01"), asset  # fmt: skip
        assert abs(Decimal(ours["locked"]) - Decimal(bal["locked"])) < Decimal("0.01"), asset
    usdt = Decimal(exchange_balances["USDT"]["free"]) - 10_000
    summary = json.loads((hour.run_dir / "summary.json").read_text())
    realized = Decimal(str(summary["status"]["realized_pnl_usd"]))
    print(f"exchange USDT change {usdt:+.4f}, node realized PnL {realized:+.4f}")
    assert hour.state_end["unknown_requests"] == []


def test_the_decisions_equal_a_backtest_on_the_ticks_the_node_received(
    hour: Session, tmp_path: Path
) -> None:
    """Acceptance 2: the node recorded what it received (ms-stamped, as Binance stamps);
    a backtest on those ticks decides the same timeline; fills differ only as the two
    fill rules say (the exchange fills on arrival, the backtest after its latency)."""
    recorded = hour.run_dir / "lake"
    assert recorded.is_dir()
    home = tmp_path / "home"
    import shutil

    shutil.copytree(hour.home, home, ignore=shutil.ignore_patterns("lake"))
    shutil.copytree(recorded, home / "lake")
    out = tmp_path / "bt"
    # the node's hour, as it traded it: no warm-up window (it warmed up on the hour's first
    # ticks), no flattening before the end, and a recording of one hour of the day
    with isolated_env({"HMMTRADER_BACKTEST__WARMUP_S": "0",
                       "HMMTRADER_BACKTEST__FLATTEN_BEFORE_END_S": "0",
                       "HMMTRADER_QUALITY__QUOTES__MIN_COVERAGE": "0",
                       "HMMTRADER_QUALITY__TRADES__MIN_COVERAGE": "0"}):  # fmt: skip
        code = cli(home, "backtest", "--model", "production", "--symbols", ",".join(SYMBOLS),
                   "--start", START, "--end", END, "--out", str(out))  # fmt: skip
    assert code == 0
    ours = pd.read_csv(hour.run_dir / "state_timeline.csv")
    theirs = pd.read_csv(out / "state_timeline.csv")
    assert list(ours.columns) == list(theirs.columns)
    assert len(ours) == len(theirs) > 10_000
    summary = json.loads((hour.run_dir / "summary.json").read_text())
    # up to the market-data cut (a fault: a reconnect can deliver ticks later than
    # node.reorder_s, which the node counts as late), every cell is the backtest's
    cut_ns = hour.cut.market_ms[0] * 1_000_000
    first_late = summary["first_late_tick_ns"]
    assert first_late is None or first_late >= cut_ns, "a tick came late before the cut"
    # compared up to the second the cut began in: ticks the exchange stamped in that second
    # may not have been sent when the sockets dropped (seen once under load: the ETHUSDT
    # row of 01:33:48 missing, the cut at 01:33:48.391), and the timeline is per second;
    # and only rows decided before the cut (a row is decided at the first tick after its
    # second: seen, the row of 01:55:11 decided at 01:55:53, after a cut at 01:55:12.6)
    before = (ours["ts_ns"] < cut_ns // NS * NS) & (ours["decided_ns"] < cut_ns)
    differ = {c: int((ours[c] != theirs[c])[before].sum()) for c in ours.columns}
    after = int((ours != theirs).any(axis=1)[~before].sum())
    print(f"timeline: node {len(ours)} rows, backtest {len(theirs)}; before the cut "
          f"{int(before.sum())} rows, differing cells {sum(differ.values())}; after it "
          f"{int((~before).sum())} rows, {after} differing, {summary['late_ticks']} late ticks")  # fmt: skip
    assert not any(differ.values()), differ
    assert after == 0 or summary["late_ticks"] > 0  # a difference only where ticks came late

    # the entries decided before the kill switch (after it, the node's session and the
    # backtest part ways): the same decisions; their fills differ only by the fill rules
    sent = pd.read_csv(hour.run_dir / "orders.csv")
    # the kill's market time as the node saw it: when the test engaged it, or the node's
    # first KILL block if earlier (the node decides node.reorder_s and its lag behind the
    # exchange's clock, which a loaded machine makes longer)
    guard = pd.read_csv(hour.run_dir / "guardrails.csv")
    kill_blocks = guard.loc[guard["reason"] == "KILL", "ts_ns"]
    kill_ns = min([hour.killed_ms * 1_000_000, *kill_blocks.head(1)])
    node = sent[(sent["kind"] == "entry") & (sent["ts_ns"] < kill_ns)]
    bt = pd.read_csv(out / "trades.csv")
    bt_ns = pd.to_datetime(bt["decision_time"]).astype("int64")
    bt = bt[bt_ns < kill_ns]
    assert len(node) == len(bt) >= 1
    assert list(node["symbol"]) == list(bt["symbol"])
    assert list(node["side"].map({1: "LONG", -1: "SHORT"})) == list(bt["side"])
    assert list(node["ts_ns"]) == list(bt_ns[bt_ns < kill_ns])
    # the fill rules: the exchange filled each at the touch of its book when the order
    # arrived (the recorded quotes say which), moved by the slippage; the backtest at the
    # first quote after latency_ms; they differ by the market's moves in between
    slip = config_for(hour.home).settings.backtest.slippage_bp / 1e4
    ledger = {e["client_order_id"]: e for e in read_ledger(hour.ledger, "fill")}
    lake = Lake(hour.run_dir / "lake")
    day = dt.date.fromisoformat(DAY)
    quotes = {sym: lake.read("BINANCE", sym, "quotes", day, day).to_pandas() for sym in SYMBOLS}
    delays, diff_bp = [], []
    for (_, order), bt_px in zip(node.iterrows(), bt["entry_price"], strict=True):
        fill = ledger[order["client_order_id"]]
        q = quotes[order["symbol"]]
        book = q[q["ts_ns"] < (fill["ts_ms"] + 1) * 1_000_000].iloc[-1]
        touch = book["ask"] * (1 + slip) if order["side"] > 0 else book["bid"] * (1 - slip)
        tick = 0.01
        rule = (math.ceil(touch / tick - 1e-9) if order["side"] > 0 else math.floor(touch / tick + 1e-9)) * tick  # fmt: skip
        assert float(fill["price"]) == pytest.approx(rule, abs=1e-9)
        delays.append(fill["ts_ms"] / 1e3 - order["ts_ns"] / 1e9)
        diff_bp.append(abs(float(fill["price"]) / bt_px - 1) * 1e4)
    print(f"entries before the kill: {len(node)} decided alike; each exchange fill is its rule's "
          f"price at arrival, {min(delays):.1f}..{max(delays):.1f} s of market time after the "
          f"decision (node.reorder_s + the wall latency x speed); against the backtest's fill "
          f"after {config_for(hour.home).settings.backtest.latency_ms:g} ms: "
          f"{sum(d == 0 for d in diff_bp)} equal, max {max(diff_bp):.2f} bp apart")  # fmt: skip


def test_the_kill_switch_flattens_and_cancels_on_the_exchange(hour: Session) -> None:
    """Acceptance 6: the kill switch, through the real adapter: the position open at the
    kill is closed by the node's `kill` orders, the resting order (placed by hand, claimed
    by the strategy at start) is cancelled on the exchange, and no entry follows until
    trading is enabled again."""
    assert 0 < hour.killed_ms < hour.enabled_ms
    ledger = read_ledger(hour.ledger)
    sent = pd.read_csv(hour.run_dir / "orders.csv")
    kind = dict(zip(sent["client_order_id"], sent["kind"], strict=True))
    cancelled = [e for e in ledger if e["event"] == "order_canceled"]
    assert [e["client_order_id"] for e in cancelled] == ["by-hand-1"]
    assert cancelled[0]["order_id"] == hour.resting["orderId"]
    kill_fills = [e for e in ledger if e["event"] == "fill" and kind.get(e["client_order_id"]) == "kill"]  # fmt: skip
    assert kill_fills, "the kill closed no position"
    between = [e for e in ledger if e["event"] == "order_new"
               and hour.killed_ms < e["ts_ms"] < hour.enabled_ms]  # fmt: skip
    assert all(kind.get(e["client_order_id"]) == "kill" for e in between), between
    after = [e for e in ledger if e["event"] == "order_new" and e["ts_ms"] > hour.enabled_ms]
    assert any(kind.get(e["client_order_id"]) == "entry" for e in after), "trading did not resume"
    print(
        f"kill: {len(kill_fills)} position(s) flattened, 1 resting order cancelled; "
        f"{len(after)} orders after enable"
    )
    assert "by-hand-1" in hour.node_log  # the order found at start is reported


def test_429_then_418_the_node_backs_off(hour: Session) -> None:
    """Acceptance 5: the exchange refuses every request (429 with Retry-After, then 418 for
    a client that sends again too soon) until it has answered both; the node sends few
    orders meanwhile, waits (a 418's ban end when it says one), counts each answer as a
    RATE_LIMIT block in its metrics, and trades again afterwards."""
    refused = hour.refused["429"] + hour.refused["418"]
    blocked = sum(
        float(line.rsplit(" ", 1)[1])
        for line in hour.metrics.splitlines()
        if line.startswith("guardrail_trigger_total{") and 'reason="RATE_LIMIT"' in line
    )
    print(f"rate limit: exchange answered 429 x{hour.refused['429']}, 418 x{hour.refused['418']}"
          f"; node RATE_LIMIT blocks {blocked:g}")  # fmt: skip
    assert hour.refused["429"] >= 1 and hour.refused["418"] >= 1
    assert refused <= 4  # not hammering: an order per backoff at most, and none while banned
    assert blocked >= refused  # each answer counted (and entries held back while waiting)
    ledger = read_ledger(hour.ledger, "order_new")
    assert any(e["ts_ms"] > hour.throttled[1] for e in ledger)  # trading again


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))  # fmt: skip


def test_a_20_second_market_data_cut(hour: Session) -> None:
    """Acceptance 4: the market streams drop and stay silent for 20 s: the node sees the
    outage (status, metrics), blocks entries (LATENCY) and sends no order meanwhile,
    reconnects by itself, and trades again when the data is back."""
    cut = hour.cut
    assert cut.status_during["market_data"]["stale"] is True
    lo, hi = cut.market_ms
    sent_during = [e for e in read_ledger(hour.ledger, "order_new")
                   if lo < e["ts_ms"] <= hi and e["client_order_id"].startswith("O-")]  # fmt: skip
    assert sent_during == []
    outages = _metric(cut.metrics, "market_data_outages_total")
    outage_s = _metric(cut.metrics, "market_data_outage_seconds")
    print(f"cut: outages {outages:g}, outage {outage_s:.1f} s, data back {cut.back_after_s:.1f} s "
          f"after the cut began; market {(hi - lo) / 1e3:.0f} s silent")  # fmt: skip
    assert outages == 1
    # the node's outage runs from the last tick it noticed (at a heartbeat) to the first
    # after; the test's clock from its POST of the cut: on a loaded machine the last tick
    # was noticed up to a few seconds before that POST (seen: 22.4 s against 20.4 s)
    assert CUT_S - 6 <= outage_s <= cut.back_after_s + 3
    guard = pd.read_csv(hour.run_dir / "guardrails.csv")
    silent = guard[guard["detail"].str.startswith("market data")]
    assert set(silent["symbol"]) == set(SYMBOLS)
    assert any(e["ts_ms"] > hi for e in read_ledger(hour.ledger, "order_new"))  # trading again
