"""`hmmtrader demo`: the main job on embedded defaults. A synthetic market for both symbols
and the nightly-retrain flow on a local Prefect server, night after night; a replay of the
trading node against production; a summary and the commands that open the UIs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from hmmtrader.cli.common import console, load_config
from hmmtrader.cli.data import print_lake_summary
from hmmtrader.cli.flows import prefect_api, print_night, run_night, ui_commands
from trading.errors import InputError

if TYPE_CHECKING:
    from trading.nightly.steps import NightReport
    from trading.settings import AppConfig

app = typer.Typer()  # top-level command: demo


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
    os.environ["HMMTRADER_SYNTHETIC__DAY_SECONDS"] = seconds
    config = load_config()
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
            report = run_night(night)
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
            f"with HMMTRADER_SYNTHETIC__DAY_SECONDS={seconds} hmmtrader flow nightly)",
            highlight=False,
        )
    if any(r.stopped for r in reports):
        raise typer.Exit(1)


def _replay_node(config: AppConfig, day: dt.date, hours: int) -> None:
    """The trading node in replay mode on the last synthetic hour, against the production
    version: the live runtime (TradingNode, sandbox fills) on recorded ticks."""
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
    console.print(
        f"Demo finished in {elapsed:.1f} s. The whole stack on this state (URLs printed): "
        f"hmmtrader --home {config.home} up; or only the UIs:",
        highlight=False,
        soft_wrap=True,
    )
    for command in ui_commands(config):
        console.print(f"  {command}", highlight=False, soft_wrap=True)
    console.print(
        f"  hmmtrader --home {config.home} dashboard   (the live dashboard, its past runs: "
        "this replay, the canaries); hmmtrader node --mode replay (or paper); "
        "`hmmtrader models` lists versions",
        highlight=False,
    )
