"""`hmmtrader bench backtest`: events per second of the full RegimeStrategy (features,
inference, guardrails, orders) vs the same engine, venue and ticks with a strategy that
subscribes to the same data and does nothing. Shared JSON result format (hmmtrader.bench)."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy
from rich.console import Console
from rich.table import Table

from hmmtrader.bench import BenchResult

if TYPE_CHECKING:
    from trading.settings import AppConfig

NS = 1_000_000_000


class IdleConfig(StrategyConfig, frozen=True):
    instrument_ids: tuple[InstrumentId, ...]


class IdleStrategy(Strategy):
    """Subscribes to the same quotes and trades and does nothing with them."""

    def on_start(self) -> None:
        for instrument_id in self.config.instrument_ids:
            self.subscribe_quote_ticks(instrument_id)
            self.subscribe_trade_ticks(instrument_id)

    def on_quote_tick(self, tick: Any) -> None:
        pass

    def on_trade_tick(self, tick: Any) -> None:
        pass


def _prepare(config: AppConfig, home: Path, console: Console) -> tuple[AppConfig, Any]:
    """Two synthetic days for both symbols; a model trained on day 1 (a quick search)."""
    from trading.data.lake import Lake
    from trading.data.synthetic import ingest_synthetic
    from trading.features.descriptor import features_v1
    from trading.features.store import compute_range, write_features
    from trading.regime.dataset import load_dataset
    from trading.regime.train import fit_regime_model

    settings = config.settings.model_copy(update={"home": home})
    config = config.model_copy(update={"settings": settings})
    lake = Lake(home / "lake")
    symbols = ["BTCUSDT", "ETHUSDT"]
    day1 = dt.date(2024, 1, 1)
    console.print("generating two synthetic days (BTCUSDT, ETHUSDT) and day 1's features ...")
    ingest_synthetic(config, lake, symbols, day1, 2, 7)
    fs = features_v1(settings.features)
    venue = config.instruments.venue
    for symbol in symbols:
        write_features(lake, venue, symbol, compute_range(lake, venue, symbol, day1, day1, fs))
    regime = settings.regime.model_copy(update={"k_min": 4, "k_max": 4, "restarts": 1})
    data = load_dataset(lake, venue, symbols, day1, day1, fs)
    console.print("training a model on day 1 ...")
    model, _ = fit_regime_model(data, regime, settings.policy, settings.drift)
    return config, model


def bench_backtest(
    config: AppConfig, hours: float, console: Console, repeats: int = 2
) -> BenchResult:
    from trading.backtest.engine import build_engine
    from trading.data.lake import Lake, day_start_ns
    from trading.data.nautilus import load_ticks
    from trading.data.window import Window
    from trading.strategy.config import limits_of
    from trading.strategy.inference import InProcessInference
    from trading.strategy.recorder import Recorder

    with tempfile.TemporaryDirectory(prefix="hmmtrader-bench-") as tmp:
        config, model = _prepare(config, Path(tmp), console)
        symbols = ["BTCUSDT", "ETHUSDT"]
        start = day_start_ns(dt.date(2024, 1, 2))
        window = Window(start, start + int(hours * 3600 * NS))
        warm = start - int(config.settings.backtest.warmup_s * NS)
        lake = Lake(Path(tmp) / "lake")
        limits = limits_of(config.settings.strategy, symbols)
        best: dict[str, float] = {"idle": 0.0, "full": 0.0}
        orders = 0
        events = 0
        for _ in range(repeats):
            for kind in ("idle", "full"):
                instruments, data, events = load_ticks(config, lake, symbols, warm, window.end_ns)
                factory = (
                    (lambda ids: IdleStrategy(IdleConfig(instrument_ids=ids)))
                    if kind == "idle"
                    else None
                )
                engine, _strategy = build_engine(
                    config,
                    instruments,
                    InProcessInference(model, "bench"),
                    window,
                    limits,
                    Recorder(),
                    None,
                    None,
                    strategy_factory=factory,
                )
                engine.add_data(data, sort=True)
                del data
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    engine.run()
                elapsed = time.perf_counter() - t0
                if kind == "full":
                    orders = len(engine.trader.generate_order_fills_report())
                engine.dispose()
                best[kind] = max(best[kind], events / elapsed)
    ratio = best["full"] / best["idle"]
    table = Table(
        title=f"backtest: {events:,} events ({hours:g} h of 2 symbols + warm-up), best of {repeats}"
    )
    for column in ("strategy", "events/s", "orders"):
        table.add_column(column, justify="right")
    table.add_row("do-nothing (baseline)", f"{best['idle']:,.0f}", "0")
    table.add_row("RegimeStrategy", f"{best['full']:,.0f}", f"{orders:,}")
    console.print(table)
    console.print(f"ratio {ratio:.2f} (goal >= 0.5)")
    return BenchResult(
        "backtest_events_per_s",
        round(best["full"], 1),
        "events/s",
        round(best["idle"], 1),
        round(ratio, 3),
    )
