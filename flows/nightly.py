"""The nightly retrain as Prefect flows. Thin: every task calls one function of
trading.nightly.steps, which works without Prefect.

    nightly-retrain = ingest -> validate (raw) -> features -> validate (features)
                      -> train (per symbol set) -> canary vs production -> promote | reject

Each step is also a flow of its own (run it alone from the CLI or a deployment); the
nightly flow calls them as subflows, so the Prefect UI shows one child run per step.
Per-symbol (ingest, features) and per-set (train) work is submitted to the task runner:
Prefect's thread pool, or a Dask cluster with `flows.task_runner: dask`.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from flows.runtime import artifact_key, flow_config, shared_cluster, task_runner
from trading.nightly import reports, steps
from trading.nightly.config import SymbolSet
from trading.settings import AppConfig


def _night_run_name() -> str:
    from prefect.runtime import flow_run

    night = flow_run.parameters.get("night")
    return f"{flow_run.flow_name}-{night or 'next-night'}"


# ---- tasks: one function of trading.nightly.steps each ----------------------------------


def _where(what: str) -> None:
    """Which host and process runs the task (a Dask worker, or the flow's own process)."""
    get_run_logger().info("%s on %s, pid %d", what, socket.gethostname(), os.getpid())


@task(name="ingest-symbol", task_run_name="ingest-{symbol}", cache_policy=NO_CACHE)
def ingest_symbol(config: AppConfig, symbol: str, plan: steps.NightPlan) -> steps.IngestOutcome:
    _where(f"ingest {symbol}")
    return steps.ingest_symbol(config, symbol, plan)


@task(name="validate-data", task_run_name="validate-{kinds}", cache_policy=NO_CACHE)
def validate_data(
    config: AppConfig, symbols: tuple[str, ...], start: dt.date, end: dt.date, kinds: str
) -> steps.QualityOutcome:
    return steps.validate(config, symbols, start, end, kinds.split(","))


@task(name="features-symbol", task_run_name="features-{symbol}", cache_policy=NO_CACHE)
def features_symbol(config: AppConfig, symbol: str, plan: steps.NightPlan) -> steps.FeatureOutcome:
    _where(f"features {symbol}")
    return steps.features_symbol(config, symbol, plan)


@task(name="train-set", cache_policy=NO_CACHE)
def train_set(config: AppConfig, symbol_set: SymbolSet, plan: steps.NightPlan) -> steps.TrainResult:
    _where(f"train {', '.join(symbol_set.symbols)}")
    return steps.train_set(config, symbol_set, plan)


@task(name="canary-set", cache_policy=NO_CACHE)
def canary_set(
    config: AppConfig,
    symbol_set: SymbolSet,
    version: int,
    plan: steps.NightPlan | None,
    validated: str | None,
) -> steps.CanaryReport:
    logger = get_run_logger()
    shown: dict[str, int] = {}

    def progress(label: str, fraction: float) -> None:
        quarter = int(fraction * 4)
        if quarter > shown.get(label, -1):
            shown[label] = quarter
            logger.info("canary backtest %s: %d%%", label, round(fraction * 100))

    return steps.canary_set(config, symbol_set, version, plan, progress, validated)


@task(name="promote-set", cache_policy=NO_CACHE)
def promote_set(config: AppConfig, symbol_set: SymbolSet, version: int) -> steps.PromotionDecision:
    return steps.promote_set(config, symbol_set, version)


# ---- flows ---------------------------------------------------------------------------


@flow(name="ingest", flow_run_name=_night_run_name)
def ingest(night: dt.date | None = None) -> list[steps.IngestOutcome]:
    """Bring the night's days of every symbol into the lake, symbols in parallel; a failed
    download is retried with exponential backoff (flows.ingest_retries)."""
    config = flow_config()
    plan = steps.plan_night(config, night)
    flows = config.settings.flows
    retrying = ingest_symbol.with_options(
        retries=flows.ingest_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=flows.ingest_retry_delay_s),
    )
    futures = [retrying.submit(config, symbol, plan) for symbol in plan.symbols]
    outcomes = [f.result() for f in futures]
    create_markdown_artifact(
        reports.ingest_markdown(plan, outcomes),
        key="ingest",
        description=f"ingest, night {plan.night}",
    )
    return outcomes


@flow(name="validate", flow_run_name=_night_run_name)
def validate(night: dt.date | None = None, kinds: str = "quotes,trades") -> steps.QualityOutcome:
    """The data-quality gate (Great Expectations) on the night's raw data (quotes, trades,
    or bars for a bars_v1 model: every ingested day) or features (the training days). A
    blocking failure fails this flow, so nothing downstream runs; the data-quality artifact
    says why."""
    config = flow_config()
    plan = steps.plan_night(config, night)
    if kinds == "features":
        start, end = plan.train_start, plan.train_end
    else:
        start, end = plan.first_day, plan.night
    outcome = validate_data(config, plan.symbols, start, end, kinds)
    create_markdown_artifact(
        reports.quality_markdown([outcome]),
        key=artifact_key("data-quality", kinds),
        description=f"data-quality gate ({kinds}), night {plan.night}",
    )
    if not outcome.passed:
        raise steps.QualityBlockedError(
            f"data-quality gate blocked ({kinds} {start}..{end}): " + "; ".join(outcome.blocking)
        )
    return outcome


@flow(name="features", flow_run_name=_night_run_name)
def features(night: dt.date | None = None) -> list[steps.FeatureOutcome]:
    """Features of the training days, symbols in parallel."""
    config = flow_config()
    plan = steps.plan_night(config, night)
    futures = [features_symbol.submit(config, symbol, plan) for symbol in plan.symbols]
    outcomes = [f.result() for f in futures]
    create_markdown_artifact(
        reports.features_markdown(outcomes), key="features", description="features written"
    )
    return outcomes


@flow(name="train", flow_run_name=_night_run_name)
def train(night: dt.date | None = None) -> list[steps.TrainResult]:
    """Train and register one candidate per symbol set (sets in parallel). The same data
    and config as an existing version reuse it: nothing is registered twice."""
    config = flow_config()
    plan = steps.plan_night(config, night)
    futures = [train_set.submit(config, item, plan) for item in config.settings.flows.symbol_sets]
    results = [f.result() for f in futures]
    for result in results:
        create_markdown_artifact(
            reports.training_markdown(plan, result),
            key=artifact_key("training", result.model_name),
            description=f"training metrics, {result.model_name} v{result.version}",
        )
    return results


@flow(name="canary")
def canary(
    version: str = "candidate",
    model_name: str | None = None,
    night: dt.date | None = None,
    promote_on_pass: bool = False,
    data_validated: str | None = None,
) -> steps.CanaryReport:
    """Candidate vs production on a holdout (the night's, or with no night the most recent
    lake days after the version's training range); records the verdict on the version.
    With promote_on_pass, a passed verdict promotes it. data_validated: the issue CSV of
    the data-quality gate that passed the holdout's files in this run already (the
    nightly flow's validate step), so the backtests skip theirs."""
    config = flow_config()
    symbol_set = steps.symbol_set_of(config, model_name)
    plan = steps.plan_night(config, night) if night is not None else None
    number = _resolve(config, symbol_set, version)
    report = canary_set(config, symbol_set, number, plan, data_validated)
    create_markdown_artifact(
        reports.canary_markdown(report),
        key=artifact_key("canary", report.model_name),
        description=f"canary, {report.model_name} v{report.version}: "
        + ("passed" if report.passed else "failed"),
    )
    if promote_on_pass:
        promote(str(number), model_name)
    return report


@flow(name="promote")
def promote(version: str = "candidate", model_name: str | None = None) -> steps.PromotionDecision:
    """Promote the version to production if its recorded canary verdict passed; otherwise
    reject it and leave production untouched. The decision is an artifact."""
    config = flow_config()
    symbol_set = steps.symbol_set_of(config, model_name)
    decision = promote_set(config, symbol_set, _resolve(config, symbol_set, version))
    get_run_logger().info("%s v%s: %s (%s)", decision.model_name, decision.version,
                          decision.decision, decision.reason)  # fmt: skip
    create_markdown_artifact(
        reports.promotion_markdown(decision),
        key=artifact_key("promotion", decision.model_name),
        description=f"{decision.decision}: {decision.model_name} v{decision.version}",
    )
    return decision


def _resolve(config: AppConfig, symbol_set: SymbolSet, version: str | int) -> int:
    from trading.regime.registry import Registry

    cfg = steps.set_config(config, symbol_set)
    return Registry(cfg.settings.registry, cfg.home).resolve(version)


@flow(name="nightly-retrain", flow_run_name=_night_run_name)
def nightly_retrain(night: dt.date | None = None) -> steps.NightReport:
    """One night: ingest -> validate -> features -> validate -> train per symbol set ->
    canary vs production -> promote or reject. `night` defaults to yesterday (UTC), or
    for the synthetic source to the day after the newest synthetic day in the lake."""
    config = flow_config()
    plan = steps.plan_night(config, night)
    logger = get_run_logger()
    logger.info("night %s: %s", plan.night, plan.to_dict())
    report = steps.NightReport(plan)
    try:
        with shared_cluster(config) as address:
            runner = task_runner(config, address)
            report.ingest = ingest.with_options(task_runner=runner)(plan.night)
            report.quality.append(validate(plan.night, ",".join(steps.raw_kinds(config))))
            report.features = features.with_options(task_runner=runner)(plan.night)
            report.quality.append(validate(plan.night, "features"))
            report.trained = train.with_options(task_runner=runner)(plan.night)
            for result in report.trained:  # backtests use every core: one set at a time
                report.canaries.append(
                    canary(
                        version=str(result.version),
                        model_name=result.model_name,
                        night=plan.night,
                        # validate (quotes, trades or bars) just passed on these files
                        data_validated=report.quality[0].issues_csv,
                    )
                )
                report.decisions.append(promote(str(result.version), result.model_name))
    except Exception as exc:
        report.stopped = (
            str(exc)
            if isinstance(exc, steps.QualityBlockedError)
            else (f"{type(exc).__name__}: {exc}")
        )
        raise
    finally:
        create_markdown_artifact(
            _summary(report),
            key="nightly-summary",
            description=f"night {plan.night}: "
            + (
                report.stopped
                or ", ".join(f"{d.model_name} {d.decision}" for d in report.decisions)
            ),
        )
    return report


def _summary(report: steps.NightReport) -> str:
    lines = [f"# Nightly retrain, night {report.plan.night}\n", reports.plan_markdown(report.plan)]
    if report.stopped:
        lines.append(
            f"\n**Stopped:** {report.stopped}. The steps after it did not run; production "
            "moved only if a promotion is listed below."
        )
    rows = []
    for t in report.trained:
        c = next((c for c in report.canaries if c.model_name == t.model_name), None)
        d = next((d for d in report.decisions if d.model_name == t.model_name), None)
        rows.append([
            t.model_name, t.version, "reused" if t.reused else "new",
            ("passed" if c.passed else "failed") if c and not c.skipped else (c.skipped if c else "-"),
            ", ".join(c.failed_rules) if c else "-",
            d.decision if d else "-", d.production_after if d else "-",
        ])  # fmt: skip
    if rows:
        lines.append("\n" + reports.table(
            ["model", "version", "trained", "canary", "failed rules", "decision", "production"],
            rows,
        ))  # fmt: skip
    return "\n".join(lines)


@flow(name="backfill")
def backfill(start: dt.date, end: dt.date, retrain: bool = False) -> list[str]:
    """Prepare the lake for every night of [start, end]: ingest, validate, features; with
    retrain, run the whole nightly retrain for each night instead, in order."""
    from trading.data.inputs import day_range

    config = flow_config()
    done = []
    with shared_cluster(config) as address:
        runner = task_runner(config, address)
        for night in day_range(start, end):
            if retrain:
                nightly_retrain(night)
            else:
                ingest.with_options(task_runner=runner)(night)
                validate(night, "quotes,trades")
                features.with_options(task_runner=runner)(night)
                validate(night, "features")
            done.append(str(night))
    return done
