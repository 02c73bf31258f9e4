"""The lake's pyarrow schema per kind. Timestamps are UTC nanoseconds since the epoch.

quotes   top of book:           ts_ns, bid, ask, bid_size, ask_size
trades   individual/agg trades: ts_ns, trade_id, price, qty, aggressor_side
         aggressor_side: 1 = buyer was the taker (buy), -1 = seller was the taker
         (sell), 0 = unknown. Binance's is_buyer_maker=true means aggressor_side = -1.
bars     1-minute klines:       ts_ns (open time), open, high, low, close, volume (base),
         quote_volume, n_trades, taker_buy_volume (base)
regimes  synthetic market only: ts_ns (start of each second), regime (true hidden state)
funding  perpetual funding events: ts_ns (funding time), rate (fraction, 0.0001 = 1 bp)

Derived kinds (features_v1, bars_v1) carry their own schema and descriptor in the Parquet
metadata; see trading/features/store.py.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

Kind = Literal["quotes", "trades", "bars", "regimes", "funding"]
KINDS: tuple[Kind, ...] = ("quotes", "trades", "bars", "regimes", "funding")

SCHEMAS: dict[str, pa.Schema] = {
    "quotes": pa.schema(
        [
            ("ts_ns", pa.int64()),
            ("bid", pa.float64()),
            ("ask", pa.float64()),
            ("bid_size", pa.float64()),
            ("ask_size", pa.float64()),
        ]
    ),
    "trades": pa.schema(
        [
            ("ts_ns", pa.int64()),
            ("trade_id", pa.int64()),
            ("price", pa.float64()),
            ("qty", pa.float64()),
            ("aggressor_side", pa.int8()),
        ]
    ),
    "bars": pa.schema(
        [
            ("ts_ns", pa.int64()),
            ("open", pa.float64()),
            ("high", pa.float64()),
            ("low", pa.float64()),
            ("close", pa.float64()),
            ("volume", pa.float64()),
            ("quote_volume", pa.float64()),
            ("n_trades", pa.int64()),
            ("taker_buy_volume", pa.float64()),
        ]
    ),
    "regimes": pa.schema([("ts_ns", pa.int64()), ("regime", pa.int8())]),
    "funding": pa.schema([("ts_ns", pa.int64()), ("rate", pa.float64())]),
}

# Columns that identify a row: re-ingesting never duplicates rows with the same key.
KEYS: dict[str, list[str]] = {
    # several book updates can share a millisecond: only identical rows are duplicates
    "quotes": ["ts_ns", "bid", "ask", "bid_size", "ask_size"],
    "trades": ["trade_id"],
    "bars": ["ts_ns"],
    "regimes": ["ts_ns"],
    "funding": ["ts_ns"],
}

BUYER = 1
SELLER = -1
NO_AGGRESSOR = 0
