"""`hmmtrader demo` end to end on embedded defaults (the README's first command)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trading.cli import run
from trading.data.lake import Lake
from trading.quality.issues import read_issues_csv


def test_demo_runs_market_features_and_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert run(["--home", str(home), "demo"]) == 0
    out = capsys.readouterr().out
    assert "Data-quality gate: passed" in out and "Demo finished" in out
    lake = Lake(home / "lake")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert len(lake.days("BINANCE", symbol, "features_v1")) == 1
    issues = home / "quality" / "latest" / "data_quality_issues.csv"
    assert issues.is_file() and read_issues_csv(issues) == []
    assert (home / "quality/gx/uncommitted/data_docs/local_site/index.html").is_file()
    assert run(["--home", str(home), "demo", "--days", "0"]) == 1
    assert "--days must be between 1 and 30" in capsys.readouterr().err
