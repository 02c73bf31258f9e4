"""`hmmtrader` commands that run the Prefect flows: `demo`, `flow nightly`, `flow backfill`,
`bench flow`. They register on trading.cli's app (see hmmtrader/cli.py); trading/ never
imports flows/."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from trading.cli import _config, app, bench_app, console, print_lake_summary
from trading.errors import InputError

if TYPE_CHECKING:
    from trading.nightly.steps import NightReport
    from trading.settings import AppConfig

flow_app = typer.Typer(
    help="Run the Prefect flows in this process (deployments: prefect deploy --all).",
    no_args_is_help=True,
)
app.add_typer(flow_app, name="flow")

NightOption = Annotated[
    str | None,
    typer.Option(
        "--night",
        help="Night YYYY-MM-DD (default: yesterday UTC; synthetic source: the next night).",
    ),
]


def _day(text: str | None, option: str) -> dt.date | None:
    from trading.data.inputs import parse_day

    return parse_day(text, option) if text else None


def _with_runner(config: AppConfig, runner: str | None) -> AppConfig:
    if runner is None:
        return config
    if runner not in ("threads", "dask"):
        raise InputError(f"--task-runner must be threads or dask, got {runner!r}")
    os.environ["HMMTRADER_FLOWS__TASK_RUNNER"] = runner  # the flows load their own config
    return _config()


@contextmanager
def prefect_api(config: AppConfig) -> Iterator[str]:
    """PREFECT_API_URL when set; otherwise a local Prefect server (SQLite under
    <home>/prefect) for the duration of the block, so the runs stay visible in its UI."""
    from flows.runtime import prefect_env

    os.environ["HMMTRADER_HOME"] = str(config.home)  # the flows load the same state root
    prefect_env(config)
    url = os.environ.get("PREFECT_API_URL")
    if url:
        console.print(f"Prefect API: {url} (PREFECT_API_URL)", highlight=False)
        yield url
        return
    from flows.server import LocalPrefectServer
    from trading.paths import StatePaths

    home = StatePaths(config.home).prefect.resolve()  # the server's database lives here
    began = time.perf_counter()
    with console.status("starting a local Prefect server (SQLite) ..."):
        server = LocalPrefectServer(home).launch()
        try:
            _preload()  # meanwhile, on the other core
            server.wait_healthy()
        except BaseException:
            server.stop()
            raise
    console.print(
        f"Prefect server {server.ui_url} (PREFECT_HOME={home}) up in "
        f"{time.perf_counter() - began:.1f} s",
        highlight=False,
    )
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _preload() -> None:
    """Import what the flows need (Prefect, MLflow, Great Expectations, Nautilus: ~15 s
    cold) while the server starts."""
    import great_expectations  # noqa: F401
    import mlflow  # noqa: F401
    import nautilus_trader.backtest.engine  # noqa: F401

    import flows.nightly  # noqa: F401


def ui_commands(config: AppConfig) -> list[str]:
    from trading.paths import StatePaths
    from trading.regime.registry import default_tracking_uri

    paths = StatePaths(config.home)
    tracking = config.settings.registry.tracking_uri or default_tracking_uri(config.home)
    return [
        f"PREFECT_HOME={paths.prefect.resolve()} .venv/bin/prefect server start "
        "--host 127.0.0.1 --port 4200",
        f".venv/bin/mlflow ui --backend-store-uri {tracking} --host 127.0.0.1 --port 5000",
    ]


@flow_app.command("nightly")
def flow_nightly_cmd(
    night: NightOption = None,
    runner: Annotated[
        str | None, typer.Option("--task-runner", help="threads or dask (default: config).")
    ] = None,
) -> None:
    """Run the nightly-retrain flow once, here (exit 1 when validate blocks)."""
    config = _with_runner(_config(), runner)
    when = _day(night, "--night")
    with prefect_api(config):
        report = _run_night(when)
    print_night(report)
    if report.stopped:
        raise typer.Exit(1)


@flow_app.command("backfill")
def flow_backfill_cmd(
    start: Annotated[str, typer.Option("--start", help="First night, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--end", help="Last night, YYYY-MM-DD.")],
    retrain: Annotated[
        bool, typer.Option(help="Run the whole nightly retrain for each night.")
    ] = False,
) -> None:
    """Ingest, validate and compute features for every night of a range (--retrain: the
    whole nightly retrain per night, in order)."""
    from trading.data.inputs import check_range

    config = _config()
    first, last = _day(start, "--start"), _day(end, "--end")
    assert first is not None and last is not None
    check_range(first, last, 366)
    with prefect_api(config):
        from flows.nightly import backfill

        done = backfill(first, last, retrain)
    console.print(f"backfilled nights: {', '.join(done)}")


def _run_night(night: dt.date | None) -> NightReport:
    from flows.nightly import nightly_retrain
    from trading.nightly.steps import NightReport, QualityBlockedError, plan_night

    plan = plan_night(_config(), night)  # before ingest moves the synthetic default on
    try:
        return nightly_retrain(plan.night)
    except QualityBlockedError as exc:
        report = NightReport(plan)
        report.stopped = str(exc)
        return report


def print_night(report: NightReport) -> None:
    plan = report.plan
    console.print(
        f"night {plan.night}: trained on {plan.train_start}..{plan.train_end}, "
        f"canary holdout {plan.holdout_start}..{plan.holdout_end}",
        highlight=False,
    )
    if report.stopped:
        console.print(f"[bold red]stopped:[/] {report.stopped}", highlight=False)
        return
    table = Table(title=f"Night {plan.night}")
    for column in ("model", "version", "trained", "canary", "failed rules", "net PnL", "trades",
                   "decision", "production"):  # fmt: skip
        table.add_column(column)
    for t in report.trained:
        c = next(c for c in report.canaries if c.model_name == t.model_name)
        d = next(d for d in report.decisions if d.model_name == t.model_name)
        verdict = c.skipped or ("[green]passed[/]" if c.passed else "[red]failed[/]")
        table.add_row(
            t.model_name,
            str(t.version),
            "reused" if t.reused else "new",
            verdict + (" (reused)" if c.reused else ""),
            ", ".join(c.failed_rules) or "-",
            f"{c.candidate['net_pnl_usd']:+.2f}" if c.candidate else "-",
            str(c.candidate.get("trades", "-")) if c.candidate else "-",
            d.decision,
            str(d.production_after),
        )
    console.print(table)
    for d in report.decisions:
        console.print(f"  {d.model_name} v{d.version}: {d.decision}: {d.reason}", highlight=False)


@app.command()
def demo(
    nights: Annotated[int, typer.Option(help="Nights of the nightly retrain (1-5).")] = 2,
    hours: Annotated[int, typer.Option(help="Length of each synthetic day in hours (2-24).")] = 12,
) -> None:
    """The main job on embedded defaults: a synthetic market for both symbols and the
    nightly-retrain flow on a local Prefect server, night after night (the first model is
    promoted on the canary's floors, later ones against production); then a summary and
    the commands that open the MLflow and Prefect UIs on this state."""
    if not 1 <= nights <= 5:
        raise InputError(f"--nights must be between 1 and 5, got {nights}")
    if not 2 <= hours <= 24:
        raise InputError(f"--hours must be between 2 and 24, got {hours}")
    from trading.nightly.steps import plan_night

    # the flows load their settings from the environment, as a worker's would
    seconds = str(hours * 3600)
    if hours == 24:
        os.environ.pop("HMMTRADER_FLOWS__SYNTHETIC_SECONDS", None)  # whole days: the default
    else:
        os.environ["HMMTRADER_FLOWS__SYNTHETIC_SECONDS"] = seconds
    config = _config()
    flows = config.settings.flows
    console.rule("hmm-trader demo")
    console.print(f"State root: {config.home.resolve()}", highlight=False)
    began = time.perf_counter()
    first = plan_night(config, None).night if flows.source != "synthetic" else None
    first = first or flows.synthetic_origin + dt.timedelta(
        days=flows.train_days + config.settings.canary.holdout_days - 1
    )
    reports: list[NightReport] = []
    with prefect_api(config):
        for i in range(nights):
            night = first + dt.timedelta(days=i)
            console.rule(f"night {i + 1} of {nights}: {night} (Prefect flow nightly-retrain)")
            t0 = time.perf_counter()
            report = _run_night(night)
            reports.append(report)
            print_night(report)
            console.print(f"night {night}: {time.perf_counter() - t0:.1f} s", highlight=False)
            if report.stopped:
                break
    if reports and any(c.passed for r in reports for c in r.canaries):
        _replay_node(config, reports[-1].plan.night, hours)
    _summary(config, reports, time.perf_counter() - began)
    if hours != 24:
        console.print(
            f"  (the demo's synthetic days are {hours} hours: run more nights on this state "
            f"with HMMTRADER_FLOWS__SYNTHETIC_SECONDS={seconds} hmmtrader flow nightly)",
            highlight=False,
        )
    if any(r.stopped for r in reports):
        raise typer.Exit(1)


def _replay_node(config: AppConfig, day: dt.date, hours: int) -> None:
    """The trading node in replay mode on the last synthetic hour, against the production
    version: the live runtime (TradingNode, sandbox fills) on recorded ticks."""
    import subprocess
    import sys

    start = dt.datetime.combine(day, dt.time()) + dt.timedelta(hours=hours - 1)
    end = start + dt.timedelta(hours=1)
    console.rule(f"trading node, replay of {start:%Y-%m-%d %H:%M}..{end:%H:%M} UTC (production)")
    command = [
        str(Path(sys.executable).parent / "hmmtrader"),
        "--home",
        str(config.home),
        "node",
        "--mode",
        "replay",
        *[a for s in config.settings.node.symbols for a in ("--symbol", f"{s}.BINANCE")],
        "--start",
        f"{start:%Y-%m-%dT%H:%M}",
        "--end",
        f"{end:%Y-%m-%dT%H:%M}",
        "--no-gate",  # the nights' quality gate checked these days
    ]
    code = subprocess.call(command)
    if code != 0:
        console.print(f"[red]the replay node exited with {code}[/]")
        raise typer.Exit(code)


def _summary(config: AppConfig, reports: list[NightReport], elapsed: float) -> None:
    from trading.data.lake import Lake
    from trading.nightly.steps import set_config
    from trading.paths import StatePaths
    from trading.regime.registry import Registry

    console.rule("summary")
    print_lake_summary(Lake(StatePaths(config.home).lake))
    for item in config.settings.flows.symbol_sets:
        cfg = set_config(config, item)
        registry = Registry(cfg.settings.registry, cfg.home)
        table = Table(title=f"Registered model {registry.name}")
        for column in ("version", "aliases", "trained on", "canary", "failed rules"):
            table.add_column(column)
        for info in registry.versions():
            table.add_row(
                str(info.version),
                ", ".join(info.aliases) or "-",
                f"{info.tags.get('data_start')}..{info.tags.get('data_end')}",
                info.canary or "-",
                info.tags.get("canary_failed_rules", "-"),
            )
        console.print(table)
    kpis = Table(title="Canary backtests (candidate on each night's holdout)")
    for column in ("night", "model", "version", "vs", "net PnL USD", "trades", "Sharpe",
                   "max DD USD", "hit rate", "verdict"):  # fmt: skip
        kpis.add_column(column)
    for report in reports:
        for c in report.canaries:
            k = c.candidate
            kpis.add_row(
                str(report.plan.night), c.model_name, str(c.version),
                f"v{c.production}" if c.production else "floors",
                f"{k.get('net_pnl_usd', float('nan')):+.2f}", str(k.get("trades", "-")),
                f"{k.get('sharpe', float('nan')):.2f}", f"{k.get('max_drawdown_usd', float('nan')):.2f}",
                f"{k.get('hit_rate', float('nan')):.1%}",
                c.skipped or ("passed" if c.passed else "failed: " + ", ".join(c.failed_rules)),
            )  # fmt: skip
    console.print(kpis)
    console.print(f"Demo finished in {elapsed:.1f} s. Open the UIs on this state:", highlight=False)
    for command in ui_commands(config):
        console.print(f"  {command}", highlight=False, soft_wrap=True)
    console.print(
        f"  hmmtrader --home {config.home} dashboard   (the live dashboard, its past runs: "
        "this replay, the canaries); hmmtrader node --mode replay (or paper); "
        "`hmmtrader models` lists versions",
        highlight=False,
    )


@bench_app.command("flow")
def bench_flow_cmd(
    seconds: Annotated[
        int, typer.Option(help="Length of each synthetic 'day' in seconds (train + holdout).")
    ] = 43_200,
) -> None:
    """The nightly work (2 symbols, 1 synthetic day: half trains, half is the canary's
    holdout) through Prefect and as direct calls of the same functions; ratio = direct /
    Prefect (1.0: no overhead)."""
    from flows.bench import bench_flow

    if not 3600 <= seconds <= 86_400:
        raise InputError(f"--seconds must be between 3600 and 86400, got {seconds}")
    result = bench_flow(_config(), seconds, console)
    print(result.to_json())
