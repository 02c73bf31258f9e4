"""Helpers (not pytest fixtures) for regime-model tests: an in-memory synthetic market
turned into a FEATURES_V1 `Dataset` with the true regime of every row, small but sane
training settings, and a cached fitted model.

Expensive results are computed once per test run (tests.shared: across xdist workers)
and cached per process; every public helper hands out fresh copies, so callers may modify
what they get without affecting other tests.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from tests.shared import shared_value
from trading.data.lake import day_start_ns
from trading.data.synthetic import SyntheticDay, generate
from trading.features.descriptor import FeatureSet, bars_v1, features_v1
from trading.features.v1 import compute_batch, rows_to_table, step_ns
from trading.regime.config import DriftSettings, PolicySettings, RegimeSettings
from trading.regime.dataset import Dataset, row_columns
from trading.regime.model import RegimeModel
from trading.regime.train import TrainReport, fit_regime_model
from trading.settings import AppConfig, load_settings

# The default day. Which day matters: how well the HMM search recovers the regimes depends
# on the data (on some days EM ends in a poor local optimum); on this day the default
# settings recover the 4 true regimes (adjusted Rand index ~0.95).
START = dt.date(2025, 1, 1)
DEFAULT_SEED = 7
Settings3 = tuple[RegimeSettings, PolicySettings, DriftSettings]


def default_settings() -> Settings3:
    return RegimeSettings(), PolicySettings(), DriftSettings()


def fast_settings(**regime_overrides: object) -> Settings3:
    """Cheaper training settings for tests where model quality is not the point: one
    restart per K, K in 3..4, fewer EM and boosting iterations. Still a real fit."""
    regime = RegimeSettings(
        **{"k_min": 3, "k_max": 4, "restarts": 1, "max_iter": 50, **regime_overrides}  # type: ignore[arg-type]
    )
    policy = PolicySettings(max_iter=20, max_leaf_nodes=7, min_samples_leaf=100)
    return regime, policy, DriftSettings()


def truth_at(regime_ts_ns: np.ndarray, regime: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
    """True regime of the second containing each ts (regime_ts_ns: start of each second,
    increasing). Rows before the first second get -1."""
    idx = np.searchsorted(regime_ts_ns, ts_ns, side="right") - 1
    out = np.where(idx >= 0, regime[np.clip(idx, 0, None)], -1)
    return out.astype(np.int64)


def features_of_days(
    days: Sequence[SyntheticDay], fs: FeatureSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ready FEATURES_V1 rows of one symbol's consecutive synthetic days, computed in one
    pass (the features carry over midnight): ts_ns, X (rows x row_columns(fs)) and the
    true regime of each row."""
    quotes = pa.concat_tables([d.quotes for d in days])
    trades = pa.concat_tables([d.trades for d in days])
    regimes = pa.concat_tables([d.regimes for d in days])
    last_second = int(regimes.column("ts_ns").to_numpy()[-1])
    until = last_second + 1_000_000_000  # flush the last second
    result = compute_batch(fs, quotes, trades, until_ns=until)
    table = rows_to_table(fs, result.rows, ready_only=True)
    ts = table.column("ts_ns").to_numpy().astype(np.int64)
    X = np.column_stack([table.column(c).to_numpy() for c in row_columns(fs)]).astype(np.float64)
    truth = truth_at(
        regimes.column("ts_ns").to_numpy().astype(np.int64),
        regimes.column("regime").to_numpy().astype(np.int64),
        ts,
    )
    return ts, X, truth


@functools.lru_cache(maxsize=1)
def _app_config() -> AppConfig:
    """The repository's configs/ without the HMMTRADER_* overrides of the environment: a
    cached dataset must not depend on which test asked for it first."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("HMMTRADER_")}
    try:
        return load_settings()
    finally:
        os.environ.update(saved)


def _build(
    symbols: tuple[str, ...],
    days: int,
    seed: int,
    seconds: int | None,
    config: AppConfig,
    start: dt.date,
) -> tuple[Dataset, dict[str, np.ndarray]]:
    fs = features_v1(config.settings.features)
    specs = {name: config.symbol(name) for name in symbols}
    per_symbol: dict[str, list[SyntheticDay]] = {name: [] for name in symbols}
    for item in generate(specs, start, days, seed, config.settings.synthetic, seconds=seconds):
        per_symbol[item.symbol].append(item)
    frames, truth = {}, {}
    for name in symbols:
        ts, X, y = features_of_days(per_symbol[name], fs)
        frames[name] = (ts, X)
        truth[name] = y
    end = start + dt.timedelta(days=days - 1)
    return Dataset(fs, list(symbols), start, end, step_ns(fs), frames), truth


@functools.lru_cache(maxsize=8)
def _cached(
    symbols: tuple[str, ...], days: int, seed: int, seconds: int | None, start: dt.date
) -> tuple[Dataset, dict[str, np.ndarray]]:
    key = f"dataset:{symbols}:{days}:{seed}:{seconds}:{start}"
    return shared_value(key, lambda: _build(symbols, days, seed, seconds, _app_config(), start))


def copy_dataset(data: Dataset) -> Dataset:
    """The same Dataset with its own arrays."""
    frames = {s: (ts.copy(), X.copy()) for s, (ts, X) in data.frames.items()}
    return Dataset(data.feature_set, list(data.symbols), data.start, data.end, data.step_ns, frames)


def synthetic_dataset(
    symbols: Sequence[str] = ("BTCUSDT",),
    days: int = 1,
    seed: int = DEFAULT_SEED,
    seconds: int | None = None,
    config: AppConfig | None = None,
    start: dt.date = START,
) -> tuple[Dataset, dict[str, np.ndarray]]:
    """A synthetic market generated in memory (no lake) as a FEATURES_V1 Dataset, and the
    true regime (0 = calmest) of every feature row per symbol, aligned with its ts_ns.

    `config` defaults to the repository's configs/ (load_settings()); its symbol specs,
    synthetic settings and feature parameters are used. Results for the default config
    are cached per process; the returned arrays are copies."""
    if config is None:
        data, truth = _cached(tuple(symbols), days, seed, seconds, start)
    else:
        data, truth = _build(tuple(symbols), days, seed, seconds, config, start)
    return copy_dataset(data), {s: t.copy() for s, t in truth.items()}


def _settings_key(settings: Settings3 | None) -> tuple[str, str, str]:
    regime, policy, drift = settings or default_settings()
    return regime.model_dump_json(), policy.model_dump_json(), drift.model_dump_json()


@functools.lru_cache(maxsize=8)
def _cached_fit(
    symbols: tuple[str, ...],
    days: int,
    seed: int,
    seconds: int | None,
    start: dt.date,
    key: tuple[str, str, str],
) -> tuple[RegimeModel, TrainReport]:
    def fit() -> tuple[RegimeModel, TrainReport]:
        data, _ = _cached(symbols, days, seed, seconds, start)
        regime = RegimeSettings.model_validate_json(key[0])
        policy = PolicySettings.model_validate_json(key[1])
        drift = DriftSettings.model_validate_json(key[2])
        return fit_regime_model(data, regime, policy, drift)

    return shared_value(f"fit:{symbols}:{days}:{seed}:{seconds}:{start}:{key}", fit)


def fitted_model(
    symbols: Sequence[str] = ("BTCUSDT",),
    days: int = 1,
    seed: int = DEFAULT_SEED,
    seconds: int | None = None,
    settings: Settings3 | None = None,
    start: dt.date = START,
) -> tuple[RegimeModel, TrainReport]:
    """(RegimeModel, TrainReport) fitted on `synthetic_dataset(...)` with `settings`
    (default: the default RegimeSettings/PolicySettings/DriftSettings). Fitted once per
    process; deep copies are returned."""
    model, report = _cached_fit(tuple(symbols), days, seed, seconds, start, _settings_key(settings))
    return copy.deepcopy(model), copy.deepcopy(report)


# --- the real month: Binance spot 1-minute bars, January 2024 (tests/fixtures/real) ---------

REAL = Path(__file__).parent / "fixtures" / "real"
REAL_SYMBOLS = ("BTCUSDT", "ETHUSDT")
REAL_START = dt.date(2024, 1, 1)
REAL_TRAIN_END = dt.date(2024, 1, 21)  # three weeks of training; the last week is held out
REAL_END = dt.date(2024, 1, 31)


def real_bars(symbol: str) -> pa.Table:
    """A shipped `datetime,open,high,low,close,volume` file (datetime: the bar's open, UTC)
    as a table of the lake's bars schema."""
    import pandas as pd

    from trading.data.schemas import SCHEMAS

    frame = pd.read_csv(REAL / f"{symbol}-1m-2024-01.csv")
    ts = pd.to_datetime(frame["datetime"], utc=True).dt.as_unit("ns").astype("int64")
    n = len(frame)
    columns = {
        "ts_ns": ts.to_numpy(),
        **{c: frame[c].to_numpy(np.float64) for c in ("open", "high", "low", "close", "volume")},
        "quote_volume": np.zeros(n),
        "n_trades": np.zeros(n, dtype=np.int64),
        "taker_buy_volume": np.zeros(n),
    }
    return pa.table(columns, schema=SCHEMAS["bars"])


def _real_build(symbols: tuple[str, ...], start: dt.date, end: dt.date) -> Dataset:
    from trading.features.bars import bars_batch

    fs = bars_v1(_app_config().settings.bars)
    lo = day_start_ns(start)
    hi = day_start_ns(end + dt.timedelta(days=1))
    frames = {}
    for symbol in symbols:
        table = rows_to_table(fs, bars_batch(real_bars(symbol), fs), ready_only=True)
        ts = table.column("ts_ns").to_numpy().astype(np.int64)
        X = np.column_stack([table.column(c).to_numpy() for c in row_columns(fs)])
        keep = (ts >= lo) & (ts < hi)
        frames[symbol] = (ts[keep], X[keep].astype(np.float64))
    return Dataset(fs, list(symbols), start, end, step_ns(fs), frames)


@functools.lru_cache(maxsize=4)
def _real_cached(symbols: tuple[str, ...], start: dt.date, end: dt.date) -> Dataset:
    return shared_value(f"real:{symbols}:{start}:{end}", lambda: _real_build(symbols, start, end))


def real_bars_dataset(
    symbols: Sequence[str] = REAL_SYMBOLS,
    start: dt.date = REAL_START,
    end: dt.date = REAL_TRAIN_END,
) -> Dataset:
    """BARS_V1 rows of the real month (ready rows stamped in [start, end]), computed from
    the shipped bars as `hmmtrader features --set bars_v1` would (warm-up from the first
    bar of the month). A fresh copy each call."""
    return copy_dataset(_real_cached(tuple(symbols), start, end))


def real_settings(**regime_overrides: object) -> Settings3:
    """The repository's regime / policy / drift settings for the real month, one restart
    per K (on these bars restarts end within 0.005 nats per row of each other) and K in
    3..6: about 10 s for three weeks of both symbols."""
    s = _app_config().settings
    regime = s.regime.model_copy(
        update={
            "feature_set": "bars_v1",
            "restarts": 1,
            "k_min": 3,
            "k_max": 6,
            **regime_overrides,
        }
    )
    return regime, s.policy, s.drift


@functools.lru_cache(maxsize=2)
def _real_fit(key: tuple[str, str, str]) -> tuple[RegimeModel, TrainReport]:
    def fit() -> tuple[RegimeModel, TrainReport]:
        regime = RegimeSettings.model_validate_json(key[0])
        policy = PolicySettings.model_validate_json(key[1])
        drift = DriftSettings.model_validate_json(key[2])
        return fit_regime_model(
            _real_cached(REAL_SYMBOLS, REAL_START, REAL_TRAIN_END), regime, policy, drift
        )

    return shared_value(f"real-fit:{key}", fit)


def real_fitted_model(settings: Settings3 | None = None) -> tuple[RegimeModel, TrainReport]:
    """The model fitted on three weeks of the real month (both symbols) with
    `settings` (default: real_settings()); fitted once per run, deep copies returned."""
    model, report = _real_fit(_settings_key(settings or real_settings()))
    return copy.deepcopy(model), copy.deepcopy(report)
