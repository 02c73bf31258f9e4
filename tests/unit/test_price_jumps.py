"""The price_jump check: a x1000 price (bid only, ask only, both, a trade) blocks the gate,
flagged once per spiked row; real Binance prices (ticks and a month of 1-minute closes)
and the synthetic market's test days stay far below the threshold."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import BINANCE_SAMPLES, FIXTURES
from tests.profile import DAY1, DAY_SECONDS, SHORT_NIGHTS, THIN
from tests.unit.test_quality import (
    REAL_DAY,
    VENUE,
    ingest_real,
    issue_counts,
    rewrite,
    short_days,
)
from trading.data.files import ingest_files, read_local_file
from trading.data.lake import Lake
from trading.data.synthetic import generate
from trading.quality.frames import JUMP_PRICES, price_jumps, validation_frame
from trading.quality.gate import run_gate
from trading.quality.issues import read_issues_csv
from trading.settings import AppConfig, QualitySettings, TradeLimits, load_settings

REAL = FIXTURES / "real"


@pytest.fixture
def config(home: Path) -> AppConfig:
    """The real samples hold 46 s and 28 s of their day: min_coverage 0 for ticks."""
    return short_days(load_settings())


QUALITY = QualitySettings()
LIMIT = QUALITY.quotes.max_jump_ratio
SPIKE = 1000.0


def max_ratio(prices: np.ndarray | pd.Series, kind: str = "trades") -> float:
    limits = QUALITY.quotes if kind == "quotes" else QUALITY.trades
    return float(
        price_jumps(np.asarray(prices), limits.jump_window_rows, limits.jump_floor_bp).ratio.max()
    )


def jump_columns_over_limit(kind: str, table_rows: pd.DataFrame) -> dict[str, list[int]]:
    """`<price>_jump` column -> rows above the kind's max_jump_ratio."""
    frame = validation_frame(pa.Table.from_pandas(table_rows), kind, REAL_DAY, QUALITY)
    limits = QUALITY.quotes if kind == "quotes" else QUALITY.trades
    found = {}
    for price in JUMP_PRICES[kind]:
        rows = np.flatnonzero(frame[f"{price}_jump"].to_numpy() > limits.max_jump_ratio)
        if len(rows):
            found[f"{price}_jump"] = rows.tolist()
    return found


def real_sample(kind: str) -> pd.DataFrame:
    name = "btcusdt-quotes.parquet" if kind == "quotes" else "btcusdt-trades.parquet"
    found, table = read_local_file(BINANCE_SAMPLES / name, "BTCUSDT")
    assert found == kind
    return table.to_pandas()


# --- x1000 spikes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bid", {"bid_jump": [120], "mid_jump": [120]}),
        ("ask", {"ask_jump": [120], "mid_jump": [120]}),
        ("both", {"bid_jump": [120], "ask_jump": [120], "mid_jump": [120]}),
        ("trade", {"price_jump": [120]}),
    ],
)
def test_a_x1000_spike_is_over_the_limit_on_its_row_alone(
    case: str, expected: dict[str, list[int]]
) -> None:
    kind = "trades" if case == "trade" else "quotes"
    frame = real_sample(kind)
    assert jump_columns_over_limit(kind, frame) == {}  # the clean sample
    columns = {"bid": ["bid"], "ask": ["ask"], "both": ["bid", "ask"], "trade": ["price"]}[case]
    for column in columns:
        frame.loc[120, column] *= SPIKE
    # the rows after the spike are measured against the prices before it: not flagged
    assert jump_columns_over_limit(kind, frame) == expected
    assert QUALITY.severity("price_jump") == "block"


def test_spikes_at_the_edges_and_a_spiked_stretch() -> None:
    prices = real_sample("trades")["price"].to_numpy()
    limits = QUALITY.trades

    def flagged(values: np.ndarray) -> list[int]:
        jumps = price_jumps(values, limits.jump_window_rows, limits.jump_floor_bp)
        return np.flatnonzero(jumps.ratio > limits.max_jump_ratio).tolist()

    first_and_last = prices.copy()
    first_and_last[[0, -1]] *= SPIKE
    assert flagged(first_and_last) == [0, len(prices) - 1]
    divided = prices.copy()
    divided[500] /= SPIKE  # a price 1000x too small is a jump as well
    assert flagged(divided) == [500]
    stretch = prices.copy()
    stretch[1000:1100] *= SPIKE  # 100 rows: the first 3 enter it, the first 3 after leave it
    assert flagged(stretch) == [1000, 1001, 1002, 1100, 1101, 1102]
    with_nan = prices.copy()
    with_nan[[10, 11]] = [np.nan, -1.0]  # not_null / positive_price report these
    assert flagged(with_nan) == []
    jumps = price_jumps(divided, limits.jump_window_rows, limits.jump_floor_bp)
    assert jumps.scale_bp[500] == limits.jump_floor_bp  # tick returns: the floor is the scale
    assert jumps.ratio[500] == pytest.approx(
        abs(np.log(prices[500] / SPIKE / jumps.reference[500])) / (limits.jump_floor_bp * 1e-4)
    )


def test_x1000_spikes_block_the_gate(config: AppConfig, lake: Lake) -> None:
    ingest_real(config, lake)
    original = pq.read_table(lake.path(VENUE, "BTCUSDT", "trades", REAL_DAY)).to_pandas()

    def spike_quotes(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[100, "bid"] *= SPIKE  # bid only (also a crossed book)
        frame.loc[200, "ask"] *= SPIKE  # ask only (also a wide spread: a warning)
        frame.loc[300, ["bid", "ask"]] *= SPIKE  # both: nothing else notices it
        return frame

    def spike_trades(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[1000, "price"] *= SPIKE
        return frame

    rewrite(lake, "quotes", REAL_DAY, spike_quotes)
    rewrite(lake, "trades", REAL_DAY, spike_trades)
    result = run_gate(config, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes", "trades"))

    assert not result.passed
    assert issue_counts(result) == {
        ("quotes", "price_jump"): 7,  # bid + mid, ask + mid, bid + ask + mid
        ("quotes", "crossed_book"): 1,
        ("quotes", "spread_range"): 1,
        ("trades", "price_jump"): 1,
    }
    assert "BTCUSDT quotes 2021-01-08: price_jump failed on 7 rows" in result.blocking
    assert "BTCUSDT trades 2021-01-08: price_jump failed on 1 row" in result.blocking
    rows = [r for r in read_issues_csv(result.issues_csv) if r["check"] == "price_jump"]
    assert {r["severity"] for r in rows} == {"block"}
    assert sorted({(r["kind"], r["row"]) for r in rows}) == [
        ("quotes", "100"),
        ("quotes", "200"),
        ("quotes", "300"),
        ("trades", "1000"),
    ]
    (trade,) = [r for r in rows if r["kind"] == "trades"]
    spiked = float(original.loc[1000, "price"]) * SPIKE
    assert trade["value"].startswith(f"price={spiked!r},reference=")
    assert float(trade["value"].split("jump_ratio=")[1]) > 6000  # ln(1000) / 10 bp = 6908


# --- no false alarm on real and synthetic prices ------------------------------------------------


def test_real_ticks_are_far_below_the_limit(config: AppConfig, lake: Lake) -> None:
    """Spot quotes and trades (2021-01-08) and USD-M book tickers (2023-10-02): the moves
    stay under 1 scale (the 10 bp floor): a margin of over 100x to the limit of 100."""
    quotes, trades = real_sample("quotes"), real_sample("trades")
    book = pq.read_table(REAL / "btcusdt-um-bookticker-2023-10-02-first28s.parquet").to_pandas()
    worst = {
        "spot bid": max_ratio(quotes["bid"], "quotes"),
        "spot ask": max_ratio(quotes["ask"], "quotes"),
        "spot mid": max_ratio((quotes["bid"] + quotes["ask"]) / 2, "quotes"),
        "spot trade": max_ratio(trades["price"]),
        "um bid": max_ratio(book["bid"], "quotes"),
        "um ask": max_ratio(book["ask"], "quotes"),
        "um mid": max_ratio((book["bid"] + book["ask"]) / 2, "quotes"),
    }
    assert {k: round(v, 2) for k, v in worst.items()} == {
        "spot bid": 0.61,
        "spot ask": 0.75,
        "spot mid": 0.65,
        "spot trade": 0.67,
        "um bid": 0.18,
        "um ask": 0.23,
        "um mid": 0.18,
    }
    # the book tickers through the whole gate: every check passes
    (written,) = ingest_files(
        config, lake, [REAL / "btcusdt-um-bookticker-2023-10-02-first28s.parquet"], "BTCUSDT"
    )
    # 13 book tickers repeat an earlier one exactly: the lake keeps one of each
    assert (written.rows, written.duplicates_dropped, written.reordered) == (9_986, 13, 0)
    day = dt.date(2023, 10, 2)
    result = run_gate(config, lake, "BTCUSDT", day, day, kinds=("quotes",))
    assert result.passed and result.issues == [] and result.batches[0].rows == 9_986


def test_a_real_month_of_1m_closes_stays_below_the_limit() -> None:
    """January 2024, BTCUSDT and ETHUSDT, 44,641 minutes each, with the spot-ETF days and
    the 3 January drop: the largest move is about half the limit (one 1-minute bar falling
    4-5 % against a 10 bp scale)."""
    closes = pq.read_table(REAL / "closes-1m-2024-01.parquet").to_pandas() / 100
    worst = {name: max_ratio(closes[name].to_numpy()) for name in closes.columns}
    assert {k: round(v, 1) for k, v in worst.items()} == {
        "btcusdt_close_cents": 44.2,
        "ethusdt_close_cents": 51.5,
    }
    assert max(worst.values()) < LIMIT / 1.9


@pytest.mark.parametrize(
    ("profile", "start", "seconds", "worst"),
    [
        ({}, DAY1, DAY_SECONDS, 3.1),  # the shared worlds' days
        (THIN, "2024-01-01", int(SHORT_NIGHTS["HMMTRADER_SYNTHETIC__DAY_SECONDS"]), 5.4),
    ],
    ids=["profile", "short-nights"],
)
def test_the_test_profiles_synthetic_days_stay_below_the_limit(
    config: AppConfig, profile: dict[str, str], start: str, seconds: int, worst: float
) -> None:
    updates = {k.removeprefix("HMMTRADER_SYNTHETIC__").lower(): v for k, v in profile.items()}
    settings = config.settings.synthetic.model_copy(
        update={k: float(v) for k, v in updates.items()}
    )
    specs = {name: config.symbol(name) for name in ("BTCUSDT", "ETHUSDT")}
    found = 0.0
    for item in generate(specs, dt.date.fromisoformat(start), 2, 7, settings, seconds=seconds):
        quotes, trades = item.quotes.to_pandas(), item.trades.to_pandas()
        found = max(
            found,
            max_ratio(quotes["bid"], "quotes"),
            max_ratio(quotes["ask"], "quotes"),
            max_ratio((quotes["bid"] + quotes["ask"]) / 2, "quotes"),
            max_ratio(trades["price"]),
        )
    assert round(found, 1) == worst


def test_the_limits_come_from_the_kinds_settings() -> None:
    frame = real_sample("trades")
    frame.loc[120, "price"] *= SPIKE
    coarse = QualitySettings(trades=TradeLimits(jump_floor_bp=1000.0))  # a 10 % floor
    jumps = validation_frame(pa.Table.from_pandas(frame), "trades", REAL_DAY, coarse)
    assert jumps.loc[120, "price_jump"] == pytest.approx(
        abs(np.log(frame.loc[120, "price"] / jumps.loc[120, "price_reference"])) / 0.1
    )
    assert 60 < jumps.loc[120, "price_jump"] < 70  # ln(1000) / 10 %: under the limit of 100
