"""`hmmtrader bench simulate`: the cost of one simulated night against one nightly flow
run on the same data. The nightly flow (Prefect, against a local server) runs N synthetic
nights in a fresh state root, one after the other (the baseline: seconds per flow night);
then `simulate` runs over the same N nights in that state root, reusing the KPIs the
flow's canaries recorded (warm), and, for reference, in a state root of its own that
shares nothing but the data (cold). ratio = flow seconds per night / warm simulate seconds
per night (> 1: a simulated night costs less than a nightly run)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hmmtrader.bench import BenchResult
from hmmtrader.bench.flow import _apply, _bench_env, _restore, warm_server
from trading.settings import AppConfig


def bench_simulate(
    config: AppConfig, nights: int, seconds: int, cold: bool, console: Console
) -> BenchResult:
    from trading.nightly.simulate import nights_of, simulate
    from trading.settings import load_settings

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hmmtrader-bench-simulate-") as tmp:
        root = Path(tmp)
        server = warm_server(config, root, console)
        flow_s: list[float] = []
        outcomes: list[str] = []
        try:
            from prefect.logging.handlers import APILogWorker
            from prefect.settings import PREFECT_API_URL, temporary_settings

            from flows.nightly import nightly_retrain

            saved = _apply(_bench_env(root / "home", seconds))
            try:
                cfg = load_settings()
                chosen = nights_of(cfg, None, None, nights)
                with temporary_settings({PREFECT_API_URL: server.api_url}):
                    for night in chosen:
                        with console.status(f"nightly flow, night {night} ..."):
                            t0 = time.perf_counter()
                            try:
                                report = nightly_retrain(night)
                                outcomes.append(", ".join(
                                    f"v{d.version} {d.decision}" for d in report.decisions
                                ))  # fmt: skip
                            except Exception as exc:  # a night that stops is a night too
                                outcomes.append(f"stopped: {type(exc).__name__}")
                            flow_s.append(time.perf_counter() - t0)
                    APILogWorker.drain_all(timeout=10)
            finally:
                _restore(saved)
        finally:
            server.stop()
        runs: dict[str, float] = {}
        counts: dict[str, dict[str, int]] = {}
        labels = ["warm", "cold"] if cold else ["warm"]
        for label in labels:
            home = root / "home" if label == "warm" else root / "cold"
            if label == "cold":  # the same lake days, nothing else
                shutil.copytree(root / "home" / "lake", home / "lake")
            saved = _apply(_bench_env(home, seconds))
            try:
                cfg = load_settings()
                with console.status(f"simulate ({label}) over {len(chosen)} nights ..."):
                    t0 = time.perf_counter()
                    result = simulate(cfg, chosen, root / f"simulate-{label}", log_mlflow=True)
                    runs[label] = time.perf_counter() - t0
                counts[label] = dict(result.backtests)
            finally:
                _restore(saved)
    per_flow = sum(flow_s) / len(flow_s)
    per_sim = {k: v / len(chosen) for k, v in runs.items()}
    ratio = per_flow / per_sim["warm"]
    table = Table(title=f"bench simulate: {len(chosen)} synthetic nights of {seconds} s, 2 symbols")
    for column in ("run", "seconds", "per night", "backtests run / reused", "outcome"):
        table.add_column(column)
    table.add_row("nightly flow", f"{sum(flow_s):.1f}", f"{per_flow:.1f}", "-",
                  "; ".join(outcomes))  # fmt: skip
    for label in labels:
        c = counts[label]
        table.add_row(
            f"simulate ({label})", f"{runs[label]:.1f}", f"{per_sim[label]:.1f}",
            f"{c['canary_run'] + c['policy_run']} / {c['canary_reused'] + c['policy_reused']}",
            "after the flow ran these nights" if label == "warm" else "own state root",
        )  # fmt: skip
    console.print(table)
    extra = {"flow_night_s": round(per_flow, 3), "warm_night_s": round(per_sim["warm"], 3)}
    line = f"ratio flow night / simulated night (warm) {ratio:.2f}; total {time.perf_counter() - began:.1f} s"
    if "cold" in per_sim:
        extra["cold_night_s"] = round(per_sim["cold"], 3)
        extra["cold_ratio"] = round(per_flow / per_sim["cold"], 3)
        line += f"; cold {per_flow / per_sim['cold']:.2f}"
    console.print(line, highlight=False)
    return BenchResult("simulate_night", per_sim["warm"], "s", per_flow, ratio, extra)
