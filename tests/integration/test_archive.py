"""trading.data.archive against a real HTTP server on 127.0.0.1 laid out like
data.binance.vision: zips plus .CHECKSUM files, Range support, and connection cuts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.archive_site import ArchiveSite, archive_site
from trading.data.archive import archive_files, download_verified, ingest_archive
from trading.data.lake import Lake
from trading.errors import ChecksumMismatchError, InputError, SourceError
from trading.settings import AppConfig, ArchiveSettings, load_settings

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
JAN1_2024_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
JAN2_2025_US = 1_735_776_000_000_000  # 2025-01-02T00:00:00Z in microseconds
DAILY = "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-{day}.zip"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ArchiveSite]:
    with archive_site(tmp_path / "site") as state:
        yield state


@pytest.fixture
def config(tmp_path: Path, site: ArchiveSite) -> AppConfig:
    loaded = load_settings()
    archive = ArchiveSettings(base_url=site.url, timeout_s=5.0, max_attempts=3, backoff_s=0.01)
    settings = loaded.settings.model_copy(update={"home": tmp_path / "home", "archive": archive})
    return loaded.model_copy(update={"settings": settings})


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def agg_csv(rows: list[tuple[int, float, float, int, bool]]) -> str:
    """(id, price, qty, transact_time, is_buyer_maker) -> spot aggTrades CSV, no header."""
    return "".join(
        f"{i},{price:.2f},{qty:.8f},{i * 10},{i * 10 + 2},{ts},{maker},True\n"
        for i, price, qty, ts, maker in rows
    )


def cached_files(config: AppConfig) -> list[str]:
    cache = config.home / "cache" / "archive"
    return sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_good_daily_file_lands_once_and_is_cached(
    site: ArchiveSite, config: AppConfig, lake: Lake
) -> None:
    relpath = DAILY.format(day="2024-01-01")
    rows = [
        (1, 42000.10, 0.5, JAN1_2024_MS + 1_000, True),
        (2, 42001.25, 0.25, JAN1_2024_MS + 2_000, False),
        (3, 41999.99, 1.0, JAN1_2024_MS + DAY_MS - 1, True),
    ]
    site.publish(relpath, agg_csv(rows))
    day = dt.date(2024, 1, 1)

    written = ingest_archive(config, lake, ["btcusdt"], day, day, "aggTrades")

    assert [(w.venue, w.symbol, w.kind, w.day, w.rows) for w in written] == [
        ("BINANCE", "BTCUSDT", "trades", day, 3)
    ]
    table = lake.read("BINANCE", "BTCUSDT", "trades")
    assert table.num_rows == 3
    assert table.column("trade_id").to_pylist() == [1, 2, 3]
    assert table.column("price").to_pylist() == [42000.10, 42001.25, 41999.99]
    assert table.column("qty").to_pylist() == [0.5, 0.25, 1.0]
    assert table.column("aggressor_side").to_pylist() == [-1, 1, -1]
    assert table.column("ts_ns").to_pylist()[0] == (JAN1_2024_MS + 1_000) * 1_000_000
    assert site.hits(relpath) == [None]
    assert len(site.hits(relpath + ".CHECKSUM")) == 1

    again = ingest_archive(config, lake, ["BTCUSDT"], day, day, "aggTrades")

    assert [w.rows for w in again] == [3]
    assert lake.read("BINANCE", "BTCUSDT", "trades").num_rows == 3
    assert site.hits(relpath) == [None]  # served from the verified cache
    assert len(site.hits(relpath + ".CHECKSUM")) == 1
    assert cached_files(config) == [
        "BTCUSDT-aggTrades-2024-01-01.zip",
        "BTCUSDT-aggTrades-2024-01-01.zip.CHECKSUM",
    ]


def test_checksum_mismatch_writes_nothing_and_keeps_no_zip(
    site: ArchiveSite, config: AppConfig, lake: Lake
) -> None:
    relpath = DAILY.format(day="2024-01-01")
    site.publish(relpath, agg_csv([(1, 42000.0, 0.1, JAN1_2024_MS, False)]), checksum="ab" * 32)
    day = dt.date(2024, 1, 1)

    with pytest.raises(ChecksumMismatchError) as excinfo:
        ingest_archive(config, lake, ["BTCUSDT"], day, day, "aggTrades")

    message = str(excinfo.value)
    assert "BTCUSDT-aggTrades-2024-01-01.zip" in message
    assert "checksum" in message.lower()
    assert "ab" * 32 in message
    assert "\n" not in message
    assert not lake.root.exists() or not any(p.is_file() for p in lake.root.rglob("*"))
    assert cached_files(config) == []


def test_cut_connection_resumes_with_range(
    site: ArchiveSite, config: AppConfig, lake: Lake
) -> None:
    relpath = DAILY.format(day="2024-01-01")
    rows = [
        (i, 40000 + (i * 7919 % 1000) / 100, (i % 13 + 1) / 1000, JAN1_2024_MS + i * 17, i % 3 == 0)
        for i in range(1, 20_001)
    ]
    data = site.publish(relpath, agg_csv(rows))
    assert len(data) > 100_000
    site.cuts["/" + relpath] = 1
    day = dt.date(2024, 1, 1)

    reports: list[tuple[str, int, int | None]] = []
    written = ingest_archive(
        config, lake, ["BTCUSDT"], day, day, "aggTrades", progress=lambda *r: reports.append(r)
    )
    # progress follows the download across the cut: it ends at the whole file
    assert reports[-1] == (relpath.rsplit("/", 1)[-1], len(data), len(data))
    assert [done for _, done, _ in reports] == sorted(done for _, done, _ in reports)

    sent = site.sent_before_cut["/" + relpath]
    assert sent == [len(data) // 2]
    assert site.hits(relpath) == [None, f"bytes={sent[0]}-"]
    assert [w.rows for w in written] == [20_000]
    table = lake.read("BINANCE", "BTCUSDT", "trades")
    assert table.column("trade_id").to_pylist() == list(range(1, 20_001))
    assert table.column("aggressor_side").to_pylist()[:3] == [1, 1, -1]
    cached = config.home / "cache" / "archive" / relpath
    assert cached.read_bytes() == data


def test_cuts_beyond_max_attempts_fail_then_next_run_resumes(
    site: ArchiveSite, config: AppConfig, lake: Lake
) -> None:
    relpath = DAILY.format(day="2024-01-01")
    rows = [(i, 42000.0 + i, 0.01, JAN1_2024_MS + i, False) for i in range(1, 5_001)]
    data = site.publish(relpath, agg_csv(rows))
    site.cuts["/" + relpath] = 3  # max_attempts is 3
    day = dt.date(2024, 1, 1)

    with pytest.raises(SourceError, match="gave up after 3 attempt"):
        ingest_archive(config, lake, ["BTCUSDT"], day, day, "aggTrades")
    assert not lake.root.exists()
    part = config.home / "cache" / "archive" / (relpath + ".part")
    on_disk = part.stat().st_size
    assert 0 < on_disk < len(data)

    written = ingest_archive(config, lake, ["BTCUSDT"], day, day, "aggTrades")

    assert site.hits(relpath)[-1] == f"bytes={on_disk}-"
    assert [w.rows for w in written] == [5_000]
    assert not part.exists()


def test_missing_archive_is_a_source_error_and_nothing_lands(
    site: ArchiveSite, config: AppConfig, lake: Lake
) -> None:
    site.publish(DAILY.format(day="2024-01-01"), agg_csv([(1, 1.0, 1.0, JAN1_2024_MS, True)]))
    missing = f"{site.url}/{DAILY.format(day='2024-01-02')}"

    with pytest.raises(SourceError) as excinfo:
        ingest_archive(
            config, lake, ["BTCUSDT"], dt.date(2024, 1, 1), dt.date(2024, 1, 2), "aggTrades"
        )

    message = str(excinfo.value)
    assert missing in message
    assert "does not exist" in message and "2024-01-02" in message and "BTCUSDT" in message
    assert len(site.hits(DAILY.format(day="2024-01-02"))) == 1  # a 404 is not retried
    assert not lake.root.exists()  # the good first day was not written either


def test_spot_book_ticker_is_an_input_error(config: AppConfig, lake: Lake) -> None:
    with pytest.raises(InputError, match="--market um"):
        ingest_archive(
            config, lake, ["BTCUSDT"], dt.date(2024, 1, 1), dt.date(2024, 1, 1), "bookTicker"
        )


def test_monthly_archive_is_filtered_to_requested_days(
    site: ArchiveSite, config: AppConfig, lake: Lake
) -> None:
    relpath = "data/spot/monthly/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01.zip"
    rows = [
        (1, 100.0, 1.0, JAN1_2024_MS + 5, False),  # Jan 1
        (2, 101.0, 1.0, JAN1_2024_MS + DAY_MS, True),  # Jan 2 00:00:00.000
        (3, 102.0, 1.0, JAN1_2024_MS + DAY_MS + 60_000, False),  # Jan 2
        (4, 103.0, 1.0, JAN1_2024_MS + 3 * DAY_MS - 1, True),  # Jan 3 23:59:59.999
        (5, 104.0, 1.0, JAN1_2024_MS + 3 * DAY_MS, False),  # Jan 4
        (6, 130.0, 1.0, JAN1_2024_MS + 30 * DAY_MS, False),  # Jan 31
    ]
    site.publish(relpath, agg_csv(rows))

    written = ingest_archive(
        config,
        lake,
        ["BTCUSDT"],
        dt.date(2024, 1, 2),
        dt.date(2024, 1, 3),
        "aggTrades",
        period="monthly",
    )

    assert [(w.day, w.rows) for w in written] == [
        (dt.date(2024, 1, 2), 2),
        (dt.date(2024, 1, 3), 1),
    ]
    assert lake.days("BINANCE", "BTCUSDT", "trades") == [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    table = lake.read("BINANCE", "BTCUSDT", "trades")
    assert table.column("trade_id").to_pylist() == [2, 3, 4]
    assert table.column("price").to_pylist() == [101.0, 102.0, 103.0]
    assert site.hits(relpath) == [None]


def test_microsecond_timestamps_of_2025_files(
    site: ArchiveSite, config: AppConfig, lake: Lake
) -> None:
    relpath = DAILY.format(day="2025-01-02")
    rows = [
        (7, 97000.5, 0.002, JAN2_2025_US + 123_456, True),
        (8, 97001.0, 0.003, JAN2_2025_US + 86_399_999_999, False),  # 23:59:59.999999
    ]
    site.publish(relpath, agg_csv(rows))
    day = dt.date(2025, 1, 2)

    written = ingest_archive(config, lake, ["BTCUSDT"], day, day, "aggTrades")

    assert [(w.day, w.rows) for w in written] == [(day, 2)]
    table = lake.read("BINANCE", "BTCUSDT", "trades")
    assert table.column("ts_ns").to_pylist() == [
        1_735_776_000_123_456_000,
        1_735_862_399_999_999_000,
    ]
    assert table.column("aggressor_side").to_pylist() == [-1, 1]


def test_download_verified_restarts_when_range_is_ignored(
    tmp_path: Path, site: ArchiveSite, config: AppConfig
) -> None:
    import httpx

    relpath = DAILY.format(day="2024-01-01")
    data = site.publish(relpath, agg_csv([(1, 1.0, 1.0, JAN1_2024_MS, True)] * 50))
    (file,) = archive_files(
        site.url, "spot", "aggTrades", "BTCUSDT", dt.date(2024, 1, 1), dt.date(2024, 1, 1), "daily"
    )
    cache = tmp_path / "cache"
    part = cache / (relpath + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:10])
    site.ignore_range.add("/" + relpath)
    progress: list[int] = []
    totals: list[int | None] = []

    with httpx.Client() as client:
        path = download_verified(
            client, file, cache, config.settings.archive, progress.append, totals.append
        )

    assert site.hits(relpath) == ["bytes=10-"]
    assert path.read_bytes() == data
    assert totals == [len(data)]
    assert progress[:2] == [10, -10]  # the stale partial file was reported, then dropped
    assert sum(progress) == len(data)


def test_archive_file_layout() -> None:
    base = "https://data.binance.vision/"
    (daily,) = archive_files(
        base, "spot", "aggTrades", "btcusdt", dt.date(2024, 1, 1), dt.date(2024, 1, 1), "daily"
    )
    assert daily.url == (
        "https://data.binance.vision/data/spot/daily/aggTrades/BTCUSDT/"
        "BTCUSDT-aggTrades-2024-01-01.zip"
    )
    assert daily.checksum_url == daily.url + ".CHECKSUM"
    assert daily.relpath == "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-01.zip"

    monthly = archive_files(
        base, "spot", "klines", "BTCUSDT", dt.date(2024, 1, 15), dt.date(2024, 3, 2), "monthly"
    )
    assert [f.relpath for f in monthly] == [
        f"data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-{m:02d}.zip" for m in (1, 2, 3)
    ]
    assert [(f.first_day, f.last_day) for f in monthly] == [
        (dt.date(2024, 1, 1), dt.date(2024, 1, 31)),
        (dt.date(2024, 2, 1), dt.date(2024, 2, 29)),
        (dt.date(2024, 3, 1), dt.date(2024, 3, 31)),
    ]

    book = archive_files(
        base, "um", "bookTicker", "ETHUSDT", dt.date(2024, 2, 28), dt.date(2024, 3, 1), "daily"
    )
    assert [f.relpath for f in book] == [
        f"data/futures/um/daily/bookTicker/ETHUSDT/ETHUSDT-bookTicker-{d}.zip"
        for d in ("2024-02-28", "2024-02-29", "2024-03-01")
    ]
    with pytest.raises(InputError, match="--market um"):
        archive_files(
            base, "spot", "bookTicker", "BTCUSDT", dt.date(2024, 1, 1), dt.date(2024, 1, 1), "daily"
        )


def test_um_book_ticker_lands_as_quotes(site: ArchiveSite, config: AppConfig, lake: Lake) -> None:
    relpath = "data/futures/um/daily/bookTicker/BTCUSDT/BTCUSDT-bookTicker-2024-01-01.zip"
    header = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n"
    body = f"11,42000.1,1.5,42000.2,0.5,{JAN1_2024_MS + 7},{JAN1_2024_MS + 9}\n"
    site.publish(relpath, header + body)
    day = dt.date(2024, 1, 1)

    written = ingest_archive(config, lake, ["BTCUSDT"], day, day, "bookTicker", market="um")

    assert [(w.kind, w.rows) for w in written] == [("quotes", 1)]
    table = lake.read("BINANCE", "BTCUSDT", "quotes")
    assert table.to_pylist() == [
        {
            "ts_ns": (JAN1_2024_MS + 7) * 1_000_000,
            "bid": 42000.1,
            "ask": 42000.2,
            "bid_size": 1.5,
            "ask_size": 0.5,
        }
    ]
