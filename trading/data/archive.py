"""Download data.binance.vision archives, verify their SHA-256 and load them into the lake.

Layout of the site: {base}/data/<spot|futures/um>/<daily|monthly>/<kind>/<SYMBOL>/
[<interval>/]<SYMBOL>-<kind|interval>-<YYYY-MM-DD|YYYY-MM>.zip, each with a sibling
<zip>.CHECKSUM holding "<sha256 hex>  <file name>". Downloads go to <cache>/<relpath>.part,
resume with a Range request after a cut, and are renamed to <cache>/<relpath> only once
the hash matches (the published CHECKSUM is kept next to it, so a cached zip is
re-hashed locally instead of downloaded again).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, cast

import httpx
import pyarrow.compute as pc

from trading.data.binance_formats import ARCHIVE_KINDS, read_zip_bytes
from trading.data.inputs import check_range, parse_symbols
from trading.data.lake import Lake, Written, day_start_ns
from trading.errors import ChecksumMismatchError, InputError, SourceError
from trading.paths import StatePaths
from trading.settings import AppConfig, ArchiveSettings

Market = Literal["spot", "um"]
ArchiveKind = Literal["aggTrades", "bookTicker", "klines", "fundingRate"]
Period = Literal["daily", "monthly"]
KLINE_INTERVAL = "1m"
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class ArchiveFile:
    """One archive zip: where it is and which UTC days it covers."""

    url: str
    checksum_url: str
    relpath: str  # path under {base}/, e.g. data/spot/daily/aggTrades/BTCUSDT/...zip
    first_day: date
    last_day: date

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]

    def describe(self) -> str:
        parts = self.relpath.split("/")
        kind, symbol = parts[-4], parts[-3]
        if kind == "klines":  # .../klines/SYMBOL/1m/file.zip
            kind, symbol = parts[-5], parts[-4]
        when = str(self.first_day) if self.first_day == self.last_day else f"{self.first_day:%Y-%m}"
        return f"{symbol} {kind} {when}"


def _month_end(day: date) -> date:
    following = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
    return following - timedelta(days=1)


def archive_files(
    base_url: str,
    market: Market,
    kind: ArchiveKind,
    symbol: str,
    start: date,
    end: date,
    period: Period,
) -> list[ArchiveFile]:
    """The archives holding [start, end] (inclusive UTC days) of one symbol."""
    for option, value, allowed in (
        ("market", market, ("spot", "um")),
        ("kind", kind, tuple(ARCHIVE_KINDS)),
        ("period", period, ("daily", "monthly")),
    ):
        if value not in allowed:
            raise InputError(f"--{option} {value!r}: expected one of {', '.join(allowed)}")
    if market == "spot" and kind == "bookTicker":
        raise InputError(
            "bookTicker archives exist only for USD-M futures, not spot: use --market um "
            "(or --kind aggTrades / klines for spot)"
        )
    if kind == "fundingRate" and (market != "um" or period != "monthly"):
        raise InputError(
            "fundingRate archives exist only for USD-M futures, monthly: use --market um "
            "--period monthly"
        )
    check_range(start, end)
    symbol = symbol.strip().upper()
    folder = f"data/{'spot' if market == 'spot' else 'futures/um'}/{period}/{kind}/{symbol}"
    if kind == "klines":
        folder, stem = f"{folder}/{KLINE_INTERVAL}", f"{symbol}-{KLINE_INTERVAL}"
    else:
        stem = f"{symbol}-{kind}"
    base = base_url.rstrip("/")
    files = []
    day = start if period == "daily" else start.replace(day=1)
    while day <= end:
        last = day if period == "daily" else _month_end(day)
        label = day.isoformat() if period == "daily" else f"{day:%Y-%m}"
        relpath = f"{folder}/{stem}-{label}.zip"
        files.append(
            ArchiveFile(f"{base}/{relpath}", f"{base}/{relpath}.CHECKSUM", relpath, day, last)
        )
        day = last + timedelta(days=1)
    return files


class _TransientError(Exception):
    """A failure worth retrying (connection cut, timeout, 5xx)."""


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _http_error(file: ArchiveFile, url: str, response: httpx.Response) -> SourceError:
    if response.status_code == 404:
        return SourceError(
            f"archive does not exist: no {file.describe()} file at {url} (HTTP 404; check the "
            "symbol, --market and dates: daily files appear the day after)"
        )
    return SourceError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")


def _get_to_part(
    client: httpx.Client,
    file: ArchiveFile,
    part: Path,
    timeout_s: float,
    on_bytes: Callable[[int], None],
    on_total: Callable[[int | None], None],
) -> None:
    """One GET of the zip into `part`, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with client.stream("GET", file.url, headers=headers, timeout=timeout_s) as response:
            status = response.status_code
            if status == 416 and offset:  # asked past the end: the part may be complete
                size = response.headers.get("Content-Range", "").rpartition("/")[2]
                if size.isdigit() and int(size) == offset:
                    on_total(offset)
                    return
                part.unlink()
                on_bytes(-offset)
                raise _TransientError(f"HTTP 416 for bytes={offset}- (size {size or 'unknown'})")
            if status in _RETRY_STATUS:
                raise _TransientError(f"HTTP {status}")
            if status not in (200, 206):
                raise _http_error(file, file.url, response)
            if status == 206:
                first = (
                    response.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
                )
                if first != str(offset):
                    raise SourceError(f"{file.url}: asked for bytes={offset}-, got range {first}-")
                mode = "ab"
            else:  # the server ignored the Range: start over
                mode = "wb"
                if offset:
                    on_bytes(-offset)
                    offset = 0
            length = response.headers.get("Content-Length")
            on_total(offset + int(length) if length and length.isdigit() else None)
            with part.open(mode) as fh:
                # no chunk_size: httpx would buffer up to it, and a cut would lose that data
                for chunk in response.iter_raw():
                    fh.write(chunk)
                    on_bytes(len(chunk))
    except httpx.TransportError as exc:  # connect/read errors, timeouts, cut connections
        raise _TransientError(f"{type(exc).__name__}: {exc}") from exc


def _get_checksum(client: httpx.Client, file: ArchiveFile, timeout_s: float) -> str:
    try:
        response = client.get(file.checksum_url, timeout=timeout_s)
    except httpx.TransportError as exc:
        raise _TransientError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code in _RETRY_STATUS:
        raise _TransientError(f"HTTP {response.status_code}")
    if response.status_code != 200:
        raise _http_error(file, file.checksum_url, response)
    token = (response.text.split() or [""])[0].lower()
    if len(token) != 64 or any(c not in "0123456789abcdef" for c in token):
        raise SourceError(f"{file.checksum_url}: not a SHA-256 checksum: {response.text[:80]!r}")
    return token


def _retrying[T](settings: ArchiveSettings, url: str, step: Callable[[], T]) -> T:
    for attempt in range(settings.max_attempts):
        try:
            return step()
        except _TransientError as exc:
            if attempt + 1 >= settings.max_attempts:
                raise SourceError(
                    f"{url}: gave up after {settings.max_attempts} attempt(s): {exc}"
                ) from None
            time.sleep(settings.backoff_s * 2**attempt)
    raise AssertionError("unreachable")  # max_attempts >= 1


def download_verified(
    client: httpx.Client,
    file: ArchiveFile,
    cache_dir: Path,
    settings: ArchiveSettings,
    on_bytes: Callable[[int], None] | None = None,
    on_total: Callable[[int | None], None] | None = None,
) -> Path:
    """Download one archive into the cache and check its SHA-256; returns the zip's path.

    on_total(size) is called when the size is known; on_bytes(n) for every n bytes that
    land on disk (negative when a partial download has to be discarded)."""
    add = on_bytes or (lambda n: None)
    total = on_total or (lambda n: None)
    final = cache_dir / file.relpath
    part = final.with_name(final.name + ".part")
    recorded = final.with_name(final.name + ".CHECKSUM")
    if final.is_file() and recorded.is_file():
        expected = (recorded.read_text().split() or [""])[0].lower()
        if _sha256(final) == expected:
            total(final.stat().st_size)
            add(final.stat().st_size)
            return final
    final.unlink(missing_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    if part.is_file():  # left by an earlier run: resumed
        add(part.stat().st_size)
    _retrying(
        settings, file.url, lambda: _get_to_part(client, file, part, settings.timeout_s, add, total)
    )
    expected = _retrying(
        settings, file.checksum_url, lambda: _get_checksum(client, file, settings.timeout_s)
    )
    actual = _sha256(part)
    if actual != expected:
        part.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{file.name}: SHA-256 checksum mismatch: expected {expected}, got {actual} "
            f"({file.url}); the download was deleted, run again to retry"
        )
    os.replace(part, final)
    recorded.write_text(f"{expected}  {file.name}\n")
    return final


def ingest_archive(
    config: AppConfig,
    lake: Lake,
    symbols: list[str],
    start: date,
    end: date,
    kind: str,
    market: str = "spot",
    period: str = "daily",
    base_url: str | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    client: httpx.Client | None = None,
) -> list[Written]:
    """Download and verify every archive first, then write [start, end] in one lake batch.
    `progress(file name, bytes so far, size or None)` follows each download."""
    names = parse_symbols(config, symbols)
    check_range(start, end)
    base = base_url or config.settings.archive.base_url
    where = (cast(Market, market), cast(ArchiveKind, kind))
    plan = [
        (name, file)
        for name in names
        for file in archive_files(base, *where, name, start, end, cast(Period, period))
    ]
    settings = config.settings.archive
    cache_dir = StatePaths(config.home).cache / "archive"
    own_client = client is None
    http = client or httpx.Client(timeout=settings.timeout_s, follow_redirects=True)
    paths = []
    try:
        for _, file in plan:
            callbacks = _reporter(file.name, progress)
            paths.append(download_verified(http, file, cache_dir, settings, *callbacks))
    finally:
        if own_client:
            http.close()
    lake_kind, venue = ARCHIVE_KINDS[kind], config.instruments.venue
    low, high = day_start_ns(start), day_start_ns(end + timedelta(days=1))
    with lake.batch() as batch:
        for (name, file), path in zip(plan, paths, strict=True):
            _, table = read_zip_bytes(path.read_bytes(), file.name, expect=kind)
            ts = table.column("ts_ns")
            table = table.filter(pc.and_(pc.greater_equal(ts, low), pc.less(ts, high)))
            if table.num_rows:
                batch.put(venue, name, lake_kind, table, source=f"archive:{file.relpath}")
    return batch.written


def _reporter(
    name: str, progress: Callable[[str, int, int | None], None] | None
) -> tuple[Callable[[int], None], Callable[[int | None], None]]:
    """download_verified's (on_bytes, on_total) callbacks, reported as one file's progress."""
    done, size = 0, None

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(name, done, size)

    def on_total(total: int | None) -> None:
        nonlocal size
        size = total
        if progress is not None:
            progress(name, done, size)

    return on_bytes, on_total
