"""`hmmtrader bench ingest`: the project's aggTrades CSV reader vs plain pandas.read_csv."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console
from rich.table import Table

from hmmtrader.bench import BenchResult, best_of


def write_agg_trades_csv(path: Path, rows: int, seed: int = 1) -> None:
    """A spot aggTrades file as data.binance.vision ships it (no header, 8 columns, ms)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, rows + 1, dtype=np.int64) + 3_000_000_000
    price = np.round(60_000 + np.cumsum(rng.normal(0, 2.0, rows)), 2)
    qty = np.round(rng.lognormal(-5, 1.2, rows), 5) + 0.00001
    first = np.cumsum(rng.integers(1, 4, rows)) + 4_000_000_000
    times = 1_704_067_200_000 + np.sort(rng.integers(0, 86_400_000, rows))
    maker = np.where(rng.random(rows) < 0.5, "True", "False")
    table = pa.table(
        {
            "a": ids,
            "p": price,
            "q": qty,
            "f": first,
            "l": first + rng.integers(0, 3, rows),
            "T": times,
            "m": maker,
            "M": np.full(rows, "True"),
        }
    )
    pacsv.write_csv(
        table, path, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none")
    )


def bench_ingest(rows: int, repeats: int, console: Console) -> BenchResult:
    """Project reader (CSV -> lake-schema table) vs plain pandas.read_csv of the same file."""
    import pandas as pd

    from trading.data.binance_formats import read_binance_file

    with tempfile.TemporaryDirectory(prefix="hmmtrader-bench-") as tmp:
        path = Path(tmp) / "BTCUSDT-aggTrades-2024-01-01.csv"
        console.print(f"writing {rows:,} aggTrades rows to {path} ...")
        write_agg_trades_csv(path, rows)
        size_mb = path.stat().st_size / 1e6
        ours_s, ours_rows = best_of(repeats, lambda: read_binance_file(path)[1].num_rows)
        pandas_s, pandas_rows = best_of(repeats, lambda: len(pd.read_csv(path, header=None)))
    if ours_rows != rows or pandas_rows != rows:
        raise RuntimeError(
            f"row count mismatch: ours {ours_rows}, pandas {pandas_rows}, file {rows}"
        )
    table = Table(title=f"bench ingest: {rows:,} rows, {size_mb:.0f} MB, best of {repeats}")
    for column in ("reader", "seconds", "rows/s"):
        table.add_column(column)
    table.add_row(
        "project (polars, typed, to lake schema)", f"{ours_s:.3f}", f"{rows / ours_s:,.0f}"
    )
    table.add_row("baseline: pandas.read_csv", f"{pandas_s:.3f}", f"{rows / pandas_s:,.0f}")
    console.print(table)
    value, baseline = rows / ours_s, rows / pandas_s
    return BenchResult(
        "ingest_aggtrades_csv", round(value), "rows/s", round(baseline), round(value / baseline, 2)
    )
