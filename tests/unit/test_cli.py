"""CLI contract: expected failures are one line on stderr, exit 1, and write nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hmmtrader.cli import run
from tests.conftest import BINANCE_SAMPLES, lake_files

GOOD_ROW = "1,42000.1,0.5,1,1,1704067200123,True,True\n"


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (GOOD_ROW + "2,oops,0.5,1,1,1704067200124,True,True\n", "line 2: column price: 'oops'"),
        (GOOD_ROW + "2,42000.1,0.5,1,1704067200124,True,True\n", "line 2: expected 8 columns"),
        ("", "empty file"),
    ],
)
def test_bad_csv_is_one_line_and_writes_nothing(
    content: str, expected: str, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    path.write_text(content)
    assert run(["ingest", "files", str(path), "--symbol", "BTCUSDT"]) == 1
    lines = errors(capsys)
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("error:")
    assert lake_files(home / "lake") == []


def test_unknown_symbol(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ingest", "synthetic", "--symbols", "BTCUSDT,DOGEUSDT", "--days", "1"]) == 1
    (line,) = errors(capsys)
    assert "unknown symbol 'DOGEUSDT'" in line and "BTCUSDT, ETHUSDT" in line
    assert lake_files(home / "lake") == []


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2024-01-05", "2024-01-01", "--start 2024-01-05 is after --end 2024-01-01"),
        ("2024-13-01", "2024-01-01", "--start '2024-13-01' is not a date"),
    ],
)
def test_bad_date_range(
    start: str, end: str, expected: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "ingest",
        "archive",
        "--symbols",
        "BTCUSDT",
        "--start",
        start,
        "--end",
        end,
        "--base-url",
        "http://127.0.0.1:9",
    ]  # never contacted: validation comes first
    assert run(argv) == 1
    (line,) = errors(capsys)
    assert expected in line
    assert lake_files(home / "lake") == []


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ingest", "synthetic", "--days", "many"]) == 2
    (line,) = errors(capsys)
    assert "--days" in line and "hmmtrader ingest synthetic --help" in line


def test_files_ingest_and_data_ls(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = [
        str(BINANCE_SAMPLES / "btcusdt-quotes.parquet"),
        str(BINANCE_SAMPLES / "btcusdt-trades.parquet"),
    ]
    assert run(["ingest", "files", *samples, "--symbol", "btcusdt"]) == 0
    assert "2,452 rows" in capsys.readouterr().out
    assert run(["data", "ls"]) == 0
    out = capsys.readouterr().out
    assert "quotes" in out and "451" in out and "2,001" in out
    assert "2021-01-08 00:00:00.278" in out  # first trade
    assert "0.622 s" in out  # largest gap between trades
    assert run(["data", "ls", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    kinds = {p["kind"]: p for p in listing["partitions"]}
    assert set(kinds) == {"quotes", "trades"} and listing["lake"].endswith("lake")
    trades = kinds["trades"]
    assert (trades["symbol"], trades["days"], trades["rows"]) == ("BTCUSDT", 1, 2001)
    assert trades["first"] == "2021-01-08T00:00:00.278+00:00"
    assert trades["largest_gap_ns"] == pytest.approx(0.622e9, abs=1e6)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [
        [],
        ["ingest"],
        ["ingest", "archive"],
        ["ingest", "rest"],
        ["ingest", "files"],
        ["ingest", "synthetic"],
        ["data"],
        ["data", "ls"],
        ["bench"],
        ["bench", "ingest"],
        ["bench", "features"],
        ["features"],
        ["validate"],
        ["quality"],
        ["quality", "export"],
        ["demo"],
        ["flow"],
        ["flow", "nightly"],
        ["flow", "backfill"],
        ["flow", "simulate"],
        ["bench", "flow"],
    ]
    for command in commands:
        assert run([*command, "--help"]) == 0, command
        assert "Usage: hmmtrader" in capsys.readouterr().out


def test_version_and_shell_completion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the pinned stack's versions (from the installed metadata) and writes
    nothing; the shell completion script completes commands and subcommands."""
    from importlib.metadata import version

    assert run(["--home", str(tmp_path / "home"), "--version"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"hmmtrader {version('hmm-trader')} (Python 3.12")
    assert f"nautilus_trader {version('nautilus_trader')}" in printed
    assert f"prefect {version('prefect')}" in printed and "mlflow 3." in printed
    assert not (tmp_path / "home").exists()
    exe = Path(sys.executable).parent / "hmmtrader"
    # typer detects the shell from the parent process: a bash asks here (not its exec)
    script = subprocess.run(["bash", "-c", f"'{exe}' --show-completion; exit $?"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert script.returncode == 0, (script.stdout, script.stderr)
    assert "_HMMTRADER_COMPLETE=complete_bash" in script.stdout

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_HMMTRADER_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split(" ")) - 1)}  # fmt: skip
        done = subprocess.run([exe], capture_output=True, text=True, env=env, check=True)
        return done.stdout.split()

    assert complete("hmmtrader si") == ["simulate"]
    assert complete("hmmtrader flow s") == ["simulate"]
    assert {"nightly", "backfill", "simulate"} <= set(complete("hmmtrader flow "))


def test_real_entry_point_no_traceback_unless_debug(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "hmmtrader"
    env = {**os.environ, "HMMTRADER_HOME": str(tmp_path / "home")}
    missing = str(tmp_path / "missing.csv")
    plain = subprocess.run(
        [exe, "ingest", "files", missing, "--symbol", "BTCUSDT"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert plain.returncode == 1
    assert plain.stderr.strip() == f"error: {missing}: no such file"
    debug = subprocess.run(
        [exe, "--debug", "ingest", "files", missing, "--symbol", "BTCUSDT"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_bench_ingest_prints_json_last(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["bench", "ingest", "--rows", "20000", "--repeats", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert set(result) == {"name", "value", "unit", "baseline", "ratio"}
    assert result["unit"] == "rows/s" and result["value"] > 0 and result["baseline"] > 0
    assert result["ratio"] == pytest.approx(result["value"] / result["baseline"], rel=0.02)


def test_serve_refuses_bad_options_before_starting(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run(["serve", "--port", str(port)]) == 1
        lines = errors(capsys)
        assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0]
        assert "--port" in lines[0]
    assert run(["serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert run(["serve", "--log-level", "loud"]) == 2
    assert "'loud' is not one of 'debug', 'info', 'warning', 'error'" in errors(capsys)[0]
    assert run(["serve", "--poll-interval", "-1"]) == 1
    assert "poll_interval_s" in errors(capsys)[0]


def test_another_synthetic_day_length_is_refused_until_overwrite(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trading.data.lake import Lake

    argv = ["ingest", "synthetic", "--symbols", "BTCUSDT", "--start", "2024-01-01", "--days", "1"]
    monkeypatch.setenv("HMMTRADER_SYNTHETIC__DAY_SECONDS", "7200")
    assert run(argv) == 0
    features = Lake(home / "lake").path("BINANCE", "BTCUSDT", "features_v1", dt.date(2024, 1, 1))
    features.parent.mkdir(parents=True)
    features.write_bytes(b"made from the 2-hour day")
    before = {p: p.read_bytes() for p in lake_files(home / "lake")}
    capsys.readouterr()

    monkeypatch.setenv("HMMTRADER_SYNTHETIC__DAY_SECONDS", "3600")
    assert run(argv) == 1
    (line,) = errors(capsys)
    assert line.startswith(
        "error: synthetic BTCUSDT 2024-01-01: the lake holds this day 7200 s long, not 3600 s "
        "(synthetic.day_seconds, HMMTRADER_SYNTHETIC__DAY_SECONDS or --day-seconds)"
    )
    assert "new home" in line and "--overwrite" in line
    assert {p: p.read_bytes() for p in lake_files(home / "lake")} == before

    assert run([*argv, "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"deleted {features} (made from the data this ingest replaced)" in out
    assert not features.exists()


def test_a_missing_home_is_refused_except_by_commands_that_create_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "hmoe"
    for command in (["models"], ["data", "ls"], ["node", "--mode", "replay"], ["simulate"]):
        assert run(["--home", str(typo), *command]) == 1, command
        [line] = errors(capsys)
        assert f"--home {typo} does not exist" in line and "demo" in line
    assert not typo.exists()  # nothing made for a typo
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert run(["--home", str(a_file), "models"]) == 1
    assert "is a file, not a directory" in errors(capsys)[0]
    # ingest makes a new state root
    sample = str(BINANCE_SAMPLES / "btcusdt-trades.parquet")
    assert run(["--home", str(typo), "ingest", "files", sample, "--symbol", "BTCUSDT"]) == 0
    assert (typo / "lake").is_dir()
    capsys.readouterr()
    assert run(["--home", str(typo), "data", "ls", "--json"]) == 0  # it exists now
    assert json.loads(capsys.readouterr().out)["partitions"][0]["rows"] == 2001


@pytest.mark.parametrize(
    ("command", "option", "choices"),
    [
        (["node"], "--mode", "replay|paper|testnet|live"),
        (["node"], "--inference", "in_process|remote"),
        (["flow", "nightly"], "--task-runner", "threads|dask"),
        (["ingest", "archive"], "--kind", "aggTrades|bookTicker|klines|fundingRate"),
        (["ingest", "archive"], "--market", "spot|um"),
        (["features"], "--set", "features_v1|bars_v1"),
        (["train"], "--feature-set", "features_v1|bars_v1"),
        (["serve"], "--log-level", "debug|info|warning|error"),
        (["quickcheck"], "--check", "inference|backtest|dashboard|ops|canary"),
    ],
)
def test_choices_are_listed_in_help_and_enforced(
    command: list[str],
    option: str,
    choices: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    assert run([*command, "--help"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if f" {option} " in x)
    assert choices in line, line
    assert run([*command, option, "nope"]) == 2
    assert "'nope' is not one of" in capsys.readouterr().err


def test_node_takes_symbols_as_every_command_does() -> None:
    from hmmtrader.cli.node import _symbols

    assert _symbols("btcusdt, ETHUSDT.BINANCE", None) == ["BTCUSDT", "ETHUSDT"]
    assert _symbols(None, ["SOLUSDT.BINANCE"]) == ["SOLUSDT"]  # the old repeated --symbol
    assert _symbols(None, None) == []  # node.symbols then


def test_library_warnings_only_with_debug(tmp_path: Path) -> None:
    script = (
        "import logging, sys, warnings\n"
        "from hmmtrader.cli.common import quiet_libraries\n"
        "quiet_libraries(sys.argv[1] == 'debug')\n"
        "import mlflow\n"
        "warnings.warn('a library warning', DeprecationWarning)\n"
        "print(logging.getLogger('mlflow').getEffectiveLevel())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}

    def child(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script, mode], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=60, check=True)  # fmt: skip

    quiet, loud = child("normal"), child("debug")
    assert "a library warning" not in quiet.stderr and quiet.stdout.strip() == "40"  # ERROR
    assert "a library warning" in loud.stderr and loud.stdout.strip() == "10"  # DEBUG
