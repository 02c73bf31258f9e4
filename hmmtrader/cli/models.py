"""`hmmtrader train | models | promote | rollback`: the model lifecycle commands."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from hmmtrader.cli.common import EndDay, StartDay, Symbols, console, load_config, open_registry
from trading.errors import InputError

app = typer.Typer()  # top-level commands: train, models, promote, rollback


@app.command("train")
def train_cmd(
    symbols: Symbols,
    start: StartDay,
    end: EndDay,
    update: Annotated[
        str | None,
        typer.Option(
            "--update",
            help="Instead of a full search, run a few EM steps (partial_fit) of this version "
            "(production, candidate, a number) on the range: a new candidate version.",
        ),
    ] = None,
) -> None:
    """Train the regime model on feature files and register it as the `candidate` version."""
    from trading.data.inputs import check_range, parse_day, parse_symbols
    from trading.regime.pipeline import train_and_register

    config = load_config()
    names = parse_symbols(config, symbols)
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    check_range(first, last)
    registry = open_registry(config)
    began = time.perf_counter()
    with console.status("loading features") as status:
        outcome = train_and_register(
            config, names, first, last, update_from=update,
            progress=lambda step: status.update(f"fitting: {step}"),
        )  # fmt: skip
    elapsed = time.perf_counter() - began
    reg = outcome.registered
    if reg.reused:
        console.print(
            f"Version {reg.version} was already trained on the same data and config: "
            f"nothing new registered ({outcome.model_uri})."
        )
        return
    if outcome.report is not None:
        _print_candidates(outcome.report)
        _print_states(outcome.report)
    _print_metrics(outcome.metrics)
    console.print(
        f"Registered [bold]{registry.name} version {reg.version}[/] as 'candidate' "
        f"({outcome.data_rows:,} rows, {elapsed:.1f} s); MLflow run {reg.run_id}.",
        highlight=False,
    )
    console.print(f"Tracking URI: {registry.uri}", highlight=False, soft_wrap=True)
    console.print(
        f"Next: hmmtrader models, then the canary (or hmmtrader promote {reg.version} --force --reason TEXT)",
        highlight=False,
    )


def _print_candidates(report: object) -> None:
    table = Table(
        title="Model search: best training fit per K, then lowest BIC on the validation window"
    )
    for col in ("K", "restart", "train log-lik", "val log-lik", "val BIC", "iters", "fit s", ""):
        table.add_column(col, justify="right")
    for c in report.candidates:  # type: ignore[attr-defined]
        mark = "chosen" if c.chosen else (c.error[:40] if c.error else "")
        table.add_row(
            str(c.k), str(c.restart), f"{c.train_loglik:,.0f}", f"{c.val_loglik:,.0f}",
            f"{c.val_bic:,.0f}", str(c.iterations), f"{c.fit_s:.1f}", mark,
        )  # fmt: skip
    console.print(table)


def _print_states(report: object) -> None:
    rows = report.state_table  # type: ignore[attr-defined]
    table = Table(title="States (0 = calmest; decoded by the forward filter)")
    for col in (
        "state",
        "share train",
        "share val",
        "mean dwell s",
        "spread bp",
        "rv bp",
        "cost bp",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(int(r["state"])), f"{r['share_train']:.1%}", f"{r['share_validation']:.1%}",
            f"{r['mean_dwell_s']:.0f}", f"{r.get('mean_raw_spread_bp', float('nan')):.2f}",
            f"{r.get('mean_raw_rv_bp', r.get('mean_raw_parkinson_bp', float('nan'))):.2f}",
            f"{r['cost_bp']:.2f}",
        )  # fmt: skip
    console.print(table)


def _print_metrics(metrics: dict[str, float]) -> None:
    keys = [
        "n_states", "val_bic", "val_loglik_per_row", "state_entropy", "policy_log_loss",
        "policy_log_loss_base_rate", "policy_accuracy", "policy_action_rate", "policy_hit_rate",
        "policy_mean_net_bp", "partial_fit_loglik_before", "partial_fit_loglik_after", "fit_s",
    ]  # fmt: skip
    table = Table(title="Training metrics (policy_*: the held-out test window)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in keys:
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.4g}")
    console.print(table)


@app.command("models")
def models_cmd(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Remove the versions whose registration a killed or crashed `train` left "
            "incomplete, and mark its runs FAILED (every `train` does this first).",
        ),
    ] = False,
) -> None:
    """Registered versions: aliases, data range, key metrics, canary verdict."""
    config = load_config()
    registry = open_registry(config)
    if repair:
        done = registry.repair()
        for version in done.removed_versions:
            console.print(f"removed incomplete version {version}")
        for run_id in done.failed_runs:
            console.print(f"marked run {run_id} FAILED (its process is gone)")
        for version in done.in_progress:
            console.print(f"version {version} is being registered by a running process: left alone")
        if not done.changed and not done.in_progress:
            console.print(
                "Nothing to repair: every version is complete and no run is left RUNNING."
            )
    versions = registry.versions()
    if not versions:
        console.print(f"No versions of {registry.name} yet: run hmmtrader train.")
        return
    table = Table(title=f"{registry.name} ({registry.uri})")
    for col in ("version", "aliases", "created (UTC)", "data", "symbols", "K", "val BIC",
                "entropy", "policy log-loss", "kind", "canary"):  # fmt: skip
        table.add_column(col)
    incomplete = [v.version for v in versions if not v.complete]
    for v in reversed(versions):
        t = v.tags
        table.add_row(
            str(v.version) if v.complete else f"{v.version} INCOMPLETE", ", ".join(v.aliases), v.created.strftime("%Y-%m-%d %H:%M"),
            f"{t.get('data_start', '?')}..{t.get('data_end', '?')}", t.get("symbols", ""),
            t.get("n_states", ""), t.get("val_bic", ""), t.get("state_entropy", ""),
            t.get("policy_log_loss", ""), t.get("kind", ""), v.canary or "-",
        )  # fmt: skip
    console.print(table)
    if incomplete:
        console.print(
            f"Version(s) {', '.join(map(str, incomplete))} are INCOMPLETE: their registration "
            "was interrupted, and nothing can canary, promote or serve them. "
            "Run hmmtrader models --repair (the next train does it too).",
            highlight=False,
        )


@app.command("promote")
def promote_cmd(
    version: Annotated[str, typer.Argument(help="Version number (or candidate).")],
    force: Annotated[bool, typer.Option(help="Promote without a passed canary verdict.")] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --force; recorded).")] = "",
) -> None:
    """Point `production` at a version (the old production becomes `previous`)."""
    if reason and not force:
        raise InputError("--reason is only used with --force")
    registry = open_registry(load_config())
    before, after = registry.promote(version, force=force, reason=reason)
    if before == after:
        console.print(f"Version {after} already is production: nothing changed.")
        return
    prev = f"; previous -> {before}" if before is not None else ""
    console.print(f"production -> version {after}{prev}" + (" (forced)" if force else ""))


@app.command("rollback")
def rollback_cmd() -> None:
    """production <- previous, in one step."""
    registry = open_registry(load_config())
    was, now = registry.rollback()
    aliases = registry.aliases()
    console.print(
        f"production -> version {now} (was {was}); previous -> {aliases.get('previous', 'none')}"
    )
