"""Benchmarks of the regime model (shared JSON result format of hmmtrader.bench).

- inference: one online step (forward filter + policy head + drift) vs hmmlearn's
  predict_proba over a 300-step window of the same model, per grid step.
- train: the K x restarts search plus policy head on one symbol-day on the 1 s grid, vs
  the same search through hmmlearn's defaults (k-means over every row, log-space EM).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table

from hmmtrader.bench import BenchResult

if TYPE_CHECKING:
    from trading.regime.dataset import Dataset
    from trading.settings import AppConfig

WINDOW = 300


def synthetic_day(config: AppConfig, console: Console, seed: int = 7) -> Dataset:
    """Day 2 of a two-day synthetic BTCUSDT market (day 1 warms the features up), as a
    Dataset: 86,400 rows on the 1 s grid."""
    import pyarrow as pa

    from trading.data.lake import day_start_ns
    from trading.data.synthetic import generate
    from trading.features.descriptor import features_v1
    from trading.features.v1 import compute_batch, rows_to_table, step_ns
    from trading.regime.dataset import Dataset, row_columns

    specs = {"BTCUSDT": config.symbol("BTCUSDT")}
    start = dt.date(2024, 1, 1)
    console.print("generating two synthetic BTCUSDT days and their features ...")
    days = list(generate(specs, start, 2, seed, config.settings.synthetic))
    quotes = pa.concat_tables([d.quotes for d in days])
    trades = pa.concat_tables([d.trades for d in days])
    fs = features_v1(config.settings.features)
    day2 = day_start_ns(start + dt.timedelta(days=1))
    rows = compute_batch(fs, quotes, trades, until_ns=day2 + 86_400 * 10**9).rows
    table = rows_to_table(fs, rows)
    ts = table.column("ts_ns").to_numpy()
    keep = ts >= day2
    X = np.column_stack([table.column(c).to_numpy() for c in row_columns(fs)])[keep]
    day = start + dt.timedelta(days=1)
    return Dataset(fs, ["BTCUSDT"], day, day, step_ns(fs), {"BTCUSDT": (ts[keep], X)})


def bench_inference(config: AppConfig, steps: int, console: Console) -> BenchResult:
    from trading.regime.train import fit_regime_model

    data = synthetic_day(config, console)
    s = config.settings
    console.print("fitting a model (K from the configured range, 1 restart) ...")
    regime = s.regime.model_copy(update={"restarts": 1})
    model, _ = fit_regime_model(data, regime, s.policy, s.drift)
    ts, X = data.frames["BTCUSDT"]
    steps = min(steps, len(X))
    online = model.online()
    for i in range(min(2000, steps)):  # warm up (numba dispatch, caches)
        online.step_array(X[i], int(ts[i]))
    online.reset()
    per_step = []
    for _ in range(3):
        online.reset()
        began = time.perf_counter_ns()
        for i in range(steps):
            online.step_array(X[i], int(ts[i]))
        per_step.append((time.perf_counter_ns() - began) / steps / 1000)
    ours_us = min(per_step)

    _, Z = model.filter(X, model.resets_of(len(X), ts))
    hmm = model.hmm
    calls = min(2000, len(Z) - WINDOW)
    timings = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(WINDOW, WINDOW + calls):
            began = time.perf_counter_ns()
            hmm.predict_proba(Z[t - WINDOW : t])
            timings.append(time.perf_counter_ns() - began)
    base_us = statistics.median(timings) / 1000

    table = Table(title=f"bench inference: K={model.n_states}, {steps:,} online steps, best of 3")
    table.add_column("per grid step")
    table.add_column("µs", justify="right")
    table.add_row("project online step (filter + policy head + drift)", f"{ours_us:.2f}")
    table.add_row(
        f"baseline: hmmlearn predict_proba over {WINDOW} steps (median)", f"{base_us:.1f}"
    )
    console.print(table)
    console.print(
        f"goal: ratio >= 50 and <= 20 µs per step; measured ratio {base_us / ours_us:.1f}"
    )
    return BenchResult(
        "regime_online_step",
        round(ours_us, 3),
        "us/step",
        round(base_us, 2),
        round(base_us / ours_us, 2),
    )


def bench_train(config: AppConfig, console: Console) -> BenchResult:
    from hmmlearn.hmm import GaussianHMM

    from trading.regime.dataset import walk_forward
    from trading.regime.model import input_transform
    from trading.regime.train import _resolve_inputs, fit_regime_model

    data = synthetic_day(config, console)
    s = config.settings
    r = s.regime
    console.print(
        f"training on {data.rows:,} rows: K {r.k_min}..{r.k_max} x {r.restarts} restarts + policy head ..."
    )
    began = time.perf_counter()
    model, report = fit_regime_model(data, r, s.policy, s.drift)
    ours_s = time.perf_counter() - began
    search_s = sum(c.fit_s for c in report.candidates)

    console.print("baseline: the same search with hmmlearn defaults ...")
    split = walk_forward(data, r.validation_fraction, r.embargo_s)
    X, lengths, _ = split.train.stacked()
    index, log = _resolve_inputs(data.feature_set, r.inputs_for(data.feature_set.name))
    raw = input_transform(X, index, log)
    Z = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    base_began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(r.k_min, r.k_max + 1):
            for restart in range(r.restarts):
                GaussianHMM(
                    k, covariance_type=r.covariance_type, n_iter=r.max_iter,
                    tol=r.tol_per_row * len(Z), random_state=restart,
                ).fit(Z, lengths)  # fmt: skip
    base_s = time.perf_counter() - base_began

    table = Table(title=f"bench train: {data.rows:,} rows (1 symbol-day, 1 s grid)")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_row(f"project: HMM search ({len(report.candidates)} fits)", f"{search_s:.1f}")
    table.add_row("project: whole fit (search, labels, policy head, metrics)", f"{ours_s:.1f}")
    table.add_row("baseline: same search, hmmlearn defaults", f"{base_s:.1f}")
    console.print(table)
    console.print(
        f"chosen K={model.n_states}; goal: whole fit <= 30 s; search speed-up {base_s / search_s:.2f}x"
    )
    return BenchResult(
        "regime_train_day", round(ours_s, 2), "s", round(base_s, 2), round(base_s / search_s, 2)
    )
