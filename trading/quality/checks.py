"""The catalogue of data-quality checks: names, what each means, default severity.

Every expectation in the suites carries `meta={"check": name}`, so a result maps back to a
check here and to its severity in `QualitySettings.checks`.
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["block", "warn"]

# name -> (what fails it, default severity). Block: the training flow must stop.
# Warn: reported in the table and the CSV, never stops anything. spread_range and row_count
# warn by default: a volatile day can have wide spreads and a quiet or partial day
# (a REST snapshot, a test sample) few rows, and neither makes the data wrong. coverage
# blocks: its per-kind min_coverage (QualitySettings) is set low for ticks and features
# (10 % of the day: only a nearly empty day fails) and high for bars (90 %: bar archives
# come in whole days).
CHECKS: dict[str, tuple[str, Severity]] = {
    "data_present": ("no lake file (or an empty one) for a requested symbol/kind/day", "block"),
    "schema": ("file unreadable, a column missing or of an incompatible type", "block"),
    "not_null": ("a null or NaN in a required column", "block"),
    "positive_price": (
        "a price (bid, ask, trade price, bar open/high/low/close) that is not finite and > 0",
        "block",
    ),
    "positive_size": ("a size (bid_size, ask_size, qty) that is not finite and > 0", "block"),
    "crossed_book": ("bid >= ask (locked or crossed top of book)", "block"),
    "ohlc_consistent": ("a bar whose high < max(open, close) or low > min(open, close)", "block"),
    "non_negative_volume": (
        "a bar volume (volume, quote_volume, taker_buy_volume, n_trades) not finite and >= 0",
        "block",
    ),
    "price_jump": (
        "a price (bid, ask, mid, trade price, bar close) jumping above max_jump_ratio x its "
        "recent scale",
        "block",
    ),
    "timestamps_increasing": ("ts_ns going backwards (or repeating, where strict)", "block"),
    "ts_in_day": ("a timestamp outside the UTC day of its file", "block"),
    "unique_ts": ("a bar open time (ts_ns) that occurs more than once in a day", "block"),
    "unique_trade_id": ("a trade id that occurs more than once in a day", "block"),
    "trade_id_increasing": ("a trade id not greater than the one before it", "block"),
    "aggressor_side_valid": ("aggressor_side not in {1, -1, 0}", "block"),
    "gap": (
        "time since the previous row above the kind's max_gap_s (bars: more than "
        "max_gap_bars missing bars)",
        "block",
    ),
    "coverage": (
        "the day's data covers less than the kind's min_coverage of the day's expected time",
        "block",
    ),
    "spread_range": ("quoted spread above max_spread_bp", "warn"),
    "row_count": ("rows per symbol-day outside [min_rows, max_rows]", "warn"),
    "feature_finite": ("a NaN or infinite feature value", "block"),
    "feature_range": ("a z value outside +-z_clip or a raw value outside its range", "block"),
}

CHECK_NAMES: tuple[str, ...] = tuple(CHECKS)
DEFAULT_SEVERITY: dict[str, Severity] = {name: sev for name, (_, sev) in CHECKS.items()}
