"""The shipped real month of 1-minute bars (tests/fixtures/real/), read for tests that need
it in another layout: Binance's 12-column spot kline CSV of one UTC day, as
data.binance.vision publishes it (no header, milliseconds)."""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path

import pandas as pd

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "real"


@cache
def real_bars(symbol: str) -> pd.DataFrame:
    """The month's bars of BTCUSDT or ETHUSDT: open time (ms) and OHLCV."""
    frame = pd.read_csv(FIXTURES / f"{symbol}-1m-2024-01.csv")
    opened = pd.to_datetime(frame.pop("datetime"), utc=True)
    frame.insert(0, "open_ms", opened.map(lambda t: t.value // 1_000_000))
    return frame


def kline_csv(symbol: str, day: dt.date) -> str:
    """One day of the real bars in Binance's spot kline layout (close time = open + 59,999
    ms; quote volume = volume x close; trade counts and taker volumes are not in the
    source, and are written as 0)."""
    bars = real_bars(symbol)
    start = int(pd.Timestamp(day, tz="UTC").value // 1_000_000)
    rows = bars[(bars["open_ms"] >= start) & (bars["open_ms"] < start + 86_400_000)]
    lines = [
        f"{r.open_ms},{r.open},{r.high},{r.low},{r.close},{r.volume},{r.open_ms + 59_999},"
        f"{r.volume * r.close:.8f},0,0,0,0"
        for r in rows.itertuples()
    ]
    return "\n".join(lines) + "\n"
