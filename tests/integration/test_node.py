"""The trading node in replay mode, as real processes: a real Nautilus `TradingNode` with the
lake replay client and the sandbox venue, a real registry, a real inference server and the
real ops API. Parity with the backtest, an inference outage, SIGKILL and restart."""

from __future__ import annotations

import datetime as dt
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.integration.cli_env import cli, isolated_env
from tests.integration.node_env import (
    DAY,
    node_env,
    ops_server,
    state_of,
    status_body,
    wait_for,
)
from tests.integration.processes import node_process
from tests.integration.serving_env import TOKEN, server
from tests.integration.worlds import thin_home
from tests.profile import DAY_SECONDS, SYMBOLS
from trading.data.lake import Lake
from trading.process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START, END = f"{DAY}T00:30", f"{DAY}T01:30"
NS = 1_000_000_000
# positions held 15 minutes (the model's horizon is 1 minute: 0.3 s of wall time at --speed
# 200), so a position seen in the status is still open when POST /kill reaches the node
HOLD = {"HMMTRADER_STRATEGY__EXECUTION__HOLD_S": "900"}
RUN_FILES = {"trades.csv", "guardrails.csv", "state_timeline.csv", "equity.csv", "equity.png",
             "summary.json", "data_quality_issues.csv"}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def fast_env() -> Iterator[None]:
    with isolated_env(HOLD):
        yield


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared thin world: version 1 (trained on DAY) in production (a thinner market:
    the node, not the market, is tested)."""
    return thin_home(tmp_path_factory.mktemp("node") / "home")


@pytest.fixture(scope="module")
def backtest_dir(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("node-bt") / "bt"
    code = cli(home, "backtest", "--model", "production", "--symbols", ",".join(SYMBOLS),
               "--start", START, "--end", END, "--out", str(out))  # fmt: skip
    assert code == 0
    return out


def _ts(text: str) -> int:
    return int(pd.Timestamp(text).value)


def test_replay_matches_backtest_and_records_ticks(
    home: Path, backtest_dir: Path, tmp_path: Path
) -> None:
    """Acceptance 2: the same ticks through `hmmtrader backtest` and `node --mode replay`
    (in-process inference) give the same decisions and guardrail reasons."""
    out, recorded = tmp_path / "replay", tmp_path / "recorded"
    env = node_env({**HOLD, "HMMTRADER_NODE__RECORD_LAKE": str(recorded),
                    "HMMTRADER_NODE__KILL_DB": str(tmp_path / "node.db")})  # fmt: skip
    node = node_process(home, ["--start", START, "--end", END, "--out", str(out)],
                       tmp_path / "node.log", env).start()  # fmt: skip
    assert node.wait() == 0, node.log()[-3000:]
    assert "stopped cleanly" in node.log()
    assert {p.name for p in out.iterdir()} >= RUN_FILES

    mismatches = {}
    for name in ("state_timeline.csv", "guardrails.csv", "trades.csv"):
        ours, theirs = pd.read_csv(out / name), pd.read_csv(backtest_dir / name)
        assert list(ours.columns) == list(theirs.columns)
        assert len(ours) == len(theirs), name
        mismatches[name] = int((ours != theirs).any(axis=1).sum())
    print(f"parity: {mismatches}")
    assert mismatches == {"state_timeline.csv": 0, "guardrails.csv": 0, "trades.csv": 0}
    trades = pd.read_csv(out / "trades.csv")
    timeline = pd.read_csv(out / "state_timeline.csv")
    assert len(trades) >= 3 and len(timeline) > 7000
    summary = json.loads((out / "summary.json").read_text())
    theirs = json.loads((backtest_dir / "summary.json").read_text())
    assert summary["net_pnl_usd"] == theirs["net_pnl_usd"]
    # the node's last heartbeat (what the dashboard's live trade list shows): the session's
    # closed trades
    status = status_body(tmp_path / "node.db")
    assert status["closed_trades"] == len(trades)
    recent = status["recent_trades"]
    assert len(recent) == min(len(trades), 50)
    tail = trades.sort_values("exit_time", kind="stable").tail(len(recent))  # the newest
    assert sorted((t["symbol"], t["side"], t["entry_price"]) for t in recent) == sorted(
        zip(tail["symbol"], tail["side"], tail["entry_price"], strict=True)
    )
    assert sum(status["pnl_by_day"].values()) == pytest.approx(trades["pnl_usd"].sum(), abs=1e-6)
    assert summary["guardrail_blocks"] == theirs["guardrail_blocks"]

    # the node recorded every tick it received into the other lake: the replayed rows
    src, rec = Lake(home / "lake"), Lake(recorded)
    lo = _ts(START) - 1800 * NS
    for symbol in SYMBOLS:
        for kind in ("quotes", "trades"):
            day = dt.date.fromisoformat(DAY)
            a = src.read("BINANCE", symbol, kind, day, day).to_pandas()
            a = a[(a["ts_ns"] >= lo) & (a["ts_ns"] < _ts(END))].reset_index(drop=True)
            b = rec.read("BINANCE", symbol, kind, day, day).to_pandas()
            assert len(b) == len(a) > 1000, (symbol, kind)
            pd.testing.assert_frame_equal(
                b.sort_values(list(b.columns)).reset_index(drop=True),
                a.sort_values(list(a.columns)).reset_index(drop=True),
                check_dtype=False,
            )


def test_remote_inference_outage_takes_no_risk_and_recovers(home: Path, tmp_path: Path) -> None:
    """Acceptance 1 and 4: a replay of both symbols against a real inference server process;
    the server is killed mid-run: no new orders while it is down, LATENCY is counted, and
    trading resumes when it is back. SIGTERM (systemd's stop) then stops the node cleanly and
    the run directory has the backtest's CSVs."""
    srv = server(home, tmp_path / "serve.log").start()
    srv.wait_ready(1)
    out, db = tmp_path / "replay", tmp_path / "node.db"
    metrics_port = free_port()
    env = node_env({"HMMTRADER_SERVING__URL": srv.url, "HMMTRADER_NODE__KILL_DB": str(db),
                    "HMMTRADER_NODE__METRICS_PORT": str(metrics_port)})  # fmt: skip
    # a long window: the server's restart takes a while on a loaded machine; the test stops
    # the node once trading has resumed
    node = node_process(home, ["--inference", "remote", "--speed", "150", "--no-gate",
                              "--start", START, "--end", f"{DAY}T{DAY_SECONDS // 3600:02d}:00", "--out", str(out)],
                       tmp_path / "node.log", env)  # fmt: skip
    state = state_of(db)

    def entries_after(ts_ns: int) -> list[dict[str, Any]]:
        session = state.last_session()
        orders = state.orders(session.run_key) if session is not None else []
        return [o for o in orders if o["kind"] == "entry" and o["decided_ns"] > ts_ns]

    try:
        node.start()
        trading_from = _ts(START)
        wait_for("trading hours", lambda: _market_ns(db) > trading_from + 600 * NS, node)
        before = _market_ns(db)  # a snapshot: its market time, while inference still answers
        srv.stop()  # SIGTERM to its process group: the server is gone
        wait_for("the outage seen", lambda: status_body(db)["model"]["healthy"] is False, node)
        seen_down = status_body(db)
        down_metrics = _scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        srv.start()  # same port
        wait_for("recovery", lambda: status_body(db)["model"]["healthy"] is True, node)
        up_at = _market_ns(db)
        wait_for("an entry after the recovery", lambda: entries_after(up_at), node)
        wait_for("two market minutes more", lambda: _market_ns(db) > up_at + 120 * NS, node)
        node.signal(signal.SIGTERM)
        assert node.wait() == 0, node.log()[-3000:]
    finally:
        node.kill()
        srv.stop()
    assert "stopped cleanly" in node.log()
    assert state.last_session().clean is True  # SIGTERM is a clean stop: no kill switch
    assert seen_down["model"]["last_error"] and seen_down["model"]["latency_blocks"] > 0
    # the node's Prometheus metrics said so too
    latency_total = sum(v for (name, labels), v in down_metrics.items()
                        if name == "guardrail_trigger_total" and ("reason", "LATENCY") in labels)  # fmt: skip
    assert latency_total > 0
    info = [labels for name, labels in down_metrics if name == "model_version_info"]
    assert info and ("inference", "remote") in info[0] and ("version", "1") in info[0]
    assert sum(v for (name, _), v in down_metrics.items() if name == "state_active") == 2
    assert {p.name for p in out.iterdir()} >= RUN_FILES - {"data_quality_issues.csv"}
    guard = pd.read_csv(out / "guardrails.csv")
    latency = guard[(guard["reason"] == "LATENCY")
                    & guard["detail"].str.contains("inference unavailable")]  # fmt: skip
    first, last = int(latency["ts_ns"].min()), int(latency["ts_ns"].max())
    resumed = entries_after(last)
    print(f"outage: {len(latency)} LATENCY blocks, market {first} .. {last}; "
          f"{len(resumed)} entries after it")  # fmt: skip
    # the outage lies between the last snapshot before the stop and the first healthy one
    assert len(latency) > 10 and before <= first and last <= up_at
    assert resumed  # trading resumed by itself
    trades = pd.read_csv(out / "trades.csv")
    decided = trades["decision_time"].map(_ts)
    # nothing was decided while inference was down; trading went on before and after
    assert not ((decided > first) & (decided < last)).any()
    timeline = pd.read_csv(out / "state_timeline.csv")
    assert (timeline["ts_ns"] > last).sum() > 100 and (timeline["ts_ns"] < first).sum() > 100
    summary = json.loads((out / "summary.json").read_text())
    assert summary["guardrail_blocks"]["LATENCY"] == len(guard[guard["reason"] == "LATENCY"])
    assert summary["finished"] is False  # stopped by the signal, before the window's end


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _market_ns(db: Path) -> int:
    text = status_body(db).get("market_time")
    return _ts(text) if text else 0


def test_sigkill_restart_disabled_until_enabled(
    home: Path, backtest_dir: Path, tmp_path: Path
) -> None:
    """Acceptance 3: SIGKILL the replay node mid-run and restart it: trading is disabled,
    no order is duplicated, positions and PnL are what they were; POST /enable (ops API)
    resumes; POST /kill flattens."""

    db = tmp_path / "node.db"
    env = node_env({**HOLD, "HMMTRADER_OPS__TOKEN": TOKEN, "HMMTRADER_NODE__KILL_DB": str(db)})
    ops = ops_server(home, tmp_path / "ops.log", env).launch()  # up while the nodes run
    out = tmp_path / "replay"
    args = ["--speed", "200", "--no-gate", "--start", START, "--end", END, "--out", str(out)]
    first = node_process(home, args, tmp_path / "node1.log", env).start()
    state = state_of(db)

    def run_orders() -> list[dict[str, Any]]:
        session = state.last_session()
        return state.orders(session.run_key) if session is not None else []

    try:
        wait_for("three orders and an open position",
                 lambda: len(run_orders()) >= 3 and status_body(db)["positions"], first)  # fmt: skip
        first.kill()  # SIGKILL
        before = run_orders()
        cut = state.last_cursor(state.last_session().run_key)
        assert state.last_session().clean is False

        second = node_process(home, args, tmp_path / "node2.log", env).start()
        wait_for("recovery past the cut", lambda: _market_ns(db) > cut + 120 * NS, second)
        ops.wait_healthy()
        status = httpx.get(ops.url + "/status", timeout=5).json()
        assert status["trading_enabled"] is False
        assert "unclean shutdown" in status["kill_switch"]["reason"]
        after = run_orders()
        # the orders decided before the crash are there once each, with their ids
        assert [o["order_key"] for o in after[: len(before)]] == [o["order_key"] for o in before]
        assert len({o["order_key"] for o in after}) == len(after)
        assert all(o["kind"] != "entry" for o in after[len(before) :])  # disabled: no entries
        assert "recovering the interrupted replay" in second.log()

        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (
            httpx.post(ops.url + "/enable", json={"reason": "checked"}, timeout=5).status_code
            == 401
        )
        for _attempt in range(3):
            resp = httpx.post(ops.url + "/enable", json={"reason": "checked"}, headers=auth,
                              timeout=5)  # fmt: skip
            assert resp.status_code == 200, resp.text
            enabled_at = _market_ns(db)
            wait_for("a new entry after enable",
                     lambda t=enabled_at: any(o["kind"] == "entry" and o["decided_ns"] > t
                                              for o in run_orders()), second, 150)  # fmt: skip
            wait_for("an open position", lambda: status_body(db)["positions"], second, 150)
            resp = httpx.post(
                ops.url + "/kill", json={"reason": "test flatten"}, headers=auth, timeout=5
            )
            assert resp.status_code == 200, resp.text
            wait_for("flat", lambda: not status_body(db)["positions"], second, 60)
            killed_at = _market_ns(db)
            kills = [
                o for o in run_orders() if o["kind"] == "kill" and o["decided_ns"] > enabled_at
            ]
            if kills:
                break
            # the position closed on a flip before the switch reached the node: once more
        print(f"kill closed {len(kills)} position(s) after {_attempt + 1} enable/kill cycle(s)")
        assert kills
        # what follows the kill is the replay's rest: systemd's stop (SIGTERM) ends it
        # cleanly and writes the run directory of what was replayed
        second.signal(signal.SIGTERM)
        assert second.wait() == 0, second.log()[-3000:]
        assert "stopped cleanly" in second.log()
    finally:
        first.kill()
        if "second" in locals():
            second.kill()
        ops.stop()
    orders = run_orders()
    assert not any(o["kind"] == "entry" and o["decided_ns"] > killed_at for o in orders)
    # positions and PnL intact: every trade decided before the cut is the backtest's trade
    trades = pd.read_csv(out / "trades.csv")
    reference = pd.read_csv(backtest_dir / "trades.csv")
    early = trades[trades["decision_time"].map(_ts) <= cut].reset_index(drop=True)
    ref = reference[reference["decision_time"].map(_ts) <= cut].reset_index(drop=True)
    assert len(early) == len(ref) >= 1
    cols = ["symbol", "side", "decision_time", "entry_price", "qty", "entry_time"]
    pd.testing.assert_frame_equal(early[cols], ref[cols])
    assert trades["decision_time"].is_unique
