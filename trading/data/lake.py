"""The Parquet lake: one file per venue / symbol / kind / UTC date.

Layout: <root>/venue=V/symbol=S/kind=K/date=YYYY-MM-DD/data.parquet (hive style, so
pyarrow.dataset and DuckDB read it as partitioned). Writes go to a hidden temp file in
the target directory and are renamed into place only when every file of the batch was
written, so a failed ingest leaves the lake as it was. Re-ingesting a day replaces it;
within one batch, several tables for the same day (two half-day files) are merged into
one file, never one replacing the other. Every file is written sorted by time without
repeated keys; what that changed in the input (rows dropped, rows out of order) is
counted in the `Written` record, never silent.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trading.atomic import temp_path
from trading.data.schemas import KEYS, KINDS, SCHEMAS
from trading.errors import DataFormatError, InputError

NS_PER_DAY = 86_400 * 1_000_000_000
_FILE = "data.parquet"


def day_of(ts_ns: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=ts_ns // NS_PER_DAY)


def day_start_ns(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * NS_PER_DAY


@dataclass(frozen=True)
class RowFixes:
    """What conforming did to an input's rows of one UTC day."""

    duplicates_dropped: int = 0  # rows whose key (KEYS) came again later: the last one kept
    reordered: int = 0  # rows earlier (by the sort key) than the row before them: sorted in


def conform(table: pa.Table, kind: str) -> pa.Table:
    """Cast to the kind's schema, drop repeated keys (last wins) and sort by time."""
    return conform_counted(table, kind)[0]


def conform_counted(table: pa.Table, kind: str) -> tuple[pa.Table, dict[dt.date, RowFixes]]:
    """`conform`, and per UTC day what it dropped and reordered (days without either
    are left out)."""
    if kind not in SCHEMAS:
        raise InputError(f"unknown data kind {kind!r}: expected one of {', '.join(KINDS)}")
    schema = SCHEMAS[kind]
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise DataFormatError(f"{kind}: missing column(s) {', '.join(missing)}")
    try:
        table = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataFormatError(f"{kind}: column types do not fit the lake schema: {exc}") from exc
    for name in schema.names:
        if table.column(name).null_count:
            raise DataFormatError(
                f"{kind}: column {name} has {table.column(name).null_count} null value(s)"
            )
    if table.num_rows == 0:
        return table, {}
    keep = _last_of_each_key(table, KEYS[kind])
    dropped = np.ones(table.num_rows, dtype=bool)
    dropped[keep] = False
    dropped_per_day = _count_per_day(table.column("ts_ns").to_numpy()[dropped])
    if len(keep) < table.num_rows:
        table = table.take(pa.array(keep))
    ts = table.column("ts_ns").to_numpy()
    earlier = ts[1:] < ts[:-1]
    sort_keys = [("ts_ns", "ascending")]
    if kind == "trades":
        sort_keys.append(("trade_id", "ascending"))
        ids = table.column("trade_id").to_numpy()
        earlier |= (ts[1:] == ts[:-1]) & (ids[1:] < ids[:-1])
    reordered_per_day = _count_per_day(ts[1:][earlier])
    fixes = {
        day: RowFixes(dropped_per_day.get(day, 0), reordered_per_day.get(day, 0))
        for day in sorted(dropped_per_day.keys() | reordered_per_day.keys())
    }
    if earlier.any():  # the sort is stable: rows already in order keep their order
        table = table.take(pc.sort_indices(table, sort_keys=sort_keys))
    return table, fixes


def _count_per_day(ts_ns: np.ndarray) -> dict[dt.date, int]:
    """UTC day -> how many of these timestamps fall in it."""
    days, counts = np.unique(ts_ns // NS_PER_DAY, return_counts=True)
    return {
        dt.date(1970, 1, 1) + dt.timedelta(days=int(day)): int(count)
        for day, count in zip(days, counts, strict=True)
    }


def _last_of_each_key(table: pa.Table, keys: list[str]) -> np.ndarray:
    """Positions of the rows to keep: the last row of each key (a re-sent row replaces
    the earlier one), in input order."""
    if len(keys) == 1:
        values = table.column(keys[0]).to_numpy()[::-1]
        _, first_in_reversed = np.unique(values, return_index=True)
        return np.sort(len(values) - 1 - first_in_reversed)
    frame = table.select(keys).to_pandas()
    return np.flatnonzero(~frame.duplicated(keep="last").to_numpy())


def split_by_day(table: pa.Table) -> Iterator[tuple[dt.date, pa.Table]]:
    """Yield (UTC date, rows of that date) of a table sorted by ts_ns."""
    if table.num_rows == 0:
        return
    days = table.column("ts_ns").to_numpy() // NS_PER_DAY
    bounds = np.flatnonzero(np.diff(days)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(days)]])
    for start, end in zip(starts, ends, strict=True):
        yield (
            dt.date(1970, 1, 1) + dt.timedelta(days=int(days[start])),
            table.slice(start, end - start),
        )


@dataclass(frozen=True)
class PartitionSummary:
    venue: str
    symbol: str
    kind: str
    days: int
    rows: int
    first_ts_ns: int | None
    last_ts_ns: int | None
    largest_gap_ns: int | None
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Written:
    """One lake file an ingest wrote (or replaced), and what the lake changed in its input
    rows of that day to write it sorted and without repeated keys."""

    venue: str
    symbol: str
    kind: str
    day: dt.date
    rows: int
    duplicates_dropped: int = 0  # input rows whose key came again later (the last was kept)
    reordered: int = 0  # input rows out of time order (earlier than the row before them)

    @property
    def fixes(self) -> str | None:
        """What was dropped or reordered, in words; None if the input was written as is."""
        parts = []
        if self.duplicates_dropped:
            key = "identical row" if self.kind == "quotes" else f"repeated {KEYS[self.kind][0]}"
            parts.append(f"{self.duplicates_dropped:,} {key} row(s) dropped (the last kept)")
        if self.reordered:
            parts.append(f"{self.reordered:,} row(s) out of time order sorted into place")
        return "; ".join(parts) or None


@dataclass
class _Staged:
    tmp: Path
    final: Path
    written: Written
    sources: tuple[str, ...] = ()
    derived: bool = False


@dataclass
class LakeBatch:
    """Files written to temp names; `Lake.batch()` renames them all on success (after
    deleting the files staged with `remove`). One staged file per final path: a table put
    for a day already staged in this batch is merged into it (its keys deduplicated, the
    later put winning), so the batch reports each day once, with the rows the lake will
    hold."""

    lake: Lake
    staged: list[_Staged] = field(default_factory=list)
    removals: list[Path] = field(default_factory=list)
    _slot: dict[Path, int] = field(default_factory=dict)  # final path -> index in staged

    def _staged_at(self, final: Path) -> _Staged | None:
        slot = self._slot.get(final)
        return None if slot is None else self.staged[slot]

    def _stage(self, item: _Staged) -> None:
        """Add a staged file, or put it in the place of the one staged for the same path."""
        slot = self._slot.get(item.final)
        if slot is None:
            self._slot[item.final] = len(self.staged)
            self.staged.append(item)
        else:
            self.staged[slot].tmp.unlink(missing_ok=True)
            self.staged[slot] = item

    def remove(self, venue: str, symbol: str, kind: str, day: dt.date) -> Path | None:
        """Stage the deletion of one day's file of `kind` (e.g. features made from data the
        batch replaces); the path, or None if there is no such file."""
        path = self.lake.path(venue, symbol, kind, day)
        if not path.is_file():
            return None
        self.removals.append(path)
        return path

    def put(
        self,
        venue: str,
        symbol: str,
        kind: str,
        table: pa.Table,
        source: str,
        merge: bool = False,
        metadata: dict[bytes, bytes] | None = None,
    ) -> list[Written]:
        """Stage a table; it is split into UTC days. `merge` unions with what the lake
        already holds for those days (for partial-day sources such as the REST API).
        `metadata` is added to the schema metadata of every file written (its kind and
        source keys cannot be overridden)."""
        table, fixes = conform_counted(table, kind)
        written = []
        for day, rows in split_by_day(table):
            final = self.lake.path(venue, symbol, kind, day)
            fixed = fixes.get(day, RowFixes())
            dropped, reordered = fixed.duplicates_dropped, fixed.reordered
            sources: tuple[str, ...] = (source,)
            meta = dict(metadata or {})
            earlier = self._staged_at(final)
            if earlier is not None and not earlier.derived:
                # the same day from another table of this batch: one file holding both.
                # Rows of both with the same key count as dropped (this table's win); the
                # merge's own sorting is not counted as reordering: each input was sorted.
                before = pq.read_table(earlier.tmp)
                meta = {**(before.schema.metadata or {}), **meta}
                merged = conform(
                    pa.concat_tables([before.replace_schema_metadata(None), rows]), kind
                )
                dropped += earlier.written.duplicates_dropped
                dropped += before.num_rows + rows.num_rows - merged.num_rows
                reordered += earlier.written.reordered
                sources = tuple(dict.fromkeys((*earlier.sources, source)))
                rows = merged
            elif merge and final.exists():
                rows = conform(pa.concat_tables([pq.read_table(final), rows]), kind)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(final)
            meta.update(
                {b"hmmtrader.kind": kind.encode(), b"hmmtrader.source": ", ".join(sources).encode()}
            )
            pq.write_table(rows.replace_schema_metadata(meta), tmp, compression="zstd")
            item = Written(venue, symbol, kind, day, rows.num_rows, dropped, reordered)
            self._stage(_Staged(tmp, final, item, sources))
            written.append(item)
        return written

    def put_derived(
        self,
        venue: str,
        symbol: str,
        kind: str,
        day: dt.date,
        table: pa.Table,
        metadata: dict[bytes, bytes],
    ) -> Written:
        """Stage one day of a derived dataset (features) whose schema travels in its own
        metadata; the caller has already sorted it and limited it to that day."""
        final = self.lake.path(venue, symbol, kind, day)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(final)
        meta = {b"hmmtrader.kind": kind.encode(), **metadata}
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
        item = Written(venue, symbol, kind, day, table.num_rows)
        self._stage(_Staged(tmp, final, item, derived=True))  # a recomputed day replaces
        return item

    @property
    def written(self) -> list[Written]:
        return [item.written for item in self.staged]


class Lake:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, venue: str, symbol: str, kind: str, day: dt.date) -> Path:
        return (
            self.root
            / f"venue={venue}"
            / f"symbol={symbol}"
            / f"kind={kind}"
            / f"date={day.isoformat()}"
            / _FILE
        )

    @contextmanager
    def batch(self) -> Iterator[LakeBatch]:
        """All-or-nothing write of several tables/days."""
        batch = LakeBatch(self)
        try:
            yield batch
        except BaseException:
            for item in batch.staged:
                item.tmp.unlink(missing_ok=True)
            raise
        # removals first: a crash in between leaves a missing derived file, never a stale one
        for path in batch.removals:
            path.unlink(missing_ok=True)
            with suppress(OSError):
                path.parent.rmdir()  # the empty date=... directory
        for item in batch.staged:
            os.replace(item.tmp, item.final)

    def write(
        self,
        venue: str,
        symbol: str,
        kind: str,
        table: pa.Table,
        source: str,
        merge: bool = False,
    ) -> list[Written]:
        with self.batch() as batch:
            return batch.put(venue, symbol, kind, table, source, merge=merge)

    def derived_kinds(self, venue: str, symbol: str) -> list[str]:
        """The symbol's kinds computed from the raw kinds (features_v1, bars_v1, ...)."""
        base = self.root / f"venue={venue}" / f"symbol={symbol}"
        if not base.is_dir():
            return []
        kinds = (p.name.removeprefix("kind=") for p in base.glob("kind=*") if p.is_dir())
        return sorted(kind for kind in kinds if kind not in KINDS)

    def days(self, venue: str, symbol: str, kind: str) -> list[dt.date]:
        base = self.root / f"venue={venue}" / f"symbol={symbol}" / f"kind={kind}"
        if not base.is_dir():
            return []
        return sorted(
            dt.date.fromisoformat(p.name.removeprefix("date="))
            for p in base.iterdir()
            if p.name.startswith("date=") and (p / _FILE).is_file()
        )

    def read(
        self,
        venue: str,
        symbol: str,
        kind: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Rows of [start, end] (inclusive UTC dates), sorted by ts_ns."""
        days = [
            d
            for d in self.days(venue, symbol, kind)
            if (start is None or d >= start) and (end is None or d <= end)
        ]
        schema = SCHEMAS[kind]
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        tables = [
            pq.read_table(self.path(venue, symbol, kind, d), columns=columns).cast(schema)
            for d in days
        ]
        if not tables:
            return schema.empty_table()
        return pa.concat_tables(tables)

    def partitions(self) -> list[tuple[str, str, str]]:
        found = []
        for venue_dir in sorted(self.root.glob("venue=*")):
            for symbol_dir in sorted(venue_dir.glob("symbol=*")):
                for kind_dir in sorted(symbol_dir.glob("kind=*")):
                    found.append(
                        (
                            venue_dir.name.removeprefix("venue="),
                            symbol_dir.name.removeprefix("symbol="),
                            kind_dir.name.removeprefix("kind="),
                        )
                    )
        return found

    def summary(self) -> list[PartitionSummary]:
        rows = []
        for venue, symbol, kind in self.partitions():
            days = self.days(venue, symbol, kind)
            if not days:
                continue
            ts_parts = []
            sources = set()
            for d in days:
                path = self.path(venue, symbol, kind, d)
                ts_parts.append(pq.read_table(path, columns=["ts_ns"]).column("ts_ns").to_numpy())
                meta = pq.read_schema(path).metadata or {}
                sources.add(meta.get(b"hmmtrader.source", b"unknown").decode())
            ts = np.concatenate(ts_parts)
            gap = int(np.diff(ts).max()) if len(ts) > 1 else None
            rows.append(
                PartitionSummary(
                    venue,
                    symbol,
                    kind,
                    len(days),
                    len(ts),
                    int(ts[0]) if len(ts) else None,
                    int(ts[-1]) if len(ts) else None,
                    gap,
                    tuple(sorted(sources)),
                )
            )
        return rows
