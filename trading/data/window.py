"""Time windows of trading: `[start, end)` in UTC nanoseconds, parsed from the command
line, checked against the lake, or taken from the lake's last hours. The backtest, the
canary, the nightly plan, the replay node and quickcheck share them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from trading.data.lake import Lake
from trading.errors import InputError

NS = 1_000_000_000
MINUTE_NS = 60 * NS
TICK_KINDS = ("quotes", "trades")
BAR_KINDS = ("bars",)


def market_kinds(bars: bool) -> tuple[str, ...]:
    """The lake kinds a model trades on: 1-minute bars for BARS_V1, else quotes and trades."""
    return BAR_KINDS if bars else TICK_KINDS


@dataclass(frozen=True)
class Window:
    """[start_ns, end_ns) of trading; ticks from start_ns - warmup feed the features."""

    start_ns: int
    end_ns: int

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.start_ns / NS, dt.UTC)

    @property
    def end(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.end_ns / NS, dt.UTC)

    @property
    def days(self) -> tuple[dt.date, dt.date]:
        """The first and last UTC day the window touches (its end is exclusive)."""
        return window_days(self.start_ns, self.end_ns)

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} UTC"


def window_days(start_ns: int, end_ns: int) -> tuple[dt.date, dt.date]:
    first = dt.datetime.fromtimestamp(start_ns // NS, dt.UTC).date()
    last = dt.datetime.fromtimestamp((end_ns - 1) // NS, dt.UTC).date()  # end is exclusive
    return first, last


def parse_time(text: str, *, end: bool = False) -> int:
    """'2024-01-02' (a whole UTC day; as an end, the day is included) or an ISO time."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime.combine(
                day + dt.timedelta(days=1 if end else 0), dt.time(), dt.UTC
            )
        else:
            moment = dt.datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
    except ValueError:
        raise InputError(
            f"bad time {text!r}: use YYYY-MM-DD (a whole UTC day) or YYYY-MM-DDTHH:MM"
        ) from None
    return int(moment.timestamp()) * NS + moment.microsecond * 1000


def window_of(start: str, end: str) -> Window:
    window = Window(parse_time(start), parse_time(end, end=True))
    if window.end_ns <= window.start_ns:
        raise InputError(f"--end {end} is not after --start {start}")
    return window


def require_ticks(
    lake: Lake,
    venue: str,
    symbols: Sequence[str],
    window: Window,
    kinds: Sequence[str] = TICK_KINDS,
) -> None:
    """Every symbol has quotes and trades (or `kinds`) on every day of the window, or a
    clear error."""
    first, last = window.days
    wanted = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    for symbol in symbols:
        for kind in kinds:
            days = lake.days(venue, symbol, kind)
            missing = [d for d in wanted if d not in set(days)]
            if missing:
                have = (
                    f"the lake has {symbol} {kind} for {days[0]} .. {days[-1]}"
                    if days
                    else f"the lake has no {symbol} {kind}"
                )
                raise InputError(
                    f"no {symbol} {kind} for {', '.join(map(str, missing[:3]))}"
                    f"{' ...' if len(missing) > 3 else ''} in the window {window}: {have} "
                    "(ingest that range or choose another --start/--end)"
                )


def common_tick_days(
    lake: Lake, venue: str, symbols: Sequence[str], kinds: Sequence[str] = TICK_KINDS
) -> list[dt.date]:
    """The lake days on which every symbol has quotes and trades (or `kinds`), oldest
    first."""
    days: set[dt.date] | None = None
    for symbol in symbols:
        have = set.intersection(*(set(lake.days(venue, symbol, kind)) for kind in kinds))
        days = have if days is None else days & have
    return sorted(days or ())


def last_quote_ns(
    lake: Lake, venue: str, symbols: Sequence[str], day: dt.date, kind: str = "quotes"
) -> int:
    """The earliest of the symbols' last quote (or `kind` row) times on `day` (all symbols
    have data up to it)."""
    import pyarrow.compute as pc

    return min(
        int(pc.max(lake.read(venue, s, kind, day, day, columns=["ts_ns"])["ts_ns"]).as_py())
        for s in symbols
    )


def clip_to_ticks(
    lake: Lake, venue: str, symbols: Sequence[str], window: Window, kind: str = "quotes"
) -> Window:
    """The window ending at the minute after the last quote every symbol has on the
    window's last day: a partly recorded day (a short synthetic day, today's recording)
    ends where its data ends, so the strategy flattens before it and the KPIs' clock
    stops there. Unchanged when a symbol has no quotes file for that day. With `kind`
    bars, the last row is a bar's open and the window ends at that bar's close."""
    _, last = window.days
    if not all(lake.path(venue, s, kind, last).is_file() for s in symbols):
        return window
    end_ns = (last_quote_ns(lake, venue, symbols, last, kind) // MINUTE_NS + 1) * MINUTE_NS
    return Window(window.start_ns, end_ns) if window.start_ns < end_ns < window.end_ns else window


def last_hours(
    lake: Lake, venue: str, symbols: Sequence[str], hours: float, bars: bool = False
) -> Window:
    """The last `hours` (to the minute) before the newest quote (or bar close, with `bars`)
    of the newest lake day that every symbol has."""
    kinds = market_kinds(bars)
    days = common_tick_days(lake, venue, symbols, kinds)
    if not days:
        raise InputError(
            f"the lake under {lake.root} has no day with {' and '.join(kinds)} of "
            f"{', '.join(symbols)}: ingest data first (hmmtrader ingest ...)"
        )
    last_ns = last_quote_ns(lake, venue, symbols, days[-1], kinds[0])
    end_ns = (last_ns // MINUTE_NS + (1 if bars else 0)) * MINUTE_NS
    return Window(end_ns - int(hours * 3600) * NS, end_ns)
