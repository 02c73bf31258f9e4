"""`hmmtrader validate` end to end: real samples ingested through the CLI, faults injected
into a copy of the lake, exit codes, the issue CSV, Data Docs and config severities."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from hmmtrader.cli import run
from tests.conftest import BINANCE_SAMPLES
from tests.unit.test_quality import (
    QUOTE_FAULT_COUNTS,
    REAL_DAY,
    TRADE_FAULT_COUNTS,
    issue_counts,
    quote_faults,
    rewrite,
    trade_faults,
)
from trading.data.lake import Lake
from trading.quality.issues import read_issues_csv
from trading.settings import PROJECT_ROOT

DAY = REAL_DAY.isoformat()
VALIDATE = ["validate", "--symbols", "BTCUSDT", "--start", DAY, "--end", DAY]


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
    assert "Data-quality gate: passed" in out and "all 11 checks" in out  # quotes (trades: 12)
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
        (["--kinds", "quotes,bars"], "unknown kind(s) bars"),
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
