"""The live dashboard in a real headless Chromium (Debian's, driven by Playwright): a real
replay node writes its status into the state file, a real `hmmtrader dashboard` process
serves the page; charts fill from the WebSocket, the kill button goes through the ops
token, a SIGTERM stops the node cleanly, and its run opens under past runs."""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli_env import isolated_env
from tests.integration.node_env import DAY, node_env, state_of, status_body, wait_for
from tests.integration.processes import HMMTRADER, NodeProcess, hmmtrader_server, node_process
from tests.integration.serving_env import TOKEN
from tests.integration.worlds import thin_home
from tests.profile import DAY2, SYMBOLS, THIN
from tests.tools import missing_tool
from trading.process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_COPY = Path("/tmp/hmmtrader-dashboard.png")
CANARY_SCREENSHOT = Path("/tmp/hmmtrader-dashboard-canary.png")
RUN_NAME = "replay-test"
WAIT_MS = 90_000  # the page's conditions, on a loaded 2-core machine
TOKEN_KEY = "hmmtrader.ops-token"  # app.js keeps the token there (sessionStorage)


@pytest.fixture(scope="module", autouse=True)
def fast_env() -> Iterator[None]:
    with isolated_env(THIN):
        yield


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        missing_tool(f"{CHROMIUM} (the dashboard's browser test)", "apt-get install chromium")
    return CHROMIUM


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared thin world (a thinner market: the page, not the market, is tested), with
    version 1 in production."""
    return thin_home(tmp_path_factory.mktemp("dashboard") / "home")


def _points(page: Any, canvas_id: str) -> int:
    return int(page.get_attribute(f"#{canvas_id}", "data-points") or 0)


def _wait_points(page: Any, canvas_id: str, more_than: int) -> int:
    page.wait_for_function(
        "([id, n]) => Number(document.getElementById(id)?.dataset.points || 0) > n",
        arg=[canvas_id, more_than],
        timeout=WAIT_MS,
    )
    return _points(page, canvas_id)


def _wait_text(page: Any, selector: str, fragment: str) -> str:
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
        arg=[selector, fragment],
        timeout=WAIT_MS,
    )
    return page.inner_text(selector)


def _updates(page: Any) -> int:
    return int(page.inner_text("#ws-updates"))


def _check_live(page: Any, db: Path) -> None:
    """Header, charts and posterior bars from the WebSocket; updates keep arriving."""
    assert page.title() == "hmm-trader dashboard"
    badge = _wait_text(page, "#switch-status", "ENABLED")
    assert "DISABLED" not in badge and state_of(db).switch().reason in badge
    assert _wait_points(page, "chart-equity", 10) >= 10
    assert _wait_points(page, "chart-pnl", 10) >= 10
    status = status_body(db)
    # the replay's window starts at 00:30; what comes before it is its warm-up
    assert status["trading_from"] == f"{DAY}T00:30:00+00:00"
    for symbol in SYMBOLS:
        states = len(status["regime"][symbol]["posterior"])
        _wait_points(page, f"posterior-{symbol}", 0)
        assert _points(page, f"posterior-{symbol}") == states
        assert _wait_points(page, f"timeline-{symbol}", 5) > 5
    assert page.inner_text("#mode").startswith("replay")  # "· WARM-UP until ..." before the window
    assert page.inner_text("#symbols-list") == ", ".join(SYMBOLS)
    assert page.inner_text("#model").startswith("v1 · in_process")
    assert page.inner_text("#node-state").startswith("running (heartbeat")

    before, market_before = _updates(page), page.inner_text("#market-time")
    equity_before = _points(page, "chart-equity")
    page.wait_for_function(
        "n => Number(document.getElementById('ws-updates').textContent) >= n",
        arg=before + 3,
        timeout=WAIT_MS,
    )
    assert page.inner_text("#market-time") != market_before  # replayed time moves on
    assert page.inner_text("#ws-state") == "live"
    assert _wait_points(page, "chart-equity", equity_before) > equity_before


def _click_kill(page: Any, token: str, expect: str) -> str:
    page.fill("#token", token)
    page.fill("#reason", "browser test")
    page.click("#kill-button")
    return _wait_text(page, "#switch-message", expect)


def _check_kill_switch(page: Any, db: Path, node: NodeProcess) -> None:
    """401 without the token, 403 with a wrong one (nothing changes); with the right one
    the switch engages (the node acts on it), and the enable button releases it. A switch
    changed behind the page's back (the CLI's --local) reaches it over the WebSocket."""
    state = state_of(db)
    message = _click_kill(page, "", "401")
    assert message.startswith("401: missing bearer token"), message
    assert state.switch().engaged is False
    message = _click_kill(page, "not-the-token", "403")
    assert message == "403: wrong bearer token"
    assert state.switch().engaged is False

    assert page.is_checked("#flatten")
    message = _click_kill(page, TOKEN, "200")
    switch = state.switch()
    assert switch.engaged and switch.flatten and switch.reason == "browser test", message
    assert switch.changed_by == "ops-api" and "ENGAGED" in message
    wait_for("the node to see the switch", lambda: "KILL SWITCH ENGAGED" in node.log(), node)
    after = _updates(page)
    page.wait_for_function(
        "n => Number(document.getElementById('ws-updates').textContent) > n", arg=after
    )
    badge = page.inner_text("#switch-status")
    assert "DISABLED" in badge and "ENGAGED" in badge and "browser test" in badge
    stored = page.evaluate(f"[sessionStorage.getItem('{TOKEN_KEY}'), localStorage.length]")
    assert stored == [TOKEN, 0]  # the token lives in this tab's session only

    page.fill("#reason", "browser test over")
    page.click("#enable-button")
    assert _wait_text(page, "#switch-message", "200").startswith("200: kill switch released")
    assert state.switch().engaged is False
    assert "browser test over" in _wait_text(page, "#switch-status", "ENABLED")

    state.engage("from the CLI", "ops-cli", flatten=False)
    assert "from the CLI" in _wait_text(page, "#switch-status", "ENGAGED")
    page.click("#enable-button")
    _wait_text(page, "#switch-status", "ENABLED")
    assert state.switch().engaged is False


def _market(db: Path) -> str:
    return str(status_body(db).get("market_time") or "")


def _check_past_run(page: Any, out: Path) -> None:
    """The stopped run is listed; choosing it draws its equity, timelines and KPIs, which
    end where the replay stopped."""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] is False
    assert f"{DAY}T00:35" <= summary["window_end"] < f"{DAY}T01:30"
    page.wait_for_function(
        "name => [...document.querySelectorAll('#run-select option')].some(o => o.value == name)",
        arg=RUN_NAME,
        timeout=WAIT_MS,
    )
    page.select_option("#run-select", RUN_NAME)
    equity_rows = len((out / "equity.csv").read_text().splitlines()) - 1
    assert _wait_points(page, "run-equity", 0) == equity_rows
    for symbol in SYMBOLS:
        assert _wait_points(page, f"run-timeline-{symbol}", 100) > 100
    net = summary["net_pnl_usd"]
    assert float(page.get_attribute("#run-net-pnl", "data-value") or "nan") == net
    assert f"{abs(net):,.2f}" in page.inner_text("#run-net-pnl")
    assert page.inner_text("#run-trades") == str(summary["trades"])
    print(f"run view: net {net} USD, {summary['trades']} trades, {equity_rows} equity rows")
    rows = page.eval_on_selector_all(
        "#run-guardrails tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
    )
    if summary["guardrail_blocks"]:
        shown = {r[0]: sum(int(c) for c in r[1:]) for r in rows}
        assert shown == summary["guardrail_blocks"]
    else:
        assert rows == [["no guardrail blocks"]]
    _check_traders_screen(page, out, summary)


def _check_traders_screen(page: Any, run_dir: Path, summary: dict[str, Any]) -> None:
    """The run's price charts mark every trade of trades.csv, the trade list is trades.csv,
    and the PnL per day adds up to the run's net PnL."""
    import pandas as pd

    trades = pd.read_csv(run_dir / "trades.csv")
    for symbol in SYMBOLS:
        _wait_points(page, f"run-price-{symbol}", 10)
    marked = sum(int(page.get_attribute(f"#run-price-{s}", "data-trades") or -1) for s in SYMBOLS)
    assert marked == len(trades)
    listed = page.eval_on_selector_all(
        "#run-trade-list tbody tr[data-entry]",
        "rows => rows.map(r => [r.dataset.entry, r.dataset.symbol, Number(r.dataset.pnl)])",
    )
    expected = [[t.entry_time, t.symbol, t.pnl_usd] for t in trades.itertuples()][::-1]
    assert listed == expected  # newest first
    per_day = page.eval_on_selector_all(
        "#run-pnl-day td[data-value]", "cells => cells.map(c => Number(c.dataset.value))"
    )
    per_symbol = page.eval_on_selector_all(
        "#run-pnl-symbol td[data-value]", "cells => cells.map(c => Number(c.dataset.value))"
    )
    if len(trades):
        assert sum(per_day) == pytest.approx(summary["net_pnl_usd"], abs=0.01)
        assert sum(per_symbol) == pytest.approx(trades["pnl_usd"].sum(), abs=1e-4)
    print(f"trader's screen: {len(trades)} trades marked and listed, {len(per_day)} day(s)")


def _check_canary(page: Any, canary_dir: Path) -> None:
    """The canary is a past run: candidate and production equity overlaid, its report
    linked, the candidate's trades on the price charts."""
    name = canary_dir.name
    page.wait_for_function(
        "name => [...document.querySelectorAll('#run-select option')].some(o => o.value == name)",
        arg=name,
        timeout=WAIT_MS,
    )
    page.select_option("#run-select", name)
    page.wait_for_function(
        "() => document.getElementById('run-equity').dataset.series === '2'", timeout=WAIT_MS
    )
    assert _wait_points(page, "run-equity", 10) > 10
    assert "canary" in page.inner_text("#run-title")
    assert page.get_attribute("#run-report", "href") == f"/runs/{name}/report.html"
    candidate = canary_dir / "candidate"
    _check_traders_screen(page, candidate, json.loads((candidate / "summary.json").read_text()))


def _check_reconnect(page: Any, board: ServerProcess, errors: list[str]) -> None:
    """The dashboard restarts: the page shows the lost socket, reconnects by itself (with
    backoff) and gets a fresh snapshot. Chromium logs the refused connections meanwhile."""
    before, seen = _updates(page), len(errors)
    board.stop()
    _wait_text(page, "#ws-state", "disconnected")
    board.start()
    # connected again; "live" only while a node runs, and this one has stopped
    page.wait_for_function(
        "() => document.getElementById('ws-state').textContent === 'connected · no node running'",
        timeout=WAIT_MS,
    )
    page.wait_for_function(
        "n => Number(document.getElementById('ws-updates').textContent) > n", arg=before
    )
    assert _points(page, "chart-equity") > 10
    outage = errors[seen:]
    del errors[seen:]
    refused = [e for e in outage if "ERR_CONNECTION_REFUSED" in e or "WebSocket connection" in e]
    assert refused == outage, outage


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def _check_out_of_band_move(page: Any, db: Path, node: NodeProcess, home: Path) -> None:
    """The production alias removed outside promote/rollback (the MLflow UI's alias editor
    can): the node keeps trading version 1, its status and the page say so; put back."""
    from trading.regime.config import RegistrySettings
    from trading.regime.registry import Registry

    with isolated_env({}):
        registry = Registry(RegistrySettings(), home)
    registry.client.delete_registered_model_alias(registry.name, "production")
    wait_for("the node's registry anomaly",
             lambda: (status_body(db).get("model") or {}).get("registry_anomaly"), node)  # fmt: skip
    anomaly = status_body(db)["model"]["registry_anomaly"]
    assert "removed outside promote/rollback" in anomaly and "version 1" in anomaly, anomaly
    _wait_text(page, "#registry-anomaly", "PRODUCTION ALIAS MOVED OUT OF BAND")
    assert page.inner_text("#model").startswith("v1 · in_process")
    registry.client.set_registered_model_alias(registry.name, "production", "1")
    wait_for("the anomaly cleared",
             lambda: not (status_body(db).get("model") or {}).get("registry_anomaly"), node)  # fmt: skip


def test_dashboard_in_a_browser(home: Path, chromium_path: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    db, out = tmp_path / "node.db", home / "runs" / RUN_NAME
    env = node_env({**THIN, "HMMTRADER_OPS__TOKEN": TOKEN, "HMMTRADER_NODE__KILL_DB": str(db),
                    "HMMTRADER_NODE__MODEL_POLL_S": "1"})  # fmt: skip
    # a real canary of version 2 against production (version 1) on an hour after its
    # training day: a past run
    canary = subprocess.run(
        [HMMTRADER, "--home", str(home), "canary", "2", "--start", f"{DAY2}T02:00", "--end",
         f"{DAY2}T03:00"], env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert canary.returncode in (0, 1), canary.stdout[-2000:] + canary.stderr[-2000:]
    [canary_dir] = (home / "runs").glob("canary-v2-*")
    node = node_process(home, ["--speed", "100", "--no-gate", "--start", f"{DAY}T00:30",
                               "--end", f"{DAY}T01:30", "--out", str(out)],
                        tmp_path / "node.log", env)  # fmt: skip
    board = hmmtrader_server(home, ("dashboard",), tmp_path / "dashboard.log", env)
    errors: list[str] = []
    try:
        node.start()
        board.start()
        wait_for("regimes of both symbols", lambda: len(status_body(db).get("regime") or {}) == 2,
                 node)  # fmt: skip
        wait_for("history", lambda: len(state_of(db).history(100)) >= 10, node)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium_path), headless=True, args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            started = time.monotonic()
            page.goto(board.url + "/")
            _check_live(page, db)
            _check_kill_switch(page, db, node)
            _check_out_of_band_move(page, db, node, home)
            print(f"live view and kill switch checked in {time.monotonic() - started:.1f} s")
            # five paced minutes into the window, systemd's stop (SIGTERM) rather than the
            # rest of the hour: a clean stop writes the run directory of what was replayed
            wait_for("5 minutes of the window", lambda: _market(db) >= f"{DAY}T00:35", node)
            node.signal(signal.SIGTERM)
            assert node.wait() == 0, node.log()[-3000:]
            assert "stopped cleanly" in node.log()
            _wait_text(page, "#node-state", "stopped cleanly")
            _check_reconnect(page, board, errors)
            _check_past_run(page, out)
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=shot, full_page=True)
            _check_canary(page, canary_dir)
            page.screenshot(path=CANARY_SCREENSHOT, full_page=True)
            browser.close()
    finally:
        node.kill()
        board.stop()
    shutil.copyfile(shot, SCREENSHOT_COPY)
    width, height = _png_size(shot)
    assert width >= 1400 and height >= 900 and shot.stat().st_size > 30_000
    # the 401 and 403 the kill button asked for are logged by Chromium as failed loads
    unexpected = [e for e in errors if not ("status of 401" in e or "status of 403" in e)]
    assert unexpected == [], unexpected
    assert sum("status of 40" in e for e in errors) == 2
