"""`hmmtrader bench ...`: the benchmarks (hmmtrader.bench). Each compares against a
baseline in the same run and prints one JSON line last."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hmmtrader.cli.common import console, load_config
from trading.errors import InputError

app = typer.Typer(
    help="Benchmarks: each prints a JSON result as its last line.", no_args_is_help=True
)


@app.command("ingest")
def bench_ingest_cmd(
    rows: Annotated[int, typer.Option(help="Rows in the generated aggTrades CSV.")] = 1_000_000,
    repeats: Annotated[int, typer.Option(help="Timed runs of each reader (best is kept).")] = 3,
) -> None:
    """Project CSV reader vs plain pandas.read_csv on an aggTrades file."""
    from hmmtrader.bench.ingest import bench_ingest

    result = bench_ingest(rows, repeats, console)
    print(result.to_json())


@app.command("features")
def bench_features_cmd(
    days: Annotated[
        int, typer.Option(help="Synthetic BTCUSDT days (4 days: about 5.8M ticks).")
    ] = 4,
    repeats: Annotated[
        int, typer.Option(help="Timed runs of each implementation (best kept).")
    ] = 2,
    online_ticks: Annotated[int, typer.Option(help="Ticks fed to the online form.")] = 300_000,
) -> None:
    """FEATURES_V1 batch vs a pandas implementation; online cost per tick and grid step."""
    from hmmtrader.bench.features import bench_features

    if not 1 <= days <= 30:
        raise InputError(f"--days must be between 1 and 30, got {days}")
    if repeats < 1 or online_ticks < 1000:
        raise InputError("--repeats must be >= 1 and --online-ticks >= 1000")
    result = bench_features(load_config(), days, repeats, online_ticks, console)
    print(result.to_json())


@app.command("inference")
def bench_inference_cmd(
    steps: Annotated[int, typer.Option(help="Online steps timed (1 s grid rows).")] = 20_000,
) -> None:
    """Online step (filter + policy) vs hmmlearn predict_proba over a 300-step window."""
    from hmmtrader.bench.regime import bench_inference

    if not 1_000 <= steps <= 86_000:
        raise InputError(f"--steps must be between 1000 and 86000, got {steps}")
    print(bench_inference(load_config(), steps, console).to_json())


@app.command("train")
def bench_train_cmd() -> None:
    """Full training on one symbol-day (86,400 rows) vs the same search on hmmlearn defaults."""
    from hmmtrader.bench.regime import bench_train

    print(bench_train(load_config(), console).to_json())


@app.command("backtest")
def bench_backtest_cmd(
    hours: Annotated[
        float, typer.Option(help="Hours of two-symbol synthetic data backtested.")
    ] = 2.0,
    repeats: Annotated[int, typer.Option(help="Timed runs of each strategy (best kept).")] = 2,
) -> None:
    """Events/s of the full strategy vs a do-nothing strategy on the same engine and ticks."""
    from hmmtrader.bench.backtest import bench_backtest

    if not 0.25 <= hours <= 24:
        raise InputError(f"--hours must be between 0.25 and 24, got {hours}")
    if not 1 <= repeats <= 5:
        raise InputError(f"--repeats must be between 1 and 5, got {repeats}")
    print(bench_backtest(load_config(), hours, console, repeats).to_json())


@app.command("serve")
def bench_serve_cmd(
    seconds: Annotated[
        float, typer.Option(min=2, max=600, help="Load duration per server.")
    ] = 15.0,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight.")] = 8,
    rows: Annotated[
        int, typer.Option(min=1, max=4096, help="Feature rows per request (a window).")
    ] = 16,
) -> None:
    """This server vs `mlflow models serve` on the same model, client and load: throughput
    and p50/p99 latency of both (one JSON line at the end)."""
    from hmmtrader.bench.serve import bench_serve

    print(bench_serve(load_config(), seconds, concurrency, rows, console).to_json())


@app.command("serve-limits")
def bench_serve_limits_cmd(
    symbols: Annotated[
        int, typer.Option(min=0, max=1_000_000, help="Distinct symbols to send (0: skip).")
    ] = 60_000,
    seconds: Annotated[
        float, typer.Option(min=0, max=600, help="Health sampling under load (0: skip).")
    ] = 20.0,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Reuse (or create) this bench state root."),
    ] = None,
) -> None:
    """The inference server under abuse: /health latency (idle vs ten 4,096-row /infer
    requests in flight), and /metrics size and memory after N distinct symbols."""
    from hmmtrader.bench.serve_limits import bench_serve_limits

    for result in bench_serve_limits(load_config(), symbols, seconds, state, console):
        print(result.to_json())


@app.command("flow")
def bench_flow_cmd(
    seconds: Annotated[
        int, typer.Option(help="Length of each synthetic 'day' in seconds (train + holdout).")
    ] = 43_200,
) -> None:
    """The nightly work (2 symbols, 1 synthetic day: half trains, half is the canary's
    holdout) through Prefect and as direct calls of the same functions; ratio = direct /
    Prefect (1.0: no overhead)."""
    from hmmtrader.bench.flow import bench_flow

    if not 3600 <= seconds <= 86_400:
        raise InputError(f"--seconds must be between 3600 and 86400, got {seconds}")
    result = bench_flow(load_config(), seconds, console)
    print(result.to_json())


@app.command("simulate")
def bench_simulate_cmd(
    nights: Annotated[int, typer.Option(min=2, max=30, help="Synthetic nights.")] = 5,
    seconds: Annotated[int, typer.Option(help="Length of each synthetic day in seconds.")] = 21_600,
    cold: Annotated[
        bool, typer.Option("--cold/--no-cold", help="Also simulate in a fresh state root.")
    ] = True,
) -> None:
    """A simulated night against a nightly flow run on the same data: the flow over N nights,
    then simulate over them (reusing the flow's recorded backtests, and cold);
    ratio = flow seconds per night / simulate seconds per night."""
    from hmmtrader.bench.simulate import bench_simulate

    if not 3600 <= seconds <= 86_400:
        raise InputError(f"--seconds must be between 3600 and 86400, got {seconds}")
    print(bench_simulate(load_config(), nights, seconds, cold, console).to_json())


@app.command("models")
def bench_models_cmd(
    repeats: Annotated[int, typer.Option(min=1, max=20, help="Runs of each (best kept).")] = 5,
) -> None:
    """`hmmtrader models` wall time on the state root (the demo's: run `make demo` first)
    vs the same listing through MLflow's client. Goal: under 2 s."""
    from hmmtrader.bench.models import bench_models

    print(bench_models(load_config().home, repeats, console).to_json())
