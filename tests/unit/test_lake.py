from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import lake_files
from trading.data.lake import NS_PER_DAY, Lake, day_start_ns
from trading.data.schemas import SCHEMAS
from trading.errors import DataFormatError

DAY = dt.date(2024, 3, 1)
T0 = day_start_ns(DAY)


def trades(ids: list[int], offsets_s: list[float]) -> pa.Table:
    return pa.table(
        {
            "ts_ns": [T0 + int(o * 1e9) for o in offsets_s],
            "trade_id": ids,
            "price": [100.0 + i for i in ids],
            "qty": [0.5] * len(ids),
            "aggressor_side": pa.array([1 if i % 2 else -1 for i in ids], pa.int8()),
        }
    )


def test_layout_is_partitioned_by_venue_symbol_kind_date(lake: Lake) -> None:
    lake.write("BINANCE", "BTCUSDT", "trades", trades([1, 2], [1, 2]), source="t")
    path = lake.path("BINANCE", "BTCUSDT", "trades", DAY)
    assert path.relative_to(lake.root).parts == (
        "venue=BINANCE",
        "symbol=BTCUSDT",
        "kind=trades",
        "date=2024-03-01",
        "data.parquet",
    )
    assert pq.read_schema(path).remove_metadata() == SCHEMAS["trades"]


def test_rows_are_split_into_utc_days_and_sorted(lake: Lake) -> None:
    table = trades([3, 1, 2], [86_400 + 5, 10, 20])
    written = lake.write("BINANCE", "BTCUSDT", "trades", table, source="t")
    assert [(w.day, w.rows) for w in written] == [(DAY, 2), (DAY + dt.timedelta(days=1), 1)]
    assert lake.read("BINANCE", "BTCUSDT", "trades").column("trade_id").to_pylist() == [1, 2, 3]
    assert lake.read("BINANCE", "BTCUSDT", "trades", start=DAY, end=DAY).num_rows == 2


def test_reingesting_a_day_replaces_it(lake: Lake) -> None:
    lake.write("BINANCE", "BTCUSDT", "trades", trades([1, 2, 3], [1, 2, 3]), source="a")
    lake.write("BINANCE", "BTCUSDT", "trades", trades([1, 2, 3], [1, 2, 3]), source="a")
    assert lake.read("BINANCE", "BTCUSDT", "trades").num_rows == 3
    lake.write("BINANCE", "BTCUSDT", "trades", trades([7], [9]), source="b")
    assert lake.read("BINANCE", "BTCUSDT", "trades").column("trade_id").to_pylist() == [7]


def test_merge_unions_without_duplicates(lake: Lake) -> None:
    lake.write("BINANCE", "BTCUSDT", "trades", trades([1, 2, 3], [1, 2, 3]), source="a")
    lake.write("BINANCE", "BTCUSDT", "trades", trades([3, 4], [3, 4]), source="a", merge=True)
    assert lake.read("BINANCE", "BTCUSDT", "trades").column("trade_id").to_pylist() == [1, 2, 3, 4]


def test_quotes_sharing_a_timestamp_are_kept_identical_ones_dropped(lake: Lake) -> None:
    quotes = pa.table(
        {
            "ts_ns": [T0, T0, T0],
            "bid": [1.0, 1.1, 1.1],
            "ask": [2.0, 2.0, 2.0],
            "bid_size": [1.0, 1.0, 1.0],
            "ask_size": [1.0, 1.0, 1.0],
        }
    )
    lake.write("BINANCE", "BTCUSDT", "quotes", quotes, source="q")
    assert lake.read("BINANCE", "BTCUSDT", "quotes").column("bid").to_pylist() == [1.0, 1.1]


def test_failed_batch_leaves_lake_untouched(lake: Lake) -> None:
    lake.write("BINANCE", "BTCUSDT", "trades", trades([1], [1]), source="old")
    before = {p: p.read_bytes() for p in lake_files(lake.root)}
    with pytest.raises(RuntimeError), lake.batch() as batch:
        batch.put("BINANCE", "BTCUSDT", "trades", trades([5, 6], [1, 2]), source="new")
        batch.put("BINANCE", "ETHUSDT", "trades", trades([5], [1]), source="new")
        raise RuntimeError("crash between files")
    assert {p: p.read_bytes() for p in lake_files(lake.root)} == before


def test_schema_mismatch_is_rejected_before_writing(lake: Lake) -> None:
    bad = trades([1], [1]).drop_columns(["qty"])
    with pytest.raises(DataFormatError, match="missing column"):
        lake.write("BINANCE", "BTCUSDT", "trades", bad, source="x")
    assert lake_files(lake.root) == []


def test_summary_reports_rows_days_and_largest_gap(lake: Lake) -> None:
    lake.write("BINANCE", "BTCUSDT", "trades", trades([1, 2, 3], [0, 1, 86_400 + 100]), source="s")
    (row,) = lake.summary()
    assert (row.symbol, row.kind, row.days, row.rows) == ("BTCUSDT", "trades", 2, 3)
    assert row.first_ts_ns == T0 and row.last_ts_ns == T0 + (86_400 + 100) * 10**9
    assert row.largest_gap_ns == (86_400 + 99) * 10**9
    assert row.sources == ("s",)
    assert NS_PER_DAY == 86_400 * 10**9


def test_two_tables_for_one_day_in_a_batch_are_merged(lake: Lake) -> None:
    """Issue 20: each put staged its own temp file for the same day, so the last one won
    (1,440 rows reported, 720 in the lake)."""
    morning = trades(list(range(720)), [60 * i for i in range(720)])
    afternoon = trades(list(range(720, 1440)), [60 * i for i in range(720, 1440)])
    with lake.batch() as batch:
        batch.put("BINANCE", "BTCUSDT", "trades", afternoon, source="file:b.csv")
        batch.put("BINANCE", "BTCUSDT", "trades", morning, source="file:a.csv")
    assert [(w.day, w.rows, w.duplicates_dropped, w.reordered) for w in batch.written] == [
        (DAY, 1440, 0, 0)  # one file, reported once; two sorted inputs are no reordering
    ]
    held = lake.read("BINANCE", "BTCUSDT", "trades")
    assert held.num_rows == sum(w.rows for w in batch.written) == 1440
    assert held.column("trade_id").to_pylist() == list(range(1440))
    assert [p.name for p in lake_files(lake.root)] == ["data.parquet"]  # no temp file left
    (row,) = lake.summary()
    assert row.sources == ("file:b.csv, file:a.csv",)


def test_overlapping_tables_in_a_batch_count_the_overlap_as_dropped(lake: Lake) -> None:
    first = trades([2, 1, 3], [2, 1, 3])  # one row out of order
    second = trades([3, 4], [3, 4]).set_column(2, "price", pa.array([999.0, 4.0]))
    with lake.batch() as batch:
        batch.put("BINANCE", "BTCUSDT", "trades", trades([7, 7], [9, 9]), source="x")
        batch.put("BINANCE", "BTCUSDT", "trades", first, source="a")
        batch.put("BINANCE", "BTCUSDT", "trades", second, source="b")
    (written,) = batch.written
    # 7 rows in: trade 7 twice in one table, trade 3 in two tables; 5 rows held, and
    # the one row out of order within its table
    assert (written.rows, written.duplicates_dropped, written.reordered) == (5, 2, 1)
    held = lake.read("BINANCE", "BTCUSDT", "trades")
    assert held.column("trade_id").to_pylist() == [1, 2, 3, 4, 7]
    assert held.column("price").to_pylist()[2] == 999.0  # the later table's row won
