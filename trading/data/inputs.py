"""Validation of the arguments every ingest entry point shares."""

from __future__ import annotations

import datetime as dt

from trading.errors import InputError
from trading.settings import AppConfig


def parse_symbols(config: AppConfig, symbols: str | list[str]) -> list[str]:
    """ "BTCUSDT,ETHUSDT" or a list -> configured upper-case names; unknown ones fail."""
    items = symbols.split(",") if isinstance(symbols, str) else symbols
    names = [s.strip().upper() for s in items if s.strip()]
    if not names:
        raise InputError("no symbols given: pass e.g. --symbols BTCUSDT,ETHUSDT")
    for name in names:
        config.symbol(name)  # raises ConfigError naming the configured symbols
    return list(dict.fromkeys(names))


def parse_day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} {text!r} is not a date: use YYYY-MM-DD") from None


def check_range(start: dt.date, end: dt.date, max_days: int | None = None) -> None:
    if start > end:
        raise InputError(f"--start {start} is after --end {end}: swap them")
    if max_days is not None and (end - start).days + 1 > max_days:
        raise InputError(f"{start}..{end} spans more than {max_days} days")


def day_range(start: dt.date, end: dt.date) -> list[dt.date]:
    check_range(start, end)
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
