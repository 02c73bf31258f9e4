"""Markdown for the Prefect artifacts (and the demo's summary) of one night, and of a
simulate run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from trading.nightly.steps import (
    CanaryReport,
    FeatureOutcome,
    IngestOutcome,
    NightPlan,
    PromotionDecision,
    QualityOutcome,
    TrainResult,
)

if TYPE_CHECKING:
    from trading.nightly.simulate import SimulationResult


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plan_markdown(plan: NightPlan) -> str:
    d = plan.to_dict()
    return table(
        ["night", "train", "holdout (canary)", "ingest", "symbols"],
        [[d["night"], d["train"], d["holdout"], d["ingest"], ", ".join(plan.symbols)]],
    )


def ingest_markdown(plan: NightPlan, outcomes: Sequence[IngestOutcome]) -> str:
    rows = []
    for o in outcomes:
        written_days = sorted({w.day for w in o.written})
        rows.append(
            [
                o.symbol,
                o.source,
                len(written_days),
                o.rows,
                ", ".join(str(d) for d in o.present) or "-",
            ]
        )
    return (
        f"# Ingest, night {plan.night}\n\n"
        + table(["symbol", "source", "days written", "rows written", "already in the lake"], rows)
        + "\n\nDays already in the lake are kept as they are: re-running a night writes nothing."
    )


def quality_markdown(outcomes: Sequence[QualityOutcome]) -> str:
    parts = []
    for q in outcomes:
        verdict = "passed" if q.passed else "**BLOCKED**"
        parts.append(f"## {'+'.join(q.kinds)} {q.start}..{q.end}: {verdict}\n")
        rows = [
            [
                r["symbol"],
                r["kind"],
                r["day"],
                r["check"],
                r["severity"],
                r["failed_rows"],
                r["status"],
            ]
            for r in q.rows
        ]
        parts.append(
            table(["symbol", "kind", "day", "check", "severity", "failed rows", "status"], rows)
        )
        if q.blocking:
            parts.append("\n**Blocking (nothing downstream runs):**\n")
            parts += [f"- {line}" for line in q.blocking]
        if q.warnings:
            parts.append("\nWarnings:\n")
            parts += [f"- {line}" for line in q.warnings]
        parts.append(f"\nIssue rows: {q.issues:,} in `{q.issues_csv}`\n")
    passed = all(q.passed for q in outcomes)
    head = "# Data quality: " + ("passed" if passed else "BLOCKED: the night stops at validate")
    return head + "\n\n" + "\n".join(parts)


def features_markdown(outcomes: Sequence[FeatureOutcome]) -> str:
    rows = [
        [o.symbol, o.version, o.input_rows, o.rows, o.days, o.present, f"{o.seconds:.1f}"]
        for o in outcomes
    ]
    return "# Features\n\n" + table(
        ["symbol", "feature set", "ticks read", "rows written", "days written", "days kept", "s"],
        rows,
    )


_METRICS = (
    "n_states",
    "val_bic",
    "val_loglik",
    "state_entropy",
    "mean_dwell_s",
    "policy_log_loss",
    "policy_accuracy",
    "regime_ari",
)


def training_markdown(plan: NightPlan, result: TrainResult) -> str:
    shown = [(k, result.metrics[k]) for k in _METRICS if k in result.metrics]
    shown += [(k, v) for k, v in sorted(result.metrics.items()) if k not in _METRICS]
    how = (
        "**reused**: a version with the same data and config exists; nothing was registered"
        if result.reused
        else "registered as a new version (alias `candidate`)"
    )
    return (
        f"# Training: {result.model_name} version {result.version}\n\n"
        f"- symbols: {', '.join(result.symbols)}; training days {plan.train_start}.."
        f"{plan.train_end}; {result.rows:,} feature rows\n"
        f"- {how}\n- model: `{result.model_uri}`; MLflow run `{result.run_id}`\n"
        f"- tracking store: `{result.tracking_uri}`\n- {result.seconds:.1f} s\n\n"
        + (table(["metric", "value"], shown) if shown else "(metrics are on the reused run)")
    )


_KPIS = (
    "net_pnl_usd",
    "trades",
    "sharpe",
    "sortino",
    "max_drawdown_usd",
    "hit_rate",
    "turnover_usd",
    "exposure",
    "state_entropy",
    "fees_usd",
)


def canary_markdown(c: CanaryReport) -> str:
    head = f"# Canary: {c.model_name} version {c.version}"
    if c.skipped:
        return f"{head}\n\nNot run: {c.skipped}."
    against = f"production version {c.production}" if c.production else "the floors only"
    verdict = {
        "insufficient_evidence": "**INSUFFICIENT EVIDENCE** (not a pass)",
        "failed": "**FAILED**",
    }.get(c.verdict, "**passed**" if c.passed else "**FAILED**")
    lines = [f"{head}: {verdict}\n", f"Holdout {c.window}, against {against}.\n"]
    if c.production_failed:
        floors = c.production_floors or {}
        lines.append(
            f"**Production version {floors.get('version')} FAILS the floor(s) "
            + ", ".join(f"`{r}`" for r in c.production_failed)
            + f" on this holdout** (action: `{floors.get('action', 'alert')}`).\n"
        )
    if c.failed_rules:
        lines.append("Failing rules: " + ", ".join(f"`{r}`" for r in c.failed_rules) + "\n")
    if c.paired:
        p = c.paired
        if p.get("verdict") == "insufficient_evidence":
            lines.append(f"Paired test: insufficient evidence ({p.get('reason')}).\n")
        else:
            lines.append(
                f"Paired test ({p['intervals']} intervals of {p['interval_s'] // 60} min, "
                f"block bootstrap x{p['resamples']}, seed {p['seed']}): candidate - production "
                f"{p['mean_diff_usd']:+.4f} USD per interval, {p['confidence']:.0%} CI "
                f"[{p['ci_low_usd']:+.4f}, {p['ci_high_usd']:+.4f}], P(better) "
                f"{p['p_better']:.2f}; trades {p['candidate_trades']} vs "
                f"{p['production_trades']}.\n"
            )
    rows = [
        [
            r["name"],
            r.get("text", ""),
            r.get("candidate"),
            r.get("production"),
            r.get("reference"),
            "waived" if r.get("waived") else "pass" if r["passed"] else "FAIL",
        ]
        for r in c.rules
    ]
    lines.append(table(["rule", "meaning", "candidate", "production", "threshold", "result"], rows))
    if c.candidate:
        kpi_rows = [
            [k, c.candidate.get(k), (c.production_kpis or {}).get(k)]
            for k in _KPIS
            if k in c.candidate
        ]
        lines.append("\n## Backtest KPIs on the holdout\n")
        lines.append(
            table(
                [
                    "KPI",
                    f"candidate v{c.version}",
                    f"production v{c.production}" if c.production else "production",
                ],
                kpi_rows,
            )
        )
    lines += [f"\n- {note}" for note in c.notes]
    if c.run_dir:
        lines.append(f"\nRun directory (CSVs, equity, logs): `{c.run_dir}`")
    return "\n".join(lines)


def promotion_markdown(d: PromotionDecision) -> str:
    return (
        f"# Promotion: {d.decision.upper()}, {d.model_name} version {d.version}\n\n"
        f"{d.reason}.\n\n"
        + table(
            ["", "value"],
            [
                ["decision", d.decision],
                ["model version", f"{d.model_name} v{d.version} (`{d.model_uri}`)"],
                ["MLflow run", d.run_id],
                ["production before", d.production_before],
                ["production after", d.production_after],
                ["tracking store", d.tracking_uri],
            ],
        )
    )


def simulate_markdown(result: SimulationResult) -> str:
    """The policies' net PnL on the same days, and the nights (nights.csv's columns)."""
    from trading.nightly.simulate import night_rows

    traded = [d for d in result.days if not d.skipped]
    b = result.backtests
    totals = table(
        ["policy", "net PnL (USD)"], [[p, f"{v:+.2f}"] for p, v in result.totals.items()]
    )
    rows = night_rows(result)
    columns = ["night", "trained", "verdict", "decision", "production_after", "next_day",
               "gated_pnl_usd", "never_pnl_usd", "newest_pnl_usd", "buy_hold_pnl_usd"]  # fmt: skip
    nights = table(columns, [[row[c] for c in columns] for row in rows])
    return (
        f"# Simulate: {result.model_name}, {len(result.nights)} nights, "
        f"{len(traded)} trading day(s)\n\n"
        "Net PnL of each policy over the same days (gated: production after each night's "
        "gate; never: the first version; newest: every new version, no gate).\n\n"
        f"{totals}\n\n{nights}\n\n"
        f"Backtests: {b['canary_run']} run and {b['canary_reused']} reused by the canaries; "
        f"{b['policy_run']} run and {b['policy_reused']} reused for the policies' days. "
        f"Run directory: `{result.run_dir}`"
        + (f"; MLflow run `{result.mlflow_run_id}`." if result.mlflow_run_id else ".")
    )
