"""`hmmtrader simulate`: the retrain-and-promote policy backtested over history.

Night after night over a range of lake days, it does what the nightly flow does (ingest,
validate, features, validate, train, canary against production, promote or reject), in a
sandbox state root of its own (its own MLflow registry and kill switch; the lake is the
user's, shared), and trades each next day with the version each policy would have had in
production:

- gated: the version production holds after the previous night (the real loop);
- never: the first version trained, never replaced;
- newest: the newest version trained, promoted without a gate;
- flat: no position (0);
- buy_hold: the holdout's buy-and-hold benchmark (each backtest's summary has it).

Night D trains on the days before its holdout day D; day D's trading belongs to the
version chosen by night D-1. So nights [start, end] give trading days start+1 .. end.

Every (version, day) is backtested at most once: the canary of night D backtests
production on day D (the gated policy's day), unless a policy's backtest of that
version on that day is recorded already (the canary's KPI records, `KpiRecords`), and
the policies' backtests are recorded the same way. Fits run in worker processes while
the data of later nights is prepared (they are independent); registration, canary and
promotion run night by night, in order (each depends on the production the previous
night left). A run directory that stopped part way is resumed by running again with the
same --out: versions (same fingerprint), verdicts and backtests are reused.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trading.atomic import atomic_write_text
from trading.data.inputs import day_range
from trading.data.window import Window
from trading.errors import HmmTraderError, InputError
from trading.jsonsafe import json_safe
from trading.nightly import steps
from trading.paths import StatePaths
from trading.settings import AppConfig

log = logging.getLogger(__name__)

POLICIES = ("gated", "never", "newest", "flat", "buy_hold")
MODEL_POLICIES = ("gated", "never", "newest")
ONE_DAY = dt.timedelta(days=1)
Progress = Callable[[str, float], None]
MARKER = "simulate.json"  # what makes a directory a simulate run directory


@dataclass
class SimNight:
    night: dt.date
    version: int | None = None  # trained this night (None: the night stopped before)
    reused: bool = False  # the same fit was registered before (a resumed run)
    verdict: str = ""  # passed | failed | insufficient_evidence | "" (none ran)
    failed_rules: list[str] = field(default_factory=list)
    decision: str = ""  # promoted | rejected | unchanged | blocked | train_failed
    production_after: int | None = None
    stopped: str = ""  # why the night stopped before its canary ("" when it did not)


@dataclass
class SimDay:
    day: dt.date
    versions: dict[str, int | None]  # the version each model policy traded (None: flat)
    pnl: dict[str, float | None]  # net PnL (USD) of each of the five policies
    trades: dict[str, int]
    skipped: str = ""  # why the day was not traded ("" when it was)


@dataclass
class SimulationResult:
    run_dir: Path
    model_name: str
    symbols: tuple[str, ...]
    nights: list[SimNight]
    days: list[SimDay]
    totals: dict[str, float]
    # backtests run and reused: canary_run / canary_reused (the gate's candidate and
    # production backtests), policy_run / policy_reused (the policies' days)
    backtests: dict[str, int]
    seconds: float
    mlflow_run_id: str = ""

    def summary(self) -> dict[str, Any]:
        return json_safe(
            {
                "model": self.model_name,
                "symbols": list(self.symbols),
                "nights": [str(n.night) for n in self.nights],
                "trading_days": [str(d.day) for d in self.days if not d.skipped],
                "net_pnl_usd": self.totals,
                "best": max(self.totals, key=lambda k: self.totals[k]) if self.totals else None,
                "promotions": sum(n.decision == "promoted" for n in self.nights),
                "rejections": sum(n.decision == "rejected" for n in self.nights),
                "blocked_nights": sum(n.decision == "blocked" for n in self.nights),
                "backtests": self.backtests,
                "seconds": round(self.seconds, 2),
                "mlflow_run_id": self.mlflow_run_id,
                "per_night": [{**asdict(n), "night": str(n.night)} for n in self.nights],
                "per_day": [{**asdict(d), "day": str(d.day)} for d in self.days],
            }
        )


# ---- setup ---------------------------------------------------------------------------


def sandbox_config(config: AppConfig, state: Path) -> AppConfig:
    """The config of the simulation's own state root: the user's settings, a registry in
    the sandbox (SQLite under it, whatever tracking server the user's config names)."""
    s = config.settings
    registry = s.registry.model_copy(update={"tracking_uri": None})
    settings = s.model_copy(update={"home": state, "registry": registry})
    return config.model_copy(update={"settings": settings})


def _prepare_run_dir(config: AppConfig, run_dir: Path, request: dict[str, Any]) -> Path:
    """Create the run directory (or accept a stopped run of the same request, to resume)
    and its sandbox state root, whose lake is the user's lake."""
    marker = run_dir / MARKER
    if run_dir.exists() and any(run_dir.iterdir()):
        if not marker.is_file():
            raise InputError(
                f"{run_dir} exists and is not a simulate run directory: pass a new --out, or "
                "the --out of a simulate run to resume it"
            )
        before = json.loads(marker.read_text())
        if before != request:
            changed = sorted(k for k in request if before.get(k) != request[k])
            raise InputError(
                f"{run_dir} holds a simulate run of other arguments ({', '.join(changed)}): "
                "pass a new --out, or the same arguments to resume it"
            )
    state = run_dir / "state"
    state.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(request, indent=2, sort_keys=True))
    user = StatePaths(config.home)
    user.lake.mkdir(parents=True, exist_ok=True)
    # the user's lake, data-quality results (by file: a file validated once is not validated
    # again) and backtest KPIs (by model, window, data and settings: a backtest the nightly
    # flow ran is not run again); everything else (registry, runs, kill switch) is the
    # sandbox's
    links = (
        (state / "lake", user.lake),
        (state / "quality" / "cache", user.quality / "cache"),
        (state / "cache" / "backtest-kpis", user.cache / "backtest-kpis"),
    )
    for link, target in links:
        target.mkdir(parents=True, exist_ok=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            if link.exists():
                raise InputError(f"{link} exists and is not a link to {target}: use a new --out")
            link.symlink_to(target.resolve(), target_is_directory=True)
    return state


def nights_of(config: AppConfig, start: dt.date | None, end: dt.date | None, nights: int
              ) -> list[dt.date]:  # fmt: skip
    """The simulated nights: [start, end], or `nights` nights from start (synthetic source:
    from the first night the market has days for)."""
    if start is None:
        if config.settings.flows.source != "synthetic":
            raise InputError(
                "--start is required with a real data source (flows.source "
                f"{config.settings.flows.source}): the first night, YYYY-MM-DD"
            )
        flows = config.settings.flows
        start = (
            flows.synthetic_origin
            + (flows.train_days + config.settings.canary.holdout_days - 1) * ONE_DAY
        )
    if end is None:
        if nights < 2:
            raise InputError(f"--nights must be at least 2, got {nights}")
        end = start + (nights - 1) * ONE_DAY
    if end <= start:
        raise InputError(
            f"--end {end} must be after --start {start}: a simulation needs at least 2 nights "
            "(night D's choice trades day D+1)"
        )
    if (end - start).days > 366:
        raise InputError(f"{start}..{end} is more than a year of nights: split the range")
    steps.plan_night(config, start)  # a start before the data can serve says so here
    return day_range(start, end)


def default_run_dir(config: AppConfig, nights: list[dt.date]) -> Path:
    """<home>/runs/simulate-<first>-<last>-<UTC time>: a new run directory per run."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return StatePaths(config.home).runs / f"simulate-{nights[0]}-{nights[-1]}-{stamp}"


# ---- backtests, recorded once per (version, day) -------------------------------------


class Work(Protocol):
    """Where fits and policy backtests run: `submit(label, fn, *args)` returns a future
    (`result()`, `cancel()`); `close` waits for (or cancels) what is still running."""

    workers: int

    def submit(self, label: str, fn: Callable[..., Any], *args: Any) -> Any: ...

    def close(self, cancel: bool = False) -> None: ...


class _Work:
    """Fits and policy backtests: in worker processes (spawned), or inline with one."""

    def __init__(self, workers: int) -> None:
        parallel = workers > 1 and not multiprocessing.current_process().daemon
        self.workers = workers if parallel else 1
        self.pool = (
            ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn")
            )
            if parallel
            else None
        )

    def submit(self, label: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if self.pool is not None:
            return self.pool.submit(fn, *args)
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)


def _fit(config: AppConfig, prepared: Any) -> Any:
    from trading.env import disable_telemetry
    from trading.regime.pipeline import fit_prepared

    disable_telemetry()
    return fit_prepared(config, prepared)


def _policy_backtest(config: AppConfig, version: int, symbols: list[str], window: Window,
                     run_dir: Path) -> Any:  # fmt: skip
    from trading.backtest.canary import _backtest
    from trading.env import disable_telemetry
    from trading.regime.registry import Registry

    disable_telemetry()
    registry = Registry(config.settings.registry, config.home)
    return _backtest(config, registry, version, symbols, window, run_dir, None, None)


class _Kpis:
    """The KPI record of (version, window): the canary's record, or a policy backtest
    (started early in a worker, recorded the same way, so a later canary reuses it)."""

    def __init__(
        self, cfg: AppConfig, registry: Any, symbols: list[str], work: Work, root: Path
    ) -> None:
        from trading.backtest.canary import KpiRecords

        self.cfg, self.registry, self.symbols, self.work, self.root = (
            cfg, registry, symbols, work, root
        )  # fmt: skip
        self.records = KpiRecords(cfg.home)
        self.pending: dict[tuple[int, int], tuple[Any, Window]] = {}  # futures
        self.ran: set[tuple[int, int]] = set()  # (version, window start) backtested here
        self._keys: dict[tuple[int, int], str] = {}

    def key(self, version: int, window: Window) -> str:
        from trading.backtest.canary import kpi_fingerprint, trades_bars

        at = (version, window.start_ns)
        if at not in self._keys:
            bars = trades_bars(self.registry.info(version).tags)
            self._keys[at] = kpi_fingerprint(
                self.cfg, self.registry, version, self.symbols, window, bars=bars
            )
        return self._keys[at]

    def want(self, version: int, window: Window) -> None:
        """Start the backtest of (version, window) unless it is recorded or under way."""
        if (version, window.start_ns) in self.pending:
            return
        if self.records.get(self.key(version, window)) is not None:
            return
        day = dt.datetime.fromtimestamp(window.start_ns / 1e9, dt.UTC).date()
        run_dir = self.root / f"v{version}-{day}"
        if run_dir.exists():
            shutil.rmtree(run_dir)  # what a stopped run left half written
        log.info("policy backtest of version %s on %s", version, window)
        future = self.work.submit(
            f"backtest v{version} {day}", _policy_backtest, self.cfg, version, self.symbols,
            window, run_dir,
        )  # fmt: skip
        self.pending[(version, window.start_ns)] = (future, window)

    def settle(self, version: int, window: Window) -> None:
        """Wait for a pending backtest of (version, window) and record it."""
        pending = self.pending.pop((version, window.start_ns), None)
        if pending is None:
            return
        from trading.backtest.paired import read_interval_pnl

        run = pending[0].result()
        interval = self.cfg.settings.canary.paired.interval_s
        pnl = read_interval_pnl(run.run_dir, window.start_ns, window.end_ns, interval)
        self.records.put(self.key(version, window), run, pnl)
        self.ran.add((version, window.start_ns))

    def get(self, version: int, window: Window) -> dict[str, Any]:
        self.want(version, window)
        self.settle(version, window)
        record = self.records.get(self.key(version, window))
        if record is None:
            raise RuntimeError(f"no KPI record of version {version} on {window}")
        return record

    def cancel(self) -> None:
        for future, _ in self.pending.values():
            future.cancel()
        self.pending.clear()


# ---- the simulation -------------------------------------------------------------------


@dataclass
class _Night:
    """One night's state between the data pass and the gate pass."""

    row: SimNight
    plan: steps.NightPlan
    window: Window | None = None  # its holdout (day `night`): the day the previous night's
    validated: str = ""  # version trades; the raw gate's issue CSV
    prepared: Any = None
    fit: Any = None  # its future (Work.submit)
    existing: Any = None  # TrainOutcome of a version with the same fingerprint


def simulate(
    config: AppConfig,
    nights: list[dt.date],
    run_dir: Path,
    *,
    model: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    log_mlflow: bool = True,
    work: Work | None = None,
) -> SimulationResult:
    """Simulate the nightly loop over `nights` (see the module's docstring); writes the run
    directory and returns what it found. `work` runs the fits and policy backtests (default:
    `workers` spawned processes; the Prefect flow passes its task runner's)."""
    from trading.backtest.canary import recorded_pnl
    from trading.regime.pipeline import existing_version, prepare_training, register_fitted
    from trading.regime.registry import Registry

    began = time.perf_counter()
    symbol_set = steps.symbol_set_of(config, model)
    name = steps.model_name(config, symbol_set)
    # only this set's symbols are ingested, validated and traded
    flows = config.settings.flows.model_copy(update={"symbol_sets": [symbol_set]})
    config = config.model_copy(
        update={"settings": config.settings.model_copy(update={"flows": flows})}
    )
    request = {"model": name, "symbols": list(symbol_set.symbols), "start": str(nights[0]),
               "end": str(nights[-1])}  # fmt: skip
    state = _prepare_run_dir(config, run_dir, request)
    sim = sandbox_config(config, state)
    cfg = steps.set_config(sim, symbol_set)
    symbols = list(symbol_set.symbols)
    handler = logging.FileHandler(run_dir / "simulate.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if work is None:
        work = _Work(workers or config.settings.canary.workers)
    total = 2 * len(nights) + (len(nights) - 1)
    done = 0

    def step(message: str) -> None:
        nonlocal done
        done += 1
        log.info(message)
        if progress is not None:
            progress(message, min(1.0, done / total))

    ok = False
    registry = Registry(cfg.settings.registry, cfg.home)  # the sandbox's
    kpis = _Kpis(cfg, registry, symbols, work, run_dir / "backtests")
    try:
        log.info("simulate %s (%s) over nights %s..%s in %s, %s worker(s)", name,
                 ",".join(symbols), nights[0], nights[-1], run_dir,
                 work.workers)  # fmt: skip
        # 1. the data of every night, in order; each night's fit starts as soon as its
        #    features are read (fits are independent of one another)
        todo: list[_Night] = []
        for night in nights:
            plan = steps.plan_night(sim, night)
            item = _Night(SimNight(night), plan)
            todo.append(item)
            for symbol in plan.symbols:
                steps.ingest_symbol(sim, symbol, plan)
            raw = steps.validate(sim, plan.symbols, plan.first_day, plan.night,
                                 steps.raw_kinds(sim))  # fmt: skip
            item.validated = raw.issues_csv
            if not raw.passed:
                item.row.decision = "blocked"
                item.row.stopped = "validate: " + "; ".join(raw.blocking)
                step(f"night {night}: data blocked ({item.row.stopped})")
                continue
            item.window = steps.holdout(cfg, plan, symbols)
            for symbol in plan.symbols:
                steps.features_symbol(sim, symbol, plan)
            feats = steps.validate(sim, plan.symbols, plan.train_start, plan.train_end,
                                   ("features",))  # fmt: skip
            if not feats.passed:
                item.row.decision = "blocked"
                item.row.stopped = "validate: " + "; ".join(feats.blocking)
                step(f"night {night}: features blocked ({item.row.stopped})")
                continue
            item.prepared = prepare_training(cfg, symbols, plan.train_start, plan.train_end)
            item.existing = existing_version(cfg, item.prepared, registry)
            if item.existing is None:
                item.fit = work.submit(f"fit {night}", _fit, cfg, item.prepared)
            step(f"night {night}: data ready, training on {plan.train_start}..{plan.train_end}")

        # 2. night by night: register, canary against production, promote or reject
        production_after: dict[dt.date, int | None] = {}
        newest_after: dict[dt.date, int | None] = {}
        first: tuple[int, dt.date] | None = None
        newest: int | None = None
        gate = {"canary_run": 0, "canary_reused": 0}
        for index, item in enumerate(todo):
            row, night = item.row, item.row.night
            later = [t for t in todo[index + 1 :] if t.window is not None]
            if row.decision != "blocked":
                if item.existing is not None:
                    outcome = item.existing
                else:
                    assert item.fit is not None
                    try:
                        fitted_model, report = item.fit.result()
                    except HmmTraderError as exc:  # as the nightly flow would stop: no version
                        row.decision, row.stopped = "train_failed", f"train: {exc}"
                        row.production_after = registry.production()
                        production_after[night] = row.production_after
                        newest_after[night] = newest
                        step(f"night {night}: training failed ({exc}); production stays "
                             f"v{row.production_after}")  # fmt: skip
                        continue
                    outcome = register_fitted(
                        cfg, item.prepared, fitted_model, report, registry=registry
                    )
                row.version, row.reused = outcome.registered.version, outcome.registered.reused
                newest = row.version
                if first is None:
                    first = (row.version, night)
                    for t in later:  # never retraining: the first version, every later day
                        kpis.want(first[0], t.window)  # type: ignore[arg-type]
                if later and later[0].row.night == night + ONE_DAY:
                    kpis.want(row.version, later[0].window)  # type: ignore[arg-type]
                production = registry.production()
                if production is not None and item.window is not None:
                    kpis.settle(production, item.window)  # the canary reuses its record
                canary = steps.canary_set(sim, symbol_set, row.version, item.plan,
                                          validated=item.validated)  # fmt: skip
                if not canary.skipped and not canary.reused:
                    sides = 1 + (canary.production_kpis is not None)
                    reused = sum("were reused" in n for n in canary.notes)
                    gate["canary_run"] += sides - reused
                    gate["canary_reused"] += reused
                row.verdict = canary.verdict or ("passed" if canary.passed else "")
                row.failed_rules = list(canary.failed_rules)
                decision = steps.promote_set(sim, symbol_set, row.version, by="simulate")
                row.decision = decision.decision
                row.production_after = decision.production_after
                step(f"night {night}: v{row.version} {row.decision} "
                     f"({decision.reason}); production v{row.production_after}")  # fmt: skip
            else:
                row.production_after = registry.production()
                step(f"night {night}: blocked, production stays v{row.production_after}")
            production_after[night] = row.production_after
            newest_after[night] = newest

        # 3. each trading day with the version each policy had after the night before
        days: list[SimDay] = []
        curves: dict[str, list[tuple[int, float]]] = {p: [] for p in MODEL_POLICIES}
        interval = cfg.settings.canary.paired.interval_s
        for item in todo[1:]:
            day, before = item.row.night, item.row.night - ONE_DAY
            chosen: dict[str, int | None] = {
                "gated": production_after.get(before),
                "never": first[0] if first is not None and first[1] < day else None,
                "newest": newest_after.get(before),
            }
            if item.window is None:
                days.append(SimDay(day, chosen, dict.fromkeys(POLICIES), {},
                                   f"data blocked: {item.row.stopped}"))  # fmt: skip
                step(f"day {day}: not traded (data blocked)")
                continue
            pnl: dict[str, float | None] = {"flat": 0.0, "buy_hold": None}
            trades: dict[str, int] = {}
            for policy, version in chosen.items():
                if version is None:
                    pnl[policy], trades[policy] = 0.0, 0  # no model yet: flat
                    continue
                record = kpis.get(version, item.window)
                summary = record["summary"]
                pnl[policy] = float(summary["net_pnl_usd"])
                trades[policy] = int(summary["trades"])
                bench = (summary.get("benchmarks") or {}).get("buy_hold_pnl_usd")
                if bench is not None:
                    pnl["buy_hold"] = float(bench)
                series = recorded_pnl(record, item.window, interval)
                if series is not None:
                    step_ns = series.interval_s * 1_000_000_000
                    curves[policy] += [(series.start_ns + (i + 1) * step_ns, v)
                                       for i, v in enumerate(series.values)]  # fmt: skip
            days.append(SimDay(day, chosen, pnl, trades))
            step(f"day {day}: " + ", ".join(
                f"{p} {v:+.2f}" for p, v in pnl.items() if v is not None))  # fmt: skip
        used = {(v, t.window.start_ns) for d, t in zip(days, todo[1:], strict=True)
                for v in d.versions.values() if v is not None and t.window is not None}  # fmt: skip
        totals = {p: round(sum(d.pnl[p] or 0.0 for d in days if not d.skipped), 6)
                  for p in POLICIES}  # fmt: skip
        canaries = sum(1 for t in todo if t.row.verdict)
        counts = {**gate, "policy_run": len(kpis.ran), "policy_reused": len(used - kpis.ran),
                  "canaries": canaries}  # fmt: skip
        result = SimulationResult(run_dir, name, tuple(symbols), [t.row for t in todo], days,
                                  totals, counts, time.perf_counter() - began)  # fmt: skip
        _write_outputs(result, curves)
        if log_mlflow:
            result.mlflow_run_id = _log_mlflow(config, result, request)
        result.seconds = time.perf_counter() - began
        atomic_write_text(run_dir / "summary.json", json.dumps(result.summary(), indent=2))
        log.info("done in %.1f s: %s", result.seconds, totals)
        ok = True
        return result
    finally:
        if not ok:
            kpis.cancel()
            log.error("stopped before the end: run again with the same --out to resume")
        work.close(cancel=not ok)
        log.removeHandler(handler)
        handler.close()


# ---- outputs --------------------------------------------------------------------------


def night_rows(result: SimulationResult) -> list[dict[str, Any]]:
    """One row per night (nights.csv, the flow's artifact): what it trained and decided,
    and each policy's version and net PnL on the next day."""
    by_day = {d.day: d for d in result.days}
    rows = []
    for n in result.nights:
        nxt = by_day.get(n.night + ONE_DAY)
        row: dict[str, Any] = {
            "night": str(n.night),
            "trained": n.version if n.version is not None else "",
            "verdict": n.verdict or ("blocked" if n.decision == "blocked" else ""),
            "failed_rules": ",".join(n.failed_rules),
            "decision": n.decision,
            "production_after": n.production_after if n.production_after is not None else "",
            "next_day": str(nxt.day) if nxt else "",
        }
        for policy in POLICIES:
            if policy in MODEL_POLICIES:
                version = nxt.versions.get(policy) if nxt else None
                row[f"{policy}_version"] = version if version is not None else ""
            value = nxt.pnl.get(policy) if nxt else None
            row[f"{policy}_pnl_usd"] = "" if value is None else round(value, 6)
        rows.append(row)
    return rows


def _write_outputs(result: SimulationResult, curves: dict[str, list[tuple[int, float]]]) -> None:
    rows = night_rows(result)
    path = result.run_dir / "nights.csv"
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    _plot(result, curves, result.run_dir / "equity.png")
    from trading.backtest.html_report import write_report, write_simulate_report

    write_report(write_simulate_report, result.run_dir, result.summary())


def _plot(result: SimulationResult, curves: dict[str, list[tuple[int, float]]], path: Path
          ) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(10, 4.5))
    styles = {"gated": ("#1f77b4", "-"), "never": ("#7f7f7f", "--"),
              "newest": ("#ff7f0e", "-.")}  # fmt: skip
    traded = [d for d in result.days if not d.skipped]
    for policy in MODEL_POLICIES:
        points = sorted(curves[policy])
        xs = np.array([ts for ts, _ in points], dtype="datetime64[ns]")
        ys = np.cumsum([value for _, value in points])
        color, style = styles[policy]
        label = f"{policy} ({result.totals[policy]:+.2f} USD)"
        if len(xs):
            ax.plot(xs, ys, style, color=color, label=label, linewidth=1.4)
    if traded:
        bounds = np.array([traded[0].day] + [d.day + ONE_DAY for d in traded],
                          dtype="datetime64[ns]")  # fmt: skip
        hold, acc = [0.0], 0.0
        for d in traded:
            acc += d.pnl.get("buy_hold") or 0.0
            hold.append(acc)
        ax.plot(bounds, hold, "o:", color="#2ca02c", markersize=3,
                label=f"buy_hold ({result.totals['buy_hold']:+.2f} USD, per day)")  # fmt: skip
        ax.plot(bounds[[0, -1]], [0, 0], color="black", linewidth=0.8,
                label="flat (0)")  # fmt: skip
    ax.set_title(f"simulate {result.model_name}: cumulative net PnL per policy "
                 f"({len(traded)} trading day(s))")  # fmt: skip
    ax.set_ylabel("USD")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _log_mlflow(config: AppConfig, result: SimulationResult, request: dict[str, Any]) -> str:
    """One run in the user's tracking store, experiment `<experiment>-simulate`: the
    arguments, each policy's net PnL, and the run directory's reports."""
    from mlflow.tracking import MlflowClient

    from trading.regime.registry import EXPERIMENT_KIND, MODEL_KIND, default_tracking_uri

    s = config.settings
    uri = s.registry.tracking_uri or default_tracking_uri(config.home)
    if s.registry.tracking_uri is None:
        StatePaths(config.home).mlflow.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    name = f"{s.registry.experiment}-simulate"
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = (
            (StatePaths(config.home).mlflow / "artifacts").resolve().as_uri()
            if s.registry.tracking_uri is None
            else None
        )
        experiment_id = client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_KIND}
        )
    else:
        experiment_id = exp.experiment_id
    run = client.create_run(
        experiment_id, run_name=f"simulate {request['start']}..{request['end']}"
    )
    run_id = str(run.info.run_id)
    summary = result.summary()
    params = {**request, "symbols": ",".join(request["symbols"]), "run_dir": str(result.run_dir),
              "train_days": s.flows.train_days, "holdout_days": s.canary.holdout_days,
              "feature_set": s.regime.feature_set, "source": s.flows.source}  # fmt: skip
    for key, value in params.items():
        client.log_param(run_id, key, str(value))
    for policy, value in result.totals.items():
        client.log_metric(run_id, f"net_pnl_usd_{policy}", float(value))
    for key in ("promotions", "rejections", "blocked_nights"):
        client.log_metric(run_id, key, float(summary[key]))
    for file in ("nights.csv", "equity.png", "report.html", "simulate.log", MARKER):
        if (result.run_dir / file).is_file():
            client.log_artifact(run_id, str(result.run_dir / file))
    client.log_text(run_id, json.dumps(summary, indent=2), "summary.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id
