"""Issue rows: one per offending row of a failed check, written to data_quality_issues.csv."""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trading.atomic import atomic_path

ISSUES_FILE = "data_quality_issues.csv"
# The first five are the contract; kind, day and row (position in the file) help find it.
ISSUE_COLUMNS = ("timestamp", "symbol", "check", "value", "severity", "kind", "day", "row")


@dataclass(frozen=True)
class Issue:
    ts_ns: int | None  # the offending row's timestamp (table-level issues: the day's start)
    symbol: str
    check: str
    value: str  # the offending value, e.g. "bid=nan", "bid=101.5,ask=101.4", "gap_s=600.000"
    severity: str
    kind: str
    day: dt.date
    row: int | None = None  # position in the file (0-based); None for table-level issues

    def csv_row(self) -> list[str]:
        return [
            iso_ms(self.ts_ns),
            self.symbol,
            self.check,
            self.value,
            self.severity,
            self.kind,
            self.day.isoformat(),
            "" if self.row is None else str(self.row),
        ]


def iso_ms(ts_ns: int | None) -> str:
    """UTC nanoseconds -> ISO-8601 with milliseconds, e.g. 2024-01-01T00:00:01.076Z."""
    if ts_ns is None:
        return ""
    stamp = np.datetime64(int(ts_ns), "ns").astype("datetime64[ms]")
    return f"{np.datetime_as_string(stamp, unit='ms')}Z"


def format_number(value: Any) -> str:
    """Shortest faithful text: ints as ints, floats via repr ('nan', 'inf', '39432.99')."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    number = float(value)
    if math.isfinite(number) and number.is_integer() and abs(number) < 2**53:
        return f"{number:.1f}"
    return repr(number)


def describe_rows(
    frame: pd.DataFrame,
    expectation_type: str,
    kwargs: dict[str, Any],
    positions: np.ndarray,
) -> list[tuple[int | None, str]]:
    """(ts_ns, value text) of each offending row of a row-level expectation."""
    ts = frame["ts_ns"].to_numpy()
    out = []
    for pos in positions.tolist():
        ts_ns = None if pd.isna(ts[pos]) else int(ts[pos])
        out.append((ts_ns, _value(frame, expectation_type, kwargs, pos)))
    return out


def _value(frame: pd.DataFrame, expectation_type: str, kwargs: dict[str, Any], pos: int) -> str:
    if expectation_type == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = kwargs["column_A"], kwargs["column_B"]
        return f"{b}={format_number(frame[b].iat[pos])},{a}={format_number(frame[a].iat[pos])}"
    column = kwargs["column"]
    value = frame[column].iat[pos]
    if expectation_type == "expect_column_values_to_be_increasing":
        previous = frame[column].iat[pos - 1] if pos > 0 else math.nan
        if column == "ts_ns":
            return f"ts_step_s={(float(value) - float(previous)) / 1e9:.6f}"
        return f"{column}={format_number(value)},previous={format_number(previous)}"
    if column.endswith("_jump"):  # price_jump: the price, what it jumped from, how far
        price = column.removesuffix("_jump")
        reference = frame[f"{price}_reference"].iat[pos]
        return (
            f"{price}={format_number(frame[price].iat[pos])},"
            f"reference={format_number(reference)},jump_ratio={float(value):.1f}"
        )
    if column == "ohlc_ok":  # ohlc_consistent: the whole bar
        return ",".join(
            f"{name}={format_number(frame[name].iat[pos])}"
            for name in ("open", "high", "low", "close")
        )
    if column == "ts_ns":  # unique_ts: the repeated open time
        return f"open_time={iso_ms(int(value))}"
    if column == "gap_bars":
        return f"{column}={float(value):g}"
    if column in ("gap_s", "day_offset_s"):
        return f"{column}={float(value):.3f}"
    if column == "spread_bp":
        return f"{column}={float(value):.2f}"
    return f"{column}={format_number(value)}"


def table_value(check: str, kwargs: dict[str, Any], observed: Any, error: str | None) -> str:
    """The value text of a failed table-level expectation (or of an expectation error)."""
    if error is not None:
        return f"error: {error}"
    if check == "row_count":
        return f"rows={observed} (allowed {kwargs.get('min_value')}..{kwargs.get('max_value')})"
    if check == "schema" and isinstance(observed, list):
        missing = [c for c in kwargs.get("column_set", []) if c not in observed]
        return f"missing column(s) {', '.join(missing)}"
    return f"observed={observed}"


def write_issues_csv(path: Path, issues: Iterable[Issue]) -> Path:
    """Write atomically: a temp file in the same directory, then rename."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ISSUE_COLUMNS)
        for issue in issues:
            writer.writerow(issue.csv_row())
    return path


def read_issues_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def count_by(rows: Sequence[dict[str, str]], *keys: str) -> dict[tuple[str, ...], int]:
    """Issue rows per key, e.g. count_by(rows, "kind", "check")."""
    counts: dict[tuple[str, ...], int] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        counts[key] = counts.get(key, 0) + 1
    return counts
