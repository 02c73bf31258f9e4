"""`hmmtrader bench flow`: one night of the nightly work (2 symbols, one synthetic day:
half trains, half is the canary's holdout) as the Prefect flow against a local server,
and as direct calls of the same trading.nightly.steps functions, in the same process on
fresh state roots. ratio = direct time / Prefect time (1.0: Prefect adds nothing)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from hmmtrader.bench import BenchResult
from trading.settings import AppConfig

if TYPE_CHECKING:
    from flows.server import LocalPrefectServer


def _bench_env(home: Path, seconds: int) -> dict[str, str]:
    return {
        "HMMTRADER_HOME": str(home),
        "HMMTRADER_FLOWS__SOURCE": "synthetic",
        "HMMTRADER_SYNTHETIC__DAY_SECONDS": str(seconds),
        "HMMTRADER_FLOWS__TRAIN_DAYS": "1",
        "HMMTRADER_CANARY__HOLDOUT_DAYS": "1",
        "HMMTRADER_BACKTEST__WARMUP_S": str(min(4500, seconds // 4)),
    }


def _apply(env: dict[str, str]) -> dict[str, str | None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return saved


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _warm_up(config: AppConfig) -> None:
    import mlflow  # noqa: F401
    import nautilus_trader.backtest.engine  # noqa: F401

    from trading.nightly import steps

    plan = steps.plan_night(config)
    for symbol in plan.symbols:
        steps.ingest_symbol(config, symbol, plan)
        steps.features_symbol(config, symbol, plan)
    steps.validate(config, plan.symbols, plan.first_day, plan.night, ("quotes", "trades"))


def warm_server(config: AppConfig, root: Path, console: Console) -> LocalPrefectServer:
    """A local Prefect server (SQLite under root/prefect) started and healthy; while it
    starts, a warm-up that is thrown away: imports, and numba's compiled kernels, on a
    one-hour night. The caller stops the server."""
    from flows.runtime import prefect_env
    from flows.server import LocalPrefectServer
    from trading.settings import load_settings

    prefect_home = root / "prefect"
    os.environ["PREFECT_HOME"] = str(prefect_home)
    prefect_env(config)
    server = LocalPrefectServer(prefect_home).launch()
    try:
        saved = _apply(_bench_env(root / "warmup", 3600))
        try:
            _warm_up(load_settings())
        finally:
            _restore(saved)
        with console.status("waiting for the local Prefect server ..."):
            server.wait_healthy()
    except BaseException:
        server.stop()
        raise
    return server


def bench_flow(config: AppConfig, seconds: int, console: Console) -> BenchResult:
    from trading.nightly.steps import run_night
    from trading.settings import load_settings

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hmmtrader-bench-flow-") as tmp:
        root = Path(tmp)
        timings: dict[str, float] = {}
        outcomes: dict[str, str] = {}
        server = warm_server(config, root, console)
        server_s = time.perf_counter() - began
        try:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            for label in ("direct", "prefect"):
                saved = _apply(_bench_env(root / label, seconds))
                try:
                    cfg = load_settings()
                    t0 = time.perf_counter()
                    if label == "direct":
                        report = run_night(cfg)
                    else:
                        from prefect.logging.handlers import APILogWorker

                        from flows.nightly import nightly_retrain

                        with temporary_settings({PREFECT_API_URL: server.api_url}):
                            report = nightly_retrain(None)
                            APILogWorker.drain_all(timeout=10)
                    timings[label] = time.perf_counter() - t0
                    outcomes[label] = (
                        ", ".join(f"v{d.version} {d.decision}" for d in report.decisions)
                        or report.stopped
                    )
                finally:
                    _restore(saved)
        finally:
            server.stop()
    total = time.perf_counter() - began
    ratio = timings["direct"] / timings["prefect"]
    table = Table(title="bench flow: one night, 2 symbols, 1 synthetic day")
    for column in ("run", "seconds", "outcome"):
        table.add_column(column)
    for label in ("direct", "prefect"):
        table.add_row(label, f"{timings[label]:.1f}", outcomes[label])
    console.print(table)
    console.print(
        f"ratio direct/prefect {ratio:.3f} (Prefect overhead {1 / ratio - 1:+.1%}); "
        f"server start and warm-up {server_s:.1f} s (not in the ratio); total {total:.1f} s",
        highlight=False,
    )
    return BenchResult("flow_night_2sym_1day", timings["prefect"], "s", timings["direct"], ratio)
