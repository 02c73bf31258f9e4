"""`hmmtrader ingest archive|rest|files|synthetic`: market data into the lake."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from hmmtrader.cli.common import (
    EndDay,
    StartDay,
    Symbols,
    console,
    lake_of,
    load_config,
    progress_callback,
)

if TYPE_CHECKING:
    from trading.data.lake import Written

app = typer.Typer(help="Bring market data into the lake.", no_args_is_help=True)


def report_written(written: list[Written], elapsed_s: float) -> None:
    """The files written; where the lake dropped repeated rows or sorted rows into time
    order, two more columns and one warning line per file say how many."""
    fixed = [item for item in written if item.fixes]
    table = Table(title=f"Written to the lake in {elapsed_s:.1f} s")
    columns = ["symbol", "kind", "date", "rows"] + (["dropped", "reordered"] if fixed else [])
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("symbol", "kind", "date") else "right"
        )
    for item in written:
        cells = [item.symbol, item.kind, item.day.isoformat(), f"{item.rows:,}"]
        if fixed:
            cells += [f"{item.duplicates_dropped:,}", f"{item.reordered:,}"]
        table.add_row(*cells)
    console.print(table)
    total = sum(item.rows for item in written)
    console.print(f"{len(written)} file(s), {total:,} rows")
    for item in fixed:
        console.print(
            f"[yellow]warning:[/] {item.symbol} {item.kind} {item.day}: {item.fixes}",
            highlight=False,
        )


@app.command("archive")
def ingest_archive_cmd(
    symbols: Symbols,
    start: StartDay,
    end: EndDay,
    kind: Annotated[
        Literal["aggTrades", "bookTicker", "klines", "fundingRate"],
        typer.Option(help="klines are 1m; fundingRate is um, monthly."),
    ] = "aggTrades",
    market: Annotated[Literal["spot", "um"], typer.Option(help="um: USD-M futures.")] = "spot",
    period: Annotated[Literal["daily", "monthly"], typer.Option(help="Archive period.")] = "daily",
    base_url: Annotated[
        str | None, typer.Option(help="Archive site (default from settings).")
    ] = None,
) -> None:
    """Download data.binance.vision archives, verify their SHA-256 and load them."""
    from trading.data.archive import ingest_archive
    from trading.data.inputs import parse_day

    config = load_config()
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    began = time.perf_counter()
    with progress_callback("bytes") as progress:
        written = ingest_archive(
            config,
            lake_of(config),
            symbols.split(","),
            first,
            last,
            kind,
            market=market,
            period=period,
            base_url=base_url,
            progress=progress,
        )
    report_written(written, time.perf_counter() - began)


@app.command("rest")
def ingest_rest_cmd(
    symbols: Symbols,
    minutes: Annotated[int, typer.Option(help="How many recent minutes (1-1440).")] = 60,
    base_url: Annotated[str | None, typer.Option(help="REST API (default from settings).")] = None,
) -> None:
    """Recent aggTrades, 1m klines and a book-ticker snapshot from Binance's REST API."""
    from trading.data.rest import ingest_rest

    config = load_config()
    began = time.perf_counter()
    written = ingest_rest(config, lake_of(config), symbols.split(","), minutes, base_url=base_url)
    report_written(written, time.perf_counter() - began)


@app.command("files")
def ingest_files_cmd(
    paths: Annotated[list[Path], typer.Argument(help="CSV, zip or Parquet files.")],
    symbol: Annotated[str, typer.Option(help="The symbol the files hold, e.g. BTCUSDT.")],
    bar_time: Annotated[
        str,
        typer.Option(
            help="OHLCV files: whether a row's time is its bar's open or its close (close "
            "times are moved back one bar: the lake holds open times)."
        ),
    ] = "open",
    bar_seconds: Annotated[
        int,
        typer.Option(
            help="OHLCV files: the bar length in seconds. The lake holds 1-minute bars, so "
            "any other length is refused: resample to 1 minute first."
        ),
    ] = 60,
) -> None:
    """Load local files into the lake, all or nothing.

    Binance archives (CSV or zip): aggTrades, bookTicker, fundingRate,
    klines (spot or USD-M, with or without header, times in ms or us).
    Generic OHLCV bars (CSV, zip or Parquet): a header with a time column
    named datetime, timestamp, open_time, time or date (ISO date-times, UTC
    unless they carry an offset, or epoch s/ms/us/ns told apart by size)
    and open, high, low, close, volume; quote_volume, n_trades and
    taker_buy_volume are optional (0 when absent).
    Also quote/trade Parquet and Tardis book_snapshot_5 CSV.

    Times before 2009 or in the future are refused with their line; so is a
    file whose name names another symbol (ADABTC-1m-2024-01-01.zip). Files
    holding the same day are merged; repeated times are counted as dropped.
    """
    from trading.data.files import ingest_files

    config = load_config()
    began = time.perf_counter()
    written = ingest_files(
        config, lake_of(config), paths, symbol, bar_time=bar_time, bar_seconds=bar_seconds
    )
    report_written(written, time.perf_counter() - began)


@app.command("synthetic")
def ingest_synthetic_cmd(
    symbols: Symbols = "BTCUSDT,ETHUSDT",
    start: StartDay = "2024-01-01",
    days: Annotated[int, typer.Option(help="Number of UTC days (1-366).")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same market.")] = 7,
    day_seconds: Annotated[
        int | None,
        typer.Option(
            min=3600,
            max=86_400,
            help="Length of each day from midnight (default synthetic.day_seconds: 86400).",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace days the lake holds with another day length (refused without it); "
            "their feature files are deleted.",
        ),
    ] = False,
) -> None:
    """Generate a regime-switching market (quotes, trades, 1m bars, true regimes)."""
    from trading.data.inputs import parse_day
    from trading.data.synthetic import ingest_synthetic

    config = load_config()
    first = parse_day(start, "--start")
    began = time.perf_counter()
    notices: list[str] = []
    with progress_callback("items") as progress:
        written = ingest_synthetic(
            config,
            lake_of(config),
            symbols.split(","),
            first,
            days,
            seed,
            progress,
            day_seconds,
            overwrite=overwrite,
            notice=notices.append,
        )
    report_written(written, time.perf_counter() - began)
    for text in notices:
        console.print(text, highlight=False, soft_wrap=True)
    if notices:
        console.print("compute the features of those days again: hmmtrader features ...")
