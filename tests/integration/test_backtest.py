"""The backtest harness and the canary gate, end to end through the CLI, on the shared
two-day synthetic market (6-hour days): version 1 trained on day 1, backtests and canaries
on day 2 in the real Nautilus engine against a real (SQLite) MLflow registry."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.integration.cli_env import cli, config_for, isolated_env
from tests.integration.report_check import open_report
from tests.integration.worlds import trained_home
from tests.profile import DAY1, DAY2, DAY_SECONDS
from trading.backtest.canary import kpi_fingerprint
from trading.backtest.engine import run_backtest
from trading.data.lake import Lake
from trading.data.window import window_of
from trading.regime.config import RegistrySettings
from trading.regime.registry import Registry
from trading.strategy.inference import InProcessInference

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = "BTCUSDT,ETHUSDT"
TRAIN_DAY, TEST_DAY = DAY1, DAY2
TEST_END = f"{TEST_DAY}T{DAY_SECONDS // 3600:02d}:00"  # the end of the day's data
RUN_FILES = {
    "trades.csv",
    "guardrails.csv",
    "state_timeline.csv",
    "data_quality_issues.csv",
    "equity.png",
    "equity.csv",
    "summary.json",
}


@pytest.fixture(scope="module", autouse=True)
def profile_env() -> Iterator[None]:
    with isolated_env({}):
        yield


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's copy of the shared world: version 1 (candidate) trained on day 1."""
    return trained_home(tmp_path_factory.mktemp("backtest") / "home")


def private_home(root: Path) -> Path:
    """A copy of the shared world (lake + registry) a test may change."""
    return trained_home(root / "home")


def test_backtest_day_writes_consistent_reports(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = cli(home, "backtest", "--model", "candidate", "--symbols", SYMBOLS,
               "--start", TEST_DAY, "--end", TEST_END, "--out", str(out))  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert {p.name for p in out.iterdir()} >= RUN_FILES
    assert "net PnL (after fees, slippage)" in printed and f"Run directory: {out}" in printed
    assert f"Report: {out / 'report.html'}" in printed
    summary = json.loads((out / "summary.json").read_text())
    _check_report(out, summary)
    (out / "report.html").unlink()  # `hmmtrader report` writes it again, the same
    assert cli(home, "report", str(out)) == 0 and (out / "report.html").is_file()
    assert cli(home, "report", str(out / "equity.csv")) == 1  # not a run directory
    trades = pd.read_csv(out / "trades.csv")
    equity = pd.read_csv(out / "equity.csv")
    guard = pd.read_csv(out / "guardrails.csv")
    timeline = pd.read_csv(out / "state_timeline.csv")

    # every column the issue names
    assert {"entry_time", "exit_time", "entry_price", "exit_price", "qty", "side", "pnl_usd",
            "fees_usd", "slippage_usd", "vol_bp", "spread_bp", "l1_depth_usd", "state",
            "confidence"} <= set(trades.columns)  # fmt: skip
    assert summary["trades"] == len(trades) > 0
    # trades.csv PnL sums to summary.json within a cent; equity ends at the account balance
    assert abs(trades["pnl_usd"].sum() - summary["net_pnl_usd"]) < 0.01
    assert abs(equity["equity_usd"].iloc[-1] - summary["account_final_balance_usd"]) < 0.01
    assert abs(summary["starting_balance_usd"] + summary["net_pnl_usd"]
               - summary["account_final_balance_usd"]) < 0.01  # fmt: skip
    assert summary["open_positions_at_end"] == 0
    # net = gross - fees, and every fee is Binance's 0.1 % taker fee on both fills
    assert abs(trades["gross_pnl_usd"] - trades["fees_usd"] - trades["pnl_usd"]).max() < 1e-6
    both_fills = trades["qty"] * (trades["entry_price"] + trades["exit_price"]) * 0.001
    assert np.allclose(trades["fees_usd"], both_fills, atol=2e-8)
    # slippage vs the touch at decision: the fill model's 1 bp on each fill, plus whatever
    # the touch did during the 50 ms order latency (either way)
    per_notional_bp = (
        trades["slippage_usd"]
        / (trades["qty"] * (trades["entry_price"] + trades["exit_price"]))
        * 1e4
    )
    assert 0.9 < per_notional_bp.median() < 1.1 and summary["slippage_usd"] > 0
    # guardrail counts in the summary are the CSV's
    assert summary["guardrail_blocks"] == guard["reason"].value_counts().to_dict()
    assert summary["guardrail_blocks_total"] == len(guard)
    # the timeline covers the window for both symbols without warm-up rows: one step a
    # second from the features' warm-up after the overnight gap (<= 20 min) to the end
    assert set(timeline["symbol"]) == {"BTCUSDT", "ETHUSDT"}
    day_ns, end_ns = pd.Timestamp(TEST_DAY, tz="UTC").value, pd.Timestamp(TEST_END, tz="UTC").value
    for symbol, rows in timeline.groupby("symbol"):
        ts = rows["ts_ns"].to_numpy()
        assert (np.diff(ts) == 10**9).all() and ts[-1] == end_ns - 10**9, symbol
        assert day_ns < ts[0] <= day_ns + 20 * 60 * 10**9, symbol
    assert summary["steps"] == len(timeline) > 2 * (DAY_SECONDS - 20 * 60)
    assert summary["nan_count"] == 0 and summary["state_entropy"] > 0.5
    # trades respect the caps and the notional floor
    notional = trades["qty"] * trades["entry_price"]
    assert notional.max() <= 1000.0 + 1e-6 and notional.min() >= 10.0 - 1e-6
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "data_quality_issues.csv") as fh:
        assert next(csv.reader(fh))  # the gate's header (no blocking issue on synthetic data)


def _shift_prices_after(lake: Lake, symbol: str, day: str, t_ns: int, factor: float) -> None:
    """Rewrite the lake's quotes and trades of `day` with prices after t_ns scaled."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    for kind, columns in (("quotes", ("bid", "ask")), ("trades", ("price",))):
        path = lake.path("BINANCE", symbol, kind, dt.date.fromisoformat(day))
        table = pq.read_table(path)
        after = pc.greater(table.column("ts_ns"), pa.scalar(t_ns, table.schema.field("ts_ns").type))
        for name in columns:
            column = table.column(name)
            scaled = pc.if_else(after, pc.multiply(column, pa.scalar(factor, column.type)), column)
            table = table.set_column(table.schema.get_field_index(name), name, scaled)
        pq.write_table(table, path)


def _check_report(out: Path, summary: dict[str, object]) -> None:
    """report.html, offline in Chromium: its charts draw and its numbers are summary.json's."""
    page = open_report(out / "report.html", out / "report.png")
    assert page["remote"] == [] and page["errors"] == []
    assert {"strategy net PnL", "flat", "buy-and-hold (marked to mid)", "drawdown"} <= set(
        page["lines"]
    )
    for name, (points, width) in page["lines"].items():
        assert points >= 2 and width > 100, (name, points, width)  # drawn, not empty
    assert page["bars"] >= 1  # the trade distribution (and guardrail) bars
    values = page["values"]
    for key in ("net_pnl_usd", "gross_pnl_usd", "fees_usd", "sharpe", "max_drawdown_usd",
                "trades", "hit_rate", "guardrail_blocks_total", "state_entropy"):  # fmt: skip
        assert values[key] == summary[key], key
    benchmarks = summary["benchmarks"]
    assert isinstance(benchmarks, dict)
    assert values["buy_hold_pnl_usd"] == benchmarks["buy_hold_pnl_usd"]
    assert page["shown"]["net_pnl_usd"] == f"{summary['net_pnl_usd']:+,.2f} USD"
    # per regime state: trades add up to the run's, PnL to its net PnL
    trades = pd.read_csv(out / "trades.csv")
    per_state = {
        k: v for k, v in values.items() if k.startswith("state_") and k.endswith("_trades")
    }
    assert sum(per_state.values()) == summary["trades"] == len(trades)
    pnl = sum(v for k, v in values.items() if k.startswith("state_") and k.endswith("_pnl_usd"))
    assert pnl == pytest.approx(trades["pnl_usd"].sum(), abs=1e-4)
    blocks = summary["guardrail_blocks"]
    assert isinstance(blocks, dict)
    assert {
        k: v
        for k, v in values.items()
        if k.startswith("guardrail_") and k != "guardrail_blocks_total"
    } == {f"guardrail_{k}": v for k, v in blocks.items()}


def test_changing_data_after_t_changes_no_decision_at_or_before_t(tmp_path: Path) -> None:
    home = private_home(tmp_path)
    config = config_for(home)
    model, version = Registry(RegistrySettings(), home).load("candidate")
    window = window_of(f"{TEST_DAY}T00:00", f"{TEST_DAY}T02:00")
    t = window.start_ns + 3600 * 10**9
    symbols = ["BTCUSDT", "ETHUSDT"]

    stages: list[str] = []

    def backtest(name: str) -> dict[str, pd.DataFrame]:
        out = tmp_path / name
        run_backtest(config, InProcessInference(model, version), symbols, window, out, gate=False,
                     stage=stages.append)  # fmt: skip
        return {
            f: pd.read_csv(out / f"{f}.csv") for f in ("state_timeline", "guardrails", "trades")
        }

    before = backtest("original")
    # the progress names every stage as it begins (`backtest` draws them; no gate here)
    assert stages == ["loading", "warm-up", "run", "reports"]
    registry = Registry(RegistrySettings(), home)
    recorded = kpi_fingerprint(config, registry, version, symbols, window)
    lake = Lake(home / "lake")
    for symbol in symbols:
        _shift_prices_after(lake, symbol, TEST_DAY, t, 1.02)  # +2 % after t
    after = backtest("perturbed")
    # a canary would not reuse KPIs recorded on the data before the change
    assert kpi_fingerprint(config, registry, version, symbols, window) != recorded

    def upto(frame: pd.DataFrame, column: str, limit: int) -> pd.DataFrame:
        return frame[frame[column] <= limit].reset_index(drop=True)

    timeline_a, timeline_b = before["state_timeline"], after["state_timeline"]
    pd.testing.assert_frame_equal(
        upto(timeline_a, "decided_ns", t), upto(timeline_b, "decided_ns", t)
    )
    pd.testing.assert_frame_equal(
        upto(before["guardrails"], "ts_ns", t), upto(after["guardrails"], "ts_ns", t)
    )
    # entries decided at or before t: same symbol, side, size and decision context
    decided = ["symbol", "side", "qty", "state", "confidence", "exp_edge_bp", "vol_bp", "spread_bp"]
    entries_a = before["trades"][
        pd.to_datetime(before["trades"]["decision_time"]).map(lambda x: x.value) <= t
    ]
    entries_b = after["trades"][
        pd.to_datetime(after["trades"]["decision_time"]).map(lambda x: x.value) <= t
    ]
    assert len(entries_a) > 0
    pd.testing.assert_frame_equal(
        entries_a[decided].reset_index(drop=True), entries_b[decided].reset_index(drop=True)
    )
    # the perturbation did change what came after t (the test can fail)
    late_a = timeline_a[timeline_a["decided_ns"] > t]["mid"].to_numpy()
    late_b = timeline_b[timeline_b["decided_ns"] > t]["mid"].to_numpy()
    assert len(late_a) == len(late_b) > 0 and not np.allclose(late_a, late_b)


def test_bad_input_gives_clear_errors(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def error_of(*args: str) -> str:
        capsys.readouterr()
        assert cli(home, *args) == 1
        captured = capsys.readouterr()
        return " ".join((captured.err + captured.out).split())

    base = ("backtest", "--model", "candidate", "--symbols", SYMBOLS)
    message = error_of(*base, "--start", "2025-03-01", "--end", "2025-03-01")
    assert "no BTCUSDT quotes for 2025-03-01" in message and "2025-01-01 .. 2025-01-02" in message
    message = error_of(*base, "--start", "2025-01-02", "--end", "2025-01-01")
    assert "is not after --start" in message
    message = error_of(*base, "--start", "yesterday", "--end", TEST_DAY)
    assert "bad time 'yesterday'" in message
    message = error_of("backtest", "--model", "7", "--start", TEST_DAY, "--end", TEST_DAY)
    assert "has no version 7" in message and "versions: 1" in message
    message = error_of("backtest", "--symbols", "BTCUSDT", "--start", TEST_DAY, "--end", TEST_DAY)
    assert "no 'production' version yet" in message
    monkeypatch.setenv("HMMTRADER_STRATEGY__GUARDRAILS__DAILY_LOSS_USD", "-5")
    message = error_of(*base, "--start", TEST_DAY, "--end", TEST_DAY)
    assert (
        "HMMTRADER_STRATEGY__GUARDRAILS__DAILY_LOSS_USD" in message and "greater than 0" in message
    )
    monkeypatch.delenv("HMMTRADER_STRATEGY__GUARDRAILS__DAILY_LOSS_USD")
    monkeypatch.setenv("HMMTRADER_STRATEGY__SYMBOLS", '["BTCUSDT", "SOLUSDT"]')
    message = error_of("backtest", "--model", "candidate", "--start", TEST_DAY, "--end", TEST_DAY)
    assert "no per_symbol risk limits for SOLUSDT" in message
    monkeypatch.delenv("HMMTRADER_STRATEGY__SYMBOLS")
    # nothing was written for the failed runs
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_canary_passes_a_good_candidate_and_fails_an_overtrading_one(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = private_home(tmp_path)
    registry = Registry(RegistrySettings(), home)
    capsys.readouterr()

    # no production yet: only the floors apply; the default holdout is the day after
    # training, up to the end of its data
    assert cli(home, "canary", "1") == 0, capsys.readouterr().err
    out = " ".join(capsys.readouterr().out.split())
    assert "Verdict: PASSED" in out and "no production version yet: only the floors apply" in out
    assert f"{TEST_DAY} 00:00 .. {TEST_END.replace('T', ' ')} UTC" in out
    v1 = registry.info(1)
    assert v1.tags["canary_verdict"] == "passed" and v1.tags["canary_failed_rules"] == "none"
    run_dir = Path(v1.tags["canary_run_dir"])
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["verdict"] == "passed" and verdict["production_version"] is None
    assert {r["name"] for r in verdict["rules"]} == {
        "net_pnl",
        "min_trades",
        "state_entropy",
        "nan",
        "daily_loss_limit",
        "state_drawdown_limit",
        "kill_switch",
    }
    good = json.loads((run_dir / "candidate" / "summary.json").read_text())
    assert good["net_pnl_usd"] >= 0 and good["trades"] > 0
    log = (run_dir / "canary.log").read_text()
    assert "PASS net_pnl" in log and "verdict: passed" in log
    run = registry.client.get_run(v1.run_id)
    assert run.data.metrics["canary_passed"] == 1.0
    assert abs(run.data.metrics["canary_net_pnl_usd"] - good["net_pnl_usd"]) < 1e-9
    artifacts = [
        a.path for a in registry.client.list_artifacts(v1.run_id, f"canary/{run_dir.name}")
    ]
    assert f"canary/{run_dir.name}/verdict.json" in artifacts
    assert f"canary/{run_dir.name}/report.html" in artifacts  # the report, next to the run

    assert cli(home, "promote", "1") == 0
    assert registry.aliases()["production"] == 1

    # a candidate whose thresholds overtrade: labels and thresholds that ignore the fees
    monkeypatch.setenv("HMMTRADER_POLICY__EXTRA_COST_BP", "0")
    monkeypatch.setenv("HMMTRADER_POLICY__ACT_THRESHOLD", "0.34")
    monkeypatch.setenv("HMMTRADER_POLICY__MIN_EDGE_BP", "0")
    assert cli(home, "train", "--symbols", SYMBOLS, "--start", TRAIN_DAY, "--end", TRAIN_DAY) == 0
    monkeypatch.delenv("HMMTRADER_POLICY__ACT_THRESHOLD")
    monkeypatch.delenv("HMMTRADER_POLICY__EXTRA_COST_BP")
    monkeypatch.delenv("HMMTRADER_POLICY__MIN_EDGE_BP")
    capsys.readouterr()
    assert cli(home, "canary", "2") == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "Verdict: FAILED" in out and "production unchanged" in out
    v2 = registry.info(2)
    failed = set(v2.tags["canary_failed_rules"].split(","))
    assert {"net_pnl", "paired_vs_production"} <= failed, failed
    assert out.count("FAIL") >= len(failed) + 1  # one table row per failed rule + the verdict
    verdict = json.loads((Path(v2.tags["canary_run_dir"]) / "verdict.json").read_text())
    assert verdict["production_version"] == 1
    by_name = {r["name"]: r for r in verdict["rules"]}
    # production (version 1) was backtested on this window by the first canary: its
    # recorded KPIs are reused, not recomputed
    bad = json.loads((Path(v2.tags["canary_run_dir"]) / "candidate" / "summary.json").read_text())
    assert by_name["net_pnl"]["production"] == good["net_pnl_usd"]
    # production held to the same floors on the same window: it meets them; the paired
    # test, on production's recorded per-interval PnL, finds the candidate not better
    assert verdict["production_floors"]["passed"] is True
    assert verdict["production_floors"]["failed_rules"] == []
    paired = verdict["paired"]
    assert paired["verdict"] == "not_better" and paired["mean_diff_usd"] < 0, paired
    assert paired["candidate_trades"] == bad["trades"]
    assert paired["production_trades"] == good["trades"]
    assert "Paired test" in out and "P(better)" in out
    reused = [n for n in verdict["notes"] if "KPIs on this window were reused" in n]
    assert reused and str(run_dir / "candidate") in reused[0], verdict["notes"]
    # no backtest ran for production: its side holds the recorded summary, and where the
    # backtest's files are (the first canary's candidate side)
    recorded = Path(v2.tags["canary_run_dir"]) / "production"
    assert sorted(f.name for f in recorded.iterdir()) == ["reused_from.json", "summary.json"]
    assert json.loads((recorded / "summary.json").read_text()) == good
    # the canary's report: the verdict's rules, both sides' numbers, both curves overlaid
    page = open_report(Path(v2.tags["canary_run_dir"]) / "report.html")
    assert page["remote"] == [] and page["errors"] == []
    assert {"candidate v2", "production v1"} <= set(page["lines"])
    assert all(points >= 2 and width > 100 for points, width in page["lines"].values())
    values = page["values"]
    assert values["candidate_net_pnl_usd"] == bad["net_pnl_usd"]
    assert values["production_net_pnl_usd"] == good["net_pnl_usd"]
    assert values["rule_net_pnl_candidate"] == by_name["net_pnl"]["candidate"]
    assert "Report: " in out
    assert bad["trades"] > good["trades"] and bad["net_pnl_usd"] < 0
    # production untouched; promote refuses the failed candidate
    assert registry.aliases() == {"production": 1, "candidate": 2}
    assert v2.tags["canary_verdict"] == "failed"
    assert cli(home, "promote", "2") == 1
    assert registry.aliases()["production"] == 1
