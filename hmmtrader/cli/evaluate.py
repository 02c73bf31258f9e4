"""`hmmtrader backtest | canary`: evaluate model versions in NautilusTrader."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from hmmtrader.cli.common import console, fraction_bar, load_config, open_registry
from trading.errors import InputError

if TYPE_CHECKING:
    from trading.backtest.canary import CanaryResult

app = typer.Typer()  # top-level commands: backtest, canary

When = Annotated[str, typer.Option(help="UTC day YYYY-MM-DD (whole day) or YYYY-MM-DDTHH:MM.")]


def _symbols(config: Any, text: str | None) -> list[str]:
    from trading.data.inputs import parse_symbols

    return parse_symbols(config, text) if text else list(config.settings.strategy.symbols)


@app.command("backtest")
def backtest_cmd(
    start: When,
    end: When,
    model: Annotated[
        str,
        typer.Option(
            "--model", help="production, candidate, previous, a version or a models:/ URI."
        ),
    ] = "production",
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated (default: strategy.symbols).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default <home>/runs/backtest-v<N>-<time>).")
    ] = None,
    log_mlflow: Annotated[
        bool,
        typer.Option(
            "--log-mlflow", help="Log KPIs and the run directory under the version's MLflow run."
        ),
    ] = False,
) -> None:
    """Backtest a registered model version on lake data in NautilusTrader; write a run directory."""
    from trading.backtest.engine import run_backtest
    from trading.data.window import window_of
    from trading.paths import StatePaths
    from trading.strategy.config import limits_of
    from trading.strategy.inference import InProcessInference

    config = load_config()
    names = _symbols(config, symbols)
    limits_of(config.settings.strategy, names)  # missing per-symbol limits: fail before loading
    window = window_of(start, end)
    registry = open_registry(config)
    version = registry.resolve(model)
    with console.status(f"loading {registry.name} version {version}"):
        loaded, _ = registry.load(version)
        inference = InProcessInference(loaded, version)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = out or StatePaths(config.home).runs / f"backtest-v{version}-{stamp}"
    began = time.perf_counter()
    with fraction_bar() as bar:
        title = f"backtest v{version} {window}"
        task = bar.add_task(title, total=1.0)
        run = run_backtest(
            config,
            inference,
            names,
            window,
            run_dir,
            progress=lambda f: bar.update(task, completed=f),
            # every stage named as it begins: gate, loading, warm-up, run, reports
            stage=lambda name: bar.update(task, description=f"{title}: {name}"),
        )
    print_summary(run.summary, f"backtest of version {version}, {window}")
    if log_mlflow:
        metrics = {f"backtest_{k}": float(v) for k, v in run.summary.items() if k in _LOGGED}
        run_id = registry.log_results(version, metrics, run_dir, f"backtests/{run_dir.name}")
        console.print(
            f"Logged to MLflow run {run_id} (artifacts backtests/{run_dir.name}).", highlight=False
        )
    console.print(
        f"Run directory: {run_dir} ({time.perf_counter() - began:.1f} s)", highlight=False
    )
    _print_report(run_dir)


@app.command("report")
def report_cmd(
    run_dir: Annotated[
        Path, typer.Argument(help="A backtest, replay, canary or simulate run directory.")
    ],
) -> None:
    """Write (again) a run directory's report.html: self-contained, opens offline."""
    from trading.backtest.html_report import write_any_report

    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a directory: pass a run directory (<home>/runs/...)")
    console.print(f"Report: {write_any_report(run_dir)}", highlight=False)


def _print_report(run_dir: Path) -> None:
    from trading.backtest.html_report import REPORT

    report = run_dir / REPORT
    if report.is_file():
        console.print(f"Report: {report} (open it in a browser; self-contained)", highlight=False)


_LOGGED = (
    "net_pnl_usd",
    "sharpe",
    "sortino",
    "max_drawdown_usd",
    "hit_rate",
    "trades",
    "turnover_usd",
    "exposure",
    "state_entropy",
    "nan_count",
    "guardrail_blocks_total",
)


def benchmark_text(s: dict[str, Any]) -> str:
    """'+0.00 / -123.45 USD (-0.12 %)': flat and buy-and-hold on the same window."""
    b = s.get("benchmarks")
    if not b:
        return "-"
    return (
        f"{b['flat_pnl_usd']:+.2f} / {b['buy_hold_pnl_usd']:+.2f} USD "
        f"({b['buy_hold_return_pct']:+.2f} %)"
    )


def print_summary(s: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    table.add_column("KPI")
    table.add_column("value", justify="right")
    rows = [
        ("net PnL (after fees, slippage)", f"{s['net_pnl_usd']:+.2f} USD"),
        ("benchmarks: flat / buy-and-hold", benchmark_text(s)),
        (
            "gross PnL / fees / slippage",
            f"{s['gross_pnl_usd']:+.2f} / {s['fees_usd']:.2f} / {s['slippage_usd']:.2f} USD",
        ),
        (
            "final equity (account)",
            f"{s['final_equity_usd']:.2f} ({s['account_final_balance_usd']:.2f}) USD",
        ),
        ("Sharpe / Sortino (1-min returns, annualized)", f"{s['sharpe']:.2f} / {s['sortino']:.2f}"),
        ("max drawdown", f"{s['max_drawdown_usd']:.2f} USD ({s['max_drawdown_pct']:.3f} %)"),
        ("trades / hit rate", f"{s['trades']} / {s['hit_rate']:.1%}"),
        ("turnover / exposure", f"{s['turnover_usd']:,.0f} USD / {s['exposure']:.1%}"),
        (
            "guardrail blocks",
            ", ".join(f"{k} {v}" for k, v in s["guardrail_blocks"].items()) or "none",
        ),
        ("state entropy / NaN", f"{s['state_entropy']:.3f} nats / {s['nan_count']}"),
        ("events / speed", f"{s['events']:,} / {s['events_per_s']:,.0f} per s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


@app.command("canary")
def canary_cmd(
    version: Annotated[
        str, typer.Argument(help="Candidate: a version number, candidate, or a models:/ URI.")
    ],
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated (default: the version's symbols).")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Holdout start (default: the most recent lake days after training)."),
    ] = None,
    end: Annotated[str | None, typer.Option(help="Holdout end (with --start).")] = None,
) -> None:
    """Backtest a candidate and production on the same holdout; apply the gate; tag the verdict.

    Exit 0 when the candidate passes, 1 when it fails. Production is never moved."""
    from trading.backtest.canary import run_canary
    from trading.data.window import window_of

    config = load_config()
    if (start is None) != (end is None):
        raise InputError("give both --start and --end, or neither (the default holdout)")
    window = window_of(start, end) if start and end else None
    names = _symbols(config, symbols) if symbols else None
    registry = open_registry(config)
    with fraction_bar() as bar:
        tasks: dict[str, Any] = {}

        def progress(label: str, fraction: float) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(f"backtest {label}", total=1.0)
            bar.update(tasks[label], completed=fraction)

        result = run_canary(
            config, registry, version, symbols=names, window=window, progress=progress
        )
    _print_verdict(result)
    if not result.passed:
        raise typer.Exit(1)


def _print_verdict(result: CanaryResult) -> None:
    table = Table(
        title=f"canary: version {result.version} vs production "
        f"{result.production_version or '(none)'}, holdout {result.window}"
    )
    for column in ("rule", "kind", "candidate", "threshold", "production", "result"):
        table.add_column(
            column,
            justify="right" if column in ("candidate", "threshold", "production") else "left",
        )
    for r in result.rules:
        table.add_row(
            r.text,
            r.kind,
            f"{r.candidate:.4g}",
            f"{r.reference:.4g}" if r.reference is not None else "-",
            f"{r.production:.4g}" if r.production is not None else "-",
            "[yellow]waived[/]"
            if r.waived
            else "[green]pass[/]"
            if r.passed
            else "[bold red]FAIL[/]",
        )
    console.print(table)
    if result.paired is not None:
        console.print(f"Paired test: {result.paired.text()}", highlight=False)
    if result.production_failed_rules:
        console.print(
            f"[bold red]PRODUCTION version {result.production_version} FAILS[/] the floor(s) "
            f"{', '.join(result.production_failed_rules)} on this holdout (action: "
            f"{result.on_production_failure})"
        )
    bench = Table(title="net PnL beside the benchmarks, same window, same fees")
    for column in ("", "net PnL (USD)", "flat (USD)", "buy-and-hold (USD)", "trades"):
        bench.add_column(column, justify="left" if not column else "right")
    for name, summary in (("candidate", result.candidate), ("production", result.production)):
        if summary is None:
            continue
        b = summary.get("benchmarks") or {}
        bench.add_row(
            f"{name}",
            f"{summary['net_pnl_usd']:+.2f}",
            f"{b.get('flat_pnl_usd', 0.0):+.2f}",
            f"{b['buy_hold_pnl_usd']:+.2f}" if "buy_hold_pnl_usd" in b else "-",
            f"{summary['trades']}",
        )
    console.print(bench)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    verdict = (
        "[green]PASSED[/]"
        if result.passed
        else "[bold yellow]INSUFFICIENT EVIDENCE[/] (the paired test had too few trades or "
        "intervals: not a pass)"
        if result.verdict == "insufficient_evidence"
        else "[bold red]FAILED[/] (" + ", ".join(result.failed_rules) + ")"
    )
    console.print(f"Verdict: {verdict}; tagged on version {result.version}; production unchanged.")
    console.print(f"Run directory: {result.run_dir} (verdict.json, canary.log)", highlight=False)
    _print_report(result.run_dir)
    if result.passed:
        console.print(f"Next: hmmtrader promote {result.version}", highlight=False)
