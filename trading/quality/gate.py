"""The data-quality gate: validate lake files per symbol/kind/day and say what blocks training.

`run_gate` is what `hmmtrader validate` and the training flow call. Each (symbol, kind, day)
file is one batch; each failed expectation becomes issue rows in data_quality_issues.csv and
a check result whose severity (block or warn) comes from `QualitySettings.checks`.

The `features` kind checks the files of the configured feature set (`regime.feature_set`:
FEATURES_V1 on the 1 s tick grid, or BARS_V1, a row per 1-minute bar, whose gaps and
coverage are counted in bars).

A file's results are kept (`<home>/quality/cache/`) under a key of its lake path, size and
modification time and of the quality settings, feature set and suite code: a file that did
not change is not validated again (a backtest, canary or replay of days validated before
costs no Great Expectations run, and no import of it when every file was seen).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from trading.atomic import atomic_copy, atomic_write_text
from trading.data.inputs import day_range, parse_symbols
from trading.data.lake import Lake, day_start_ns
from trading.errors import InputError
from trading.features.descriptor import (
    BARS_V1,
    FEATURES_V1,
    FeatureSet,
    feature_kind,
)
from trading.paths import StatePaths
from trading.quality import data_docs_index
from trading.quality.checks import CHECK_NAMES
from trading.quality.issues import (
    ISSUES_FILE,
    Issue,
    describe_rows,
    table_value,
    write_issues_csv,
)
from trading.settings import AppConfig, configured_feature_set

if TYPE_CHECKING:
    import pandas as pd

    from trading.quality.runner import ExpectationOutcome, SuiteRunner
    from trading.settings import QualitySettings

# a first lake day whose data begins this long after midnight is measured from its first row
LATE_START_NS = 60 * 1_000_000_000
GATE_KINDS: tuple[str, ...] = ("quotes", "trades", "bars", "features")
RAW_KINDS: tuple[str, ...] = ("quotes", "trades", "bars")
TICK_KINDS: tuple[str, ...] = ("quotes", "trades")  # FEATURES_V1 needs both
FEATURE_SOURCES: dict[str, tuple[str, ...]] = {FEATURES_V1: TICK_KINDS, BARS_V1: ("bars",)}
SUMMARY_FILE = "summary.json"


class NoDataError(InputError):
    """The selection (symbols, days, kinds) matches no lake file: nothing was validated."""


@dataclass(frozen=True)
class CheckResult:
    """One check on one batch: every expectation tagged with the check, added up."""

    check: str
    severity: str
    failed_rows: int  # exact, even where the CSV is capped
    passed: bool

    @property
    def status(self) -> str:
        if self.passed:
            return "pass"
        return "FAIL" if self.severity == "block" else "WARN"


@dataclass(frozen=True)
class BatchResult:
    """One symbol/kind/day file (or the missing one)."""

    symbol: str
    kind: str
    day: dt.date
    rows: int
    path: Path | None
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed or c.severity != "block" for c in self.checks)

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.kind} {self.day.isoformat()}"


@dataclass(frozen=True)
class GateResult:
    """What the gate found. `passed` is False iff a block-severity check failed."""

    batches: list[BatchResult]
    issues: list[Issue]  # as written to the CSV (capped per check and batch)
    passed: bool
    blocking: list[str]  # "BTCUSDT quotes 2024-01-01: crossed_book failed on 3 rows"
    warnings: list[str]
    skipped: list[str]  # feature days without a file, when features were optional
    issues_csv: Path
    data_docs: Path
    run_dir: Path

    def summary_rows(self, include_passed: bool = False) -> list[dict[str, Any]]:
        """Rows for a table: failed checks of every batch (all checks with include_passed);
        a batch whose checks all passed gets one row with check "all N checks"."""
        rows = []
        for batch in self.batches:
            shown = [c for c in batch.checks if include_passed or not c.passed]
            if not shown:
                shown = [CheckResult(f"all {len(batch.checks)} checks", "-", 0, True)]
            for check in shown:
                rows.append(
                    {
                        "symbol": batch.symbol,
                        "kind": batch.kind,
                        "day": batch.day.isoformat(),
                        "check": check.check,
                        "severity": check.severity,
                        "failed_rows": check.failed_rows,
                        "status": check.status,
                    }
                )
        return rows


def parse_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    items = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    names = [k.strip().lower() for k in items if k.strip()]
    unknown = [k for k in names if k not in GATE_KINDS]
    if unknown or not names:
        raise InputError(
            f"unknown kind(s) {', '.join(unknown) or '(none given)'}: "
            f"expected some of {', '.join(GATE_KINDS)} (or auto: the kinds the lake holds)"
        )
    return tuple(dict.fromkeys(names))


def _lake_kind(kind: str, feature_set: FeatureSet | None = None) -> str:
    if kind != "features":
        return kind
    return feature_kind(feature_set) if feature_set is not None else FEATURES_V1.lower()


def _features_hint(feature_set: FeatureSet | None) -> str:
    if feature_set is not None and feature_set.name == BARS_V1:
        return "hmmtrader features --set bars_v1"
    return "hmmtrader features"


def held_kinds(
    lake: Lake,
    venue: str,
    symbol: str,
    start: dt.date,
    end: dt.date,
    feature_set: FeatureSet | None = None,
) -> tuple[str, ...]:
    """The kinds to validate for `symbol` when none are named: the raw kinds the lake holds
    on a day of [start, end] (quotes and trades together: a day needs both for FEATURES_V1,
    so one without the other is reported missing), then features (of `feature_set`,
    default FEATURES_V1) where their source data (ticks; bars for BARS_V1) or feature
    files are held (validated where a file exists; a bars-only lake has none to skip
    under FEATURES_V1)."""

    def held(kind: str) -> bool:
        lake_kind = _lake_kind(kind, feature_set)
        return any(start <= day <= end for day in lake.days(venue, symbol, lake_kind))

    found = {kind for kind in GATE_KINDS if held(kind)}
    if found & set(TICK_KINDS):
        found |= set(TICK_KINDS)
    sources = FEATURE_SOURCES.get(feature_set.name if feature_set else FEATURES_V1, ())
    if found & set(sources):
        found.add("features")
    return tuple(k for k in GATE_KINDS if k in found)


def _span(days: Sequence[dt.date]) -> str:
    if len(days) == 1:
        return days[0].isoformat()
    return f"{days[0]}..{days[-1]} ({len(days)} days)"


def no_data_message(
    lake: Lake,
    venue: str,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    kinds: Sequence[str] | None,
    feature_set: FeatureSet | None = None,
) -> str:
    """Why a selection matched no file: what was asked, what the lake holds for those
    symbols (features: of `feature_set`, default FEATURES_V1), and what to run instead."""
    asked_kinds = ", ".join(kinds) if kinds is not None else "quotes, trades, bars or features"
    asked = (
        f"nothing to validate: no {asked_kinds} of {', '.join(symbols)} on "
        f"{_span(day_range(start, end))} in the lake under {lake.root}"
    )
    held: list[str] = []
    in_range: list[str] = []
    for symbol in symbols:
        for kind in GATE_KINDS:
            days = lake.days(venue, symbol, _lake_kind(kind, feature_set))
            if days:
                held.append(f"{symbol} {kind} {_span(days)}")
                if any(start <= day <= end for day in days):
                    in_range.append(kind)
    if not held:
        others = sorted({s for v, s, _ in lake.partitions() if v == venue} - set(symbols))
        also = f" (it holds {', '.join(others)})" if others else ""
        return (
            f"{asked}; it holds no quotes, trades, bars or features of "
            f"{', '.join(symbols)}{also}: ingest them first (hmmtrader ingest ...)"
        )
    if in_range:
        fix = f"validate what it holds (--kinds {','.join(dict.fromkeys(in_range))})"
    else:
        fix = "pick --start/--end within those days"
    wanted = list(kinds) if kinds is not None else list(RAW_KINDS)
    make = []
    if any(k in RAW_KINDS for k in wanted):
        make.append("ingest the data first (hmmtrader ingest ...)")
    if "features" in wanted:
        make.append(f"compute features first ({_features_hint(feature_set)})")
    return f"{asked}; it holds {'; '.join(held)}: {fix}, or {' / '.join(make)}"


def run_gate(
    config: AppConfig,
    lake: Lake,
    symbols: str | Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    kinds: Sequence[str] | None = None,
    out_dir: Path | None = None,
    require_features: bool = False,
    skip_features: bool = False,
) -> GateResult:
    """Validate every (symbol, kind, day) file of [start, end] and write the issue CSV.

    `kinds` None: per symbol, the kinds the lake holds in the range (`held_kinds`; without
    features if `skip_features`). Missing quotes/trades/bars files are blocking issues (`data_present`). Feature days
    without a file are skipped unless `require_features`. A selection that matches no file
    at all raises NoDataError (never "passed" after checking nothing). Writes
    `data_quality_issues.csv` and `summary.json` to `out_dir` (default
    `<home>/quality/runs/<UTC time>/`) and copies both to `<home>/quality/latest/`; Data
    Docs go to `<home>/quality/gx/uncommitted/data_docs/`. The `features` kind checks the
    files of the configured feature set (`trading.settings.configured_feature_set`).
    """
    names = parse_symbols(config, list(symbols) if not isinstance(symbols, str) else symbols)
    days = day_range(start, end)
    venue = config.instruments.venue
    named = parse_kinds(kinds) if kinds is not None else None
    feature_set = configured_feature_set(config)
    per_symbol: dict[str, tuple[str, ...]] = {}
    for symbol in names:
        if named is not None:
            per_symbol[symbol] = named
            continue
        held = held_kinds(lake, venue, symbol, start, end, feature_set)
        per_symbol[symbol] = tuple(k for k in held if k != "features" or not skip_features)
    matched = any(
        start <= day <= end
        for symbol, kind_list in per_symbol.items()
        for kind in kind_list
        for day in lake.days(venue, symbol, _lake_kind(kind, feature_set))
    )
    if not matched:
        raise NoDataError(no_data_message(lake, venue, names, start, end, kinds, feature_set))
    used = {kind for kind_list in per_symbol.values() for kind in kind_list}
    quality = config.settings.quality
    paths = StatePaths(config.home)

    def open_runner() -> SuiteRunner:  # imports Great Expectations: only when needed
        from trading.quality.runner import SuiteRunner
        from trading.quality.suites import build_suites

        suites = build_suites(quality, feature_set)
        return SuiteRunner(paths.quality, {k: suites[k] for k in GATE_KINDS if k in used})

    started = dt.datetime.now(dt.UTC)
    cache = ResultCache(paths.quality / "cache", quality, feature_set)
    gate = _Gate(config, lake, open_runner, cache, feature_set, started, require_features)
    for symbol in names:
        for kind in per_symbol[symbol]:
            for day in days:
                gate.batch(symbol, kind, day)
    if gate.runner is not None or not data_docs_index(paths.quality).is_file():
        (gate.runner or open_runner()).build_docs()
    run_dir = out_dir or paths.quality / "runs" / started.strftime("%Y%m%dT%H%M%S.%fZ")
    return gate.finish(Path(run_dir), paths.quality / "latest", data_docs_index(paths.quality))


def _suite_code() -> str:
    """The code the suites and checks are made of (a new version validates again)."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("suites.py", "checks.py", "frames.py", "issues.py", "runner.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


class ResultCache:
    """The results of validated files, by file and everything the result depends on."""

    def __init__(self, root: Path, quality: QualitySettings, feature_set: FeatureSet) -> None:
        self.root = root
        base = {
            "quality": quality.model_dump(mode="json"),
            "feature_set": feature_set.version,
            "code": _suite_code(),
        }
        self.base = json.dumps(base, sort_keys=True)

    def key(self, lake: Lake, kind: str, path: Path) -> str:
        stat = path.stat()
        parts = [self.base, kind, str(path.relative_to(lake.root)), stat.st_size, stat.st_mtime_ns]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            value = json.loads((self.root / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        atomic_write_text(self.root / f"{key}.json", json.dumps(value))


class _Gate:
    """Accumulates batch results and issues over one gate run."""

    def __init__(
        self,
        config: AppConfig,
        lake: Lake,
        open_runner: Callable[[], SuiteRunner],
        cache: ResultCache,
        feature_set: FeatureSet,
        started: dt.datetime,
        require_features: bool,
    ) -> None:
        self.venue = config.instruments.venue
        self.quality = config.settings.quality
        self.lake = lake
        self.open_runner = open_runner
        self.runner: SuiteRunner | None = None  # opened at the first file not in the cache
        self.cache = cache
        self.feature_set = feature_set
        self.started = started
        self.require_features = require_features
        self.batches: list[BatchResult] = []
        self.issues: list[Issue] = []
        self.skipped: list[str] = []
        self.messages: dict[str, list[str]] = {"block": [], "warn": []}

    def batch(self, symbol: str, kind: str, day: dt.date) -> None:
        from trading.data.synthetic import stored_day_seconds
        from trading.quality.frames import (
            BatchSchemaError,
            expected_seconds,
            feature_table_columns,
            is_today,
            read_features_day,
            read_raw,
            validation_frame,
        )

        lake_kind = feature_kind(self.feature_set) if kind == "features" else kind
        path = self.lake.path(self.venue, symbol, lake_kind, day)
        held = self.lake.days(self.venue, symbol, lake_kind)
        if day not in held:
            if kind == "features" and not self.require_features:
                self.skipped.append(f"{symbol} features {day}: no feature file (not required)")
                return
            hint = None
            if kind == "features":
                hint = f"compute them first ({_features_hint(self.feature_set)})"
            if kind == "bars":
                hint = "ingest them first (hmmtrader ingest archive or files)"
            self._fail(symbol, kind, day, "data_present", f"missing: {path}", None, hint)
            return
        key = self.cache.key(self.lake, kind, path)
        cached = self.cache.get(key)
        if cached is not None:
            self._cached(symbol, kind, day, path, cached)
            return
        try:
            if kind == "features":
                table = read_features_day(self.lake, self.venue, symbol, day, self.feature_set)
                table = feature_table_columns(table, self.feature_set)
            else:
                table = read_raw(path, kind)
        except BatchSchemaError as exc:
            self._fail(symbol, kind, day, "schema", str(exc), path)
            return
        if table.num_rows == 0:
            self._fail(symbol, kind, day, "data_present", f"empty file: {path}", path)
            return
        now_ns = int(self.started.timestamp() * 1e9)
        day_seconds = stored_day_seconds(self.lake, self.venue, symbol, day)
        # today's data, and the first day the lake holds of it (a recording or a download
        # that began that day), can only cover the day from their first row on
        first_ns = int(pc.min(table.column("ts_ns")).as_py())
        late_start = first_ns - day_start_ns(day) >= LATE_START_NS
        opening = is_today(day, now_ns) or (late_start and day == held[0])
        from_ns = first_ns if opening else None
        expected = expected_seconds(day, day_seconds, now_ns, from_ns)
        frame = validation_frame(
            table, kind, day, self.quality, expected, self.feature_set, from_ns
        )
        if self.runner is None:
            self.runner = self.open_runner()
        outcomes = self.runner.validate(kind, frame, f"{symbol} {kind} {day}", self.started)
        found, failed = self._record(symbol, kind, day, path, frame, outcomes)
        if opening:
            # its coverage is measured up to now, or depends on the lake's first day:
            # validate it again next time
            return
        self.cache.put(
            key,
            {
                "rows": len(frame),
                "failed": failed,
                "issues": [[i.ts_ns, i.check, i.value, i.row] for i in found],
            },
        )

    def _cached(
        self, symbol: str, kind: str, day: dt.date, path: Path, cached: dict[str, Any]
    ) -> None:
        """A file validated before, unchanged: its recorded result."""
        found = [
            Issue(ts_ns, symbol, check, value, self.quality.severity(check), kind, day, row)
            for ts_ns, check, value, row in cached["issues"]
        ]
        self.issues.extend(found)
        self._checks(symbol, kind, day, int(cached["rows"]), path, cached["failed"], found)

    def _fail(
        self,
        symbol: str,
        kind: str,
        day: dt.date,
        check: str,
        value: str,
        path: Path | None,
        hint: str | None = None,
    ) -> None:
        """A batch that could not be validated at all: one issue, one failed check."""
        severity = self.quality.severity(check)
        self.issues.append(Issue(day_start_ns(day), symbol, check, value, severity, kind, day))
        result = CheckResult(check, severity, 1, False)
        self.batches.append(BatchResult(symbol, kind, day, 0, path, (result,)))
        if check == "data_present" and path is None:
            self.messages[severity].append(
                f"no {kind} for {symbol} on {day}: {hint or 'ingest it first'}"
            )
        else:
            self.messages[severity].append(f"{symbol} {kind} {day}: {check}: {value}")

    def _record(
        self,
        symbol: str,
        kind: str,
        day: dt.date,
        path: Path,
        frame: pd.DataFrame,
        outcomes: list[ExpectationOutcome],
    ) -> tuple[list[Issue], dict[str, int]]:
        """The batch's issues (capped per check) and failed rows per check, recorded."""
        cap = self.quality.max_issue_rows_per_check
        failed: dict[str, int] = {}
        written: dict[str, int] = {}
        found: list[Issue] = []
        for outcome in outcomes:
            failed.setdefault(outcome.check, 0)
            if outcome.success:
                continue
            failed[outcome.check] += outcome.unexpected_count
            severity = self.quality.severity(outcome.check)
            room = cap - written.get(outcome.check, 0)
            if room <= 0:
                continue
            if outcome.row_level and outcome.error is None:
                rows = describe_rows(
                    frame, outcome.expectation_type, outcome.kwargs, outcome.positions[:room]
                )
                positions = outcome.positions[:room].tolist()
            else:
                value = table_value(outcome.check, outcome.kwargs, outcome.observed, outcome.error)
                if outcome.check == "coverage" and outcome.error is None:
                    minimum = float(outcome.kwargs.get("min_value") or 0.0)
                    value = frame.attrs["coverage"].describe(minimum)
                rows, positions = [(day_start_ns(day), value)], [None]
            for (ts_ns, value), row in zip(rows, positions, strict=True):
                found.append(Issue(ts_ns, symbol, outcome.check, value, severity, kind, day, row))
            written[outcome.check] = written.get(outcome.check, 0) + len(rows)
        # file order; table-level issues (no row) first
        found.sort(key=lambda i: (-1 if i.row is None else i.row, CHECK_NAMES.index(i.check)))
        self.issues.extend(found)
        self._checks(symbol, kind, day, len(frame), path, failed, found)
        return found, failed

    def _checks(
        self,
        symbol: str,
        kind: str,
        day: dt.date,
        rows: int,
        path: Path,
        failed: dict[str, int],
        found: Sequence[Issue] = (),
    ) -> None:
        checks = tuple(
            CheckResult(check, self.quality.severity(check), count, count == 0)
            for check, count in sorted(failed.items(), key=lambda kv: CHECK_NAMES.index(kv[0]))
        )
        self.batches.append(BatchResult(symbol, kind, day, rows, path, checks))
        coverage = next((i.value for i in found if i.check == "coverage"), None)
        for check in checks:
            if check.passed:
                continue
            if check.check == "coverage" and coverage is not None:
                message = (
                    f"{symbol} {kind} {day}: coverage: {coverage}: a nearly empty or partial "
                    f"day; ingest the whole day, leave it out of --start/--end, or lower "
                    f"quality.{kind}.min_coverage (quality.checks.coverage: warn reports it "
                    "without blocking)"
                )
            else:
                message = (
                    f"{symbol} {kind} {day}: {check.check} failed on {check.failed_rows:,} "
                    f"row{'s' if check.failed_rows != 1 else ''}"
                )
            self.messages[check.severity].append(message)

    def finish(self, run_dir: Path, latest_dir: Path, data_docs: Path) -> GateResult:
        issues_csv = write_issues_csv(run_dir / ISSUES_FILE, self.issues)
        result = GateResult(
            batches=self.batches,
            issues=self.issues,
            passed=not self.messages["block"],
            blocking=list(self.messages["block"]),
            warnings=list(self.messages["warn"]),
            skipped=self.skipped,
            issues_csv=issues_csv,
            data_docs=data_docs,
            run_dir=run_dir,
        )
        summary = _write_json(run_dir / SUMMARY_FILE, _summary(result, self.started))
        atomic_copy(issues_csv, latest_dir / ISSUES_FILE)
        atomic_copy(summary, latest_dir / SUMMARY_FILE)
        return result


def _summary(result: GateResult, started: dt.datetime) -> dict[str, Any]:
    return {
        "started": started.isoformat(),
        "passed": result.passed,
        "blocking": result.blocking,
        "warnings": result.warnings,
        "skipped": result.skipped,
        "issues_csv": str(result.issues_csv),
        "data_docs": str(result.data_docs),
        "checks": result.summary_rows(include_passed=True),
    }


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
