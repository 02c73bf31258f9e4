"""`hmmtrader flow nightly | backfill | simulate`: the Prefect flows (flows/) run in this process, on
PREFECT_API_URL or on a local Prefect server started for the command."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from hmmtrader.cli.common import TaskRunnerName, console, err_console, load_config, optional_day
from hmmtrader.cli.simulate import (
    EndOption,
    JsonOption,
    MlflowOption,
    ModelOption,
    NightsOption,
    OutOption,
    StartOption,
    show,
)

if TYPE_CHECKING:
    from trading.nightly.steps import NightReport
    from trading.settings import AppConfig

flow_app = typer.Typer(
    help="Run the Prefect flows in this process (deployments: prefect deploy --all).",
    no_args_is_help=True,
)

NightOption = Annotated[
    str | None,
    typer.Option(
        "--night",
        help="Night YYYY-MM-DD (default: yesterday UTC; synthetic source: the next night).",
    ),
]


def _with_runner(config: AppConfig, runner: str | None) -> AppConfig:
    if runner is None:
        return config
    os.environ["HMMTRADER_FLOWS__TASK_RUNNER"] = runner  # the flows load their own config
    return load_config()


@contextmanager
def prefect_api(config: AppConfig) -> Iterator[str]:
    """PREFECT_API_URL when set; otherwise a local Prefect server (SQLite under
    <home>/prefect) for the duration of the block, so the runs stay visible in its UI."""
    from flows.runtime import prefect_env

    os.environ["HMMTRADER_HOME"] = str(config.home)  # the flows load the same state root
    prefect_env(config)
    url = os.environ.get("PREFECT_API_URL")
    if url:
        err_console.print(f"Prefect API: {url} (PREFECT_API_URL)", highlight=False)
        yield url
        return
    from flows.server import LocalPrefectServer
    from trading.paths import StatePaths

    home = StatePaths(config.home).prefect.resolve()  # the server's database lives here
    began = time.perf_counter()
    with err_console.status("starting a local Prefect server (SQLite) ..."):
        server = LocalPrefectServer(home).launch()
        try:
            _preload()  # meanwhile, on the other core
            server.wait_healthy()
        except BaseException:
            server.stop()
            raise
    err_console.print(
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


def ui_commands(config: AppConfig, prefect_port: int = 4200, mlflow_port: int = 5000) -> list[str]:
    """Shell commands that open the Prefect and MLflow UIs on this state root."""
    from trading.paths import StatePaths
    from trading.regime.registry import default_tracking_uri

    paths = StatePaths(config.home)
    tracking = config.settings.registry.tracking_uri or default_tracking_uri(config.home)
    # PORT=...: one number to change; the Prefect UI's pages find their API through
    # PREFECT_UI_API_URL, so it names the same port (without it they try 127.0.0.1:4200)
    return [
        f"PORT={prefect_port}; PREFECT_HOME={paths.prefect.resolve()} "
        "PREFECT_UI_API_URL=http://127.0.0.1:$PORT/api .venv/bin/prefect server start "
        "--host 127.0.0.1 --port $PORT",
        f"PORT={mlflow_port}; .venv/bin/mlflow ui --backend-store-uri {tracking} "
        "--host 127.0.0.1 --port $PORT",
    ]


@flow_app.command("nightly")
def flow_nightly_cmd(
    night: NightOption = None,
    runner: Annotated[
        TaskRunnerName | None, typer.Option("--task-runner", help="Default: flows.task_runner.")
    ] = None,
) -> None:
    """Run the nightly-retrain flow once, here (exit 1 when validate blocks)."""
    config = _with_runner(load_config(), runner)
    when = optional_day(night, "--night")
    with prefect_api(config):
        report = run_night(when)
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

    config = load_config()
    first, last = optional_day(start, "--start"), optional_day(end, "--end")
    assert first is not None and last is not None
    check_range(first, last, 366)
    with prefect_api(config):
        from flows.nightly import backfill

        done = backfill(first, last, retrain)
    console.print(f"backfilled nights: {', '.join(done)}")


@flow_app.command("simulate")
def flow_simulate_cmd(
    start: StartOption = None,
    end: EndOption = None,
    nights: NightsOption = 5,
    model: ModelOption = None,
    out: OutOption = None,
    runner: Annotated[
        TaskRunnerName | None, typer.Option("--task-runner", help="Default: flows.task_runner.")
    ] = None,
    log_mlflow: MlflowOption = True,
    as_json: JsonOption = False,
) -> None:
    """Run the simulate flow here: `hmmtrader simulate` with each fit and each policy
    backtest a task run on the flows' task runner (threads or a Dask cluster). --json:
    stdout holds summary.json only (the Prefect lines go to stderr)."""
    from trading.nightly.simulate import nights_of

    config = _with_runner(load_config(), runner)
    first, last = optional_day(start, "--start"), optional_day(end, "--end")
    chosen = nights_of(config, first, last, nights)  # bad input: said before any server
    with prefect_api(config):
        from flows.simulate import simulate

        result = simulate(chosen[0], chosen[-1], len(chosen), model,
                          str(out) if out is not None else None, log_mlflow)  # fmt: skip
    show(result, as_json)


def run_night(night: dt.date | None) -> NightReport:
    from flows.nightly import nightly_retrain
    from trading.nightly.steps import NightReport, QualityBlockedError, plan_night

    plan = plan_night(load_config(), night)  # before ingest moves the synthetic default on
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
