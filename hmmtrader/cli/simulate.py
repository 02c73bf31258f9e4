"""`hmmtrader simulate`: the retrain-and-promote loop backtested night after night over lake
days, against never retraining, always promoting the newest model, flat and buy-and-hold
(trading/nightly/simulate.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from hmmtrader.cli.common import console, fraction_bar, load_config, optional_day

if TYPE_CHECKING:
    from trading.nightly.simulate import SimulationResult

app = typer.Typer()


StartOption = Annotated[
    str | None,
    typer.Option(
        help="First night YYYY-MM-DD (synthetic source: default the first night "
        "the market has days for; real sources: required)."
    ),
]
EndOption = Annotated[
    str | None, typer.Option(help="Last night YYYY-MM-DD (default: start + nights - 1).")
]
NightsOption = Annotated[
    int, typer.Option(min=2, max=367, help="Nights to simulate when --end is not given.")
]
ModelOption = Annotated[
    str | None,
    typer.Option(help="Registered model (symbol set) to simulate (default: the first)."),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        help="Run directory (default <home>/runs/simulate-<start>-<end>-<time>); "
        "the --out of a stopped simulate resumes it."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print summary.json only.")]
MlflowOption = Annotated[
    bool, typer.Option("--mlflow/--no-mlflow", help="Log a run to the tracking store.")
]


def show(result: SimulationResult, as_json: bool) -> None:
    """summary.json alone (--json), or the tables."""
    if as_json:
        print(json.dumps(result.summary(), indent=2))
    else:
        print_simulation(result)
        report = result.run_dir / "report.html"
        if report.is_file():
            console.print(f"Report: {report}", highlight=False)


@app.command("simulate")
def simulate_cmd(
    start: StartOption = None,
    end: EndOption = None,
    nights: NightsOption = 5,
    model: ModelOption = None,
    out: OutOption = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=16, help="Processes for fits and backtests (default: canary.workers)."
        ),
    ] = None,
    log_mlflow: MlflowOption = True,
    as_json: JsonOption = False,
) -> None:
    """Backtest the nightly retrain-and-promote policy over history: each night trains and
    gates as the nightly flow does (in a sandbox registry; the lake is shared), and each
    next day is traded by the version each policy holds. Writes nights.csv, equity.png,
    summary.json and an MLflow run. As a Prefect flow: `hmmtrader flow simulate`."""
    from trading.nightly.simulate import default_run_dir, nights_of, simulate

    config = load_config()
    chosen = nights_of(config, optional_day(start, "--start"), optional_day(end, "--end"), nights)
    run_dir = out or default_run_dir(config, chosen)
    if not as_json:
        console.print(
            f"simulating {len(chosen)} nights {chosen[0]}..{chosen[-1]} "
            f"({len(chosen) - 1} trading days) in {run_dir}",
            highlight=False,
        )
    with fraction_bar(transient=True) as bar:
        task = bar.add_task("simulate", total=1.0)

        def progress(message: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=message[:70])

        result = simulate(
            config, chosen, run_dir, model=model, workers=workers,
            progress=None if as_json else progress, log_mlflow=log_mlflow,
        )  # fmt: skip
    show(result, as_json)


def print_simulation(result: SimulationResult) -> None:
    nights = Table(title=f"simulate {result.model_name}: night by night")
    for column in ("night", "trained", "verdict", "decision", "production", "next day",
                   "gated", "never", "newest", "buy&hold"):  # fmt: skip
        nights.add_column(column, justify="right" if column in {"gated", "never", "newest",
                                                                  "buy&hold"} else "left")  # fmt: skip
    by_day = {d.day: d for d in result.days}

    def money(day: dt.date, policy: str) -> str:
        d = by_day.get(day)
        if d is None or d.skipped:
            return "-"
        value = d.pnl.get(policy)
        version = d.versions.get(policy) if policy != "buy_hold" else None
        text = "-" if value is None else f"{value:+.2f}"
        return f"{text} (v{version})" if version is not None else text

    for n in result.nights:
        nxt = n.night + dt.timedelta(days=1)
        nights.add_row(
            str(n.night),
            f"v{n.version}" if n.version is not None else "-",
            n.verdict or "-",
            n.decision + (f": {', '.join(n.failed_rules)}" if n.failed_rules else ""),
            f"v{n.production_after}" if n.production_after is not None else "-",
            str(nxt) if nxt in by_day else "-",
            money(nxt, "gated"), money(nxt, "never"), money(nxt, "newest"),
            money(nxt, "buy_hold"),
        )  # fmt: skip
    console.print(nights)
    totals = Table(title=f"net PnL over {len([d for d in result.days if not d.skipped])} "
                   "trading day(s), same days for every policy")  # fmt: skip
    totals.add_column("policy")
    totals.add_column("net PnL (USD)", justify="right")
    meaning = {
        "gated": "the nightly loop: production after each night's gate",
        "never": "the first version, never retrained",
        "newest": "every new version promoted, no gate",
        "flat": "no position",
        "buy_hold": "buy-and-hold of the symbols over each holdout day",
    }
    for policy, value in result.totals.items():
        totals.add_row(f"{policy}  [dim]{meaning[policy]}[/]", f"{value:+.2f}")
    console.print(totals)
    b = result.backtests
    console.print(
        f"backtests: {b['canary_run']} run and {b['canary_reused']} reused by {b['canaries']} "
        f"canaries; {b['policy_run']} run and {b['policy_reused']} reused for the policies' "
        f"days; {result.seconds:.1f} s",
        highlight=False,
    )
    console.print(f"run directory: {result.run_dir} (nights.csv, equity.png, summary.json)",
                  highlight=False)  # fmt: skip
    if result.mlflow_run_id:
        console.print(f"MLflow run: {result.mlflow_run_id}", highlight=False)
    console.print(
        f"sandbox registry: hmmtrader --home {result.run_dir / 'state'} models --history",
        highlight=False,
    )
