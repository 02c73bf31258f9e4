"""The canary gate: backtest a candidate version and the current production version on the
same recent holdout (after the candidate's training range), same data, same seeds, and
apply the gate rules of `canary:` in the settings.

The verdict is written to the run directory (verdict.json, canary.log), logged to the
candidate's MLflow run, and stored as version tags (`canary_verdict` is what `promote`
reads). The canary never moves an alias: production is untouched whatever the outcome.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import math
import multiprocessing
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from queue import Empty
from typing import Any

from trading.atomic import atomic_write_text
from trading.backtest.engine import BacktestRun, quality_gate, run_backtest, warmup_ns
from trading.backtest.html_report import REUSED_FROM, write_canary_report, write_report
from trading.backtest.paired import (
    INSUFFICIENT,
    IntervalPnl,
    PairedTest,
    paired_test,
    read_interval_pnl,
)
from trading.data.lake import Lake, day_start_ns
from trading.data.window import (
    NS,
    Window,
    clip_to_ticks,
    market_kinds,
    require_ticks,
    window_days,
)
from trading.errors import InputError
from trading.features.descriptor import BARS_V1, bars_v1
from trading.jsonsafe import json_safe
from trading.paths import StatePaths
from trading.regime.registry import (
    TAG_CANARY,
    TAG_FINGERPRINT,
    TAG_FLOORS,
    Registry,
    fingerprint,
)
from trading.settings import AppConfig
from trading.strategy.config import CanarySettings, GuardrailSettings
from trading.strategy.guardrails import Reason
from trading.strategy.inference import InProcessInference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # floor | relative
    candidate: float
    reference: float | None  # the threshold the candidate is held to
    production: float | None  # production's value (floors), when production was tested
    passed: bool
    text: str  # the rule as a person reads it
    # a floor the candidate fails that production fails too, waived by
    # canary.on_production_failure = promote_if_better (the candidate won the paired test)
    waived: bool = False


PASSED, FAILED = "passed", "failed"  # and INSUFFICIENT, the paired test's own verdict


@dataclass
class CanaryResult:
    version: int
    production_version: int | None
    window: Window
    rules: list[Rule]
    run_dir: Path
    candidate: dict[str, Any]
    production: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    paired: PairedTest | None = None
    # production held to the same floors on the same window (None: no production tested)
    production_rules: list[Rule] | None = None
    on_production_failure: str = "alert"

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    @property
    def verdict(self) -> str:
        """passed, failed, or insufficient_evidence (the candidate meets every floor but the
        paired test had too few trades or intervals to say): never a pass."""
        failing = [r for r in self.rules if not r.passed and not r.waived]
        if not failing:
            return PASSED
        paired_only = all(r.name == PAIRED_RULE for r in failing)
        if paired_only and self.paired is not None and self.paired.verdict == INSUFFICIENT:
            return INSUFFICIENT
        return FAILED

    @property
    def failed_rules(self) -> list[str]:
        return [r.name for r in self.rules if not r.passed and not r.waived]

    @property
    def production_failed_rules(self) -> list[str]:
        return [r.name for r in self.production_rules or [] if not r.passed]


PAIRED_RULE = "paired_vs_production"


def kill_blocks(summary: dict[str, Any]) -> int:
    return int(summary.get("guardrail_blocks", {}).get(Reason.KILL.value, 0))


def _rule(
    name: str,
    kind: str,
    candidate: float,
    compare: str,
    threshold: float,
    text: str,
    production: float | None = None,
) -> Rule:
    """One gate rule; `compare` is how the candidate must stand to the threshold."""
    passed = {
        ">=": candidate >= threshold,
        ">": candidate > threshold,
        "<=": candidate <= threshold,
    }[compare]
    return Rule(name, kind, candidate, threshold, production, passed, text)


def floor_rules(
    summary: dict[str, Any], settings: CanarySettings, limits: GuardrailSettings
) -> list[Rule]:
    """The absolute floors, for one backtest's KPIs (the candidate's, or production's on the
    same window)."""
    f, c = settings.floors, summary
    # fmt: off
    return [
        _rule("net_pnl", "floor", c["net_pnl_usd"], ">=", f.min_net_pnl_usd,
              f"net PnL after fees and slippage >= {f.min_net_pnl_usd} USD"),
        _rule("min_trades", "floor", c["trades"], ">=", f.min_trades,
              f"at least {f.min_trades} trade(s)"),
        _rule("state_entropy", "floor", c["state_entropy"], ">", f.min_state_entropy,
              f"state entropy > {f.min_state_entropy} nats"),
        _rule("nan", "floor", c["nan_count"], "<=", f.max_nan, f"NaN count <= {f.max_nan}"),
        _rule("daily_loss_limit", "floor", c["max_daily_loss_usd"], "<=", limits.daily_loss_usd,
              f"realized daily loss <= the DAILY budget {limits.daily_loss_usd} USD"),
        _rule("state_drawdown_limit", "floor", c["max_state_drawdown_usd"], "<=",
              limits.state_drawdown_usd,
              f"realized per-state drawdown <= the DD cap {limits.state_drawdown_usd} USD"),
        _rule("kill_switch", "floor", kill_blocks(c), "<=", f.max_kill_blocks,
              f"kill-switch blocks <= {f.max_kill_blocks}"),
    ]
    # fmt: on


def evaluate(
    candidate: dict[str, Any],
    production: dict[str, Any] | None,
    settings: CanarySettings,
    limits: GuardrailSettings,
    paired: PairedTest | None = None,
) -> tuple[list[Rule], list[Rule] | None]:
    """The candidate's rules (floors, and the paired rule against production), and
    production's floors on the same window (None without production). With
    on_production_failure = promote_if_better, a floor the candidate fails that production
    fails too is waived when the candidate wins the paired test."""
    rules = floor_rules(candidate, settings, limits)
    if production is None:
        return rules, None
    theirs = floor_rules(production, settings, limits)
    production_failed = {r.name for r in theirs if not r.passed}
    rules = [replace(r, production=p.candidate) for r, p in zip(rules, theirs, strict=True)]
    if paired is None:
        raise ValueError("a canary against production needs the paired test")
    low = paired.ci_low_usd
    rules.append(
        Rule(
            PAIRED_RULE,
            "relative",
            0.0 if math.isnan(low) else low,  # NaN (insufficient evidence): 0
            0.0,
            None,
            paired.better,
            f"paired: the {paired.confidence:.0%} interval of the mean net PnL difference per "
            f"{paired.interval_s // 60} min lies above 0 ({paired.text()})",
        )
    )
    if settings.on_production_failure == "promote_if_better" and paired.better:
        failed = {r.name for r in rules if not r.passed}
        if failed and failed <= production_failed:
            rules = [r if r.passed else replace(r, waived=True) for r in rules]
    return rules, theirs


def holdout_window(
    config: AppConfig,
    symbols: list[str],
    train_end: dt.date | None,
    days: int,
    *,
    bars: bool = False,
) -> Window:
    """The most recent `days` lake days (quotes, or bars with `bars`, of every symbol) after
    the training range, up to the last quote (bar close) they hold (see `clip_to_ticks`)."""
    lake = Lake(StatePaths(config.home).lake)
    venue = config.instruments.venue
    kind = market_kinds(bars)[0]
    common: set[dt.date] | None = None
    for symbol in symbols:
        have = set(lake.days(venue, symbol, kind))
        common = have if common is None else common & have
    after = sorted(d for d in (common or set()) if train_end is None or d > train_end)
    if not after:
        latest = max(common) if common else None
        raise InputError(
            f"no holdout data: the lake has no {'/'.join(symbols)} {kind} days after the "
            "candidate's "
            f"training range (ends {train_end}; latest lake day {latest}). Ingest newer days "
            "or pass --start/--end after the training range"
        )
    chosen = after[-days:]
    whole = Window(day_start_ns(chosen[0]), day_start_ns(chosen[-1]) + 86_400 * NS)
    return clip_to_ticks(lake, venue, symbols, whole, kind)


def trades_bars(tags: dict[str, str]) -> bool:
    """Whether a version (by its feature_version tag) is a BARS_V1 model, which trades on
    1-minute bars."""
    return tags.get("feature_version", "").split("@")[0].lower() == BARS_V1.lower()


def _train_end(tags: dict[str, str]) -> dt.date | None:
    text = tags.get("data_end")
    return dt.date.fromisoformat(text) if text else None


class KpiRecords:
    """The KPIs of every canary (and simulate) backtest, by `kpi_fingerprint`: a later
    canary of the same model on the same window, data and settings reuses them instead of
    backtesting again (it halves a canary when production did not change; a simulate over
    nights the nightly flow ran repeats none of its backtests)."""

    def __init__(self, home: Path) -> None:
        self.root = StatePaths(home).cache / "backtest-kpis"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.root / f"{key}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # none, or unreadable: backtest again
        return record if isinstance(record, dict) and "summary" in record else None

    def put(self, key: str, run: BacktestRun, pnl: IntervalPnl | None = None) -> None:
        record: dict[str, Any] = {"summary": run.summary, "run_dir": str(run.run_dir)}
        if pnl is not None:
            record["interval_pnl"] = pnl.to_dict()
        atomic_write_text(self.root / f"{key}.json", json.dumps(record, default=str))


def recorded_pnl(record: dict[str, Any], window: Window, interval_s: int) -> IntervalPnl | None:
    """A KPI record's net PnL per interval on `window`: recorded with it, or read from its
    run directory's equity.csv; None when neither is there (backtest again)."""
    stored = record.get("interval_pnl")
    if isinstance(stored, dict):
        try:
            pnl: IntervalPnl | None = IntervalPnl.from_dict(stored)
        except (KeyError, TypeError, ValueError):
            pnl = None
        if pnl is not None and (pnl.start_ns, pnl.interval_s) == (window.start_ns, interval_s):
            return pnl
    try:
        return read_interval_pnl(Path(record["run_dir"]), window.start_ns, window.end_ns,
                                 interval_s)  # fmt: skip
    except (OSError, KeyError, ValueError):
        return None


def kpi_fingerprint(
    config: AppConfig,
    registry: Registry,
    version: int,
    symbols: list[str],
    window: Window,
    *,
    bars: bool = False,
) -> str:
    """What a backtest's KPIs depend on: the model (its training fingerprint: the same data
    and training config give the same model, in this registry or in a simulate's sandbox;
    a version without one: the version and its MLflow run), the symbols and window, the
    backtest and strategy settings, and the lake files read (size and modification time of
    each quote and trade file, or bar file, from the warm-up on; a bar model's warm-up is
    counted a day longer than the configured bars need)."""
    lake = Lake(StatePaths(config.home).lake)
    s = config.settings
    warm_ns = (
        warmup_ns(config, bars_v1(s.bars)) + 86_400 * NS if bars else int(s.backtest.warmup_s * NS)
    )
    first, last = window_days(window.start_ns - warm_ns, window.end_ns)
    files = []
    for symbol in symbols:
        for kind in market_kinds(bars):
            for i in range((last - first).days + 1):
                path = lake.path(config.instruments.venue, symbol, kind, first + dt.timedelta(i))
                if path.exists():
                    stat = path.stat()
                    files.append([str(path.relative_to(lake.root)), stat.st_size, stat.st_mtime_ns])
    info = registry.info(version)
    trained = info.tags.get(TAG_FINGERPRINT)
    model: dict[str, Any] = (
        {"trained": trained}
        if trained
        else {"model": registry.name, "version": version, "run_id": info.run_id}
    )
    return fingerprint(
        {
            **model,
            "symbols": symbols,
            "window": [window.start_ns, window.end_ns],
            "backtest": s.backtest.model_dump(mode="json"),
            "strategy": s.strategy.model_dump(mode="json"),
            "data": files,
        }
    )


def run_canary(
    config: AppConfig,
    registry: Registry,
    ref: str | int,
    *,
    symbols: list[str] | None = None,
    window: Window | None = None,
    run_dir: Path | None = None,
    progress: Callable[[str, float], None] | None = None,
    log_mlflow: bool = True,
    validated: Path | None = None,
) -> CanaryResult:
    """Backtest the version (and production) on the holdout and apply the gate rules.
    `validated`: the issue CSV of the data-quality gate the caller ran on these very
    files (the nightly flow's validate step): the backtests skip theirs and copy it."""
    settings = config.settings.canary
    version = registry.resolve(ref)
    info = registry.info(version)
    names = (
        symbols
        or [s for s in info.tags.get("symbols", "").split(",") if s]
        or list(config.settings.strategy.symbols)
    )
    train_end = _train_end(info.tags)
    bars = trades_bars(info.tags)
    if train_end is None:
        raise InputError(
            f"version {version} has no recorded training range (tag data_end): the canary "
            "cannot tell in-sample days from a holdout, so it refuses to test it; train a "
            "new version (hmmtrader train) and canary that"
        )
    if window is None:
        window = holdout_window(config, names, train_end, settings.holdout_days, bars=bars)
    elif window.start_ns < day_start_ns(train_end) + 86_400 * NS:
        raise InputError(
            f"the canary window {window} overlaps version {version}'s training range "
            f"(ends {train_end}): start after {train_end}"
        )
    production = registry.production()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = run_dir or StatePaths(config.home).runs / f"canary-v{version}-{stamp}"
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "canary.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    notes = []
    try:
        log.info("canary of %s version %s on %s, symbols %s", registry.name, version, window, names)
        records = KpiRecords(config.home)
        production_bars = (
            trades_bars(registry.info(production).tags) if production is not None else bars
        )
        if production is not None and production != version and production_bars != bars:
            what = {True: "1-minute bars", False: "ticks"}
            try:
                require_ticks(
                    Lake(StatePaths(config.home).lake),
                    config.instruments.venue,
                    names,
                    window,
                    market_kinds(production_bars),
                )
            except InputError as exc:
                note = (
                    f"production version {production} trades on {what[production_bars]}, the "
                    f"candidate on {what[bars]}, and the holdout has no {what[production_bars]} "
                    f"({exc}): only the floors apply"
                )
                notes.append(note)
                log.info(note)
                production = None
        if production is None or production == version:
            note = (
                "no production version yet: only the floors apply"
                if production is None
                else f"version {version} is production already: only the floors apply"
            )
            notes.append(note)
            log.info(note)
            production = None
        else:
            log.info("production is version %s: same window, same data, same seeds", production)
        trades_on = {version: bars, **({production: production_bars} if production else {})}
        sides = [("candidate", version)] + ([("production", production)] if production else [])
        interval_s = settings.paired.interval_s
        # KPIs recorded for the same model on the same window, data and settings (an earlier
        # canary, a re-run night, a simulate) are reused: no backtest runs twice
        found: dict[str, tuple[dict[str, Any], IntervalPnl]] = {}
        for side, v in sides:
            record = records.get(
                kpi_fingerprint(config, registry, v, names, window, bars=trades_on[v])
            )
            pnl = recorded_pnl(record, window, interval_s) if record else None
            if record is None or pnl is None:
                continue
            found[side] = (record["summary"], pnl)
            (run_dir / side).mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / side / "summary.json",
                              json.dumps(record["summary"], indent=2, default=str))  # fmt: skip
            # where the backtest's files are (its equity, trades: the report draws them)
            atomic_write_text(run_dir / side / REUSED_FROM,
                              json.dumps({"run_dir": str(record["run_dir"])}))  # fmt: skip
            note = (
                f"{side} version {v}'s KPIs on this window were reused from "
                f"{record['run_dir']} (same model, data, strategy and backtest settings)"
            )
            notes.append(note)
            log.info(note)
        jobs = [(side, v) for side, v in sides if side not in found]
        runs = (
            _backtests(
                config, registry, jobs, names, window, run_dir, progress, validated, trades_on
            )
            if jobs
            else []
        )
        for (side, v), run in zip(jobs, runs, strict=True):
            pnl = read_interval_pnl(run.run_dir, window.start_ns, window.end_ns, interval_s)
            s = run.summary
            log.info(
                "v%s: net %.2f USD, %d trades, Sharpe %.2f, max drawdown %.2f USD, run dir %s",
                v, s["net_pnl_usd"], s["trades"], s["sharpe"], s["max_drawdown_usd"], run.run_dir,
            )  # fmt: skip
            records.put(
                kpi_fingerprint(config, registry, v, names, window, bars=trades_on[v]), run, pnl
            )
            found[side] = (run.summary, pnl)
        if not jobs and validated is not None and validated.is_file():
            shutil.copyfile(validated, run_dir / "data_quality_issues.csv")
        candidate, candidate_pnl = found["candidate"]
        reference: dict[str, Any] | None = None
        reference_pnl: IntervalPnl | None = None
        if "production" in found:
            reference, reference_pnl = found["production"]
        paired = None
        if reference is not None and reference_pnl is not None:
            paired = paired_test(candidate_pnl, reference_pnl, int(candidate["trades"]),
                                 int(reference["trades"]), settings.paired)  # fmt: skip
            log.info("paired test: %s", paired.text())
        rules, production_rules = evaluate(
            candidate, reference, settings, config.settings.strategy.guardrails, paired
        )
        result = CanaryResult(
            version,
            production if reference is not None else None,
            window,
            rules,
            run_dir,
            candidate,
            reference,
            notes,
            paired,
            production_rules,
            settings.on_production_failure,
        )
        if result.production_failed_rules:
            log.warning(
                "PRODUCTION FAILS floor(s) on this window: %s (version %s); action: %s",
                ", ".join(result.production_failed_rules), production,
                settings.on_production_failure,
            )  # fmt: skip
        for rule in rules:
            log.info(
                "%s %s: %s (candidate %s, threshold %s%s)",
                "WAIVED" if rule.waived else "PASS" if rule.passed else "FAIL",
                rule.name,
                rule.text,
                rule.candidate,
                rule.reference,
                f", production {rule.production}" if rule.production is not None else "",
            )
        log.info("verdict: %s", result.verdict)
        _record(registry, result, log_mlflow)
        action = production_action(config, result)
        if action:
            result.notes.append(action)
            log.warning(action)
        return result
    except BaseException:
        if created:  # no half-written run directory: the error says what failed
            log.removeHandler(handler)
            handler.close()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def _backtests(
    config: AppConfig,
    registry: Registry,
    jobs: list[tuple[str, int]],
    symbols: list[str],
    window: Window,
    run_dir: Path,
    progress: Callable[[str, float], None] | None,
    validated: Path | None = None,
    trades_on: dict[int, bool] | None = None,
) -> list[BacktestRun]:
    """Backtest each (side, version) on the same data, gated once (not at all when the
    caller validated these files: its issue CSV is copied); `trades_on`: per version,
    whether it trades on bars (default: none does); two at once in two processes
    when canary.workers allows it (not from a daemonic process, such as a Dask worker:
    those cannot have children)."""

    def bars_of(version: int) -> bool:
        return (trades_on or {}).get(version, False)

    if validated is not None and validated.is_file():
        shutil.copyfile(validated, run_dir / "data_quality_issues.csv")
        quality: dict[str, Any] = {"passed": True, "validated_before": str(validated)}
        log.info("data-quality gate: passed before the canary (%s)", validated)
    else:
        lake = Lake(StatePaths(config.home).lake)
        quality = quality_gate(config, lake, symbols, window, run_dir, bars=bars_of(jobs[0][1]))
    for side, _ in jobs:
        (run_dir / side).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "data_quality_issues.csv",
                        run_dir / side / "data_quality_issues.csv")  # fmt: skip
    # a version that trades on the other kind of data (a tick production beside a bar
    # candidate) gates its own data in its backtest
    gated: dict[int, dict[str, Any] | None] = {
        v: quality if bars_of(v) == bars_of(jobs[0][1]) else None for _, v in jobs
    }
    parallel = (
        len(jobs) > 1
        and config.settings.canary.workers > 1
        and not multiprocessing.current_process().daemon
    )
    if not parallel:
        return [
            _backtest(config, registry, v, symbols, window, run_dir / side, gated[v], progress)
            for side, v in jobs
        ]
    log.info("candidate and production backtests in parallel, one process each")
    context = multiprocessing.get_context("spawn")  # no fork of a threaded process
    queue = context.Queue()
    stop = threading.Event()

    def relay() -> None:
        while not stop.is_set():
            try:
                label, fraction = queue.get(timeout=0.2)
            except Empty:
                continue
            if progress is not None:
                progress(label, fraction)

    # the caller's context variables (a Prefect run's settings and logger) go along: without
    # them Prefect would start a throwaway server for this thread's log lines
    context_vars = contextvars.copy_context()
    relay_thread = threading.Thread(
        target=context_vars.run, args=(relay,), name="canary-progress", daemon=True
    )
    relay_thread.start()
    try:
        with ProcessPoolExecutor(
            max_workers=len(jobs),
            mp_context=context,
            initializer=_child_init,
            initargs=(queue,),
        ) as pool:
            futures = [
                pool.submit(_child_backtest, config, v, symbols, window, run_dir / side, gated[v])
                for side, v in jobs
            ]
            return [f.result() for f in futures]
    finally:
        stop.set()
        relay_thread.join(timeout=2)


_child_queue: Any = None


def _child_init(queue: Any) -> None:
    global _child_queue
    _child_queue = queue


def _child_backtest(
    config: AppConfig,
    version: int,
    symbols: list[str],
    window: Window,
    run_dir: Path,
    quality: dict[str, Any] | None,
) -> BacktestRun:
    from trading.env import disable_telemetry

    disable_telemetry()
    registry = Registry(config.settings.registry, config.home)

    def progress(label: str, fraction: float) -> None:
        if _child_queue is not None:
            _child_queue.put((label, fraction))

    return _backtest(config, registry, version, symbols, window, run_dir, quality, progress)


def _backtest(
    config: AppConfig,
    registry: Registry,
    version: int,
    symbols: list[str],
    window: Window,
    run_dir: Path,
    quality: dict[str, Any] | None,
    progress: Callable[[str, float], None] | None,
) -> BacktestRun:
    model, _ = registry.load(version)
    inference = InProcessInference(model, version)
    label = f"v{version}"
    return run_backtest(
        config,
        inference,
        symbols,
        window,
        run_dir,
        quality=quality,
        progress=(lambda f: progress(label, f)) if progress else None,
    )


def production_check(result: CanaryResult) -> dict[str, Any] | None:
    """Production held to the candidate's floors on the same window (None: not tested)."""
    if result.production_rules is None:
        return None
    return {
        "version": result.production_version,
        "passed": not result.production_failed_rules,
        "failed_rules": result.production_failed_rules,
        "action": result.on_production_failure,
        "rules": [asdict(r) for r in result.production_rules],
    }


def verdict_dict(result: CanaryResult) -> dict[str, Any]:
    return {
        "version": result.version,
        "verdict": result.verdict,
        "production_version": result.production_version,
        "window_start": result.window.start.isoformat(),
        "window_end": result.window.end.isoformat(),
        "failed_rules": result.failed_rules,
        "waived_rules": [r.name for r in result.rules if r.waived],
        "rules": [json_safe(asdict(r)) for r in result.rules],
        "paired": json_safe(result.paired.to_dict()) if result.paired is not None else None,
        "production_floors": production_check(result),
        "notes": result.notes,
        "run_dir": str(result.run_dir),
        # beside the gate: net PnL against flat and buy-and-hold on the same window
        "benchmarks": {
            name: {
                "net_pnl_usd": summary["net_pnl_usd"],
                "trades": summary["trades"],
                **{k: v for k, v in (summary.get("benchmarks") or {}).items() if k != "buy_hold"},
            }
            for name, summary in (
                ("candidate", result.candidate),
                ("production", result.production),
            )
            if summary is not None
        },
    }


def _paired_tag(p: dict[str, Any] | None) -> str:
    """The version's canary_paired tag: the paired test in brief (verdict.json has it all)."""
    if p is None:
        return "none"
    return json.dumps({
        "verdict": p["verdict"], "mean_diff_usd": p["mean_diff_usd"],
        "ci": [p["ci_low_usd"], p["ci_high_usd"]], "confidence": p["confidence"],
        "p_better": p["p_better"], "trades": [p["candidate_trades"], p["production_trades"]],
    })  # fmt: skip


def _record(registry: Registry, result: CanaryResult, log_mlflow: bool) -> None:
    verdict = verdict_dict(result)
    atomic_write_text(result.run_dir / "verdict.json", json.dumps(verdict, indent=2))
    write_report(write_canary_report, result.run_dir)  # before MLflow logs the directory
    paired = result.paired
    registry.set_tags(
        result.version,
        {
            TAG_CANARY: verdict["verdict"],
            "canary_paired": _paired_tag(verdict["paired"]),
            "canary_production_failed": ",".join(result.production_failed_rules) or "none",
            "canary_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "canary_against": str(result.production_version or "none"),
            "canary_window": f"{verdict['window_start']}..{verdict['window_end']}",
            "canary_failed_rules": ",".join(result.failed_rules) or "none",
            "canary_rules": json.dumps(
                {r.name: [r.candidate, r.reference, r.passed] for r in result.rules}
            ),
            "canary_run_dir": str(result.run_dir),
        },
    )
    if result.production_rules is not None and result.production_version is not None:
        # production's own record: the last canary window it was held to the floors on
        failed = result.production_failed_rules
        registry.set_tags(
            result.production_version,
            {
                TAG_FLOORS: ",".join(failed) if failed else "none",
                "floors_checked": f"canary of version {result.version}, "
                f"{verdict['window_start']}..{verdict['window_end']}",
            },
        )
    if log_mlflow:
        c = result.candidate
        metrics = {
            "canary_passed": float(result.passed),
            "canary_net_pnl_usd": c["net_pnl_usd"],
            "canary_sharpe": c["sharpe"],
            "canary_max_drawdown_usd": c["max_drawdown_usd"],
            "canary_trades": c["trades"],
            "canary_state_entropy": c["state_entropy"],
        }
        if c.get("benchmarks"):
            metrics["canary_buy_hold_pnl_usd"] = c["benchmarks"]["buy_hold_pnl_usd"]
        if result.production is not None:
            metrics["canary_production_net_pnl_usd"] = result.production["net_pnl_usd"]
            metrics["canary_production_failed_floors"] = len(result.production_failed_rules)
        if paired is not None and paired.verdict != INSUFFICIENT:
            metrics["canary_paired_mean_diff_usd"] = paired.mean_diff_usd
            metrics["canary_paired_ci_low_usd"] = paired.ci_low_usd
            metrics["canary_paired_p_better"] = paired.p_better
        run_id = registry.log_results(
            result.version, metrics, result.run_dir, f"canary/{result.run_dir.name}"
        )
        log.info("logged to MLflow run %s", run_id)


def production_action(config: AppConfig, result: CanaryResult) -> str | None:
    """What canary.on_production_failure does once production failed a floor on the canary
    window (None when it did not): `disable_trading` engages the node's kill switch with
    the reason; `alert` and `promote_if_better` only say so (the verdict, the version's tag
    `floors_failed`, the metric; promote_if_better already waived the shared floors)."""
    failed = result.production_failed_rules
    if not failed:
        return None
    reason = (
        f"production version {result.production_version} fails the canary floor(s) "
        f"{', '.join(failed)} on {result.window} (canary of version {result.version})"
    )
    action = result.on_production_failure
    if action == "disable_trading":
        from trading.node.state import open_state

        flatten = config.settings.strategy.guardrails.flatten_on_kill
        open_state(config).engage(reason, "canary", flatten=flatten)
        return f"kill switch engaged (canary.on_production_failure = disable_trading): {reason}"
    if action == "promote_if_better":
        waived = [r.name for r in result.rules if r.waived]
        if waived:
            return (
                f"{reason}; the candidate won the paired test, so its own failure of "
                f"{', '.join(waived)} is waived (canary.on_production_failure = "
                "promote_if_better)"
            )
    return f"{reason} (canary.on_production_failure = {action})"
