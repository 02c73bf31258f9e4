"""The nightly retrain's plan, settings and reports (no Prefect, no server)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from trading.data.lake import Lake
from trading.data.synthetic import ingest_synthetic_day
from trading.errors import ConfigError, InputError
from trading.nightly import reports, steps
from trading.nightly.config import FlowSettings, SymbolSet
from trading.settings import AppConfig, load_settings

D = dt.date


def with_flows(config: AppConfig, **flows: object) -> AppConfig:
    """The config with these flows settings (validated: a misspelled one is an error)."""
    section = type(config.settings.flows).model_validate(
        {**config.settings.flows.model_dump(), **flows}
    )
    settings = config.settings.model_copy(update={"flows": section})
    return config.model_copy(update={"settings": settings})


def with_day_seconds(config: AppConfig, seconds: int) -> AppConfig:
    synthetic = config.settings.synthetic.model_copy(update={"day_seconds": seconds})
    settings = config.settings.model_copy(update={"synthetic": synthetic})
    return config.model_copy(update={"settings": settings})


def test_plan_of_a_night(config: AppConfig) -> None:
    plan = steps.plan_night(config, D(2024, 1, 3))
    assert (plan.train_start, plan.train_end) == (D(2024, 1, 2), D(2024, 1, 2))
    assert (plan.holdout_start, plan.holdout_end) == (D(2024, 1, 3), D(2024, 1, 3))
    assert plan.first_day == D(2024, 1, 1)  # the features' warm-up day
    assert plan.symbols == ("BTCUSDT", "ETHUSDT")
    longer = with_flows(config, train_days=3)
    plan = steps.plan_night(longer, D(2024, 1, 10))
    assert (plan.train_start, plan.train_end, plan.first_day) == (
        D(2024, 1, 7), D(2024, 1, 9), D(2024, 1, 6),
    )  # fmt: skip


def test_synthetic_nights_start_at_the_origin(config: AppConfig) -> None:
    # the first night has one training and one holdout day; the warm-up day is clipped
    plan = steps.plan_night(config, D(2024, 1, 2))
    assert plan.first_day == plan.train_start == D(2024, 1, 1)
    with pytest.raises(InputError, match="before the synthetic market's origin 2024-01-01"):
        steps.plan_night(config, D(2024, 1, 1))
    archive = with_flows(config, source="archive")
    assert steps.plan_night(archive, D(2024, 1, 1)).first_day == D(2023, 12, 30)


def test_default_night_follows_the_lake(config: AppConfig, lake: Lake) -> None:
    assert steps.default_night(config) == D(2024, 1, 2)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for day in (D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 3)):
            ingest_synthetic_day(config, lake, symbol, day, 7, D(2024, 1, 1), seconds=3600)
    assert steps.default_night(config) == D(2024, 1, 4)
    archive = with_flows(config, source="archive")
    assert steps.default_night(archive, today=D(2026, 11, 21)) == D(2026, 11, 20)


def test_only_days_every_symbol_has_count(config: AppConfig, lake: Lake) -> None:
    for day in (D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 3)):
        ingest_synthetic_day(config, lake, "BTCUSDT", day, 7, D(2024, 1, 1), seconds=3600)
    ingest_synthetic_day(config, lake, "ETHUSDT", D(2024, 1, 1), 7, D(2024, 1, 1), seconds=3600)
    assert steps.default_night(config) == D(2024, 1, 2)


def test_ingest_keeps_days_already_in_the_lake(config: AppConfig, lake: Lake) -> None:
    short = with_day_seconds(config, 3600)
    plan = steps.plan_night(short, D(2024, 1, 2))
    first = steps.ingest_symbol(short, "BTCUSDT", plan)
    assert {w.day for w in first.written} == {D(2024, 1, 1), D(2024, 1, 2)}
    assert first.present == [] and first.rows > 0
    mtimes = {p: p.stat().st_mtime_ns for p in lake.root.rglob("*.parquet")}
    again = steps.ingest_symbol(short, "BTCUSDT", plan)
    assert again.written == [] and again.present == [D(2024, 1, 1), D(2024, 1, 2)]
    assert {p: p.stat().st_mtime_ns for p in lake.root.rglob("*.parquet")} == mtimes


def test_lake_source_downloads_nothing(config: AppConfig, lake: Lake) -> None:
    plan = steps.plan_night(with_flows(config, source="lake"), D(2024, 1, 3))
    ingest_synthetic_day(config, lake, "BTCUSDT", D(2024, 1, 1), 7, D(2024, 1, 1), seconds=3600)
    outcome = steps.ingest_symbol(with_flows(config, source="lake"), "BTCUSDT", plan)
    assert outcome.written == [] and outcome.present == [D(2024, 1, 1)]
    assert lake.days("BINANCE", "BTCUSDT", "quotes") == [D(2024, 1, 1)]


def test_flow_settings_are_validated() -> None:
    assert FlowSettings().symbol_sets == [SymbolSet(symbols=["BTCUSDT", "ETHUSDT"])]
    assert SymbolSet(symbols=["btcusdt"]).symbols == ["BTCUSDT"]
    with pytest.raises(ValueError, match="appears twice"):
        SymbolSet(symbols=["BTCUSDT", "btcusdt"])
    with pytest.raises(ValueError, match="give each its own model_name"):
        FlowSettings(symbol_sets=[SymbolSet(symbols=["BTCUSDT"]), SymbolSet(symbols=["ETHUSDT"])])
    with pytest.raises(ValueError):
        FlowSettings(task_runner="celery")  # type: ignore[arg-type]


def test_bad_flow_settings_in_the_environment_name_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HMMTRADER_FLOWS__TASK_RUNNER", "celery")
    with pytest.raises(ConfigError, match=r"HMMTRADER_FLOWS__TASK_RUNNER: flows\.task_runner"):
        load_settings()


def test_symbol_sets_name_their_models(config: AppConfig) -> None:
    sets = [SymbolSet(symbols=["BTCUSDT"], model_name="btc"),
            SymbolSet(symbols=["ETHUSDT"], model_name="eth")]  # fmt: skip
    two = with_flows(config, symbol_sets=sets)
    assert steps.symbol_set_of(two, "eth").symbols == ["ETHUSDT"]
    assert steps.symbol_set_of(two, None).model_name == "btc"
    with pytest.raises(InputError, match="configured models are btc, eth"):
        steps.symbol_set_of(two, "hmm-regime")
    cfg = steps.set_config(two, sets[1])
    assert cfg.settings.registry.model_name == "eth"
    assert cfg.settings.strategy.symbols == ["ETHUSDT"]
    with pytest.raises(ConfigError, match="unknown symbol 'DOGEUSDT'"):
        steps.all_symbols(with_flows(config, symbol_sets=[SymbolSet(symbols=["DOGEUSDT"])]))


def _canary(passed: bool, failed: list[str]) -> steps.CanaryReport:
    rules = [
        {"name": "net_pnl", "kind": "floor", "text": "net PnL >= 0", "candidate": 3.5,
         "reference": 0.0, "production": None, "passed": True},
        {"name": "sharpe_vs_production", "kind": "relative", "text": "Sharpe >= prod - 0.5",
         "candidate": 1.0, "reference": 1.5, "production": 2.0, "passed": passed},
    ]  # fmt: skip
    return steps.CanaryReport(
        "hmm-regime", 2, 1, passed, "", False, "2024-01-03..2024-01-04", rules, failed, [],
        {"net_pnl_usd": 3.5, "trades": 12}, {"net_pnl_usd": 4.0, "trades": 9}, "/x/run",
    )  # fmt: skip


def test_canary_markdown_lists_every_rule_and_the_failing_ones() -> None:
    text = reports.canary_markdown(_canary(False, ["sharpe_vs_production"]))
    assert "**FAILED**" in text and "against production version 1" in text
    assert "Failing rules: `sharpe_vs_production`" in text
    assert "| net_pnl | net PnL >= 0 | 3.5 | - | 0 | pass |" in text
    assert "| sharpe_vs_production | Sharpe >= prod - 0.5 | 1 | 2 | 1.5 | FAIL |" in text
    assert "| net_pnl_usd | 3.5 | 4 |" in text
    assert "**passed**" in reports.canary_markdown(_canary(True, []))


def test_promotion_and_quality_markdown() -> None:
    decision = steps.PromotionDecision(
        "hmm-regime", 2, "rejected", "canary failed: sharpe_vs_production; production stays 1",
        1, 1, "abc123", "models:/hmm-regime/2", "sqlite:///x.db",
    )  # fmt: skip
    text = reports.promotion_markdown(decision)
    assert text.startswith("# Promotion: REJECTED, hmm-regime version 2")
    assert "abc123" in text and "models:/hmm-regime/2" in text
    quality = steps.QualityOutcome(
        False, ("quotes", "trades"), D(2024, 1, 1), D(2024, 1, 2),
        [{"symbol": "BTCUSDT", "kind": "quotes", "day": "2024-01-02", "check": "crossed_book",
          "severity": "block", "failed_rows": 25, "status": "FAIL"}],
        ["BTCUSDT quotes 2024-01-02: crossed_book failed on 25 rows"], [], 25, "/x.csv", "/x",
    )  # fmt: skip
    text = reports.quality_markdown([quality])
    assert "BLOCKED: the night stops at validate" in text
    assert "| BTCUSDT | quotes | 2024-01-02 | crossed_book | block | 25 | FAIL |" in text
    assert "- BTCUSDT quotes 2024-01-02: crossed_book failed on 25 rows" in text
    assert reports.table(["a"], [["x|y"]]).endswith("| x\\|y |")
