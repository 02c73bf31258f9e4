"""The nightly-retrain flow in this process against a real `prefect server` on 127.0.0.1:
nights that promote, reject, re-run and block, and the Dask task runner (deployments, a
worker and cron: test_flows_deploy.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flows.server import LocalPrefectServer
from tests.integration.archive_site import archive_site
from tests.integration.cli_env import cli, config_for, isolated_env
from tests.integration.prefect_env import Api, prefect_server
from tests.profile import IMPOSSIBLE, LENIENT, SHORT_NIGHTS
from tests.real_bars import kline_csv
from trading.data.lake import Lake
from trading.regime.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NIGHT1, NIGHT2, NIGHT3, NIGHT4, NIGHT5, NIGHT6 = (
    dt.date(2024, 1, 2) + dt.timedelta(days=i) for i in range(6)
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectServer]:
    with prefect_server(tmp_path_factory.mktemp("prefect")) as running:
        yield running


@contextmanager
def flows_on(server: LocalPrefectServer, home: Path, **env: str) -> Iterator[None]:
    """In-process flow runs reporting to `server`, state under `home`. No flow-run
    heartbeats: Prefect's heartbeat thread sleeps in 1 s steps and each (sub)flow run
    joins it on exit, up to 1 s per run (some 30 runs here); nothing here asserts on them."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    overrides = {**SHORT_NIGHTS, **env, "HMMTRADER_HOME": str(home),
                 "PREFECT_API_URL": server.api_url}  # fmt: skip
    settings = {PREFECT_API_URL: server.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    with isolated_env(overrides), temporary_settings(settings):
        try:
            yield
        finally:  # send the buffered logs while the API is still configured
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)


def lake_state(home: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (home / "lake").rglob("*") if p.is_file()}


def registry_of(home: Path) -> Registry:
    config = config_for(home)
    return Registry(config.settings.registry, home)


def run_named(api: Api, name: str) -> dict[str, Any]:
    runs = api.flow_runs(name={"any_": [name]})
    assert len(runs) >= 1, name
    return max(runs, key=lambda r: str(r["created"]))


def crossed_quotes(home: Path, symbol: str, day: dt.date, rows: int = 25) -> None:
    """Corrupt a lake file in place: the first rows' ask below the bid (metadata kept, so
    ingest sees the day as present and does not replace it)."""
    path = Lake(home / "lake").path("BINANCE", symbol, "quotes", day)
    table = pq.read_table(path)
    bid = table.column("bid").to_numpy().copy()
    ask = table.column("ask").to_numpy().copy()
    ask[:rows] = bid[:rows] - 1.0
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("ask"), "ask", pa.array(ask))
    pq.write_table(table, path, compression="zstd")


def test_nights_promote_reject_rerun_block_dask_and_simulate(
    server: LocalPrefectServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nights 1..5 on lenient floors (promote, re-run, reject, a Dask night, a night whose
    training fails), `hmmtrader simulate` over the same five nights (its gated policy holds
    what the flow promoted, day by day, and it repeats none of the flow's backtests), then a
    floor no candidate meets and a crossed book."""
    from flows.nightly import nightly_retrain
    from trading.nightly import steps
    from trading.regime.dataset import TrainingDataError

    api = Api(server.api_url)
    home = tmp_path / "home"

    # night 1: no production yet; the candidate meets the (lenient) floors and is promoted
    with flows_on(server, home, **LENIENT):
        report = nightly_retrain(NIGHT1)
    assert [d.decision for d in report.decisions] == ["promoted"]
    assert registry_of(home).aliases() == {"candidate": 1, "production": 1}
    run = run_named(api, f"nightly-retrain-{NIGHT1}")
    assert run["state"]["type"] == "COMPLETED"
    keys = {a["key"] for a in api.artifacts()}
    assert {"ingest", "data-quality-quotes-trades", "features", "data-quality-features",
            "training-hmm-regime", "canary-hmm-regime", "promotion-hmm-regime",
            "nightly-summary"} <= keys  # fmt: skip
    promotion = api.latest_artifact("promotion-hmm-regime")["data"]
    assert "PROMOTED" in promotion and "version 1" in promotion
    assert report.trained[0].run_id in promotion and "models:/hmm-regime/1" in promotion
    canary = api.latest_artifact("canary-hmm-regime")["data"]
    assert "the floors only" in canary and "min_trades" in canary
    training = api.latest_artifact("training-hmm-regime")["data"]
    assert "val_bic" in training and report.trained[0].run_id in training

    # the same night again: no lake file rewritten, no version, no MLflow run, no backtest
    before_lake = lake_state(home)
    registry = registry_of(home)
    runs_before = len(registry.client.search_runs([registry._experiment_id()]))
    canaries_before = sorted((home / "runs").iterdir())
    with flows_on(server, home, **LENIENT):
        again = nightly_retrain(NIGHT1)
    assert lake_state(home) == before_lake
    assert [i.version for i in registry.versions()] == [1]
    assert len(registry.client.search_runs([registry._experiment_id()])) == runs_before
    assert sorted((home / "runs").iterdir()) == canaries_before
    assert again.trained[0].reused and again.decisions[0].decision == "unchanged"
    assert all(not o.written for o in again.ingest)
    assert all(f.days == 0 and f.present == 1 for f in again.features)

    # nights 2..5: night 2 on the Dask task runner (a local cluster); what production holds
    # after each night is what simulate must reproduce
    production = {NIGHT1: 1}
    decisions = {NIGHT1: "promoted"}
    for night in (NIGHT2, NIGHT3, NIGHT4, NIGHT5):
        runner = (  # one worker process: its imports are most of the night's extra cost
            {"HMMTRADER_FLOWS__TASK_RUNNER": "dask", "HMMTRADER_FLOWS__DASK_WORKERS": "1"}
            if night == NIGHT2
            else {}
        )
        with flows_on(server, home, **LENIENT, **runner):
            try:
                decided = nightly_retrain(night)
                decisions[night] = decided.decisions[0].decision
            except TrainingDataError:  # this synthetic day has no DOWN labels
                decisions[night] = "train_failed"
                assert run_named(api, f"nightly-retrain-{night}")["state"]["type"] == "FAILED"
        production[night] = registry_of(home).production()
    assert decisions[NIGHT4] == "train_failed", decisions  # the seeded market's day 4
    assert "rejected" in decisions.values(), decisions
    pids = set()
    for sub in api.flow_runs(name={"any_": [f"ingest-{NIGHT2}", f"features-{NIGHT2}",
                                            f"train-{NIGHT2}"]}):  # fmt: skip
        logs = api.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [sub["id"]]}}})
        pids |= {int(m) for log in logs for m in re.findall(r", pid (\d+)", log["message"])}
    assert pids and os.getpid() not in pids  # the per-symbol tasks ran in Dask workers

    # simulate over the same five nights, as the Prefect flow (`hmmtrader flow simulate`:
    # each fit and policy backtest a task run on the thread pool; `hmmtrader simulate`'s
    # process pool is tested in tests/unit/test_simulate_inputs.py and run by `bench
    # simulate`): night by night the same decisions, the same production; the flow's canary
    # backtests are reused
    kpi_files = {p.name for p in (home / "cache" / "backtest-kpis").iterdir()}
    out = tmp_path / "simulate"
    capsys.readouterr()
    with flows_on(server, home, **LENIENT):
        assert cli(home, "flow", "simulate", "--start", str(NIGHT1), "--end", str(NIGHT5),
                   "--out", str(out)) == 0  # fmt: skip
    said = capsys.readouterr()
    printed = " ".join(said.out.split())
    # the Prefect lines go to stderr (so that --json leaves stdout to summary.json alone)
    assert "Prefect API:" in said.err and "Prefect API:" not in said.out
    sim_run = run_named(api, f"simulate-{NIGHT1}-{NIGHT5}")
    assert sim_run["state"]["type"] == "COMPLETED"
    steps_run = api.post("/task_runs/filter",
                         {"flow_runs": {"id": {"any_": [sim_run["id"]]}}})  # fmt: skip
    states = {t["name"]: t["state"]["type"] for t in steps_run}
    # five fits (night 4's failed: no version, as in the flow) and the four policy days
    assert {n: st for n, st in states.items() if n.startswith("fit ")} == {
        f"fit {n}": "FAILED" if n == NIGHT4 else "COMPLETED"
        for n in (NIGHT1, NIGHT2, NIGHT3, NIGHT4, NIGHT5)
    }
    assert sum(n.startswith("backtest v") and st == "COMPLETED" for n, st in states.items()) == 4
    artifact = api.latest_artifact("simulate-hmm-regime")["data"]
    assert "# Simulate: hmm-regime, 5 nights, 4 trading day(s)" in artifact
    assert "| gated |" in artifact and str(out) in artifact
    summary = json.loads((out / "summary.json").read_text())
    nights = {dt.date.fromisoformat(n["night"]): n for n in summary["per_night"]}
    assert {n: r["decision"] for n, r in nights.items()} == decisions
    assert {n: r["production_after"] for n, r in nights.items()} == production
    for day in summary["per_day"]:  # day D trades what the flow left in production at D-1
        d = dt.date.fromisoformat(day["day"])
        assert day["versions"]["gated"] == production[d - dt.timedelta(days=1)], day
        assert day["versions"]["never"] == 1
    assert [d["day"] for d in summary["per_day"]] == [str(NIGHT2), str(NIGHT3), str(NIGHT4),
                                                      str(NIGHT5)]  # fmt: skip
    newest = [d["versions"]["newest"] for d in summary["per_day"]]
    assert newest == [1, 2, 3, 3], newest  # night 4 trained nothing: v3 stays the newest
    backtests = summary["backtests"]
    assert backtests["canary_run"] == 0 and backtests["canary_reused"] == 7, backtests
    # the gated days (production's canary records) are reused; the rest ran once, here
    assert backtests["policy_reused"] == 3 and backtests["policy_run"] == 4, backtests
    assert kpi_files < {p.name for p in (home / "cache" / "backtest-kpis").iterdir()}
    totals = summary["net_pnl_usd"]
    assert set(totals) == {"gated", "never", "newest", "flat", "buy_hold"}
    assert totals["flat"] == 0.0 and totals["gated"] == totals["never"]  # never promoted again
    rows = (out / "nights.csv").read_text().splitlines()
    assert len(rows) == 6 and rows[0].startswith("night,trained,verdict")
    assert (out / "equity.png").stat().st_size > 10_000
    # the report: each policy's cumulative PnL drawn, its totals summary.json's
    report = (out / "report.html").read_text()
    shown = dict(re.findall(r'data-key="total_(\w+)" data-value="([^"]+)"', report))
    assert {k: json.loads(v) for k, v in shown.items()} == totals
    assert len(re.findall(r'<polyline data-series="\w+" data-points="4"', report)) == 5
    assert "net PnL over 4 trading day(s)" in printed and "buy_hold" in printed, printed
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=registry_of(home).uri)
    logged = client.get_run(summary["mlflow_run_id"])
    assert logged.data.metrics["net_pnl_usd_gated"] == pytest.approx(totals["gated"])
    assert registry_of(home).aliases()["production"] == 1  # the user's registry: untouched
    # `hmmtrader simulate` (no Prefect) on the flow's run directory: a finished run resumed,
    # every version, verdict and backtest reused, the same days and totals
    with isolated_env({**SHORT_NIGHTS, **LENIENT}):
        assert cli(home, "simulate", "--start", str(NIGHT1), "--end", str(NIGHT5), "--workers",
                   "1", "--out", str(out), "--no-mlflow", "--json") == 0  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    assert again["per_day"] == summary["per_day"] and again["net_pnl_usd"] == totals
    assert again["backtests"]["canary_run"] == again["backtests"]["policy_run"] == 0, again
    sandbox = registry_of(out / "state")  # the simulation's own, with its own move history
    assert [(m.kind, m.version, m.by) for m in sandbox.moves()] == [("promote", 1, "simulate")]
    print(f"simulate {NIGHT1}..{NIGHT5}: " + ", ".join(f"{k} {v:+.2f}" for k, v in totals.items()))

    # a floor no candidate meets, through the canary flow alone: version 3 on night 5's
    # holdout, then promote. Both backtests are recorded already (night 5's canary and
    # simulate's newest-policy day): none runs. The canary fails, production stays version
    # 1, the artifacts list the failing rule
    from flows.nightly import canary as canary_flow

    with flows_on(server, home, **{**LENIENT, **IMPOSSIBLE}):
        checked = canary_flow(version="3", night=NIGHT5, promote_on_pass=True)
    candidate = 3
    assert checked.version == candidate and checked.production == 1 and not checked.passed
    assert "min_trades" in checked.failed_rules
    assert sum("were reused" in n for n in checked.notes) == 2, checked.notes
    assert registry_of(home).aliases()["production"] == 1
    canary = api.latest_artifact("canary-hmm-regime")["data"]
    assert "FAILED" in canary and "`min_trades`" in canary and "production version 1" in canary
    assert re.search(r"\| min_trades \|.*\| FAIL \|", canary)
    promotion = api.latest_artifact("promotion-hmm-regime")["data"]
    assert "REJECTED" in promotion and "min_trades" in promotion
    # production, held to the same (impossible) floors on the same window, fails too:
    # the canary, its artifact, production's tags and `models` say so (action: alert)
    floors = checked.production_floors or {}
    assert floors["version"] == 1 and floors["failed_rules"] == ["min_trades"], floors
    assert floors["action"] == "alert"
    assert "**Production version 1 FAILS the floor(s) `min_trades`" in canary
    assert "Paired test" in canary
    tags = registry_of(home).info(1).tags
    assert tags["floors_failed"] == "min_trades"
    assert f"canary of version {candidate}" in tags["floors_checked"]
    capsys.readouterr()
    with isolated_env({}):
        assert cli(home, "models") == 0
    listed = " ".join(capsys.readouterr().out.split())
    assert "PRODUCTION version 1 FAILS the canary floor(s) min_trades" in listed, listed
    with isolated_env({}):  # the same as data
        assert cli(home, "models", "--json") == 0
        listing = json.loads(capsys.readouterr().out)
        assert cli(home, "models", "--json", "--repair") == 1  # listing only
    assert [v["version"] for v in listing["versions"]] == [1, 2, 3, 4]
    assert listing["versions"][0]["tags"]["floors_failed"] == "min_trades"
    assert "production" in listing["versions"][0]["aliases"]
    assert listing["production"]["serving"] == 1 and listing["production"]["anomaly"] == ""
    assert [(m["kind"], m["version"]) for m in listing["moves"]] == [("promote", 1)]

    # night 6 with a crossed book injected: stops at validate, nothing registered
    versions = [i.version for i in registry_of(home).versions()]
    with flows_on(server, home, **LENIENT):
        config = config_for(home)
        plan = steps.plan_night(config, NIGHT6)
        for symbol in plan.symbols:
            steps.ingest_symbol(config, symbol, plan)
        crossed_quotes(home, "BTCUSDT", NIGHT6)
        with pytest.raises(steps.QualityBlockedError, match="crossed_book"):
            nightly_retrain(NIGHT6)
    assert run_named(api, f"nightly-retrain-{NIGHT6}")["state"]["type"] == "FAILED"
    assert [i.version for i in registry_of(home).versions()] == versions
    assert registry_of(home).aliases()["production"] == 1
    quality = api.latest_artifact("data-quality-quotes-trades")["data"]
    assert "BLOCKED" in quality and "crossed_book" in quality and "BTCUSDT" in quality
    summary_md = api.latest_artifact("nightly-summary")["data"]
    assert "Stopped" in summary_md and "crossed_book" in summary_md
    assert not api.flow_runs(name={"any_": [f"train-{NIGHT6}"]})


def test_a_bars_night_from_the_archive_site(server: LocalPrefectServer, tmp_path: Path) -> None:
    """Acceptance 5: a bars_v1 night end to end against a local site in data.binance.vision's
    layout serving the real January klines: ingest (klines only), validate (bars),
    features (BARS_V1), train, canary on bars, promote."""
    from flows.nightly import nightly_retrain

    night = dt.date(2024, 1, 20)
    days = [night - dt.timedelta(days=i) for i in range(5)]  # 3 training days, warm-up, holdout
    with archive_site(tmp_path / "site") as site:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            for day in days:
                site.publish(f"data/spot/daily/klines/{symbol}/1m/{symbol}-1m-{day}.zip",
                             kline_csv(symbol, day))  # fmt: skip
        home = tmp_path / "home"
        bars_night = {"HMMTRADER_REGIME__FEATURE_SET": "bars_v1",
                      "HMMTRADER_FLOWS__SOURCE": "archive", "HMMTRADER_ARCHIVE__BASE_URL": site.url,
                      "HMMTRADER_FLOWS__TRAIN_DAYS": "3"}  # fmt: skip
        with flows_on(server, home, **LENIENT, **bars_night):
            report = nightly_retrain(night)
        fetched = {path for path, _ in site.requests if path.endswith(".zip")}
    assert len(fetched) == 10 and all("/klines/" in p for p in fetched)  # no aggTrades
    assert (
        run_named(Api(server.api_url), f"nightly-retrain-{night}")["state"]["type"] == "COMPLETED"
    )
    assert report.quality[0].kinds == ("bars",) and report.quality[0].passed
    assert sum(o.rows for o in report.ingest) == 10 * 1440
    assert [d.decision for d in report.decisions] == ["promoted"]
    registry = registry_of(home)
    assert registry.info(1).tags["feature_version"].startswith("BARS_V1@")
    canary = report.canaries[0]
    assert canary.passed and canary.candidate["data"] == "1-minute bars"
    assert "buy_hold_pnl_usd" in canary.candidate["benchmarks"]
    print(
        f"bars night {night}: K={registry.info(1).tags.get('n_states', '?')}, "
        f"holdout net {canary.candidate['net_pnl_usd']:+.2f} USD vs buy-and-hold "
        f"{canary.candidate['benchmarks']['buy_hold_pnl_usd']:+.2f} USD, "
        f"{canary.candidate['trades']} trades"
    )
