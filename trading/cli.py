"""The `hmmtrader` command line. Heavy libraries are imported inside the commands."""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from trading.env import disable_telemetry
from trading.errors import HmmTraderError, InputError

if TYPE_CHECKING:
    from trading.data.lake import Lake, Written
    from trading.features.descriptor import FeatureSet
    from trading.quality.gate import GateResult
    from trading.settings import AppConfig

# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

app = typer.Typer(
    help="hmm-trader: regime-adaptive crypto trading with a model lifecycle.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(help="Bring market data into the lake.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect the lake.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks: each prints a JSON result as its last line.", no_args_is_help=True
)
quality_app = typer.Typer(
    help="Data-quality suites (Great Expectations) of the validate gate.", no_args_is_help=True
)
app.add_typer(ingest_app, name="ingest")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.add_typer(quality_app, name="quality")


class _State:
    debug = False
    config_dir: Path | None = None
    home: Path | None = None


def _config() -> AppConfig:
    from trading.settings import load_settings

    config = load_settings(_State.config_dir)
    if _State.home is not None:
        settings = config.settings.model_copy(update={"home": _State.home})
        config = config.model_copy(update={"settings": settings})
    return config


def _lake(config: AppConfig) -> Lake:
    from trading.data.lake import Lake
    from trading.paths import StatePaths

    return Lake(StatePaths(config.home).lake)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    config_dir: Annotated[
        Path | None, typer.Option(help="Directory with settings.yaml and symbols.yaml.")
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="State root (overrides HMMTRADER_HOME, default ./var).")
    ] = None,
) -> None:
    _State.debug, _State.config_dir, _State.home = debug, config_dir, home


Symbols = Annotated[str, typer.Option("--symbols", help="Comma-separated, e.g. BTCUSDT,ETHUSDT.")]
StartDay = Annotated[str, typer.Option("--start", help="First UTC day, YYYY-MM-DD.")]
EndDay = Annotated[str, typer.Option("--end", help="Last UTC day (inclusive), YYYY-MM-DD.")]


def _report_written(written: list[Written], elapsed_s: float) -> None:
    table = Table(title=f"Written to the lake in {elapsed_s:.1f} s")
    for column in ("symbol", "kind", "date", "rows"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for item in written:
        table.add_row(item.symbol, item.kind, item.day.isoformat(), f"{item.rows:,}")
    console.print(table)
    total = sum(item.rows for item in written)
    console.print(f"{len(written)} file(s), {total:,} rows")


@ingest_app.command("archive")
def ingest_archive_cmd(
    symbols: Symbols,
    start: StartDay,
    end: EndDay,
    kind: Annotated[
        str, typer.Option(help="aggTrades, bookTicker, klines (1m) or fundingRate (um, monthly).")
    ] = "aggTrades",
    market: Annotated[str, typer.Option(help="spot or um (USD-M futures).")] = "spot",
    period: Annotated[str, typer.Option(help="daily or monthly archives.")] = "daily",
    base_url: Annotated[
        str | None, typer.Option(help="Archive site (default from settings).")
    ] = None,
) -> None:
    """Download data.binance.vision archives, verify their SHA-256 and load them."""
    from trading.data.archive import ingest_archive
    from trading.data.inputs import parse_day

    config = _config()
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    began = time.perf_counter()
    written = ingest_archive(
        config,
        _lake(config),
        symbols.split(","),
        first,
        last,
        kind,
        market=market,
        period=period,
        base_url=base_url,
        show_progress=True,
    )
    _report_written(written, time.perf_counter() - began)


@ingest_app.command("rest")
def ingest_rest_cmd(
    symbols: Symbols,
    minutes: Annotated[int, typer.Option(help="How many recent minutes (1-1440).")] = 60,
    base_url: Annotated[str | None, typer.Option(help="REST API (default from settings).")] = None,
) -> None:
    """Recent aggTrades, 1m klines and a book-ticker snapshot from Binance's REST API."""
    from trading.data.rest import ingest_rest

    config = _config()
    began = time.perf_counter()
    written = ingest_rest(config, _lake(config), symbols.split(","), minutes, base_url=base_url)
    _report_written(written, time.perf_counter() - began)


@ingest_app.command("files")
def ingest_files_cmd(
    paths: Annotated[list[Path], typer.Argument(help="CSV, zip or Parquet files.")],
    symbol: Annotated[str, typer.Option(help="The symbol the files hold, e.g. BTCUSDT.")],
) -> None:
    """Load local files (Binance archive CSV/zip, quote/trade Parquet, Tardis snapshots)."""
    from trading.data.files import ingest_files

    config = _config()
    began = time.perf_counter()
    written = ingest_files(config, _lake(config), paths, symbol)
    _report_written(written, time.perf_counter() - began)


@ingest_app.command("synthetic")
def ingest_synthetic_cmd(
    symbols: Symbols = "BTCUSDT,ETHUSDT",
    start: StartDay = "2024-01-01",
    days: Annotated[int, typer.Option(help="Number of UTC days (1-366).")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same market.")] = 7,
) -> None:
    """Generate a regime-switching market (quotes, trades, 1m bars, true regimes)."""
    from trading.data.inputs import parse_day
    from trading.data.synthetic import ingest_synthetic

    config = _config()
    first = parse_day(start, "--start")
    began = time.perf_counter()
    written = ingest_synthetic(
        config, _lake(config), symbols.split(","), first, days, seed, show_progress=True
    )
    _report_written(written, time.perf_counter() - began)


def _fmt_ts(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


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
    for column in (
        "venue",
        "symbol",
        "kind",
        "days",
        "rows",
        "first",
        "last",
        "largest gap",
        "source",
    ):
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


@app.command("features")
def features_cmd(
    symbols: Symbols,
    start: StartDay,
    end: EndDay,
    feature_set: Annotated[
        str,
        typer.Option(
            "--set", help="features_v1 (ticks: quotes + trades) or bars_v1 (1-minute klines)."
        ),
    ] = "features_v1",
    lookback_days: Annotated[
        int, typer.Option(help="Days before --start read to warm the rolling windows up (0-7).")
    ] = 1,
) -> None:
    """Compute features for a date range and write them to the lake with their descriptor."""
    from trading.data.inputs import check_range, parse_day, parse_symbols
    from trading.features.descriptor import bars_v1, features_v1

    config = _config()
    names = parse_symbols(config, symbols)
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    check_range(first, last)
    sets = {
        "features_v1": lambda: features_v1(config.settings.features),
        "bars_v1": lambda: bars_v1(config.settings.bars),
    }
    if feature_set.lower() not in sets:
        raise InputError(f"--set must be one of {', '.join(sets)}, got {feature_set!r}")
    if not 0 <= lookback_days <= 7:
        raise InputError(f"--lookback-days must be between 0 and 7, got {lookback_days}")
    fs = sets[feature_set.lower()]()
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

    lake = _lake(config)
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
    console.print(
        f"{total:,} feature rows. Rows in the warm-up (first "
        f"{fs.params.get('standardize_min_s', fs.params.get('standardize_min'))} "
        f"{'s' if 'standardize_min_s' in fs.params else 'bars'} of each continuous stretch, "
        f"plus the rolling windows) are not written."
    )
    return total


@data_app.command("ls")
def data_ls() -> None:
    """What is in the lake: symbol, kind, days, rows, first/last timestamp, largest gap."""
    print_lake_summary(_lake(_config()))


# --- data-quality gate -------------------------------------------------------------------


@app.command("validate")
def validate_cmd(
    symbols: Symbols,
    start: StartDay,
    end: EndDay,
    kinds: Annotated[
        str, typer.Option(help="Comma-separated: quotes, trades, features.")
    ] = "quotes,trades,features",
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
    """Run the data-quality gate on lake files; exit 1 when a blocking check fails."""
    from trading.data.inputs import check_range, parse_day, parse_symbols
    from trading.quality.gate import parse_kinds, run_gate

    config = _config()
    names = parse_symbols(config, symbols)
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    check_range(first, last)
    kind_list = list(parse_kinds(kinds))
    if features is False and "features" in kind_list:
        kind_list.remove("features")
    if features is True and "features" not in kind_list:
        kind_list.append("features")
    if not kind_list:
        raise InputError("nothing to validate: --no-features removed the only kind")
    began = time.perf_counter()
    result = run_gate(
        config,
        _lake(config),
        names,
        first,
        last,
        kinds=kind_list,
        out_dir=out,
        require_features=bool(features),
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


@bench_app.command("ingest")
def bench_ingest_cmd(
    rows: Annotated[int, typer.Option(help="Rows in the generated aggTrades CSV.")] = 1_000_000,
    repeats: Annotated[int, typer.Option(help="Timed runs of each reader (best is kept).")] = 3,
) -> None:
    """Project CSV reader vs plain pandas.read_csv on an aggTrades file."""
    from trading.bench import bench_ingest

    result = bench_ingest(rows, repeats, console)
    print(result.to_json())


@bench_app.command("features")
def bench_features_cmd(
    days: Annotated[
        int, typer.Option(help="Synthetic BTCUSDT days (4 days: about 5.8M ticks).")
    ] = 4,
    repeats: Annotated[
        int, typer.Option(help="Timed runs of each implementation (best kept).")
    ] = 2,
    online_ticks: Annotated[int, typer.Option(help="Ticks fed to the online form.")] = 300_000,
) -> None:
    """FEATURES_V1 batch vs a pandas implementation; online cost per tick and grid step."""
    from trading.bench import bench_features

    if not 1 <= days <= 30:
        raise InputError(f"--days must be between 1 and 30, got {days}")
    if repeats < 1 or online_ticks < 1000:
        raise InputError("--repeats must be >= 1 and --online-ticks >= 1000")
    result = bench_features(_config(), days, repeats, online_ticks, console)
    print(result.to_json())


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; expected failures print one line and return 1."""
    disable_telemetry()
    try:
        result = app(args=argv, prog_name="hmmtrader", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.TyperException as exc:  # typer's (vendored click) usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            console.print(ctx.get_help())
            return 2
        where = ctx.command_path if ctx is not None else "hmmtrader"
        err_console.print(
            f"[bold red]error:[/] {exc.format_message()} (see: {where} --help)",
            highlight=False,
            soft_wrap=True,
        )
        return getattr(exc, "exit_code", 2)
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except HmmTraderError as exc:
        if _State.debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted: nothing was written for the unfinished step")
        return 130
    return 0


def main() -> None:
    sys.exit(run())


# the command modules register themselves on `app` (they import it from here)
from trading import cli_backtest, cli_models, cli_node  # noqa: E402,F401
