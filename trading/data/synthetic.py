"""A regime-switching synthetic market: quotes, trades, 1-minute bars and the true regimes.

The model (numpy arrays throughout; Python-level loops run over regime switches, about 72
a day, and the seconds of the momentum recursion, never over ticks):

* Regimes. K hidden regimes (`SyntheticSettings.n_regimes`) follow a Markov chain on a
  1-second grid. Each second the chain leaves its regime with probability 1/mean_dwell_s
  (dwell times are geometric with mean `mean_dwell_s`) and jumps to regime j != i with
  weight 1/|i - j| (neighbouring regimes are likelier). Regimes are ordered by volatility:
  regime 0 is the calmest; higher regimes have wider spreads and more trades, and each has
  its own order-flow imbalance (buyer probability) and drift. The path is market-wide:
  every symbol of a run shares it, and it is written per symbol as lake kind "regimes".
* Prices. Each symbol's log-mid is a random walk on a 100 ms grid with the regime's
  volatility (times a per-symbol multiplier) and drift. Symbols are correlated through one
  common factor: z_s = a_s * z_common + sqrt(1 - a_s**2) * z_s_own with a_s = sqrt(|rho|),
  so every pair of symbols has correlation rho (`correlation`). For rho < 0 the loading's
  sign alternates along `sign_order` (default: the order of the `symbols` mapping; the lake
  ingests pass the configured symbols' order, so a symbol's sign does not depend on which
  others are generated with it), which is exact for two symbols (with more, pairs of equal
  sign get +|rho|). Mid returns sampled from the quotes every second show slightly less,
  about 0.92 * rho (the quotes of two symbols are stale by different fractions of a
  second: the Epps effect); at 5 s and longer it is about rho.
* Quotes. Poisson arrivals at `quote_rate_hz` times a mild regime factor (0.9 .. 1.1, mean
  1 over the chain's stationary distribution), plus a book snapshot at 00:00:00 of each
  day, so every trade of a day has a prevailing quote in the same day. Timestamps have
  microsecond resolution and strictly increase. The quote shows the latent mid of the last
  100 ms grid point: bid/ask are on the tick grid, ask - bid is the regime's spread
  (log-normal noise, never below one tick). Sizes are log-normal around a per-side depth
  of about 150k USD (thinner in volatile regimes), on the lot grid and >= min_qty; the
  bid/ask size ratio leans with the regime's order flow (more bid depth when buyers
  dominate).
* Trades. Poisson arrivals at the regime's rate (times a per-symbol factor and
  `trade_rate_scale`). The aggressor is a buyer (+1) with the regime's buyer probability,
  else a seller (-1); a buy prints at the ask and a sell at the bid of the latest quote at
  or before the trade. Quantities are log-normal (median about 400 USD), on the lot grid,
  within [min_qty, max_qty]. Trade ids count from 1 per symbol and continue across the
  days of a run.
* Momentum (on unless `momentum_bp_per_s` is 0). Order-flow bursts, like a large order
  worked through the book or a liquidation cascade, give the price a short-lived trend
  that the order flow announces. A latent factor z (unit variance, one value per second)
  decays with half-life `momentum_halflife_s` and is kicked by bursts: Poisson arrivals,
  `momentum_bursts_per_h` per hour, of random sign and equal size (shot noise; Gaussian
  shocks, i.e. an OU process, when the rate is 0). Each symbol's factor is
  a_s * z_shared + sqrt(1 - a_s**2) * z_own of a market-wide and its own such process,
  with |a_s| = sqrt(`momentum_correlation`) and the sign of the prices' loading, so two
  symbols' momenta have correlation `momentum_correlation` (negated where their returns'
  correlation is negative). The drift
  m = `momentum_bp_per_s` * z (bp/s, times the symbol's volatility multiplier) is added to
  the log-mid's drift; the buyer probability of a trade shifts by `momentum_flow` * m and
  E[log(bid_size / ask_size)] by `momentum_book` * m (m before the multiplier; the buyer
  probability is kept within 0.02 .. 0.98). So FEATURES_V1's flow and book features
  (sign imbalance, signed volume, imbalance, queues) foretell the next minute or so.
  Defaults (0.28 bp/s, 30 s, 2 bursts/h, flow 0.15, book 0.9, correlation 0.9): a
  market-wide burst starts at 2.39 bp/s (a symbol's own one at 0.80) and moves the price
  about 105 bp (35) in all, half of it in the first 30 s; as it starts, the buyer
  probability rises by 0.36 and the book's log size ratio by 2.2. This is strong on purpose (a taker must beat 20 bp
  of fees per round trip): the momentum adds a daily standard deviation of 766 bp to
  BTCUSDT's log-mid (957 bp to ETHUSDT's; the std of a day's sum of the AR(1) above), on
  top of the regimes' 931 bp (1,163 bp): 1,205 bp (1,506 bp) in all.
* Bars. 1-minute bars from the trades; a minute without trades repeats the previous close
  with zero volume (before the first trade of a run: the opening mid on the tick grid).

Determinism: the same (seed, symbols, start, days, settings) give identical tables. Random
numbers come from `numpy.random.default_rng(SeedSequence(seed, spawn_key=...))`, i.e. the
child streams `SeedSequence.spawn` would make, but keyed by the calendar day and a hash of
the symbol name instead of their position: one stream per day for the regime path, one
per day for the common price factor, one per day for the shared momentum, one per (day,
symbol) for the symbol's own momentum and one per (day, symbol) for everything else (so
turning the momentum off changes prices, sides and book sizes, not the arrivals). A day's
random numbers therefore do not depend on which other days or symbols are generated. What
does carry over from day D to D+1 within one call is the state: the regime at the end of
D, each symbol's latent log-mid, the momentum factors, the next trade id and the last bar
close, so prices, momentum and regimes continue smoothly across midnight (the first day
starts without momentum). Consequently day D+1 generated alone (it starts
from the start prices and a regime drawn from the stationary distribution, with trade ids
from 1) differs from day D+1 generated together with D; day D itself is the same whether
or not D+1 follows.

Resuming: each SyntheticDay carries its symbol's `SyntheticState` at the end of the day
(that carry plus the market-wide regime and shared momentum), and `generate(...,
resume=...)` continues from such states: it yields exactly the days that one call from the
origin would yield, bit for bit, for any subset of the symbols (nothing of one symbol
depends on the others, given a fixed `sign_order`). `ingest_synthetic` stores the state as
schema metadata of every regimes file it writes (key `STATE_METADATA_KEY`), and
`ingest_synthetic_day` uses it to add one day per night without regenerating the past.

Day length: every file written carries the day's length in seconds (`DAY_SECONDS_METADATA_KEY`).
A day the lake holds with another length is not regenerated (`SyntheticDayLengthError`,
naming both lengths) unless `overwrite` is given. Whenever a written day replaces different
data (another length, seed, origin or settings), the symbol's derived files (features) of
that day and of the next (whose warm-up read it) are deleted in the same batch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from trading.data.inputs import parse_symbols
from trading.data.lake import Lake, LakeBatch, Written, day_start_ns
from trading.data.schemas import BUYER, SCHEMAS, SELLER
from trading.errors import DataFormatError, InputError
from trading.settings import AppConfig, SymbolSpec, SyntheticSettings

SECONDS_PER_DAY = 86_400
MAX_DAYS = 366
GRID_PER_S = 10  # latent price grid: 100 ms
_US_PER_S = 1_000_000
_US_PER_GRID = _US_PER_S // GRID_PER_S
_NS_PER_US = 1_000
# Arrivals fall in the first 999 ms of their second, so the 1 us shifts that make
# timestamps strictly increasing can never push one into the next second (or day).
_MAX_OFFSET_US = 999_000

_BP = 1e-4
_TOP_NOTIONAL_USD = 150_000.0  # median depth per side in the calmest regime
_TRADE_NOTIONAL_USD = 400.0  # median trade size
_TRADE_SIZE_SIGMA = 1.4
_BOOK_SIZE_SIGMA = 0.7
_SPREAD_SIGMA = 0.3
_IMBALANCE = 3.0  # E[log(bid_size / ask_size)] = 2 * _IMBALANCE * (buy_prob - 0.5)
_QUOTE_RATE_SWING = 0.1  # quote rate factor 1 - swing (regime 0) .. 1 + swing (last)

_REGIME_STREAM = 0
_COMMON_STREAM = 1
_SYMBOL_STREAM = 2
_MOMENTUM_STREAM = 3
_MAX_BUY_PROB = 0.98  # the momentum's lean never makes one side certain

STATE_METADATA_KEY = b"hmmtrader.synthetic_state"  # on every synthetic regimes file
DAY_SECONDS_METADATA_KEY = b"hmmtrader.synthetic_day_seconds"  # on every synthetic file
# Bump when a change to this module changes what the same state and settings generate,
# so that states written before the change are never resumed.
_STATE_VERSION = 1
# The SymbolSpec fields generation reads (the price and size precisions derive from the
# tick and the lot); the fees do not change the market, so they stay out of fingerprints.
_SPEC_FIELDS = frozenset({"tick_size", "lot_size", "min_qty", "max_qty"})

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class SyntheticDayLengthError(InputError):
    """The lake holds a synthetic day generated with another day length."""


@dataclass(frozen=True)
class RegimeParams:
    """One hidden market state."""

    vol_bp_per_sqrt_s: float  # std of log-mid changes, basis points per sqrt(second)
    spread_bp: float  # median quoted spread, basis points of the mid
    trade_rate_hz: float  # trades per second
    buy_prob: float  # probability that a trade's aggressor is a buyer
    drift_bp_per_s: float  # mean log-mid change, basis points per second

    def __post_init__(self) -> None:
        if not (self.vol_bp_per_sqrt_s > 0 and self.spread_bp > 0 and self.trade_rate_hz > 0):
            raise ValueError(f"{self}: volatility, spread and trade rate must be positive")
        if not 0 < self.buy_prob < 1:
            raise ValueError(f"{self}: buy_prob must be between 0 and 1")


def default_regimes(n: int) -> list[RegimeParams]:
    """n regimes (1..8) for BTC/ETH-like spot markets, calmest first.

    Volatility 0.5 .. 6 bp/sqrt(s), spread 0.3 .. 5 bp and trade rate 1.5 .. 15 /s rise
    geometrically with the index. Order flow: regime 0 is balanced, the last (stressed)
    regime is sell-heavy (buyer probability 0.36), the ones between alternate buy-heavy /
    sell-heavy; the drift follows the order flow (0.05 bp/s per unit of imbalance).
    """
    if not 1 <= n <= 8:
        raise ValueError(f"default_regimes supports 1..8 regimes, not {n}")
    vols = np.geomspace(0.5, 6.0, n)
    spreads = np.geomspace(0.3, 5.0, n)
    rates = np.geomspace(1.5, 15.0, n)
    regimes = []
    for i in range(n):
        if i == 0:
            tilt = 0.0
        elif i == n - 1:
            tilt = -0.14
        else:
            tilt = (1.0 if i % 2 else -1.0) * (0.06 + 0.06 * i / (n - 1))
        regimes.append(
            RegimeParams(
                vol_bp_per_sqrt_s=round(float(vols[i]), 4),
                spread_bp=round(float(spreads[i]), 4),
                trade_rate_hz=round(float(rates[i]), 4),
                buy_prob=round(0.5 + tilt, 4),
                drift_bp_per_s=round(0.05 * tilt, 6),
            )
        )
    return regimes


@dataclass(frozen=True)
class SyntheticState:
    """Where one symbol's synthetic market stands at the end of `day`: what
    `generate(..., resume=...)` needs to continue with the next day exactly as one call
    from `origin` would.

    `origin` is the first day of the chain of days that led here and `fingerprint` a hash
    of everything else the generated days depend on (the synthetic settings, the symbol,
    the generation-relevant fields of its spec, `seconds`, the regimes and the sign of the
    symbol's loading); a state is resumed only if both, and the seed, match. origin, seed,
    previous_regime and shared_momentum are market-wide: the same for every symbol.
    """

    symbol: str
    day: dt.date  # the day whose end this is
    origin: dt.date
    seed: int
    fingerprint: str
    log_mid: float  # latent log-mid at the last 100 ms grid point
    next_trade_id: int
    last_close: float | None  # close of the last 1-minute bar
    momentum: float  # the symbol's own momentum factor at the last second
    previous_regime: int  # market-wide regime of the last second
    shared_momentum: float  # market-wide momentum factor at the last second

    def to_json(self) -> str:
        """Compact JSON; floats are written with repr, so `from_json` gives them back bit
        for bit (NaN and infinities are refused)."""
        data = dataclasses.asdict(self)
        data["day"] = self.day.isoformat()
        data["origin"] = self.origin.isoformat()
        data["version"] = _STATE_VERSION
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> SyntheticState:
        """Parse `to_json`'s output; anything else raises DataFormatError."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DataFormatError(f"synthetic state is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise DataFormatError("synthetic state: expected a JSON object")
        if data.get("version") != _STATE_VERSION:
            raise DataFormatError(
                f"synthetic state version {data.get('version')!r}: expected {_STATE_VERSION}"
            )
        expected = {f.name for f in dataclasses.fields(cls)} | {"version"}
        if set(data) != expected:
            raise DataFormatError(
                f"synthetic state: fields {sorted(set(data))}, expected {sorted(expected)}"
            )
        try:
            last_close = data["last_close"]
            return cls(
                symbol=_json_value(data, "symbol", str),
                day=dt.date.fromisoformat(_json_value(data, "day", str)),
                origin=dt.date.fromisoformat(_json_value(data, "origin", str)),
                seed=_json_value(data, "seed", int),
                fingerprint=_json_value(data, "fingerprint", str),
                log_mid=_json_value(data, "log_mid", float),
                next_trade_id=_json_value(data, "next_trade_id", int),
                last_close=None if last_close is None else _json_value(data, "last_close", float),
                momentum=_json_value(data, "momentum", float),
                previous_regime=_json_value(data, "previous_regime", int),
                shared_momentum=_json_value(data, "shared_momentum", float),
            )
        except (ValueError, OverflowError) as exc:
            raise DataFormatError(f"synthetic state: {exc}") from None


def _json_value(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    if isinstance(value, bool):
        raise ValueError(f"{key} must be {kind.__name__}, got {value!r}")
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise ValueError(f"{key} must be {kind.__name__}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key} must be finite, got {value!r}")
    return value


@dataclass
class SyntheticDay:
    """One symbol's UTC day (or its first `seconds`) in the lake schemas, and the state
    at its end (to resume from)."""

    symbol: str
    day: dt.date
    quotes: pa.Table
    trades: pa.Table
    bars: pa.Table
    regimes: pa.Table
    state: SyntheticState


@dataclass(frozen=True)
class _Profile:
    start_price: float
    vol_mult: float
    spread_mult: float
    trade_rate_mult: float


_PROFILES = {
    "BTCUSDT": _Profile(60_000.0, 1.0, 1.0, 1.0),
    "ETHUSDT": _Profile(3_000.0, 1.25, 1.5, 0.8),
}
_OTHER = _Profile(100.0, 1.5, 2.0, 0.5)


@dataclass
class _Carry:
    """What one symbol hands from one day to the next."""

    log_mid: float
    next_trade_id: int = 1
    last_close: float | None = None
    momentum: float = 0.0  # the symbol's own momentum factor at the last second


@dataclass(frozen=True)
class _Market:
    """Per-regime parameters as arrays, plus the regime chain."""

    vol: FloatArray
    spread: FloatArray
    rate: FloatArray
    buy: FloatArray
    drift: FloatArray
    quote_mult: FloatArray
    jump_cdf: FloatArray  # row i: cumulative probabilities of the regime after leaving i
    stationary: FloatArray  # long-run share of time in each regime
    switch_prob: float

    @classmethod
    def build(cls, params: Sequence[RegimeParams], mean_dwell_s: float) -> _Market:
        k = len(params)
        if k == 0:
            raise ValueError("at least one regime is required")
        index = np.arange(k)
        distance = np.abs(index[:, None] - index[None, :]).astype(np.float64)
        weights = np.divide(1.0, distance, out=np.zeros((k, k)), where=distance > 0)
        if k == 1:
            jump = np.ones((1, 1))
            stationary = np.ones(1)
        else:
            jump = weights / weights.sum(axis=1, keepdims=True)
            # symmetric weights make the jump chain reversible with pi_i ~ row sum; the
            # dwell time is the same in every regime, so that is also the share of time
            stationary = weights.sum(axis=1) / weights.sum()
        swing = np.linspace(-1.0, 1.0, k) if k > 1 else np.zeros(1)
        quote_mult = 1.0 + _QUOTE_RATE_SWING * swing
        quote_mult /= float(stationary @ quote_mult)
        return cls(
            vol=np.array([p.vol_bp_per_sqrt_s for p in params]),
            spread=np.array([p.spread_bp for p in params]),
            rate=np.array([p.trade_rate_hz for p in params]),
            buy=np.array([p.buy_prob for p in params]),
            drift=np.array([p.drift_bp_per_s for p in params]),
            quote_mult=quote_mult,
            jump_cdf=np.cumsum(jump, axis=1),
            stationary=stationary,
            switch_prob=0.0 if k == 1 else min(1.0, 1.0 / mean_dwell_s),
        )

    def regime_path(
        self, rng: np.random.Generator, seconds: int, previous: int | None
    ) -> npt.NDArray[np.int8]:
        """The regime of each second; `previous` is the regime of the second before."""
        switch = rng.random(seconds) < self.switch_prob
        if previous is None:
            switch[0] = True  # second 0 draws from the stationary distribution
        at = np.flatnonzero(switch)
        draws = rng.random(len(at))
        states = np.empty(len(at) + 1, dtype=np.int8)
        current = -1 if previous is None else previous
        states[0] = current
        last = len(self.vol) - 1
        stationary_cdf = np.cumsum(self.stationary)
        for n, u in enumerate(draws):  # one iteration per regime switch, not per tick
            cdf = stationary_cdf if current < 0 else self.jump_cdf[current]
            current = min(int(np.searchsorted(cdf, u, side="right")), last)
            states[n + 1] = current
        return states[np.cumsum(switch)]


def _stream(seed: int, day: dt.date, *key: int) -> np.random.Generator:
    """The child stream for (day, *key): what SeedSequence.spawn makes, keyed by date."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(day.toordinal(), *key)))


def _symbol_key(name: str) -> int:
    return zlib.crc32(name.encode())


def _momentum_path(
    rng: np.random.Generator,
    seconds: int,
    previous: float,
    halflife_s: float,
    bursts_per_s: float,
) -> FloatArray:
    """A unit-variance momentum factor each second: z_t = phi * z_(t-1) + e_t with
    phi = 0.5 ** (1 / halflife_s), i.e. an OU process sampled each second. The shocks e_t
    are order-flow bursts: a Poisson number (rate `bursts_per_s`) of kicks of random sign
    and equal size (shot noise; Gaussian shocks when the rate is 0). `previous` is z of the
    second before."""
    phi = 0.5 ** (1.0 / halflife_s)
    if bursts_per_s > 0:
        counts = rng.poisson(bursts_per_s, seconds)
        net = 2 * rng.binomial(counts, 0.5) - counts  # sum of `counts` random signs
        shocks = net * math.sqrt((1.0 - phi * phi) / bursts_per_s)
    else:
        shocks = math.sqrt(1.0 - phi * phi) * rng.standard_normal(seconds)
    path = itertools.accumulate(shocks.tolist(), lambda z, e: phi * z + e, initial=previous)
    return np.fromiter(path, dtype=np.float64, count=seconds + 1)[1:]


def _arrivals(rng: np.random.Generator, rate_per_s: FloatArray, opening: bool = False) -> IntArray:
    """Poisson arrivals with a rate constant within each second: strictly increasing
    microseconds since the start of the day (`opening` adds one at 0)."""
    counts = rng.poisson(rate_per_s)
    second = np.repeat(np.arange(len(rate_per_s), dtype=np.int64), counts)
    us = second * _US_PER_S + rng.integers(0, _MAX_OFFSET_US, size=len(second), dtype=np.int64)
    us.sort()
    if opening:
        us = np.concatenate([np.zeros(1, dtype=np.int64), us])
    # x strictly increasing <=> x - i non-decreasing: collisions move up by 1 us
    step = np.arange(len(us), dtype=np.int64)
    return np.maximum.accumulate(us - step) + step


def _on_lots(size: FloatArray, spec: SymbolSpec) -> FloatArray:
    """Sizes on the lot grid, at least min_qty (and one lot), at most max_qty."""
    lot = spec.lot_size
    low = max(1.0, math.ceil(spec.min_qty / lot - 1e-9))
    high = max(low, math.floor(spec.max_qty / lot + 1e-9))
    lots = np.clip(np.rint(size / lot), low, high)
    return np.round(lots * lot, spec.size_precision)


def _on_ticks(ticks: FloatArray, spec: SymbolSpec) -> FloatArray:
    return np.round(ticks * spec.tick_size, spec.price_precision)


def _bars(
    trade_us: IntArray,
    price: FloatArray,
    qty: FloatArray,
    side: npt.NDArray[np.int8],
    seconds: int,
    previous_close: float,
) -> dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]:
    n_min = -(-seconds // 60)
    minute = trade_us // (60 * _US_PER_S)
    volume = np.bincount(minute, weights=qty, minlength=n_min)
    quote_volume = np.bincount(minute, weights=price * qty, minlength=n_min)
    taker_buy = np.bincount(minute, weights=np.where(side == BUYER, qty, 0.0), minlength=n_min)
    n_trades = np.bincount(minute, minlength=n_min).astype(np.int64)
    minutes = np.arange(n_min)
    starts = np.searchsorted(minute, minutes, side="left")
    ends = np.searchsorted(minute, minutes, side="right")
    full = ends > starts
    close = np.full(n_min, np.nan)
    opening = np.full(n_min, np.nan)
    high = np.full(n_min, np.nan)
    low = np.full(n_min, np.nan)
    if full.any():
        first = starts[full]
        opening[full] = price[first]
        close[full] = price[ends[full] - 1]
        high[full] = np.maximum.reduceat(price, first)
        low[full] = np.minimum.reduceat(price, first)
    # empty minutes: the previous close (carried over from the day before at minute 0)
    carried = np.concatenate([[previous_close], close])
    filled = np.where(~np.isnan(carried), np.arange(n_min + 1), 0)
    prev_close = carried[np.maximum.accumulate(filled)][:-1]
    empty = ~full
    for column in (opening, high, low, close):
        column[empty] = prev_close[empty]
    return {
        "ts_ns": minutes.astype(np.int64) * 60 * _US_PER_S * _NS_PER_US,
        "open": opening,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
        "quote_volume": quote_volume,
        "n_trades": n_trades,
        "taker_buy_volume": taker_buy,
    }


def _table(kind: str, columns: dict[str, np.ndarray], day0_ns: int) -> pa.Table:
    columns = dict(columns)
    columns["ts_ns"] = columns["ts_ns"] + day0_ns
    schema = SCHEMAS[kind]
    return pa.Table.from_arrays(
        [
            pa.array(columns[name], type=field.type)
            for name, field in zip(schema.names, schema, strict=True)
        ],
        schema=schema,
    )


def _symbol_day(
    name: str,
    spec: SymbolSpec,
    day: dt.date,
    market: _Market,
    settings: SyntheticSettings,
    regime: npt.NDArray[np.int8],
    common: FloatArray,
    loading: float,
    momentum: FloatArray | None,
    carry: _Carry,
    rng: np.random.Generator,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The day's quotes, trades and bars; `carry` is advanced to the end of the day."""
    profile = _PROFILES.get(name, _OTHER)
    seconds = len(regime)
    day0_ns = day_start_ns(day)
    tick = spec.tick_size

    # latent log-mid on the 100 ms grid; increment j ends at grid time j / GRID_PER_S
    fine = np.repeat(regime, GRID_PER_S)
    step_s = 1.0 / GRID_PER_S
    sigma = market.vol[fine] * (_BP * profile.vol_mult * math.sqrt(step_s))
    own = rng.standard_normal(len(fine))
    shock = loading * common + math.sqrt(max(0.0, 1.0 - loading * loading)) * own
    drift = market.drift[fine]
    if momentum is not None:  # momentum: unit-variance factor of each second
        drift = drift + np.repeat(momentum, GRID_PER_S) * (
            settings.momentum_bp_per_s * profile.vol_mult
        )
    log_mid = carry.log_mid + np.cumsum(drift * (_BP * step_s) + sigma * shock)

    # quotes
    quote_us = _arrivals(rng, settings.quote_rate_hz * market.quote_mult[regime], opening=True)
    n_quotes = len(quote_us)
    q_regime = regime[quote_us // _US_PER_S]
    mid_ticks = np.exp(log_mid[quote_us // _US_PER_GRID]) / tick
    spread_bp = (market.spread[q_regime] * profile.spread_mult) * np.exp(
        _SPREAD_SIGMA * rng.standard_normal(n_quotes) - _SPREAD_SIGMA**2 / 2
    )
    spread_ticks = np.maximum(1.0, np.rint(spread_bp * _BP * mid_ticks))
    bid_ticks = np.floor(mid_ticks - spread_ticks / 2 + 0.5)
    bid = _on_ticks(bid_ticks, spec)
    ask = _on_ticks(bid_ticks + spread_ticks, spec)
    depth = _TOP_NOTIONAL_USD / profile.start_price * np.sqrt(market.vol[0] / market.vol)
    tilt = (_IMBALANCE * (market.buy - 0.5))[q_regime]
    if momentum is not None:  # half of the log-ratio shift on each side
        lean_book = settings.momentum_book * settings.momentum_bp_per_s / 2
        tilt = tilt + lean_book * momentum[quote_us // _US_PER_S]
    size_noise = rng.standard_normal((2, n_quotes)) * _BOOK_SIZE_SIGMA
    bid_size = _on_lots(depth[q_regime] * np.exp(size_noise[0] + tilt), spec)
    ask_size = _on_lots(depth[q_regime] * np.exp(size_noise[1] - tilt), spec)

    # trades at the prevailing quote
    trade_us = _arrivals(
        rng, market.rate[regime] * (profile.trade_rate_mult * settings.trade_rate_scale)
    )
    n_trades = len(trade_us)
    t_regime = regime[trade_us // _US_PER_S]
    buy_prob = market.buy[t_regime]
    if momentum is not None:
        lean_flow = settings.momentum_flow * settings.momentum_bp_per_s
        lean = lean_flow * momentum[trade_us // _US_PER_S]
        buy_prob = np.clip(buy_prob + lean, 1.0 - _MAX_BUY_PROB, _MAX_BUY_PROB)
    side = np.where(rng.random(n_trades) < buy_prob, BUYER, SELLER).astype(np.int8)
    at = np.searchsorted(quote_us, trade_us, side="right") - 1
    price = np.where(side == BUYER, ask[at], bid[at])
    median_qty = _TRADE_NOTIONAL_USD / profile.start_price
    qty = _on_lots(median_qty * np.exp(_TRADE_SIZE_SIGMA * rng.standard_normal(n_trades)), spec)
    trade_id = carry.next_trade_id + np.arange(n_trades, dtype=np.int64)

    previous_close = carry.last_close
    if previous_close is None:
        previous_close = float(_on_ticks(np.rint(mid_ticks[:1]), spec)[0])
    bars = _bars(trade_us, price, qty, side, seconds, previous_close)

    carry.log_mid = float(log_mid[-1])
    carry.next_trade_id += n_trades
    carry.last_close = float(bars["close"][-1])

    quotes = _table(
        "quotes",
        {
            "ts_ns": quote_us * _NS_PER_US,
            "bid": bid,
            "ask": ask,
            "bid_size": bid_size,
            "ask_size": ask_size,
        },
        day0_ns,
    )
    trades = _table(
        "trades",
        {
            "ts_ns": trade_us * _NS_PER_US,
            "trade_id": trade_id,
            "price": price,
            "qty": qty,
            "aggressor_side": side,
        },
        day0_ns,
    )
    return quotes, trades, _table("bars", bars, day0_ns)


def generate(
    symbols: dict[str, SymbolSpec],
    start: dt.date,
    days: int,
    seed: int,
    settings: SyntheticSettings,
    seconds: int | None = None,
    regimes: Sequence[RegimeParams] | None = None,
    *,
    sign_order: Sequence[str] | None = None,
    resume: Mapping[str, SyntheticState] | None = None,
) -> Iterator[SyntheticDay]:
    """Yield one SyntheticDay per day and symbol (day by day, symbols in the given order).

    `seconds` (default: `settings.day_seconds`, the whole day unless configured) truncates
    every day to its first `seconds` seconds (for demos, tests and quick looks); state still carries from the end of one truncated day to
    the start of the next. `regimes` replaces `default_regimes(settings.n_regimes)`.
    `sign_order` (default: the order of `symbols`; it must contain every symbol) fixes
    which symbols get a negative price loading when `settings.correlation` < 0: those at
    odd positions. `resume` (one state per symbol, each the `SyntheticDay.state` of the day
    before `start` made with the same seed, settings, seconds, regimes and sign) continues
    that market: the days are then identical to the ones a single call from the states'
    origin yields. Arguments are checked here, before the first day is generated.
    """
    if not symbols:
        raise InputError("no symbols to generate")
    if days < 1:
        raise InputError(f"days must be at least 1, got {days}")
    if seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed}")
    n_seconds = _check_seconds(settings.day_seconds if seconds is None else seconds)
    params = list(regimes) if regimes is not None else default_regimes(settings.n_regimes)
    market = _Market.build(params, settings.mean_dwell_s)
    order = list(symbols) if sign_order is None else sign_order
    signs = _loading_signs(list(symbols), order, settings.correlation)
    fingerprints = {
        name: _fingerprint(name, spec, settings, n_seconds, signs[name], params)
        for name, spec in symbols.items()
    }
    if resume is not None:
        _check_resume(resume, start, seed, fingerprints, len(params))
    return _generate(
        dict(symbols),
        start,
        days,
        seed,
        settings,
        n_seconds,
        market,
        signs,
        fingerprints,
        None if resume is None else dict(resume),
    )


def _check_seconds(seconds: int | None) -> int:
    n_seconds = SECONDS_PER_DAY if seconds is None else seconds
    if not 1 <= n_seconds <= SECONDS_PER_DAY:
        raise InputError(f"seconds must be between 1 and {SECONDS_PER_DAY}, got {seconds}")
    return n_seconds


def _loading_signs(symbols: Sequence[str], sign_order: Sequence[str], rho: float) -> dict[str, int]:
    """+1 / -1 per symbol: -1 at the odd positions of `sign_order` when rho < 0."""
    position = {name: i for i, name in enumerate(dict.fromkeys(sign_order))}
    missing = [name for name in symbols if name not in position]
    if missing:
        raise InputError(f"sign_order {list(sign_order)} lacks {', '.join(missing)}")
    return {name: -1 if rho < 0 and position[name] % 2 else 1 for name in symbols}


def _fingerprint(
    name: str,
    spec: SymbolSpec,
    settings: SyntheticSettings,
    seconds: int,
    sign: int,
    params: Sequence[RegimeParams],
) -> str:
    """A hash of everything but seed, origin and state that one symbol's days depend on."""
    payload = {
        "version": _STATE_VERSION,
        "symbol": name,
        "spec": spec.model_dump(mode="json", include=set(_SPEC_FIELDS)),
        "settings": settings.model_dump(mode="json"),
        "seconds": seconds,
        "sign": sign,
        "regimes": [dataclasses.asdict(p) for p in params],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_resume(
    resume: Mapping[str, SyntheticState],
    start: dt.date,
    seed: int,
    fingerprints: dict[str, str],
    n_regimes: int,
) -> None:
    missing = sorted(set(fingerprints) - set(resume))
    extra = sorted(set(resume) - set(fingerprints))
    if missing or extra:
        raise InputError(
            "resume needs one state per symbol generated"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; not generated {', '.join(extra)}" if extra else "")
        )
    for name, state in resume.items():
        where = f"resume state of {name} (end of {state.day})"
        if state.symbol != name:
            raise InputError(f"{where}: it belongs to {state.symbol}")
        if state.day.toordinal() + 1 != start.toordinal():
            raise InputError(f"{where}: start must be the next day, not {start}")
        if state.seed != seed:
            raise InputError(f"{where}: made with seed {state.seed}, not {seed}")
        if state.fingerprint != fingerprints[name]:
            raise InputError(
                f"{where}: made with other settings (synthetic settings, symbol spec, seconds, "
                "regimes or sign order)"
            )
        if not 0 <= state.previous_regime < n_regimes or state.next_trade_id < 1:
            raise InputError(f"{where}: regime or trade id out of range")
    market = {(s.origin, s.previous_regime, s.shared_momentum) for s in resume.values()}
    if len(market) > 1:
        raise InputError(
            "resume states disagree on the market-wide state (origin, regime, momentum)"
        )


def _generate(
    symbols: dict[str, SymbolSpec],
    start: dt.date,
    days: int,
    seed: int,
    settings: SyntheticSettings,
    seconds: int,
    market: _Market,
    signs: dict[str, int],
    fingerprints: dict[str, str],
    resume: dict[str, SyntheticState] | None = None,
) -> Iterator[SyntheticDay]:
    scale = math.sqrt(abs(settings.correlation))
    loadings = {name: sign * scale for name, sign in signs.items()}
    previous: int | None = None  # the market-wide regime of the second before
    shared_last = 0.0  # the shared momentum factor of the second before
    origin = start
    if resume is None:
        carries = {
            name: _Carry(log_mid=math.log(_PROFILES.get(name, _OTHER).start_price))
            for name in symbols
        }
    else:
        carries = {
            name: _Carry(state.log_mid, state.next_trade_id, state.last_close, state.momentum)
            for name, state in resume.items()
        }
        first = next(iter(resume.values()))
        previous, shared_last, origin = first.previous_regime, first.shared_momentum, first.origin
    with_momentum = settings.momentum_bp_per_s > 0
    momentum_loading = math.sqrt(settings.momentum_correlation)
    bursts_per_s = settings.momentum_bursts_per_h / 3600.0
    halflife = settings.momentum_halflife_s
    shared = np.zeros(seconds)
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        regime = market.regime_path(_stream(seed, day, _REGIME_STREAM), seconds, previous)
        previous = int(regime[-1])
        common = _stream(seed, day, _COMMON_STREAM).standard_normal(seconds * GRID_PER_S)
        if with_momentum:
            rng_m = _stream(seed, day, _MOMENTUM_STREAM)
            shared = _momentum_path(rng_m, seconds, shared_last, halflife, bursts_per_s)
            shared_last = float(shared[-1])
        regimes_table = _table(
            "regimes",
            {
                "ts_ns": np.arange(seconds, dtype=np.int64) * _US_PER_S * _NS_PER_US,
                "regime": regime,
            },
            day_start_ns(day),
        )
        for name, spec in symbols.items():
            rng = _stream(seed, day, _SYMBOL_STREAM, _symbol_key(name))
            carry = carries[name]
            momentum = None
            if with_momentum:
                rng_m = _stream(seed, day, _MOMENTUM_STREAM, _symbol_key(name))
                own = _momentum_path(rng_m, seconds, carry.momentum, halflife, bursts_per_s)
                carry.momentum = float(own[-1])
                a = math.copysign(momentum_loading, loadings[name])  # the prices' sign
                momentum = a * shared + math.sqrt(max(0.0, 1.0 - a * a)) * own
            quotes, trades, bars = _symbol_day(
                name,
                spec,
                day,
                market,
                settings,
                regime,
                common,
                loadings[name],
                momentum,
                carry,
                rng,
            )
            state = SyntheticState(
                symbol=name,
                day=day,
                origin=origin,
                seed=seed,
                fingerprint=fingerprints[name],
                log_mid=carry.log_mid,
                next_trade_id=carry.next_trade_id,
                last_close=carry.last_close,
                momentum=carry.momentum,
                previous_regime=previous,
                shared_momentum=shared_last,
            )
            yield SyntheticDay(name, day, quotes, trades, bars, regimes_table, state)


def _source(seed: int) -> str:
    return f"synthetic:seed={seed}"


def ingest_synthetic(
    config: AppConfig,
    lake: Lake,
    symbols: list[str],
    start: dt.date,
    days: int,
    seed: int,
    progress: Callable[[str, int, int | None], None] | None = None,
    seconds: int | None = None,
    *,
    overwrite: bool = False,
    notice: Callable[[str], None] | None = None,
) -> list[Written]:
    """Generate `days` days from `start` for `symbols` and write quotes, trades, bars and
    regimes of all of them in one lake batch (all or nothing; re-running replaces).

    Each regimes file carries its symbol's end-of-day SyntheticState (schema metadata
    `STATE_METADATA_KEY`), from which `ingest_synthetic_day` resumes. Negative loadings
    follow the configured symbols' order, so a symbol's days do not depend on which other
    symbols are ingested with it. `seconds` (default: synthetic.day_seconds) truncates
    every day. A day the lake holds with another length raises SyntheticDayLengthError
    unless `overwrite`; derived files of replaced days are deleted (`notice(path)` each)."""
    if not 1 <= days <= MAX_DAYS:
        raise InputError(f"--days {days}: must be between 1 and {MAX_DAYS}")
    try:
        start + dt.timedelta(days=days - 1)
    except OverflowError:
        raise InputError(f"--start {start} plus {days} days is past year 9999") from None
    names = parse_symbols(config, symbols)
    specs = {name: config.symbol(name) for name in names}
    sign_order = list(config.instruments.symbols)
    settings = config.settings.synthetic
    n_seconds = _check_seconds(settings.day_seconds if seconds is None else seconds)
    if not overwrite:
        _refuse_other_lengths(
            lake,
            config.instruments.venue,
            names,
            [start + dt.timedelta(days=i) for i in range(days)],
            n_seconds,
            "add --overwrite to `hmmtrader ingest synthetic` (overwrite=True)",
        )
    days_iter = generate(specs, start, days, seed, settings, n_seconds, sign_order=sign_order)
    return _write_days(
        lake,
        config.instruments.venue,
        _source(seed),
        days_iter,
        days * len(names),
        progress,
        n_seconds,
        notice,
    )


def ingest_synthetic_day(
    config: AppConfig,
    lake: Lake,
    symbol: str,
    day: dt.date,
    seed: int,
    origin: dt.date,
    progress: Callable[[str, int, int | None], None] | None = None,
    seconds: int | None = None,
    *,
    overwrite: bool = False,
    notice: Callable[[str], None] | None = None,
) -> list[Written]:
    """Write one symbol's synthetic `day` of the market that starts at `origin` (the
    nightly step), resuming from the lake so that past days are not generated again.

    What is written is bit-identical to what `ingest_synthetic(config, lake, [...],
    origin, n, seed)` writes for `day`, for any n and any set of symbols. A day "has a
    matching state" if the symbol's regimes file of that day carries a SyntheticState of
    this symbol, day, origin and seed whose fingerprint matches the current synthetic
    settings, symbol spec, `seconds` and sign order (`config.instruments.symbols`).

    * `day` has a matching state and its quotes, trades and bars files exist with this
      seed's source: nothing is written, the result is [] (re-running a night is a no-op).
    * Else, the latest day d in [origin, day) with a matching state (normally day - 1) is
      resumed from, and d + 1 .. `day` are generated and all written (one batch).
    * Else (no such day: an empty lake, another seed or other settings), every day from
      `origin` to `day` is generated and written, replacing what the lake held.

    Days before the resumed one are never touched. A day to write that the lake holds with
    another length raises SyntheticDayLengthError unless `overwrite`; derived files of
    replaced days are deleted (`notice(path)` each). Raises InputError if `day` < `origin`,
    if more than MAX_DAYS days would have to be generated, or for a bad seed, seconds or
    symbol (ConfigError for a symbol not configured).
    """
    if day < origin:
        raise InputError(f"day {day} is before the synthetic market's origin {origin}")
    if seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed}")
    settings = config.settings.synthetic
    n_seconds = _check_seconds(settings.day_seconds if seconds is None else seconds)
    (name,) = parse_symbols(config, [symbol])
    spec = config.symbol(name)
    venue = config.instruments.venue
    source = _source(seed)
    sign_order = list(config.instruments.symbols)
    sign = _loading_signs([name], sign_order, settings.correlation)[name]
    params = default_regimes(settings.n_regimes)
    fingerprint = _fingerprint(name, spec, settings, n_seconds, sign, params)

    def matching(d: dt.date) -> SyntheticState | None:
        try:
            state = read_synthetic_state(lake, venue, name, d)
        except DataFormatError:
            return None  # unreadable: regenerated like a missing day
        if state is None:
            return None
        found = (state.symbol, state.day, state.origin, state.seed, state.fingerprint)
        return state if found == (name, d, origin, seed, fingerprint) else None

    if matching(day) is not None and all(
        _source_of(lake.path(venue, name, kind, day)) == source
        for kind in ("quotes", "trades", "bars")
    ):
        return []
    first, resume = origin, None
    for d in reversed([d for d in lake.days(venue, name, "regimes") if origin <= d < day]):
        if (day - d).days > MAX_DAYS:
            break  # older states would only need more days
        state = matching(d)
        if state is not None:
            first, resume = d + dt.timedelta(days=1), {name: state}
            break
    n_days = (day - first).days + 1
    if n_days > MAX_DAYS:
        raise InputError(
            f"synthetic {name} {day}: no day of the lake within {MAX_DAYS} days before it "
            f"holds a state to resume from (seed {seed}, origin {origin}, current settings), "
            f"and generating all {n_days} days from {origin} exceeds {MAX_DAYS}: use a "
            "later origin or fill the gap with `ingest_synthetic` in chunks"
        )
    if not overwrite:
        _refuse_other_lengths(
            lake,
            venue,
            [name],
            [first + dt.timedelta(days=i) for i in range(n_days)],
            n_seconds,
            f"run `hmmtrader ingest synthetic --symbols {name} --start {origin} "
            f"--days {(day - origin).days + 1} --seed {seed} --overwrite` with these settings",
        )
    days_iter = generate(
        {name: spec},
        first,
        n_days,
        seed,
        settings,
        seconds=n_seconds,
        sign_order=sign_order,
        resume=resume,
    )
    return _write_days(lake, venue, source, days_iter, n_days, progress, n_seconds, notice)


def read_synthetic_state(
    lake: Lake, venue: str, symbol: str, day: dt.date
) -> SyntheticState | None:
    """The SyntheticState stored with `symbol`'s regimes file of `day`; None if there is
    no such file or it carries none. DataFormatError if the file or state is unreadable."""
    path = lake.path(venue, symbol, "regimes", day)
    if not path.is_file():
        return None
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise DataFormatError(f"{path}: unreadable Parquet footer: {exc}") from None
    text = metadata.get(STATE_METADATA_KEY)
    return None if text is None else SyntheticState.from_json(text)


def stored_day_seconds(lake: Lake, venue: str, symbol: str, day: dt.date) -> int | None:
    """The length in seconds of the synthetic day the lake holds for `symbol` on `day`;
    None if it holds none (or nothing readable)."""
    for kind in ("regimes", "quotes", "trades", "bars"):
        try:
            footer = pq.read_metadata(lake.path(venue, symbol, kind, day))
        except (OSError, pa.ArrowException):
            continue
        metadata = footer.metadata or {}
        if metadata.get(DAY_SECONDS_METADATA_KEY, b"").isdigit():
            return int(metadata[DAY_SECONDS_METADATA_KEY])
        if kind == "regimes" and metadata.get(b"hmmtrader.source", b"").startswith(b"synthetic:"):
            return int(footer.num_rows)  # written before the key: one regime per second
    return None


def _refuse_other_lengths(
    lake: Lake, venue: str, symbols: Sequence[str], days: Sequence[dt.date], seconds: int, how: str
) -> None:
    """SyntheticDayLengthError for the first day the lake holds with another length."""
    for symbol in symbols:
        for day in days:
            stored = stored_day_seconds(lake, venue, symbol, day)
            if stored is not None and stored != seconds:
                raise SyntheticDayLengthError(
                    f"synthetic {symbol} {day}: the lake holds this day {stored} s long, not "
                    f"{seconds} s (synthetic.day_seconds, HMMTRADER_SYNTHETIC__DAY_SECONDS or "
                    "--day-seconds); regenerating it would replace it under the features made "
                    f"from it. Use a new home for another day length (--home or HMMTRADER_HOME), "
                    f"set the length back to {stored}, or, to replace the days and delete their "
                    f"features, {how}"
                )


def _remove_derived(
    lake: Lake, batch: LakeBatch, venue: str, symbol: str, day: dt.date
) -> list[Path]:
    """Stage the deletion of the symbol's derived files (features) of `day` and of the
    next day (whose features warmed up on this one)."""
    days = (day, day + dt.timedelta(days=1))
    found = [
        batch.remove(venue, symbol, kind, d)
        for kind in lake.derived_kinds(venue, symbol)
        for d in days
    ]
    return [path for path in found if path is not None]


def _replaces_other_data(lake: Lake, venue: str, item: SyntheticDay) -> bool:
    """True unless the lake holds this very day: a state of the same market (symbol, day,
    origin, seed and fingerprint), so the same rows."""
    try:
        stored = read_synthetic_state(lake, venue, item.symbol, item.day)
    except DataFormatError:
        return True
    new = item.state
    same = stored is not None and (
        (stored.symbol, stored.day, stored.origin, stored.seed, stored.fingerprint)
        == (new.symbol, new.day, new.origin, new.seed, new.fingerprint)
    )
    return not same


def _source_of(path: Path) -> str | None:
    """The source a lake file was written from; None if missing or unreadable."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    source = metadata.get(b"hmmtrader.source")
    return None if source is None else source.decode(errors="replace")


def _write_days(
    lake: Lake,
    venue: str,
    source: str,
    days_iter: Iterator[SyntheticDay],
    total: int,
    progress: Callable[[str, int, int | None], None] | None,
    seconds: int,
    notice: Callable[[str], None] | None = None,
) -> list[Written]:
    """Write every kind of every day in one lake batch; the regimes carry the state, every
    file the day length. Derived files of days that replace other data are deleted in the
    same batch (`notice(path)` each). `progress(symbol and day, days done, total)` after
    each symbol-day."""
    length = {DAY_SECONDS_METADATA_KEY: str(seconds).encode()}
    removed: list[Path] = []
    with lake.batch() as batch:
        for done, item in enumerate(days_iter, start=1):
            if _replaces_other_data(lake, venue, item):
                removed += _remove_derived(lake, batch, venue, item.symbol, item.day)
            for kind, table in (
                ("quotes", item.quotes),
                ("trades", item.trades),
                ("bars", item.bars),
            ):
                batch.put(venue, item.symbol, kind, table, source=source, metadata=length)
            state = {STATE_METADATA_KEY: item.state.to_json().encode(), **length}
            batch.put(venue, item.symbol, "regimes", item.regimes, source=source, metadata=state)
            if progress is not None:
                progress(f"synthetic {item.symbol} {item.day}", done, total)
    if notice is not None:
        for path in dict.fromkeys(removed):
            notice(f"deleted {path} (made from the data this ingest replaced)")
    return batch.written
