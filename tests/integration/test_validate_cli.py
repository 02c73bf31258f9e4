"""`hmmtrader validate` end to end: real samples ingested through the CLI, faults injected
into a copy of the lake, exit codes, the issue CSV, Data Docs and config severities; real
1-minute bars (`--kinds bars`) and a selection that matches no data.

The real tick samples hold 46 s of their day: the tests set min_coverage 0 for ticks
(HMMTRADER_QUALITY__*__MIN_COVERAGE), except the one showing that the default flags them."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import yaml

from hmmtrader.cli import run
from tests.conftest import BINANCE_SAMPLES
from tests.unit.test_quality import (
    BARS_DAY,
    QUOTE_FAULT_COUNTS,
    REAL_DAY,
    TRADE_FAULT_COUNTS,
    issue_counts,
    quote_faults,
    real_bars,
    rewrite,
    trade_faults,
    write_bars,
)
from trading.data.lake import Lake
from trading.quality.issues import read_issues_csv
from trading.settings import PROJECT_ROOT

DAY = REAL_DAY.isoformat()
VALIDATE = ["validate", "--symbols", "BTCUSDT", "--start", DAY, "--end", DAY]
SHORT_TICK_DAYS = {
    "HMMTRADER_QUALITY__QUOTES__MIN_COVERAGE": "0",
    "HMMTRADER_QUALITY__TRADES__MIN_COVERAGE": "0",
}


@pytest.fixture(autouse=True)
def _short_tick_days(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SHORT_TICK_DAYS.items():
        monkeypatch.setenv(name, value)


def ingest_samples(home: Path) -> None:
    samples = [
        BINANCE_SAMPLES / "btcusdt-quotes.parquet",
        BINANCE_SAMPLES / "btcusdt-trades.parquet",
    ]
    argv = ["--home", str(home), "ingest", "files", *map(str, samples), "--symbol", "BTCUSDT"]
    assert run(argv) == 0


def latest_csv(home: Path) -> Path:
    return home / "quality" / "latest" / "data_quality_issues.csv"


def data_docs(home: Path) -> Path:
    return home / "quality" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def faulty_copy(clean: Path, target: Path) -> Path:
    shutil.copytree(clean / "lake", target / "lake")
    lake = Lake(target / "lake")
    rewrite(lake, "quotes", REAL_DAY, quote_faults)
    rewrite(lake, "trades", REAL_DAY, trade_faults)
    return target


def test_clean_samples_pass_and_faulty_copy_blocks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = tmp_path / "clean"
    ingest_samples(clean)
    capsys.readouterr()
    assert run(["--home", str(clean), *VALIDATE]) == 0
    out = capsys.readouterr().out
    assert "Data-quality gate: passed" in out and "all 12 checks" in out  # quotes (trades: 13)
    assert "quality/runs/" in out and "Data Docs:" in out
    assert issue_counts(latest_csv(clean)) == {}
    assert data_docs(clean).is_file()

    faulty = faulty_copy(clean, tmp_path / "faulty")
    out_dir = tmp_path / "report"
    assert run(["--home", str(faulty), *VALIDATE, "--out", str(out_dir)]) == 1
    out = capsys.readouterr().out
    assert "BLOCKED" in out
    assert "block: BTCUSDT quotes 2021-01-08: crossed_book failed on 2 rows" in out
    expected = QUOTE_FAULT_COUNTS | TRADE_FAULT_COUNTS
    assert issue_counts(out_dir / "data_quality_issues.csv") == expected
    assert issue_counts(latest_csv(faulty)) == expected
    assert data_docs(faulty).is_file()
    validations = data_docs(faulty).parent / "validations"
    assert {p.parent.parent.name for p in validations.rglob("*.html")} == {
        "BTCUSDT quotes 2021-01-08",
        "BTCUSDT trades 2021-01-08",
    }


def test_warn_severity_from_config_turns_exit_1_into_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    ingest_samples(home)
    faulty = faulty_copy(home, tmp_path / "faulty")
    config_dir = tmp_path / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", config_dir)
    settings = yaml.safe_load((config_dir / "settings.yaml").read_text())
    settings.setdefault("quality", {}).setdefault("checks", {}).update(
        {check: "warn" for _, check in QUOTE_FAULT_COUNTS | TRADE_FAULT_COUNTS}
    )
    (config_dir / "settings.yaml").write_text(yaml.safe_dump(settings))
    capsys.readouterr()

    argv = ["--config-dir", str(config_dir), "--home", str(faulty), *VALIDATE]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "passed" in out and "warn: BTCUSDT trades 2021-01-08: unique_trade_id" in out
    assert latest_csv(faulty).read_text().splitlines()[0] == (
        "timestamp,symbol,check,value,severity,kind,day,row"
    )
    rows = read_issues_csv(latest_csv(faulty))
    assert len(rows) == sum((QUOTE_FAULT_COUNTS | TRADE_FAULT_COUNTS).values())
    assert {row["severity"] for row in rows} == {"warn"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--kinds", "quotes,ticks"], "unknown kind(s) ticks"),
        (["--symbols", "DOGEUSDT"], "unknown symbol 'DOGEUSDT'"),
        (["--start", "2021-13-01"], "--start '2021-13-01' is not a date"),
        (["--start", "2021-01-09"], "--start 2021-01-09 is after --end 2021-01-08"),
    ],
)
def test_bad_arguments_are_one_line(
    args: list[str], expected: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = list(VALIDATE)
    for option, value in zip(args[::2], args[1::2], strict=True):
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    assert run(argv) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0]
    assert not (home / "quality").exists()


def test_46_seconds_of_ticks_are_blocked_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in SHORT_TICK_DAYS:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    ingest_samples(home)
    capsys.readouterr()
    assert run(["--home", str(home), *VALIDATE]) == 1
    out = capsys.readouterr().out
    assert "BLOCKED" in out
    assert (
        "block: BTCUSDT quotes 2021-01-08: coverage: 46 s of the UTC day's 24.0 h covered "
        "(0.05 %, min_coverage 10 %)" in out
    )
    assert issue_counts(latest_csv(home)) == {("quotes", "coverage"): 1, ("trades", "coverage"): 1}


def bars_home(home: Path) -> None:
    lake = Lake(home / "lake")
    write_bars(lake, real_bars())


BARS_ARGS = ["--symbols", "BTCUSDT", "--start", BARS_DAY.isoformat(), "--end"]


def test_validate_kinds_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    bars_home(home)
    end = BARS_DAY.isoformat()
    assert run(["--home", str(home), "validate", *BARS_ARGS, end, "--kinds", "bars"]) == 0
    out = capsys.readouterr().out
    assert "Data-quality gate: passed" in out and "all 12 checks" in out
    assert issue_counts(latest_csv(home)) == {}

    frame = real_bars()
    frame.loc[10, "high"] = frame.loc[10, "low"] - 1.0  # below its open and close
    write_bars(Lake(home / "lake"), frame)
    assert run(["--home", str(home), "validate", *BARS_ARGS, end]) == 1  # auto: bars
    out = capsys.readouterr().out
    assert "block: BTCUSDT bars 2024-01-03: ohlc_consistent failed on 1 row" in out
    assert issue_counts(latest_csv(home)) == {("bars", "ohlc_consistent"): 1}


def test_a_selection_matching_no_data_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    bars_home(home)
    end = BARS_DAY.isoformat()
    assert run(["--home", str(home), "validate", *BARS_ARGS, end, "--kinds", "features"]) == 1
    captured = capsys.readouterr()
    assert "passed" not in captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: nothing to validate: no features of")
    assert "it holds BTCUSDT bars 2024-01-03: validate what it holds (--kinds bars)" in lines[0]
    assert not (home / "quality" / "latest").exists()


def test_validate_features_of_the_configured_bars_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """regime.feature_set bars_v1: `--kinds features` checks the BARS_V1 files."""
    monkeypatch.setenv("HMMTRADER_REGIME__FEATURE_SET", "bars_v1")
    home = tmp_path / "home"
    lake = Lake(home / "lake")
    for day in (BARS_DAY - dt.timedelta(days=1), BARS_DAY):
        write_bars(lake, real_bars(day), day)
    end = BARS_DAY.isoformat()
    validate = ["--home", str(home), "validate", *BARS_ARGS, end]
    assert run([*validate, "--kinds", "features"]) == 1
    error = capsys.readouterr().err
    assert "compute features first (hmmtrader features --set bars_v1)" in " ".join(error.split())

    features = ["--home", str(home), "features", *BARS_ARGS, end, "--set", "bars_v1"]
    assert run(features) == 0  # 3 January, warmed up on 2 January
    capsys.readouterr()
    assert run([*validate, "--kinds", "features"]) == 0
    out = capsys.readouterr().out
    assert "Data-quality gate: passed" in out and "all 9 checks" in out
    assert run(validate) == 0  # auto: the bars and their features
    out = capsys.readouterr().out
    assert "all 12 checks" in out and "all 9 checks" in out
    assert (home / "quality" / "gx" / "expectations" / "bars_v1.json").is_file()
