"""The steps of one night: plain functions of config and dates, no Prefect. The flows in
flows/ wrap each one in a task; `run_night` calls them in order without Prefect (the
baseline of `hmmtrader bench flow`, and a way to run a night with no server)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trading.data.inputs import day_range
from trading.data.lake import Lake, Written, day_start_ns
from trading.data.window import Window, clip_to_ticks, market_kinds
from trading.errors import HmmTraderError, InputError
from trading.nightly.config import SymbolSet
from trading.paths import StatePaths
from trading.settings import AppConfig

ONE_DAY = dt.timedelta(days=1)
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ---- the plan ----------------------------------------------------------------------


@dataclass(frozen=True)
class NightPlan:
    """Which days one night reads, trains on and holds out."""

    night: dt.date
    train_start: dt.date
    train_end: dt.date
    holdout_start: dt.date
    holdout_end: dt.date
    first_day: dt.date  # first day ingested (features warm up on it when it precedes training)
    symbols: tuple[str, ...]

    @property
    def days(self) -> list[dt.date]:
        return day_range(self.first_day, self.night)

    def to_dict(self) -> dict[str, str | list[str]]:
        return {
            "night": str(self.night),
            "train": f"{self.train_start}..{self.train_end}",
            "holdout": f"{self.holdout_start}..{self.holdout_end}",
            "ingest": f"{self.first_day}..{self.night}",
            "symbols": list(self.symbols),
        }


def trades_bars(config: AppConfig) -> bool:
    """Whether the configured model (regime.feature_set bars_v1) trades on 1-minute bars."""
    return config.settings.regime.feature_set == "bars_v1"


def raw_kinds(config: AppConfig) -> tuple[str, ...]:
    """The lake kinds a night ingests and validates: bars for a BARS_V1 model, else quotes
    and trades."""
    return market_kinds(trades_bars(config))


def all_symbols(config: AppConfig) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in config.settings.flows.symbol_sets:
        for name in item.symbols:
            config.symbol(name)  # unknown symbols fail here, with the config file named
            seen[name] = None
    return tuple(seen)


def default_night(config: AppConfig, today: dt.date | None = None) -> dt.date:
    """Real sources: yesterday (UTC), the last complete day. The synthetic market has no
    calendar: the day after the newest synthetic day every symbol has, so each run of
    the nightly flow is the next night (the first run: the first night that has enough
    days for training and the holdout)."""
    flows = config.settings.flows
    if flows.source != "synthetic":
        return (today or dt.datetime.now(dt.UTC).date()) - ONE_DAY
    first_night = (
        flows.synthetic_origin
        + (flows.train_days + config.settings.canary.holdout_days - 1) * ONE_DAY
    )
    lake = Lake(StatePaths(config.home).lake)
    venue = config.instruments.venue
    common: set[dt.date] | None = None
    for name in all_symbols(config):
        have = {d for d in lake.days(venue, name, "quotes") if d >= flows.synthetic_origin}
        common = have if common is None else common & have
    if not common:
        return first_night
    return max(first_night, max(common) + ONE_DAY)


def plan_night(config: AppConfig, night: dt.date | None = None) -> NightPlan:
    flows = config.settings.flows
    night = night or default_night(config)
    holdout = config.settings.canary.holdout_days
    holdout_start = night - (holdout - 1) * ONE_DAY
    train_end = holdout_start - ONE_DAY
    train_start = train_end - (flows.train_days - 1) * ONE_DAY
    first = train_start - ONE_DAY
    if flows.source == "synthetic":
        if train_start < flows.synthetic_origin:
            raise InputError(
                f"night {night} needs days from {train_start} ({flows.train_days} training + "
                f"{holdout} holdout day(s)), before the synthetic market's origin "
                f"{flows.synthetic_origin}: pick a night on or after "
                f"{flows.synthetic_origin + (flows.train_days + holdout - 1) * ONE_DAY}"
            )
        first = max(first, flows.synthetic_origin)
    return NightPlan(
        night, train_start, train_end, holdout_start, night, first, all_symbols(config)
    )


def set_config(config: AppConfig, symbol_set: SymbolSet) -> AppConfig:
    """The config a symbol set trains, canaries and promotes with: its registered model,
    its symbols as the strategy's."""
    s = config.settings
    registry = s.registry.model_copy(
        update={"model_name": symbol_set.model_name or s.registry.model_name}
    )
    strategy = s.strategy.model_copy(update={"symbols": list(symbol_set.symbols)})
    settings = s.model_copy(update={"registry": registry, "strategy": strategy})
    return config.model_copy(update={"settings": settings})


def model_name(config: AppConfig, symbol_set: SymbolSet) -> str:
    return symbol_set.model_name or config.settings.registry.model_name


# ---- ingest --------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestOutcome:
    symbol: str
    source: str
    written: list[Written]
    present: list[dt.date]  # days the lake already had (nothing written for them)

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.written)


def ingest_symbol(config: AppConfig, symbol: str, plan: NightPlan) -> IngestOutcome:
    """Bring the plan's days of one symbol into the lake. Days already there are kept as
    they are, so a second run of the same night writes nothing."""
    flows = config.settings.flows
    lake = Lake(StatePaths(config.home).lake)
    venue = config.instruments.venue
    written: list[Written] = []
    present: list[dt.date] = []
    if flows.source == "synthetic":
        from trading.data.synthetic import ingest_synthetic_day

        for day in plan.days:
            out = ingest_synthetic_day(
                config,
                lake,
                symbol,
                day,
                flows.synthetic_seed,
                flows.synthetic_origin,
            )
            if out:
                written.extend(out)
            else:
                present.append(day)
        return IngestOutcome(symbol, "synthetic", written, present)
    # Binance's public archives have spot trades and klines but no spot quotes: those come
    # from the trading node's recording (source "lake": nothing is downloaded at all).
    # Days without quotes stay missing, and validate blocks on them (data_present).
    # A bar model needs the klines only.
    bars = trades_bars(config)
    kinds = {"trades": "aggTrades", "bars": "klines"} if flows.source == "archive" else {}
    needed = ("bars",) if bars else ("trades", "bars")
    for day in plan.days:
        missing = [k for k in needed if not lake.path(venue, symbol, k, day).is_file()]
        if not missing or not kinds:
            if not missing and (bars or lake.path(venue, symbol, "quotes", day).is_file()):
                present.append(day)
            continue
        from trading.data.archive import ingest_archive

        for kind in missing:
            written.extend(ingest_archive(config, lake, [symbol], day, day, kinds[kind]))
    return IngestOutcome(symbol, flows.source, written, present)


# ---- validate ------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityOutcome:
    passed: bool
    kinds: tuple[str, ...]
    start: dt.date
    end: dt.date
    rows: list[dict[str, Any]]  # failed checks per batch (one row for a clean batch)
    blocking: list[str]
    warnings: list[str]
    issues: int
    issues_csv: str
    run_dir: str


class QualityBlockedError(HmmTraderError):
    """A blocking data-quality check failed: nothing downstream runs."""


def validate(
    config: AppConfig,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    kinds: Sequence[str],
) -> QualityOutcome:
    from trading.quality.gate import run_gate

    lake = Lake(StatePaths(config.home).lake)
    result = run_gate(
        config,
        lake,
        list(symbols),
        start,
        end,
        kinds=kinds,
        require_features="features" in kinds,
    )
    return QualityOutcome(
        passed=result.passed,
        kinds=tuple(kinds),
        start=start,
        end=end,
        rows=result.summary_rows(),
        blocking=list(result.blocking),
        warnings=list(result.warnings),
        issues=len(result.issues),
        issues_csv=str(result.issues_csv),
        run_dir=str(result.run_dir),
    )


# ---- features ------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureOutcome:
    symbol: str
    version: str
    rows: int
    days: int  # days written
    input_rows: int
    seconds: float
    present: int = 0  # days whose feature file (same feature set) was kept


def features_symbol(config: AppConfig, symbol: str, plan: NightPlan) -> FeatureOutcome:
    """Features of the training days (warmed up on the day before); days that already have
    a file of the same feature set are kept (a second run of a night writes nothing). The
    canary computes its own online, tick by tick, as the node does."""
    from trading.features.descriptor import feature_kind
    from trading.features.store import compute_range, descriptor_of, write_features
    from trading.regime.pipeline import configured_feature_set

    began = time.perf_counter()
    lake = Lake(StatePaths(config.home).lake)
    fs = configured_feature_set(config)
    paths = [
        lake.path(config.instruments.venue, symbol, feature_kind(fs), day)
        for day in day_range(plan.train_start, plan.train_end)
    ]

    def kept(path: Path) -> bool:
        try:
            return path.is_file() and descriptor_of(path).version == fs.version
        except (HmmTraderError, OSError):  # unreadable: computed again
            return False

    if all(kept(p) for p in paths):
        return FeatureOutcome(symbol, fs.version, 0, 0, 0, time.perf_counter() - began, len(paths))
    result = compute_range(
        lake, config.instruments.venue, symbol, plan.train_start, plan.train_end, fs, 1
    )
    written = write_features(lake, config.instruments.venue, symbol, result)
    return FeatureOutcome(
        symbol,
        fs.version,
        result.table.num_rows,
        len(written),
        result.input_rows,
        time.perf_counter() - began,
    )


# ---- train ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    model_name: str
    symbols: tuple[str, ...]
    version: int
    run_id: str
    reused: bool  # same data and config as an existing version: nothing registered
    metrics: dict[str, float]
    rows: int
    model_uri: str
    tracking_uri: str
    seconds: float


def train_set(config: AppConfig, symbol_set: SymbolSet, plan: NightPlan) -> TrainResult:
    from trading.regime.pipeline import train_and_register

    began = time.perf_counter()
    cfg = set_config(config, symbol_set)
    outcome = train_and_register(cfg, symbol_set.symbols, plan.train_start, plan.train_end)
    from trading.regime.registry import default_tracking_uri

    return TrainResult(
        model_name=model_name(config, symbol_set),
        symbols=tuple(symbol_set.symbols),
        version=outcome.registered.version,
        run_id=outcome.registered.run_id,
        reused=outcome.registered.reused,
        metrics={k: float(v) for k, v in outcome.metrics.items()},
        rows=outcome.data_rows,
        model_uri=outcome.model_uri,
        tracking_uri=cfg.settings.registry.tracking_uri or default_tracking_uri(cfg.home),
        seconds=time.perf_counter() - began,
    )


# ---- canary --------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryReport:
    model_name: str
    version: int
    production: int | None  # the version it was compared with (None: floors only)
    passed: bool
    skipped: str  # why no canary ran ("" when one ran or was reused)
    reused: bool  # the verdict recorded for the same window and production was reused
    window: str
    rules: list[dict[str, Any]]  # name, kind, text, candidate, reference, production, passed
    failed_rules: list[str]
    notes: list[str]
    candidate: dict[str, Any] = field(default_factory=dict)  # KPIs
    production_kpis: dict[str, Any] | None = None
    run_dir: str = ""
    seconds: float = 0.0
    verdict: str = ""  # passed | failed | insufficient_evidence ("" when skipped)
    paired: dict[str, Any] | None = None  # the paired test (trading/backtest/paired.py)
    # production held to the same floors on the same window (version, passed,
    # failed_rules, action, rules)
    production_floors: dict[str, Any] | None = None

    @property
    def production_failed(self) -> list[str]:
        return list((self.production_floors or {}).get("failed_rules") or [])


def holdout(config: AppConfig, plan: NightPlan, symbols: Sequence[str]) -> Window:
    """The night's canary window: its holdout days from midnight (UTC) to the end of the
    symbols' data (midnight, for whole days)."""
    whole = Window(day_start_ns(plan.holdout_start), day_start_ns(plan.holdout_end + ONE_DAY))
    lake = Lake(StatePaths(config.home).lake)
    kind = raw_kinds(config)[0]
    return clip_to_ticks(lake, config.instruments.venue, symbols, whole, kind)


def _window_text(window: Window) -> str:  # as the canary tags it
    return f"{window.start.isoformat()}..{window.end.isoformat()}"


def canary_set(
    config: AppConfig,
    symbol_set: SymbolSet,
    version: int,
    plan: NightPlan | None,
    progress: Callable[[str, float], None] | None = None,
    validated: str | None = None,
) -> CanaryReport:
    """Backtest the candidate (and production) on the night's holdout (no plan: the most
    recent days after the version's training range) and apply the gate. A version that is
    production already is not re-tested; a verdict recorded for the same window against
    the same production is reused (re-running a night repeats no backtest)."""
    from trading.backtest.canary import run_canary, verdict_dict
    from trading.regime.registry import TAG_CANARY, Registry

    began = time.perf_counter()
    cfg = set_config(config, symbol_set)
    registry = Registry(cfg.settings.registry, cfg.home)
    name = model_name(config, symbol_set)
    production = registry.production()
    window = holdout(cfg, plan, symbol_set.symbols) if plan is not None else None
    window_text = _window_text(window) if window is not None else ""
    if production == version:
        return CanaryReport(
            name, version, production, True, f"version {version} is production already",
            False, window_text, [], [], [],
        )  # fmt: skip
    tags = registry.info(version).tags
    if (
        plan is not None
        and tags.get(TAG_CANARY) in ("passed", "failed", "insufficient_evidence")
        and tags.get("canary_window") == window_text
        and tags.get("canary_against") == str(production or "none")
    ):
        verdict = _recorded_verdict(tags)
        return CanaryReport(
            name,
            version,
            production,
            tags[TAG_CANARY] == "passed",
            "",
            True,
            window_text,
            verdict.get("rules", []),
            verdict.get("failed_rules", []),
            [f"verdict of {tags.get('canary_at', '?')} reused: same window, same production"],
            verdict.get("candidate", {}),
            verdict.get("production"),
            tags.get("canary_run_dir", ""),
            time.perf_counter() - began,
            tags[TAG_CANARY],
            verdict.get("paired"),
            verdict.get("production_floors"),
        )
    result = run_canary(
        cfg,
        registry,
        version,
        symbols=list(symbol_set.symbols),
        window=window,
        progress=progress,
        validated=Path(validated) if validated else None,
    )
    verdict = verdict_dict(result)
    return CanaryReport(
        name,
        version,
        result.production_version,
        result.passed,
        "",
        False,
        _window_text(result.window),
        verdict["rules"],
        verdict["failed_rules"],
        verdict["notes"],
        dict(result.candidate),
        dict(result.production) if result.production is not None else None,
        str(result.run_dir),
        time.perf_counter() - began,
        result.verdict,
        verdict["paired"],
        verdict["production_floors"],
    )


def _recorded_verdict(tags: dict[str, str]) -> dict[str, Any]:
    """The verdict.json of the recorded canary run, or what the tags hold."""
    run_dir = tags.get("canary_run_dir", "")
    path = Path(run_dir) / "verdict.json"
    verdict: dict[str, Any] = {}
    if run_dir and path.is_file():
        verdict = json.loads(path.read_text())
        for side in ("candidate", "production"):
            summary = Path(run_dir) / side / "summary.json"
            if summary.is_file():
                verdict[side] = json.loads(summary.read_text())
        return verdict
    rules = json.loads(tags.get("canary_rules", "{}"))
    verdict["rules"] = [
        {"name": n, "kind": "", "text": "", "candidate": c, "reference": r, "passed": p,
         "production": None}
        for n, (c, r, p) in rules.items()
    ]  # fmt: skip
    verdict["failed_rules"] = [n for n, (_, _, p) in rules.items() if not p]
    return verdict


# ---- promote -------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionDecision:
    model_name: str
    version: int
    decision: str  # promoted | rejected | unchanged
    reason: str
    production_before: int | None
    production_after: int | None
    run_id: str
    model_uri: str
    tracking_uri: str


def promote_set(
    config: AppConfig, symbol_set: SymbolSet, version: int, by: str = "nightly flow"
) -> PromotionDecision:
    """Promote only on the passed canary verdict recorded on the version (the registry is
    the source of truth); a failed or missing verdict leaves production untouched. `by`
    is the actor the registry's move history records."""
    from trading.regime.registry import TAG_CANARY, Registry, default_tracking_uri

    cfg = set_config(config, symbol_set)
    registry = Registry(cfg.settings.registry, cfg.home)
    name = model_name(config, symbol_set)
    version = registry.resolve(version)
    before = registry.production()
    info = registry.info(version)
    uri = f"models:/{name}/{version}"
    tracking = cfg.settings.registry.tracking_uri or default_tracking_uri(cfg.home)

    def decision(kind: str, reason: str, after: int | None) -> PromotionDecision:
        return PromotionDecision(
            name, version, kind, reason, before, after, info.run_id, uri, tracking
        )

    if before == version:
        return decision("unchanged", f"version {version} is production already", before)
    verdict = info.tags.get(TAG_CANARY, "")
    if verdict != "passed":
        failed = info.tags.get("canary_failed_rules", "")
        why = {
            "failed": f"canary failed: {failed}",
            "insufficient_evidence": "canary: insufficient evidence (too few trades or "
            "intervals for the paired test)",
        }.get(verdict, "no canary verdict")
        return decision("rejected", f"{why}; production stays {before}", before)
    registry.promote(version, by=by)
    against = info.tags.get("canary_against", "none")
    basis = f"production version {against}" if against != "none" else "the floors"
    return decision("promoted", f"canary passed against {basis}", version)


def symbol_set_of(config: AppConfig, name: str | None) -> SymbolSet:
    """The configured symbol set whose registered model is `name` (None: the first)."""
    sets = config.settings.flows.symbol_sets
    if name is None:
        return sets[0]
    for item in sets:
        if model_name(config, item) == name:
            return item
    known = ", ".join(model_name(config, s) for s in sets)
    raise InputError(f"no symbol set trains model {name!r}: configured models are {known}")


# ---- one night without Prefect ---------------------------------------------------------


@dataclass
class NightReport:
    plan: NightPlan
    ingest: list[IngestOutcome] = field(default_factory=list)
    quality: list[QualityOutcome] = field(default_factory=list)
    features: list[FeatureOutcome] = field(default_factory=list)
    trained: list[TrainResult] = field(default_factory=list)
    canaries: list[CanaryReport] = field(default_factory=list)
    decisions: list[PromotionDecision] = field(default_factory=list)
    stopped: str = ""  # why the night stopped early ("" when it ran to the end)


def run_night(config: AppConfig, night: dt.date | None = None, log: Log = _quiet) -> NightReport:
    """Every step of the nightly retrain in order, in this process, without Prefect."""
    plan = plan_night(config, night)
    report = NightReport(plan)
    for symbol in plan.symbols:
        report.ingest.append(ingest_symbol(config, symbol, plan))
        log(f"ingest {symbol}: {report.ingest[-1].rows:,} rows")
    raw = validate(config, plan.symbols, plan.first_day, plan.night, raw_kinds(config))
    report.quality.append(raw)
    if not raw.passed:
        report.stopped = "validate: " + "; ".join(raw.blocking)
        return report
    for symbol in plan.symbols:
        report.features.append(features_symbol(config, symbol, plan))
        log(f"features {symbol}: {report.features[-1].rows:,} rows")
    feats = validate(config, plan.symbols, plan.train_start, plan.train_end, ("features",))
    report.quality.append(feats)
    if not feats.passed:
        report.stopped = "validate: " + "; ".join(feats.blocking)
        return report
    for symbol_set in config.settings.flows.symbol_sets:
        trained = train_set(config, symbol_set, plan)
        report.trained.append(trained)
        log(f"train {trained.model_name}: version {trained.version}")
        canary = canary_set(config, symbol_set, trained.version, plan, validated=raw.issues_csv)
        report.canaries.append(canary)
        report.decisions.append(promote_set(config, symbol_set, trained.version))
        log(f"{trained.model_name} v{trained.version}: {report.decisions[-1].decision}")
    return report
