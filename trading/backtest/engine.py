"""The backtest harness: lake ticks -> Nautilus' low-level BacktestEngine with the
RegimeStrategy -> run directory (CSVs, equity PNG, summary.json).

Venue: Binance spot instruments from configs/symbols.yaml (tick, lot, notional, maker/taker
fees), a MARGIN account in USDT (shorts allowed at leverage 1), a HEDGING order-management
system with explicit closes (Nautilus 1.231's NETTING re-reads other instruments'
positions on every close), fills `slippage_bp` beyond the touch, and an order latency.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from trading.data.lake import Lake
from trading.data.window import NS, Window, market_kinds, require_ticks
from trading.features.descriptor import BARS_V1, FeatureSet
from trading.settings import AppConfig
from trading.strategy.config import limits_of
from trading.strategy.inference import Inference
from trading.strategy.recorder import Recorder

log = logging.getLogger(__name__)
# One Nautilus engine at a time per process: Nautilus supports one kernel per process (its
# logging clock is global). Threads that backtest (the simulate flow's thread pool beside
# the canary) take turns; processes (canary.workers, Dask) run in parallel.
_ENGINE = threading.RLock()


def _one_engine_at_a_time[**P, R](fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def locked(*args: P.args, **kwargs: P.kwargs) -> R:
        with _ENGINE:
            return fn(*args, **kwargs)

    return locked


@dataclass
class BacktestRun:
    run_dir: Path
    summary: dict[str, Any]
    model_version: str


@_one_engine_at_a_time
def run_backtest(
    config: AppConfig,
    inference: Inference,
    symbols: list[str],
    window: Window,
    run_dir: Path,
    *,
    gate: bool = True,
    quality: dict[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
    kill_engaged: Callable[[], bool] | None = None,
    stage: Callable[[str], None] | None = None,
) -> BacktestRun:
    """Backtest `inference` over `window` and write the run directory. The data-quality
    gate runs first unless `gate` is off or its result for this window is given
    (`quality`, from `quality_gate`, whose issue CSV the caller placed in run_dir).
    `stage` hears each stage as it begins: gate, loading, warm-up, run, reports;
    `progress` the fraction of the window traded."""
    enter = stage or (lambda name: None)
    from trading.backtest.report import benchmarks, write_reports
    from trading.data.nautilus import load_bars, load_ticks

    s = config.settings
    bt = s.backtest
    limits = limits_of(s.strategy, symbols)
    lake = Lake(config.home / "lake")
    bars = is_bars(inference.feature_set)
    warm_start = window.start_ns - warmup_ns(config, inference.feature_set)
    require_ticks(lake, config.instruments.venue, symbols, window, market_kinds(bars))
    run_dir.mkdir(parents=True, exist_ok=True)
    if quality is None and gate:
        enter("gate")
        quality = quality_gate(config, lake, symbols, window, run_dir, bars=bars)

    enter("loading")
    t0 = time.perf_counter()
    if bars:
        instruments, data, n_events = load_bars(
            config, lake, symbols, warm_start, window.end_ns, int(bt.latency_ms * 1_000_000)
        )
    else:
        instruments, data, n_events = load_ticks(config, lake, symbols, warm_start, window.end_ns)
    bench = benchmarks(
        data,
        window,
        bt.starting_balance_usd,
        bt.slippage_bp,
        {i.id: i for i in instruments},
        bars=bars,
    )
    load_s = time.perf_counter() - t0
    recorder = Recorder()
    engine, strategy = build_engine(
        config, instruments, inference, window, limits, recorder, progress, kill_engaged,
        stage=enter,
    )  # fmt: skip
    engine.add_data(data, sort=True)
    del data
    enter("warm-up")  # the data before the window: features warm, no trading
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine.run()
    run_s = time.perf_counter() - t1
    enter("reports")
    try:
        summary = write_reports(
            engine,
            strategy,
            recorder,
            instruments,
            window,
            run_dir,
            starting_balance_usd=bt.starting_balance_usd,
            extra={
                "model_version": inference.version,
                "symbols": symbols,
                "events": n_events,
                "data": "1-minute bars" if bars else "ticks",
                "benchmarks": bench,
                "load_s": round(load_s, 3),
                "run_s": round(run_s, 3),
                "events_per_s": round(n_events / run_s, 1) if run_s > 0 else None,
                "data_quality": quality,
                "settings": {
                    "backtest": bt.model_dump(),
                    "strategy": s.strategy.model_dump(),
                },
            },
        )
    finally:
        engine.dispose()
    return BacktestRun(run_dir, summary, inference.version)


def build_engine(
    config: AppConfig,
    instruments: list[Any],
    inference: Inference,
    window: Window,
    limits: Any,
    recorder: Recorder,
    progress: Callable[[float], None] | None,
    kill_engaged: Callable[[], bool] | None,
    strategy_factory: Callable[..., Any] | None = None,
    stage: Callable[[str], None] | None = None,
) -> tuple[Any, Any]:
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.backtest.models import LatencyModel, MakerTakerFeeModel
    from nautilus_trader.config import LoggingConfig
    from nautilus_trader.model.currencies import USDT
    from nautilus_trader.model.enums import AccountType, OmsType
    from nautilus_trader.model.identifiers import Venue
    from nautilus_trader.model.objects import Money

    from trading.backtest.fills import BasisPointSlippageFillModel
    from trading.strategy.strategy import RegimeStrategy, RegimeStrategyConfig

    bt = config.settings.backtest
    engine = BacktestEngine(
        BacktestEngineConfig(
            trader_id="BACKTESTER-001",
            logging=LoggingConfig(log_level="ERROR"),
            run_analysis=False,
        )
    )
    engine.add_venue(
        Venue(config.instruments.venue),
        OmsType.HEDGING,
        AccountType.MARGIN,
        [Money(bt.starting_balance_usd, USDT)],
        base_currency=USDT,
        default_leverage=Decimal(1),
        fill_model=BasisPointSlippageFillModel(bt.slippage_bp, bt.seed),
        fee_model=MakerTakerFeeModel(),
        latency_model=LatencyModel(base_latency_nanos=int(bt.latency_ms * 1_000_000)),
        # bars feed the strategy only; the venue fills on the next bar's open quote
        bar_execution=False,
    )
    for instrument in instruments:
        engine.add_instrument(instrument)
    if strategy_factory is not None:
        strategy = strategy_factory(tuple(i.id for i in instruments))
    else:
        cfg = RegimeStrategyConfig(
            instrument_ids=tuple(i.id for i in instruments),
            limits=limits,
            trade_from_ns=window.start_ns,
            trade_until_ns=window.end_ns - int(bt.flatten_before_end_s * NS),
            measure_inference_latency=False,
            progress_every_s=bt.progress_every_s,
        )

        trading = [False]

        def report(now_ns: int) -> None:
            if not trading[0] and now_ns >= window.start_ns:
                trading[0] = True  # the warm-up is over
                if stage is not None:
                    stage("run")
            if progress is not None:
                progress(
                    max(
                        0.0,
                        min(1.0, (now_ns - window.start_ns) / (window.end_ns - window.start_ns)),
                    )
                )

        strategy = RegimeStrategy(
            cfg, inference=inference, kill_engaged=kill_engaged, recorder=recorder, progress=report
        )
    engine.add_strategy(strategy)
    return engine, strategy


def is_bars(fs: FeatureSet) -> bool:
    """Whether a model of this feature set trades on 1-minute bars (else on ticks)."""
    return fs.name == BARS_V1


def warmup_ns(config: AppConfig, fs: FeatureSet) -> int:
    """How long before the window the data starts, so the features are warm: the backtest's
    warmup_s for ticks; for bars, at least the bars the features need before their first
    standardized row plus a full standardization window (the z-scores then rest on as many
    bars as in training)."""
    warm = int(config.settings.backtest.warmup_s * NS)
    if not is_bars(fs):
        return warm
    from trading.features.bars import raw_ready_bars

    p = fs.bar_params()
    return max(warm, int((raw_ready_bars(p) + p.standardize_window) * p.bar_s * NS))


def quality_gate(
    config: AppConfig,
    lake: Lake,
    symbols: list[str],
    window: Window,
    run_dir: Path,
    *,
    bars: bool = False,
) -> dict[str, Any]:
    """The data-quality gate on the window's quote and trade files (bar files, with
    `bars`); blocking issues stop the backtest (nothing is evaluated on bad data). Its
    issue CSV lands in the run dir."""
    import shutil

    from trading.quality.gate import run_gate

    first, last = window.days
    result = run_gate(
        config, lake, symbols, first, last, kinds=market_kinds(bars), out_dir=run_dir / "quality"
    )
    shutil.copyfile(result.issues_csv, run_dir / "data_quality_issues.csv")
    if not result.passed:
        from trading.errors import DataQualityError

        raise DataQualityError(
            f"data-quality gate blocked the backtest: {'; '.join(result.blocking[:3])} "
            f"(issues: {run_dir / 'data_quality_issues.csv'})"
        )
    return {"passed": True, "issues": len(result.issues), "warnings": result.warnings}
