"""`hmmtrader train | models | promote | rollback`: the model lifecycle commands."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from hmmtrader.cli.common import (
    EndDay,
    FeatureSetName,
    StartDay,
    Symbols,
    console,
    load_config,
    open_registry,
)
from trading.errors import InputError

if TYPE_CHECKING:
    from trading.regime.registry import Move
    from trading.settings import AppConfig

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
    feature_set: Annotated[
        FeatureSetName | None,
        typer.Option(
            "--feature-set",
            help="features_v1 (ticks) or bars_v1 (1-minute bars); default: regime.feature_set. "
            "The feature files come from `hmmtrader features --set <the same>`.",
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
    if feature_set is not None and update is not None:
        raise InputError("--feature-set is not used with --update (the version's set is kept)")
    registry = open_registry(config)
    began = time.perf_counter()
    with console.status("loading features") as status:
        outcome = train_and_register(
            config, names, first, last, update_from=update,
            progress=lambda step: status.update(f"fitting: {step}"), feature_set=feature_set,
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
        _print_k_choice(outcome.report, config.settings.regime)
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
        title="Model search: best training fit per K, then held-out log-likelihood per "
        "validation row (smallest K within regime.k_min_gain_per_row of the best)"
    )
    for col in ("K", "restart", "train log-lik", "val log-lik", "val log-lik/row", "val BIC",
                "iters", "fit s", ""):  # fmt: skip
        table.add_column(col, justify="right")
    for c in report.candidates:  # type: ignore[attr-defined]
        mark = "chosen" if c.chosen else (c.error[:40] if c.error else "")
        table.add_row(
            str(c.k), str(c.restart), f"{c.train_loglik:,.0f}", f"{c.val_loglik:,.0f}",
            f"{c.val_loglik_per_row:.4f}", f"{c.val_bic:,.0f}", str(c.iterations),
            f"{c.fit_s:.1f}", mark,
        )  # fmt: skip
    console.print(table)


def _print_k_choice(report: object, regime: object) -> None:
    choice = report.k_choice  # type: ignore[attr-defined]
    if choice is None:
        return
    k_min, k_max = regime.k_min, regime.k_max  # type: ignore[attr-defined]
    gain = regime.k_min_gain_per_row  # type: ignore[attr-defined]
    line = (
        f"K = {choice.k} of {k_min}..{k_max} (best held-out log-likelihood per row at "
        f"K = {choice.best_k}; smaller K within {gain} nats per row of it win)"
    )
    if choice.edge == "k_max":
        line += (
            f". K is at the TOP of the range: more states may fit better; "
            f"try a larger regime.k_max (HMMTRADER_REGIME__K_MAX={k_max + 2})"
        )
    elif choice.edge == "k_min":
        line += (
            f". K is at the BOTTOM of the range: fewer states may do as well; "
            f"try a smaller regime.k_min (HMMTRADER_REGIME__K_MIN={max(2, k_min - 1)})"
        )
    console.print(line, highlight=False)


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
        "n_states", "k_best_heldout", "k_at_edge", "val_bic", "val_loglik_per_row",
        "state_entropy", "drift_threshold", "drift_train_above_threshold", "policy_log_loss",
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
    history: Annotated[
        bool, typer.Option("--history", help="List every recorded move of production.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the versions (tags included), the production guard and every move as JSON.",
        ),
    ] = False,
) -> None:
    """Registered versions: aliases, data range, key metrics, canary verdict."""
    config = load_config()
    if as_json and repair:
        raise InputError("--json lists only: run --repair without it")
    if repair:
        done = open_registry(config).repair()
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
    registry = _reader(config)
    if as_json:
        print(json.dumps(_listing(registry), indent=2))
        return
    versions = registry.versions()
    if not versions:
        console.print(f"No versions of {registry.name} yet: run hmmtrader train.")
        return
    table = Table(title=f"{registry.name} ({registry.uri})")
    for col in ("version", "aliases", "created (UTC)", "data", "symbols", "features", "K",
                "K edge", "val BIC", "entropy", "policy log-loss", "kind", "canary"):  # fmt: skip
        table.add_column(col)
    incomplete = [v.version for v in versions if not v.complete]
    for v in reversed(versions):
        t = v.tags
        table.add_row(
            str(v.version) if v.complete else f"{v.version} INCOMPLETE", ", ".join(v.aliases), v.created.strftime("%Y-%m-%d %H:%M"),
            f"{t.get('data_start', '?')}..{t.get('data_end', '?')}", t.get("symbols", ""),
            t.get("feature_version", "").split("@")[0], t.get("n_states", ""),
            _edge_cell(t), t.get("val_bic", ""), t.get("state_entropy", ""),
            t.get("policy_log_loss", ""), t.get("kind", ""), _canary_cell(v.canary, t),
        )  # fmt: skip
    console.print(table)
    from trading.regime.registry import TAG_FLOORS

    for v in versions:
        failed = v.tags.get(TAG_FLOORS, "none")
        if failed != "none" and "production" in v.aliases:
            console.print(
                f"[bold red]PRODUCTION version {v.version} FAILS[/] the canary floor(s) "
                f"{failed} ({v.tags.get('floors_checked', '')}); canary.on_production_failure "
                "says what follows (README, Canary)."
            )
    guard = registry.guard()
    if guard.anomaly:
        style = "bold red" if guard.blocked else "bold yellow"
        console.print(f"[{style}]PRODUCTION ALIAS MOVED OUT OF BAND[/]: {guard.anomaly}.")
    moves = registry.moves()
    if moves:
        last = moves[-1]
        console.print(
            f"Production moves recorded: {len(moves)}; the last: {last.kind} to version "
            f"{last.version} (from {last.from_version or 'none'}) by {last.by} at {last.at}"
            + (f", reason: {last.reason}" if last.reason else "")
            + f". Previous: {guard.previous or 'none'}. hmmtrader models --history lists them.",
            highlight=False,
        )
    if history:
        _print_history(moves)
    edges = [v.version for v in versions if _tag_edge(v.tags)]
    if edges:
        console.print(
            f"Version(s) {', '.join(map(str, edges))}: K sits at the edge of the searched "
            "range (K edge column); the data may want a wider regime.k_min..k_max.",
            highlight=False,
        )
    if incomplete:
        console.print(
            f"Version(s) {', '.join(map(str, incomplete))} are INCOMPLETE: their registration "
            "was interrupted, and nothing can canary, promote or serve them. "
            "Run hmmtrader models --repair (the next train does it too).",
            highlight=False,
        )


def _reader(config: AppConfig) -> Any:
    """The registered model to list: read from MLflow's database without importing MLflow
    (trading.regime.catalog), or through MLflow's client for a tracking server."""
    from trading.regime.catalog import read_catalog
    from trading.regime.registry import default_tracking_uri

    settings = config.settings.registry
    uri = settings.tracking_uri or default_tracking_uri(config.home)
    return read_catalog(uri, settings.model_name) or open_registry(config)


def _listing(registry: Any) -> dict[str, Any]:
    """What `models` shows, as data: every version, the guard of production, its moves."""
    guard = registry.guard()
    versions = [
        {
            "version": v.version,
            "complete": v.complete,
            "aliases": list(v.aliases),
            "created": v.created.isoformat(),
            "run_id": v.run_id,
            "canary": v.canary,
            "tags": dict(v.tags),
        }
        for v in registry.versions()
    ]
    return {
        "model": registry.name,
        "tracking_uri": registry.uri,
        "versions": versions,
        "production": guard.to_dict(),
        "moves": [m.to_dict() for m in registry.moves()],
    }


def _print_history(moves: list[Move]) -> None:
    table = Table(title="Production moves (oldest first)")
    for col in ("#", "kind", "version", "from", "by", "verdict", "reason", "at (UTC)"):
        table.add_column(col)
    for m in moves:
        table.add_row(str(m.seq), m.kind, str(m.version), str(m.from_version or "-"), m.by,
                      m.verdict, m.reason, m.at)  # fmt: skip
    console.print(table)


def _cli_actor() -> str:
    return f"cli ({os.environ.get('USER', 'unknown')})"


def _canary_cell(verdict: str, tags: dict[str, str]) -> str:
    """The version's canary verdict, and the floors it failed as production on a later
    canary's window."""
    from trading.regime.registry import TAG_FLOORS

    failed = tags.get(TAG_FLOORS, "none")
    cell = verdict or "-"
    return cell if failed == "none" else f"{cell}; FAILS {failed} as production"


def _tag_edge(tags: dict[str, str]) -> str:
    """k_max / k_min when the version's K sits at that edge of its searched range."""
    edge = tags.get("k_at_edge", "")
    return edge if edge in ("k_max", "k_min") else ""


def _edge_cell(tags: dict[str, str]) -> str:
    edge = _tag_edge(tags)
    if not edge:
        return "no" if "k_at_edge" in tags else "-"
    return f"{'top' if edge == 'k_max' else 'bottom'} of {tags.get('k_range', '?')}"


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
    before, after = registry.promote(version, force=force, reason=reason, by=_cli_actor())
    if before == after:
        console.print(f"Version {after} already is production: nothing changed.")
        return
    prev = f"; previous -> {before}" if before is not None else ""
    console.print(f"production -> version {after}{prev}" + (" (forced)" if force else ""))


@app.command("rollback")
def rollback_cmd() -> None:
    """production <- previous, in one step."""
    registry = open_registry(load_config())
    was, now = registry.rollback(by=_cli_actor())
    aliases = registry.aliases()
    console.print(
        f"production -> version {now} (was {was}); previous -> {aliases.get('previous', 'none')}"
    )
