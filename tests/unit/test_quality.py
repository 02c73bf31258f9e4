"""The data-quality gate: faults injected into copies of real and synthetic lake files are
reported with exact counts; severities come from the config; committed suites never drift.

The real tick samples hold 46 s of their day and the synthetic and feature test days a few
minutes: this module's `config` sets min_coverage 0 for ticks and features, so that each
test sees only its own faults; the coverage tests use the defaults."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import BINANCE_SAMPLES, FIXTURES
from trading.data.files import ingest_files
from trading.data.lake import Lake, day_start_ns
from trading.data.schemas import SCHEMAS
from trading.data.synthetic import DAY_SECONDS_METADATA_KEY, generate, ingest_synthetic
from trading.errors import ConfigError, InputError
from trading.features.descriptor import (
    METADATA_KEY,
    FeatureParams,
    FeatureSet,
    bars_v1,
    features_v1,
)
from trading.quality.checks import CHECK_NAMES, DEFAULT_SEVERITY
from trading.quality.gate import GateResult, NoDataError, held_kinds, parse_kinds, run_gate
from trading.quality.issues import ISSUE_COLUMNS, count_by, iso_ms, read_issues_csv
from trading.settings import PROJECT_ROOT, AppConfig, QualitySettings, load_settings

REAL_DAY = dt.date(2021, 1, 8)  # the day of the fixture samples
SYNTH_DAY = dt.date(2024, 1, 1)
VENUE = "BINANCE"
Mutation = Callable[[pd.DataFrame], pd.DataFrame]


# --- helpers shared with tests/integration/test_validate_cli.py ----------------------------


def ingest_real(config: AppConfig, lake: Lake) -> None:
    """The fixture samples: 451 quotes and 2001 trades of BTCUSDT on 2021-01-08."""
    paths = [BINANCE_SAMPLES / "btcusdt-quotes.parquet", BINANCE_SAMPLES / "btcusdt-trades.parquet"]
    ingest_files(config, lake, paths, "BTCUSDT")


def copy_lake(lake: Lake, root: Path) -> Lake:
    shutil.copytree(lake.root, root)
    return Lake(root)


def rewrite(lake: Lake, kind: str, day: dt.date, mutate: Mutation, symbol: str = "BTCUSDT") -> None:
    """Rewrite a lake file with pyarrow directly (Lake.write would sort and dedupe)."""
    path = lake.path(VENUE, symbol, kind, day)
    table = pq.read_table(path)
    frame = mutate(table.to_pandas())
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), path)


def quote_faults(frame: pd.DataFrame) -> pd.DataFrame:
    """3 NaN bids, 2 crossed books, 1 timestamp 1 ms before its predecessor, 1 gap of 10 min."""
    frame = frame.copy()
    frame.loc[10:12, "bid"] = np.nan
    frame.loc[20:21, "ask"] = frame.loc[20:21, "bid"] - 0.5
    frame.loc[100, "ts_ns"] = frame.loc[99, "ts_ns"] - 1_000_000
    frame.loc[300:, "ts_ns"] += 600 * 1_000_000_000
    return frame


def trade_faults(frame: pd.DataFrame) -> pd.DataFrame:
    """Trade 50 repeats the id of trade 49."""
    frame = frame.copy()
    frame.loc[50, "trade_id"] = frame.loc[49, "trade_id"]
    return frame


QUOTE_FAULT_COUNTS = {
    ("quotes", "not_null"): 3,
    ("quotes", "crossed_book"): 2,
    ("quotes", "timestamps_increasing"): 1,
    ("quotes", "gap"): 1,
}
TRADE_FAULT_COUNTS = {
    ("trades", "unique_trade_id"): 2,  # both rows holding the repeated id
    ("trades", "trade_id_increasing"): 1,  # the second of them
}


def issue_counts(result_or_csv: GateResult | Path) -> dict[tuple[str, ...], int]:
    path = result_or_csv if isinstance(result_or_csv, Path) else result_or_csv.issues_csv
    return count_by(read_issues_csv(path), "kind", "check")


def with_quality(config: AppConfig, **changes: object) -> AppConfig:
    quality = config.settings.quality.model_copy(update=changes)
    settings = config.settings.model_copy(update={"quality": quality})
    return config.model_copy(update={"settings": settings})


def short_days(config: AppConfig) -> AppConfig:
    """`config` with min_coverage 0 for ticks and features (bars keep theirs)."""
    quality = config.settings.quality
    return with_quality(
        config,
        **{
            kind: getattr(quality, kind).model_copy(update={"min_coverage": 0.0})
            for kind in ("quotes", "trades", "features")
        },
    )


@pytest.fixture
def config(home: Path) -> AppConfig:
    """The default config for short test days (see the module docstring)."""
    return short_days(load_settings())


# --- real data ------------------------------------------------------------------------------


def test_clean_real_data_passes(config: AppConfig, lake: Lake, home: Path) -> None:
    ingest_real(config, lake)
    result = run_gate(config, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes", "trades"))
    assert result.passed and result.blocking == [] and result.warnings == []
    assert [(b.kind, b.rows, b.passed) for b in result.batches] == [
        ("quotes", 451, True),
        ("trades", 2001, True),
    ]
    assert read_issues_csv(result.issues_csv) == []
    assert result.issues_csv.read_text().splitlines() == [",".join(ISSUE_COLUMNS)]
    assert result.issues_csv.parent.parent == home / "quality" / "runs"
    assert (home / "quality" / "latest" / "data_quality_issues.csv").is_file()
    summary = json.loads((home / "quality" / "latest" / "summary.json").read_text())
    assert summary["passed"] is True
    assert result.data_docs == home / "quality/gx/uncommitted/data_docs/local_site/index.html"
    assert result.data_docs.is_file()


def test_data_docs_templates_compile_once_per_process(
    config: AppConfig, lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GX makes a Jinja environment per view; the shared bytecode cache compiles each of
    its templates once per process: a second project's Data Docs compile none of them
    again, have the same pages, and still take the project's custom styles."""
    from jinja2 import Environment

    ingest_real(config, lake)
    run_gate(config, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes",))
    compiled: list[str] = []
    compile_ = Environment.compile

    def counting(self: Environment, source: str, name: str | None = None, *a, **k):  # type: ignore[no-untyped-def]
        compiled.append(str(name))
        return compile_(self, source, name, *a, **k)

    monkeypatch.setattr(Environment, "compile", counting)
    monkeypatch.setenv("HMMTRADER_HOME", str(tmp_path / "other"))
    other = load_settings()  # a new state root: a new GX project, its first docs build
    second = run_gate(other, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes",))
    assert second.data_docs.is_relative_to(tmp_path / "other")
    # GX's own templates come from the cache; only the new project's custom styles file
    # (a template of its own, at its own path) is compiled
    assert set(compiled) <= {"data_docs_custom_styles.css"}, compiled

    def pages(site: Path) -> list[tuple[str, ...]]:  # without the run-time directory
        return sorted((*p.relative_to(site).parts[:3], p.name) for p in site.rglob("*.html"))

    first_docs = config.home / "quality/gx/uncommitted/data_docs/local_site"
    assert pages(second.data_docs.parent) == pages(first_docs)
    assert len(pages(first_docs)) >= 3
    assert "BTCUSDT quotes 2021-01-08" in second.data_docs.read_text()
    # the project's custom Data Docs styles still reach every view (a rebuilt site)
    styles = tmp_path / "other/quality/gx/plugins/custom_data_docs/styles"
    styles.mkdir(parents=True, exist_ok=True)
    (styles / "data_docs_custom_styles.css").write_text(".desk-style { color: teal; }\n")
    second.data_docs.unlink()
    third = run_gate(other, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes",))
    assert ".desk-style { color: teal; }" in third.data_docs.read_text()


def test_faults_in_a_copy_of_real_data(config: AppConfig, lake: Lake, tmp_path: Path) -> None:
    ingest_real(config, lake)
    faulty = copy_lake(lake, tmp_path / "faulty-lake")
    original = pq.read_table(lake.path(VENUE, "BTCUSDT", "quotes", REAL_DAY)).to_pandas()
    rewrite(faulty, "quotes", REAL_DAY, quote_faults)
    rewrite(faulty, "trades", REAL_DAY, trade_faults)

    result = run_gate(config, faulty, ["BTCUSDT"], REAL_DAY, REAL_DAY, out_dir=tmp_path / "out")

    assert issue_counts(result) == QUOTE_FAULT_COUNTS | TRADE_FAULT_COUNTS
    assert not result.passed
    assert "BTCUSDT quotes 2021-01-08: not_null failed on 3 rows" in result.blocking
    assert "BTCUSDT trades 2021-01-08: unique_trade_id failed on 2 rows" in result.blocking
    assert result.issues_csv == tmp_path / "out" / "data_quality_issues.csv"
    rows = read_issues_csv(result.issues_csv)
    by_check = {r["check"]: r for r in rows}
    crossed = [r for r in rows if r["check"] == "crossed_book"]
    bid, ask = original.loc[20, "bid"], original.loc[20, "bid"] - 0.5
    assert crossed[0]["value"] == f"bid={float(bid)!r},ask={float(ask)!r}"
    assert crossed[0]["timestamp"] == iso_ms(int(original.loc[20, "ts_ns"]))
    assert crossed[0]["row"] == "20" and crossed[0]["severity"] == "block"
    assert by_check["not_null"]["value"] == "bid=nan"
    gap_s = 600 + (original.loc[300, "ts_ns"] - original.loc[299, "ts_ns"]) / 1e9
    assert by_check["gap"]["value"] == f"gap_s={gap_s:.3f}"
    assert by_check["timestamps_increasing"]["value"] == "ts_step_s=-0.001000"
    trade_ids = pq.read_table(lake.path(VENUE, "BTCUSDT", "trades", REAL_DAY))["trade_id"]
    duplicated = trade_ids[49].as_py()
    assert {r["value"] for r in rows if r["check"] == "unique_trade_id"} == {
        f"trade_id={duplicated}"
    }
    assert result.data_docs.is_file()
    # the per-check table: only failed checks, with exact counts
    failed = {(r["kind"], r["check"]): r["failed_rows"] for r in result.summary_rows()}
    assert failed == QUOTE_FAULT_COUNTS | TRADE_FAULT_COUNTS


def test_unchanged_files_are_not_validated_again(
    config: AppConfig, lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trading.quality.runner import SuiteRunner

    ingest_real(config, lake)
    faulty = copy_lake(lake, tmp_path / "faulty-lake")
    rewrite(faulty, "quotes", REAL_DAY, quote_faults)
    first = run_gate(config, faulty, ["BTCUSDT"], REAL_DAY, REAL_DAY, out_dir=tmp_path / "a")
    assert not first.passed

    calls: list[str] = []
    real_validate = SuiteRunner.validate

    def counted(self: SuiteRunner, kind: str, *args: object) -> object:
        calls.append(kind)
        return real_validate(self, kind, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(SuiteRunner, "validate", counted)
    again = run_gate(config, faulty, ["BTCUSDT"], REAL_DAY, REAL_DAY, out_dir=tmp_path / "b")
    assert calls == []  # both files unchanged: their recorded results
    assert again.issues == first.issues and again.batches == first.batches
    assert again.blocking == first.blocking and again.passed is False
    assert again.issues_csv.read_text() == first.issues_csv.read_text()

    rewrite(faulty, "trades", REAL_DAY, trade_faults)  # a changed file is validated again
    third = run_gate(config, faulty, ["BTCUSDT"], REAL_DAY, REAL_DAY, out_dir=tmp_path / "c")
    assert calls == ["trades"]
    assert issue_counts(third) == QUOTE_FAULT_COUNTS | TRADE_FAULT_COUNTS
    # other quality settings: validated again
    stricter = with_quality(config, strict_quote_timestamps=True)
    run_gate(stricter, faulty, ["BTCUSDT"], REAL_DAY, REAL_DAY, out_dir=tmp_path / "d")
    assert calls == ["trades", "quotes", "trades"]


# --- synthetic data -------------------------------------------------------------------------


def synthetic_lake(config: AppConfig, lake: Lake, seconds: int = 180) -> None:
    specs = {"BTCUSDT": config.symbol("BTCUSDT")}
    length = {DAY_SECONDS_METADATA_KEY: str(seconds).encode()}  # as ingest_synthetic writes
    for item in generate(specs, SYNTH_DAY, 1, 7, config.settings.synthetic, seconds=seconds):
        with lake.batch() as batch:
            for kind, table in (("quotes", item.quotes), ("trades", item.trades)):
                batch.put(VENUE, item.symbol, kind, table, "synthetic:test", metadata=length)


def synthetic_trade_faults(frame: pd.DataFrame) -> pd.DataFrame:
    """NaN price on 2 rows, a repeated trade id, a swapped timestamp pair, a 10-min gap."""
    frame = frame.copy()
    frame.loc[5:6, "price"] = np.nan
    frame.loc[40, "trade_id"] = frame.loc[39, "trade_id"]
    frame.loc[[70, 71], "ts_ns"] = frame.loc[[71, 70], "ts_ns"].to_numpy()
    frame.loc[500:, "ts_ns"] += 600 * 1_000_000_000
    return frame


def test_faults_in_a_copy_of_synthetic_data(config: AppConfig, lake: Lake, tmp_path: Path) -> None:
    synthetic_lake(config, lake)
    clean = run_gate(config, lake, "BTCUSDT", SYNTH_DAY, SYNTH_DAY, kinds=("quotes", "trades"))
    assert clean.passed and clean.issues == []

    faulty = copy_lake(lake, tmp_path / "faulty-lake")
    rewrite(faulty, "quotes", SYNTH_DAY, quote_faults)
    rewrite(faulty, "trades", SYNTH_DAY, synthetic_trade_faults)
    result = run_gate(config, faulty, "BTCUSDT", SYNTH_DAY, SYNTH_DAY, kinds=("quotes", "trades"))

    assert issue_counts(result) == QUOTE_FAULT_COUNTS | {
        ("trades", "not_null"): 2,
        ("trades", "unique_trade_id"): 2,
        ("trades", "trade_id_increasing"): 1,
        ("trades", "timestamps_increasing"): 1,
        ("trades", "gap"): 1,
    }
    assert not result.passed
    assert result.data_docs.is_file()


# --- severity, caps, missing data -----------------------------------------------------------


def test_warn_severity_reports_without_blocking(
    config: AppConfig, lake: Lake, tmp_path: Path
) -> None:
    ingest_real(config, lake)

    def crossed(frame: pd.DataFrame) -> pd.DataFrame:  # an ask of 1.0 would be a price_jump too
        return frame.assign(ask=frame["ask"].where(frame.index != 7, frame["bid"] - 0.5))

    rewrite(lake, "quotes", REAL_DAY, crossed)
    blocked = run_gate(config, lake, "BTCUSDT", REAL_DAY, REAL_DAY)
    assert not blocked.passed
    assert blocked.blocking == ["BTCUSDT quotes 2021-01-08: crossed_book failed on 1 row"]

    relaxed = with_quality(config, checks={**DEFAULT_SEVERITY, "crossed_book": "warn"})
    result = run_gate(relaxed, lake, "BTCUSDT", REAL_DAY, REAL_DAY)
    assert result.passed and result.blocking == []
    assert result.warnings == ["BTCUSDT quotes 2021-01-08: crossed_book failed on 1 row"]
    (row,) = read_issues_csv(result.issues_csv)
    assert (row["check"], row["severity"], row["row"]) == ("crossed_book", "warn", "7")
    assert [r["status"] for r in result.summary_rows()] == ["WARN", "pass"]


def test_issue_rows_are_capped_but_counts_stay_exact(
    config: AppConfig, lake: Lake, tmp_path: Path
) -> None:
    ingest_real(config, lake)
    rewrite(lake, "quotes", REAL_DAY, lambda f: f.assign(bid_size=-1.0))  # all 451 rows
    capped = with_quality(config, max_issue_rows_per_check=25)
    result = run_gate(capped, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes",))
    assert issue_counts(result) == {("quotes", "positive_size"): 25}
    assert result.blocking == ["BTCUSDT quotes 2021-01-08: positive_size failed on 451 rows"]
    assert [r["row"] for r in read_issues_csv(result.issues_csv)][:3] == ["0", "1", "2"]


def test_missing_day_and_broken_file_are_blocking_issues(
    config: AppConfig, lake: Lake, tmp_path: Path
) -> None:
    ingest_real(config, lake)
    next_day = REAL_DAY + dt.timedelta(days=1)
    trades = lake.path(VENUE, "BTCUSDT", "trades", REAL_DAY)
    pq.write_table(pq.read_table(trades).drop_columns(["qty"]), trades)

    result = run_gate(config, lake, "BTCUSDT", REAL_DAY, next_day, kinds=("quotes", "trades"))

    assert not result.passed
    assert result.blocking == [
        "no quotes for BTCUSDT on 2021-01-09: ingest it first",
        "BTCUSDT trades 2021-01-08: schema: missing column(s) qty",
        "no trades for BTCUSDT on 2021-01-09: ingest it first",
    ]
    assert issue_counts(result) == {
        ("quotes", "data_present"): 1,
        ("trades", "data_present"): 1,
        ("trades", "schema"): 1,
    }
    assert result.data_docs.is_file()


def test_row_count_and_spread_warn_by_default(config: AppConfig, lake: Lake) -> None:
    ingest_real(config, lake)

    def short_and_wide(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.iloc[:60].copy()  # 60 rows < min_rows 100
        frame.loc[3, "ask"] = frame.loc[3, "bid"] * 1.06  # about 583 bp > 500
        return frame

    rewrite(lake, "quotes", REAL_DAY, short_and_wide)
    result = run_gate(config, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes",))
    assert result.passed and result.blocking == []
    assert issue_counts(result) == {("quotes", "row_count"): 1, ("quotes", "spread_range"): 1}
    values = {r["check"]: r["value"] for r in read_issues_csv(result.issues_csv)}
    assert values["row_count"] == "rows=60 (allowed 100..50000000)"
    assert values["spread_range"] == f"spread_bp={0.06 / 1.03 * 1e4:.2f}"


def test_strict_quote_timestamps_flag_shared_milliseconds(config: AppConfig, lake: Lake) -> None:
    ingest_real(config, lake)
    lenient = run_gate(config, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes",))
    assert lenient.passed
    strict = with_quality(config, strict_quote_timestamps=True)
    result = run_gate(strict, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes",))
    # 23 of the 451 real book updates share their millisecond with the previous one
    assert issue_counts(result) == {("quotes", "timestamps_increasing"): 23}
    assert {r["value"] for r in read_issues_csv(result.issues_csv)} == {"ts_step_s=0.000000"}


def test_bad_kind_is_an_input_error() -> None:
    assert parse_kinds("quotes, TRADES") == ("quotes", "trades")
    assert parse_kinds("bars") == ("bars",)
    with pytest.raises(InputError, match=r"unknown kind\(s\) ticks: expected some of quotes, "):
        parse_kinds("quotes,ticks")


# --- features -------------------------------------------------------------------------------


def feature_table(feature_set: FeatureSet, rows: int = 300, seed: int = 3) -> pd.DataFrame:
    """A clean FEATURES_V1 day: 1 s grid, z values in +-3, raw values within their ranges."""
    rng = np.random.default_rng(seed)
    start = day_start_ns(SYNTH_DAY) + 600 * 1_000_000_000
    grid_ns = int(feature_set.params["grid_s"] * 1e9)
    frame: dict[str, np.ndarray] = {"ts_ns": start + np.arange(rows, dtype=np.int64) * grid_ns}
    for column in feature_set.columns:
        frame[column] = np.clip(rng.standard_normal(rows), -3, 3)
    for column in feature_set.raw_columns:
        frame[column] = rng.uniform(-0.9, 0.9, rows)
    frame["raw_mid"] = 42_000 + rng.standard_normal(rows)
    for column in ("raw_spread_bp", "raw_rv_bp"):
        frame[column] = rng.uniform(0, 5, rows)
    return pd.DataFrame(frame)


def write_features(lake: Lake, frame: pd.DataFrame, feature_set: FeatureSet) -> Path:
    path = lake.path(VENUE, "BTCUSDT", "features_v1", SYNTH_DAY)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {METADATA_KEY: feature_set.to_json().encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def test_features_clean_and_faulty(config: AppConfig, lake: Lake) -> None:
    fs = features_v1(config.settings.features)
    clean = feature_table(fs)
    write_features(lake, clean, fs)
    ok = run_gate(config, lake, "BTCUSDT", SYNTH_DAY, SYNTH_DAY, kinds=("features",))
    assert ok.passed and ok.issues == []
    assert [(b.kind, b.rows) for b in ok.batches] == [("features", 300)]

    faulty = clean.copy()
    faulty.loc[5, "imbalance"] = np.nan
    faulty.loc[7, "mid"] = math.inf
    faulty.loc[9, "rv_bp"] = 12.5  # |z| > z_clip = 10
    faulty.loc[11, "raw_imbalance"] = 1.5  # outside [-1, 1]
    faulty.loc[13, "raw_bid_queue"] = -math.inf
    write_features(lake, faulty, fs)
    result = run_gate(config, lake, "BTCUSDT", SYNTH_DAY, SYNTH_DAY, kinds=("features",))

    assert not result.passed
    # an infinite z value is both non-finite and outside +-z_clip
    assert issue_counts(result) == {
        ("features", "feature_finite"): 3,
        ("features", "feature_range"): 3,
    }
    values = sorted(r["value"] for r in read_issues_csv(result.issues_csv))
    assert values == sorted(
        [
            "imbalance=nan",
            "mid=inf",
            "mid=inf",
            "rv_bp=12.5",
            "raw_imbalance=1.5",
            "raw_bid_queue=-inf",
        ]
    )


def test_features_of_another_set_or_with_holes(config: AppConfig, lake: Lake) -> None:
    fs = features_v1(config.settings.features)
    other = features_v1(FeatureParams(z_clip=5.0))
    write_features(lake, feature_table(other), other)
    result = run_gate(config, lake, "BTCUSDT", SYNTH_DAY, SYNTH_DAY, kinds=("features",))
    assert issue_counts(result) == {("features", "schema"): 1}
    assert "parameters differ: z_clip" in result.blocking[0]

    holes = feature_table(fs).drop(index=range(100, 110)).reset_index(drop=True)
    write_features(lake, holes, fs)
    result = run_gate(config, lake, "BTCUSDT", SYNTH_DAY, SYNTH_DAY, kinds=("features",))
    assert issue_counts(result) == {("features", "gap"): 1}
    (row,) = read_issues_csv(result.issues_csv)
    assert row["value"] == "gap_s=11.000"


def test_features_optional_unless_required(config: AppConfig, lake: Lake) -> None:
    synthetic_lake(config, lake, seconds=120)
    result = run_gate(config, lake, "BTCUSDT", SYNTH_DAY, SYNTH_DAY)
    assert result.passed and [b.kind for b in result.batches] == ["quotes", "trades"]
    assert result.skipped == ["BTCUSDT features 2024-01-01: no feature file (not required)"]
    required = run_gate(config, lake, "BTCUSDT", SYNTH_DAY, SYNTH_DAY, require_features=True)
    assert required.blocking == [
        "no features for BTCUSDT on 2024-01-01: compute them first (hmmtrader features)"
    ]


# --- config and committed suites ------------------------------------------------------------


def _config_dir(tmp_path: Path, quality: dict[str, object]) -> Path:
    target = tmp_path / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", target)
    data = yaml.safe_load((target / "settings.yaml").read_text())
    data["quality"] = quality
    (target / "settings.yaml").write_text(yaml.safe_dump(data))
    return target


def test_quality_settings_defaults_and_overrides(home: Path, tmp_path: Path) -> None:
    assert load_settings().settings.quality == QualitySettings()
    quality = QualitySettings()
    assert set(quality.checks) == set(CHECK_NAMES)
    assert [c for c, s in quality.checks.items() if s == "warn"] == ["spread_range", "row_count"]
    assert (quality.quotes.max_gap_s, quality.trades.max_gap_s, quality.features.max_gap_s) == (
        60.0,
        300.0,
        5.0,
    )
    loaded = load_settings(_config_dir(tmp_path / "a", {"checks": {"gap": "warn"}}))
    assert loaded.settings.quality.severity("gap") == "warn"
    assert loaded.settings.quality.severity("not_null") == "block"  # others keep defaults


@pytest.mark.parametrize(
    ("quality", "expected"),
    [
        ({"checks": {"crossed_books": "warn"}}, "unknown check(s) crossed_books: known checks"),
        ({"checks": {"gap": "ignore"}}, "quality.checks.gap"),
        ({"quotes": {"min_rows": 10, "max_rows": 5}}, "min_rows 10 exceeds max_rows 5"),
        ({"trade": {}}, "quality.trade: Extra inputs are not permitted"),
    ],
)
def test_bad_quality_config_is_a_config_error(
    quality: dict[str, object], expected: str, home: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"settings\.yaml") as info:
        load_settings(_config_dir(tmp_path, quality))
    assert expected in str(info.value)


def test_cli_startup_does_not_import_great_expectations() -> None:
    code = "import sys, hmmtrader.cli, trading.quality.gate; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_committed_suites_equal_generated(tmp_path: Path) -> None:
    from trading.quality.suites import export_project

    committed = PROJECT_ROOT / "expectations" / "gx" / "expectations"
    written = export_project(tmp_path, QualitySettings(), features_v1())
    assert sorted(p.name for p in written) == sorted(p.name for p in committed.glob("*.json"))
    for path in written:
        assert json.loads(path.read_text()) == json.loads((committed / path.name).read_text()), (
            f"{committed / path.name} is stale: run `hmmtrader quality export`"
        )
    assert (PROJECT_ROOT / "expectations" / "gx" / "great_expectations.yml").is_file()
    suites = {p.stem: json.loads(p.read_text()) for p in written}
    checks = {e["meta"]["check"] for s in suites.values() for e in s["expectations"]}
    assert checks == set(CHECK_NAMES) - {"data_present"}  # data_present: no file, no batch


# --- bars -----------------------------------------------------------------------------------

BARS_DAY = dt.date(2024, 1, 3)  # the real month's 3 January drop (BTC -5 % within an hour)
REAL_BARS = FIXTURES / "real" / "BTCUSDT-1m-2024-01.csv"


def real_bars(day: dt.date = BARS_DAY) -> pd.DataFrame:
    """One day of the real month's BTCUSDT 1-minute bars in the lake's bars schema (the
    file has no quote volume, trade count or taker volume: plausible values stand in)."""
    frame = pd.read_csv(REAL_BARS)
    ts = pd.to_datetime(frame.pop("datetime")).to_numpy().astype("datetime64[ns]")
    frame.insert(0, "ts_ns", ts.astype(np.int64))
    frame = frame[
        (frame["ts_ns"] >= day_start_ns(day))
        & (frame["ts_ns"] < day_start_ns(day) + 86_400 * 10**9)
    ]
    frame = frame.reset_index(drop=True)
    frame["quote_volume"] = frame["volume"] * frame["close"]
    frame["n_trades"] = np.int64(700)
    frame["taker_buy_volume"] = frame["volume"] / 2
    return frame


def write_bars(lake: Lake, frame: pd.DataFrame, day: dt.date = BARS_DAY) -> None:
    """Write as they are (the lake writer would sort and dedupe)."""
    path = lake.path(VENUE, "BTCUSDT", "bars", day)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=SCHEMAS["bars"], preserve_index=False), path)


def test_real_bars_pass_every_bar_check(config: AppConfig, lake: Lake) -> None:
    frame = real_bars()
    assert len(frame) == 1440
    write_bars(lake, frame)
    assert held_kinds(lake, VENUE, "BTCUSDT", BARS_DAY, BARS_DAY) == ("bars",)
    result = run_gate(config, lake, "BTCUSDT", BARS_DAY, BARS_DAY)  # auto: bars
    assert result.passed and result.issues == [] and result.warnings == []
    assert [(b.kind, b.rows) for b in result.batches] == [("bars", 1440)]
    assert result.skipped == []
    checks = {c.check for c in result.batches[0].checks}
    assert checks == {
        "schema",
        "row_count",
        "timestamps_increasing",
        "ts_in_day",
        "gap",
        "coverage",
        "unique_ts",
        "not_null",
        "positive_price",
        "non_negative_volume",
        "ohlc_consistent",
        "price_jump",
    }


def _ohlc(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[10, "high"] = frame.loc[10, ["open", "close"]].min() - 1.0
    frame.loc[20, "low"] = frame.loc[20, ["open", "close"]].max() + 1.0
    return frame


def _price(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[30, "low"] = 0.0
    return frame


def _volume(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[40, "volume"] = -1.0
    frame.loc[41, "taker_buy_volume"] = -0.5
    return frame


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[50, 51], "ts_ns"] = frame.loc[[51, 50], "ts_ns"].to_numpy()
    return frame


def _duplicate(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[61, "ts_ns"] = frame.loc[60, "ts_ns"]
    return frame


def _gap(frame: pd.DataFrame) -> pd.DataFrame:
    # 6 bars missing after row 99 (a gap), 5 after row 199 (max_gap_bars: allowed)
    return frame.drop(index=[*range(100, 106), *range(200, 205)]).reset_index(drop=True)


def _jump(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[300, ["high", "close"]] *= 1000  # consistent, positive: only the jump is wrong
    return frame


def _coverage(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:600].copy()  # the first 10 hours: no gap, but 42 % of the day


@pytest.mark.parametrize(
    ("mutate", "expected", "value"),
    [
        (_ohlc, {"ohlc_consistent": 2}, "open="),
        (_price, {"positive_price": 1}, "low=0.0"),
        (_volume, {"non_negative_volume": 2}, "volume=-1.0"),
        (_order, {"timestamps_increasing": 1}, "ts_step_s=-60.000000"),
        (_duplicate, {"unique_ts": 2, "timestamps_increasing": 1}, "open_time=2024-01-03T01:00"),
        (_gap, {"gap": 1}, "gap_bars=6"),
        (_jump, {"price_jump": 1}, "jump_ratio="),
        (_coverage, {"coverage": 1}, "600 of 1,440 bars of the UTC day (41.67 %"),
    ],
    ids=["ohlc", "price", "volume", "order", "duplicate", "gap", "jump", "coverage"],
)
def test_each_bar_check_blocks_its_fault(
    config: AppConfig,
    lake: Lake,
    mutate: Mutation,
    expected: dict[str, int],
    value: str,
) -> None:
    write_bars(lake, mutate(real_bars()))
    result = run_gate(config, lake, "BTCUSDT", BARS_DAY, BARS_DAY, kinds=("bars",))
    assert not result.passed
    failed = {c.check: c.failed_rows for c in result.batches[0].checks if not c.passed}
    assert failed == expected
    rows = read_issues_csv(result.issues_csv)
    assert {r["severity"] for r in rows} == {"block"} and {r["kind"] for r in rows} == {"bars"}
    assert any(value in r["value"] for r in rows), [r["value"] for r in rows]


def test_bar_coverage_message_says_how_to_fix(config: AppConfig, lake: Lake) -> None:
    write_bars(lake, _coverage(real_bars()))
    result = run_gate(config, lake, "BTCUSDT", BARS_DAY, BARS_DAY, kinds=("bars",))
    assert result.blocking == [
        "BTCUSDT bars 2024-01-03: coverage: 600 of 1,440 bars of the UTC day (41.67 %, "
        "min_coverage 90 %): a nearly empty or partial day; ingest the whole day, leave it "
        "out of --start/--end, or lower quality.bars.min_coverage (quality.checks.coverage: "
        "warn reports it without blocking)"
    ]
    relaxed = with_quality(
        config, bars=config.settings.quality.bars.model_copy(update={"min_coverage": 0.4})
    )
    assert run_gate(relaxed, lake, "BTCUSDT", BARS_DAY, BARS_DAY, kinds=("bars",)).passed


def test_today_is_measured_up_to_now(config: AppConfig, lake: Lake) -> None:
    """A partial day is fine when it is today: its bars up to the last full minute."""
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    minutes = int((now - dt.datetime.combine(today, dt.time(), dt.UTC)).total_seconds() // 60)
    if minutes < 10:
        pytest.skip("too close to midnight UTC")
    frame = pd.concat([real_bars()] * 2, ignore_index=True).iloc[: minutes - 1].copy()
    frame["ts_ns"] = day_start_ns(today) + np.arange(len(frame), dtype=np.int64) * 60 * 10**9
    write_bars(lake, frame, today)
    result = run_gate(config, lake, "BTCUSDT", today, today, kinds=("bars",))
    assert result.passed, result.blocking


def test_a_day_that_can_only_begin_late_is_covered_from_its_first_row(
    config: AppConfig, lake: Lake
) -> None:
    """A download or a recording that began at noon: its first lake day is measured from
    its first row; the same half day between two whole days is a partial day; today's
    last hour (what `ingest rest` brings) is covered."""
    afternoon = real_bars().iloc[720:].reset_index(drop=True)
    write_bars(lake, afternoon)
    first = run_gate(config, lake, "BTCUSDT", BARS_DAY, BARS_DAY, kinds=("bars",))
    assert first.passed, first.blocking
    write_bars(lake, real_bars(BARS_DAY - dt.timedelta(days=1)), BARS_DAY - dt.timedelta(days=1))
    middle = run_gate(config, lake, "BTCUSDT", BARS_DAY, BARS_DAY, kinds=("bars",))
    assert [b.split(":")[1].strip() for b in middle.blocking] == ["coverage"]
    assert "720 of 1,440 bars of the UTC day" in middle.blocking[0]

    now = dt.datetime.now(dt.UTC)
    today = now.date()
    minute = int(now.timestamp()) // 60 * 60 * 10**9
    if minute - day_start_ns(today) < 61 * 60 * 10**9:
        return  # the last hour began yesterday: nothing of today to measure
    hour = real_bars().iloc[:60].copy()
    hour["ts_ns"] = minute - np.arange(60, 0, -1, dtype=np.int64) * 60 * 10**9
    write_bars(lake, hour, today)
    recent = run_gate(config, lake, "BTCUSDT", today, today, kinds=("bars",))
    assert recent.passed, recent.blocking


# --- coverage of ticks ----------------------------------------------------------------------


def test_a_day_with_46_seconds_of_ticks_is_flagged(home: Path, lake: Lake) -> None:
    defaults = load_settings()
    ingest_real(defaults, lake)  # 2021-01-08 00:00:00.278 .. 00:00:46.674
    result = run_gate(defaults, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes", "trades"))
    assert not result.passed
    assert issue_counts(result) == {("quotes", "coverage"): 1, ("trades", "coverage"): 1}
    values = {r["kind"]: r["value"] for r in read_issues_csv(result.issues_csv)}
    assert values["quotes"] == ("46 s of the UTC day's 24.0 h covered (0.05 %, min_coverage 10 %)")
    assert result.blocking[0].startswith(
        "BTCUSDT quotes 2021-01-08: coverage: 46 s of the UTC day's 24.0 h covered"
    )
    assert "lower quality.quotes.min_coverage" in result.blocking[0]
    relaxed = with_quality(defaults, checks={**DEFAULT_SEVERITY, "coverage": "warn"})
    warned = run_gate(relaxed, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("quotes", "trades"))
    assert warned.passed and len(warned.warnings) == 2


def test_a_short_synthetic_day_is_covered_by_its_own_length(home: Path, lake: Lake) -> None:
    """The test worlds' synthetic days are 1 to 6 hours long: each file carries its length,
    and coverage is measured against it. The same rows without it cover 4 % of a day."""
    defaults = load_settings()
    ingest_synthetic(defaults, lake, ["BTCUSDT"], SYNTH_DAY, 1, 7, seconds=3600)
    result = run_gate(defaults, lake, "BTCUSDT", SYNTH_DAY, SYNTH_DAY)
    assert result.passed and result.issues == []
    assert [b.kind for b in result.batches] == ["quotes", "trades", "bars"]

    for kind in ("quotes", "trades", "bars", "regimes"):  # the same rows without the length
        path = lake.path(VENUE, "BTCUSDT", kind, SYNTH_DAY)
        pq.write_table(pq.read_table(path).replace_schema_metadata(None), path)
    blocked = run_gate(defaults, lake, "BTCUSDT", SYNTH_DAY, SYNTH_DAY)
    assert issue_counts(blocked) == {
        ("quotes", "coverage"): 1,
        ("trades", "coverage"): 1,
        ("bars", "coverage"): 1,
    }
    values = {r["kind"]: r["value"] for r in read_issues_csv(blocked.issues_csv)}
    assert values["bars"] == "60 of 1,440 bars of the UTC day (4.17 %, min_coverage 90 %)"


def test_a_silence_longer_than_the_gap_limit_is_not_covered(config: AppConfig) -> None:
    from trading.quality.frames import day_coverage

    start = day_start_ns(SYNTH_DAY)
    hour = 3600 * 10**9
    ts = start + np.array([0, hour, 2 * hour, 2 * hour + 10 * 10**9], dtype=np.int64)
    coverage = day_coverage(ts, "quotes", SYNTH_DAY, (86_400.0, "the UTC day"), 60.0)
    assert coverage.covered_s == 130.0  # two silences of an hour count 60 s each, + 10 s
    bars = day_coverage(ts, "bars", SYNTH_DAY, (86_400.0, "the UTC day"), 60.0)
    assert (bars.bars, bars.expected_bars) == (3, 1440)  # minutes 0, 60 and 120


# --- a selection that matches no data -------------------------------------------------------


def test_a_selection_matching_no_file_is_an_error(config: AppConfig, lake: Lake) -> None:
    write_bars(lake, real_bars())
    with pytest.raises(NoDataError) as info:
        run_gate(config, lake, "BTCUSDT", BARS_DAY, BARS_DAY, kinds=("features",))
    message = str(info.value)
    assert message.startswith(
        "nothing to validate: no features of BTCUSDT on 2024-01-03 in the lake under "
    )
    assert "it holds BTCUSDT bars 2024-01-03: validate what it holds (--kinds bars)" in message
    assert message.endswith("or compute features first (hmmtrader features)")
    assert not (config.home / "quality" / "latest").exists()  # nothing written

    with pytest.raises(NoDataError, match=r"pick --start/--end within those days"):
        run_gate(config, lake, "BTCUSDT", REAL_DAY, REAL_DAY, kinds=("bars",))
    with pytest.raises(
        NoDataError,
        match=r"no quotes, trades, bars or features of ETHUSDT .* it holds no quotes, trades, "
        r"bars or features of ETHUSDT \(it holds BTCUSDT\): ingest them first",
    ):
        run_gate(config, lake, "ETHUSDT", BARS_DAY, BARS_DAY)


# --- features of the configured set: BARS_V1 --------------------------------------------------


def bar_features_lake(lake: Lake, fs: FeatureSet) -> list[dt.date]:
    """Two real days of bars (2 and 3 January) and their BARS_V1 files, computed and
    written as `hmmtrader features --set bars_v1` does (3 January warmed up on 2 January)."""
    from trading.features import store

    days = [BARS_DAY - dt.timedelta(days=1), BARS_DAY]
    for day in days:
        write_bars(lake, real_bars(day), day)
    result = store.compute_range(lake, VENUE, "BTCUSDT", days[0], days[-1], fs, lookback_days=0)
    assert [w.day for w in store.write_features(lake, VENUE, "BTCUSDT", result)] == days
    return days


@pytest.fixture
def bars_config(home: Path, monkeypatch: pytest.MonkeyPatch) -> AppConfig:
    """The default config (coverage limits included) with regime.feature_set bars_v1."""
    monkeypatch.setenv("HMMTRADER_REGIME__FEATURE_SET", "bars_v1")
    return load_settings()


def test_features_of_the_configured_bars_set(bars_config: AppConfig, lake: Lake) -> None:
    fs = bars_v1(bars_config.settings.bars)
    first, last = bar_features_lake(lake, fs)
    assert held_kinds(lake, VENUE, "BTCUSDT", last, last, fs) == ("bars", "features")
    result = run_gate(bars_config, lake, "BTCUSDT", first, last, kinds=("features",))
    assert result.passed and result.issues == [] and result.warnings == []
    # 2 January loses its warm-up (bars_v1 writes ready rows only); 3 January is whole:
    # its first row is 2 January's last bar, stamped at its close (midnight)
    (day1, day2) = result.batches
    assert (day1.kind, day2.kind, day2.rows) == ("features", "features", 1440)
    assert 1000 < day1.rows < 1440
    assert {c.check for c in day2.checks} == {
        "schema",
        "row_count",
        "timestamps_increasing",
        "ts_in_day",
        "gap",
        "coverage",
        "not_null",
        "feature_finite",
        "feature_range",
    }
    gx_suites = bars_config.home / "quality" / "gx" / "expectations"
    assert sorted(p.name for p in gx_suites.glob("*.json")) == ["bars_v1.json"]
    suite = json.loads((gx_suites / "bars_v1.json").read_text())
    gap = [e for e in suite["expectations"] if e["meta"]["check"] == "gap"]
    assert [e["kwargs"]["max_value"] for e in gap] == [360.0]  # 60 s x (5 missing bars + 1)

    def faults(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[100, "raw_volume_z"] = math.inf
        frame.loc[200, "raw_autocorr_1"] = 1.5  # outside [-1, 1]
        frame.loc[300, "raw_parkinson_bp"] = -1.0  # below 0
        return frame.drop(index=range(600, 630)).reset_index(drop=True)  # 30 bars missing

    rewrite(lake, "bars_v1", last, faults)
    blocked = run_gate(bars_config, lake, "BTCUSDT", last, last, kinds=("features",))
    assert not blocked.passed
    assert issue_counts(blocked) == {
        ("features", "feature_finite"): 1,
        ("features", "feature_range"): 2,
        ("features", "gap"): 1,
    }
    values = sorted(r["value"] for r in read_issues_csv(blocked.issues_csv))
    assert values == [
        "gap_s=1860.000",
        "raw_autocorr_1=1.5",
        "raw_parkinson_bp=-1.0",
        "raw_volume_z=inf",
    ]


def test_bars_set_coverage_and_missing_files(bars_config: AppConfig, lake: Lake) -> None:
    fs = bars_v1(bars_config.settings.bars)
    _, last = bar_features_lake(lake, fs)
    rewrite(lake, "bars_v1", last, lambda frame: frame.iloc[:100].copy())
    result = run_gate(bars_config, lake, "BTCUSDT", last, last, kinds=("features",))
    assert result.blocking[0].startswith(
        "BTCUSDT features 2024-01-03: coverage: 100 of 1,440 bars of the UTC day (6.94 %, "
        "min_coverage 10 %)"
    )

    later = last + dt.timedelta(days=1)
    write_bars(lake, real_bars(later), later)
    required = run_gate(
        bars_config,
        lake,
        "BTCUSDT",
        later,
        later,
        kinds=("bars", "features"),
        require_features=True,
    )
    assert required.blocking == [
        "no features for BTCUSDT on 2024-01-04: compute them first "
        "(hmmtrader features --set bars_v1)"
    ]
    with pytest.raises(NoDataError) as info:
        run_gate(bars_config, lake, "BTCUSDT", later, later, kinds=("features",))
    message = str(info.value)
    assert "it holds BTCUSDT bars 2024-01-02..2024-01-04 (3 days); BTCUSDT features " in message
    assert message.endswith("or compute features first (hmmtrader features --set bars_v1)")


def test_a_changed_suite_replaces_the_stored_one_and_an_unchanged_one_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner writes a suite (and its checkpoint) into the GX project only when what it
    checks changed; each run validates with the suite it was given."""
    import great_expectations as gx

    from trading.quality.runner import SuiteRunner
    from trading.quality.suites import open_project

    open_project(tmp_path)  # GX builds suites inside a context

    def suite(max_value: float) -> gx.ExpectationSuite:
        # built whole, as suites.py builds them (add_expectation on a new suite with a
        # stored suite's name writes into the stored one)
        check = gx.expectations.ExpectColumnValuesToBeBetween(column="x", max_value=max_value)
        return gx.ExpectationSuite(name="quotes", expectations=[check])

    from great_expectations.core.factory.suite_factory import SuiteFactory

    writes: list[str] = []
    real_write = SuiteFactory.add_or_update

    def counted(self: SuiteFactory, suite: gx.ExpectationSuite) -> gx.ExpectationSuite:
        writes.append(suite.name)
        return real_write(self, suite)

    monkeypatch.setattr(SuiteFactory, "add_or_update", counted)
    frame = pd.DataFrame({"x": [1.0, 7.0]})
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    def run(max_value: float) -> bool:
        runner = SuiteRunner(tmp_path, {"quotes": suite(max_value)})
        return runner.validate("quotes", frame, f"max {max_value}", when)[0].success

    assert run(10.0) is True
    first = len(writes)
    assert first > 0
    assert run(10.0) is True and len(writes) == first  # unchanged: not written again
    assert run(5.0) is False  # changed: the stored suite is replaced and used
    assert run(10.0) is True and len(writes) == 3 * first
