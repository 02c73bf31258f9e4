"""`hmmtrader data ls | features | validate | quality export`: what is in the lake, its
features and its data-quality gate."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from hmmtrader.cli.common import (
    EndDay,
    FeatureSetName,
    StartDay,
    Symbols,
    console,
    lake_of,
    load_config,
)
from trading.errors import InputError

if TYPE_CHECKING:
    from trading.data.lake import Lake
    from trading.features.descriptor import FeatureSet
    from trading.quality.gate import GateResult
    from trading.settings import AppConfig

app = typer.Typer()  # top-level commands: features, validate
data_app = typer.Typer(help="Inspect the lake.", no_args_is_help=True)
quality_app = typer.Typer(
    help="Data-quality suites (Great Expectations) of the validate gate.", no_args_is_help=True
)


def _fmt_ts(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _iso(ts_ns: int | None) -> str | None:
    if ts_ns is None:
        return None
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).isoformat(timespec="milliseconds")


def _fmt_gap(gap_ns: int | None) -> str:
    if gap_ns is None:
        return "-"
    seconds = gap_ns / 1e9
    return f"{seconds:.3f} s" if seconds < 120 else str(dt.timedelta(seconds=round(seconds)))


def print_lake_summary(lake: Lake) -> int:
    rows = lake.summary()
    if not rows:
        console.print(f"The lake at {lake.root} is empty: run `hmmtrader ingest ...` first.")
        return 0
    table = Table(title=f"Lake: {lake.root}")
    columns = ("venue", "symbol", "kind", "days", "rows", "first", "last", "largest gap", "source")
    for column in columns:
        table.add_column(column, justify="right" if column in ("days", "rows") else "left")
    for row in rows:
        table.add_row(
            row.venue,
            row.symbol,
            row.kind,
            str(row.days),
            f"{row.rows:,}",
            _fmt_ts(row.first_ts_ns),
            _fmt_ts(row.last_ts_ns),
            _fmt_gap(row.largest_gap_ns),
            ", ".join(row.sources)[:40],
        )
    console.print(table)
    return len(rows)


@data_app.command("ls")
def data_ls(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the partitions as JSON (times in ns and ISO).")
    ] = False,
) -> None:
    """What is in the lake: symbol, kind, days, rows, first/last timestamp, largest gap."""
    lake = lake_of(load_config())
    if not as_json:
        print_lake_summary(lake)
        return
    partitions = [
        {
            **dataclasses.asdict(row),
            "sources": list(row.sources),
            "first": _iso(row.first_ts_ns),
            "last": _iso(row.last_ts_ns),
        }
        for row in lake.summary()
    ]
    print(json.dumps({"lake": str(lake.root), "partitions": partitions}, indent=2))


@app.command("features")
def features_cmd(
    symbols: Symbols,
    start: StartDay,
    end: EndDay,
    feature_set: Annotated[
        FeatureSetName | None,
        typer.Option(
            "--set",
            help="features_v1 (ticks: quotes + trades) or bars_v1 (1-minute klines); "
            "default: regime.feature_set (features_v1).",
        ),
    ] = None,
    lookback_days: Annotated[
        int, typer.Option(help="Days before --start read to warm the rolling windows up (0-7).")
    ] = 1,
) -> None:
    """Compute features for a date range and write them to the lake with their descriptor."""
    from trading.data.inputs import check_range, parse_day, parse_symbols
    from trading.settings import configured_feature_set

    config = load_config()
    names = parse_symbols(config, symbols)
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    check_range(first, last)
    if not 0 <= lookback_days <= 7:
        raise InputError(f"--lookback-days must be between 0 and 7, got {lookback_days}")
    fs = configured_feature_set(config, feature_set)
    _write_features(config, names, first, last, fs, lookback_days)


def _write_features(
    config: AppConfig,
    names: list[str],
    first: dt.date,
    last: dt.date,
    fs: FeatureSet,
    lookback_days: int = 1,
) -> int:
    from trading.features.store import compute_range, write_features

    lake = lake_of(config)
    venue = config.instruments.venue
    console.print(f"Feature set {fs.version}: {len(fs.columns)} columns")
    table = Table(title="Features written")
    for column in ("symbol", "input rows", "grid rows", "ready rows", "days", "skipped", "s"):
        table.add_column(column, justify="left" if column == "symbol" else "right")
    total = 0
    for name in names:
        began = time.perf_counter()
        result = compute_range(lake, venue, name, first, last, fs, lookback_days)
        written = write_features(lake, venue, name, result)
        elapsed = time.perf_counter() - began
        total += result.table.num_rows
        table.add_row(
            name,
            f"{result.input_rows:,}",
            f"{result.emitted:,}",
            f"{result.table.num_rows:,}",
            str(len(written)),
            f"{result.skipped:,}",
            f"{elapsed:.1f}",
        )
    console.print(table)
    warmup = fs.params.get("standardize_min_s", fs.params.get("standardize_min"))
    unit = "s" if "standardize_min_s" in fs.params else "bars"
    console.print(
        f"{total:,} feature rows. Rows in the warm-up (first {warmup} {unit} of each "
        "continuous stretch, plus the rolling windows) are not written."
    )
    return total


@app.command("validate")
def validate_cmd(
    symbols: Symbols,
    start: StartDay,
    end: EndDay,
    kinds: Annotated[
        str,
        typer.Option(
            help="Comma-separated: quotes, trades, bars, features (the files of the "
            "configured regime.feature_set: features_v1 or bars_v1); auto: the kinds the "
            "lake holds for these symbols and days (quotes and trades together; features "
            "where a file exists)."
        ),
    ] = "auto",
    features: Annotated[
        bool | None,
        typer.Option(
            "--features/--no-features",
            help="Require feature files for every day / skip features "
            "(default: validate features only where files exist).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for the issue CSV (default <home>/quality/runs/<time>)."),
    ] = None,
    all_checks: Annotated[
        bool, typer.Option("--all-checks", help="List passed checks too.")
    ] = False,
) -> None:
    """Run the data-quality gate on lake files; exit 1 when a blocking check fails or
    nothing matches the symbols, days and kinds."""
    from trading.data.inputs import check_range, parse_day, parse_symbols
    from trading.quality.gate import parse_kinds, run_gate

    config = load_config()
    names = parse_symbols(config, symbols)
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    check_range(first, last)
    kind_list: list[str] | None = None  # auto: per symbol, what the lake holds
    if kinds.strip().lower() != "auto":
        kind_list = list(parse_kinds(kinds))
        if features is False and "features" in kind_list:
            kind_list.remove("features")
        if features is True and "features" not in kind_list:
            kind_list.append("features")
        if not kind_list:
            raise InputError(
                "nothing to validate: --no-features removed the only kind; name another "
                "with --kinds (quotes, trades, bars) or drop --no-features"
            )
    began = time.perf_counter()
    result = run_gate(
        config,
        lake_of(config),
        names,
        first,
        last,
        kinds=kind_list,
        out_dir=out,
        require_features=bool(features),
        skip_features=features is False,
    )
    _print_gate(result, time.perf_counter() - began, all_checks)
    if not result.passed:
        raise typer.Exit(1)


def _print_gate(result: GateResult, elapsed: float, all_checks: bool = False) -> None:
    verdict = "[bold green]passed[/]" if result.passed else "[bold red]BLOCKED[/]"
    table = Table(title=f"Data-quality gate: {verdict} ({elapsed:.1f} s)")
    for column in ("symbol", "kind", "day", "check", "severity", "failed rows", "status"):
        table.add_column(column, justify="right" if column == "failed rows" else "left")
    styles = {"FAIL": "bold red", "WARN": "yellow", "pass": "green"}
    for row in result.summary_rows(include_passed=all_checks):
        status = row["status"]
        table.add_row(
            row["symbol"],
            row["kind"],
            row["day"],
            row["check"],
            row["severity"],
            f"{row['failed_rows']:,}",
            f"[{styles[status]}]{status}[/]",
        )
    console.print(table)
    for line in result.skipped:
        console.print(f"skipped: {line}", highlight=False)
    for line in result.warnings:
        console.print(f"[yellow]warn:[/] {line}", highlight=False)
    for line in result.blocking:
        console.print(f"[bold red]block:[/] {line}", highlight=False)
    console.print(f"Issues ({len(result.issues):,} rows): {result.issues_csv}", highlight=False)
    console.print(f"Data Docs: {result.data_docs}", highlight=False)


@quality_app.command("export")
def quality_export_cmd(
    to: Annotated[
        Path | None,
        typer.Option("--to", help="GX project root (default: expectations/ of the checkout)."),
    ] = None,
) -> None:
    """Regenerate the committed GX project (suites from the default settings)."""
    from trading.features.descriptor import features_v1
    from trading.quality.suites import export_project
    from trading.settings import PROJECT_ROOT, QualitySettings

    target = to or PROJECT_ROOT / "expectations"
    written = export_project(target, QualitySettings(), features_v1())
    for path in written:
        console.print(f"wrote {path}", highlight=False)
