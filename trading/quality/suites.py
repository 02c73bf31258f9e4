"""Great Expectations suites built from `QualitySettings` and the feature set.

Every expectation carries `meta={"check": name}` (a name of `trading.quality.checks`), so a
result maps back to a check and its severity. Where GX has no native expectation the suite
checks a column the gate derives before validation (see `trading.quality.frames`):
`gap_s` (seconds since the previous row, 0 on the first), `day_offset_s` (seconds since the
file's UTC midnight), for quotes `spread_bp`, and the price jumps `bid_jump`, `ask_jump`,
`mid_jump` (quotes), `price_jump` (trades) and `close_jump` (bars), for bars `gap_bars`
(bars missing before a bar) and `ohlc_ok`, and `coverage` (the day's share covered, the
same on every row).

Imports Great Expectations (about 6 s): import this module inside functions only.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations import Expectation
from jinja2.bccache import Bucket, BytecodeCache

from trading.data.schemas import SCHEMAS
from trading.env import disable_telemetry
from trading.features.descriptor import BARS_V1, FeatureSet, feature_kind
from trading.quality.checks import CHECKS
from trading.quality.frames import JUMP_PRICES, feature_bar_s
from trading.settings import QualitySettings

SUITE_NAMES: dict[str, str] = {
    "quotes": "raw_quotes",
    "trades": "raw_trades",
    "bars": "raw_bars",
    "features": "features_v1",  # of another feature set: its lake kind (`features_suite_name`)
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    kind: tuple(SCHEMAS[kind].names) for kind in ("quotes", "trades", "bars")
}
# Bars: every value must be present but these (a generic OHLCV file has none of them).
BAR_OPTIONAL = ("quote_volume", "n_trades", "taker_buy_volume")
BAR_PRICES = ("open", "high", "low", "close")
BAR_VOLUMES = ("volume", "quote_volume", "taker_buy_volume", "n_trades")
# Bounds of the raw feature values (min, max, min exclusive); the rest only must be finite.
RAW_FEATURE_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "raw_mid": (0.0, None, True),
    "raw_spread_bp": (0.0, None, False),
    "raw_imbalance": (-1.0, 1.0, False),
    "raw_sign_imbalance": (-1.0, 1.0, False),
    "raw_signed_delta": (-1.0, 1.0, False),
    "raw_rv_bp": (0.0, None, False),
}
# ... of BARS_V1 (raw_log_return_bp and raw_volume_z have no natural bound).
BAR_RAW_FEATURE_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "raw_parkinson_bp": (0.0, None, False),
    "raw_autocorr_1": (-1.0, 1.0, False),
}
FINITE_MAX = sys.float_info.max  # "between -FINITE_MAX and FINITE_MAX" rejects +-inf
SECONDS_PER_DAY = 86_400.0
_ID_NAMESPACE = uuid.UUID("5b0f3c64-2d55-4d0e-9c1e-6f1d4a7e8b21")


def _tag(check: str) -> dict[str, Any]:
    return {"meta": {"check": check}, "notes": f"{check}: {CHECKS[check][0]}"}


def _common(
    expectations: list[Expectation],
    columns: list[str],
    strict_ts: bool,
    gap: tuple[str, float],
    min_rows: int,
    max_rows: int,
    min_coverage: float,
) -> None:
    """Expectations every kind shares: columns, row count, order, day, gaps (`gap`: the
    derived column and its maximum), coverage."""
    expectations.append(
        gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=False, **_tag("schema"))
    )
    expectations.append(
        gxe.ExpectTableRowCountToBeBetween(
            min_value=min_rows, max_value=max_rows, **_tag("row_count")
        )
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeIncreasing(
            column="ts_ns", strictly=strict_ts, **_tag("timestamps_increasing")
        )
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="day_offset_s",
            min_value=0.0,
            max_value=SECONDS_PER_DAY,
            strict_max=True,
            **_tag("ts_in_day"),
        )
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeBetween(column=gap[0], max_value=gap[1], **_tag("gap"))
    )
    expectations.append(
        gxe.ExpectColumnMinToBeBetween(
            column="coverage", min_value=min_coverage, **_tag("coverage")
        )
    )


def _not_null(expectations: list[Expectation], columns: tuple[str, ...] | list[str]) -> None:
    for column in columns:
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column, **_tag("not_null")))


def _positive(expectations: list[Expectation], column: str, check: str) -> None:
    expectations.append(
        gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=0.0, strict_min=True, max_value=FINITE_MAX, **_tag(check)
        )
    )


def _jumps(expectations: list[Expectation], prices: tuple[str, ...], max_ratio: float) -> None:
    for price in prices:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=f"{price}_jump", max_value=max_ratio, **_tag("price_jump")
            )
        )


def quotes_suite(quality: QualitySettings) -> gx.ExpectationSuite:
    limits = quality.quotes
    expectations: list[Expectation] = []
    _common(
        expectations,
        list(REQUIRED_COLUMNS["quotes"]),
        quality.strict_quote_timestamps,
        ("gap_s", limits.max_gap_s),
        limits.min_rows,
        limits.max_rows,
        limits.min_coverage,
    )
    _not_null(expectations, REQUIRED_COLUMNS["quotes"])
    for column in ("bid", "ask"):
        _positive(expectations, column, "positive_price")
    for column in ("bid_size", "ask_size"):
        _positive(expectations, column, "positive_size")
    expectations.append(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="ask",
            column_B="bid",
            or_equal=False,
            ignore_row_if="either_value_is_missing",
            **_tag("crossed_book"),
        )
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="spread_bp", max_value=limits.max_spread_bp, **_tag("spread_range")
        )
    )
    _jumps(expectations, JUMP_PRICES["quotes"], limits.max_jump_ratio)
    return gx.ExpectationSuite(name=SUITE_NAMES["quotes"], expectations=expectations)


def trades_suite(quality: QualitySettings) -> gx.ExpectationSuite:
    limits = quality.trades
    expectations: list[Expectation] = []
    _common(
        expectations,
        list(REQUIRED_COLUMNS["trades"]),
        quality.strict_trade_timestamps,
        ("gap_s", limits.max_gap_s),
        limits.min_rows,
        limits.max_rows,
        limits.min_coverage,
    )
    _not_null(expectations, REQUIRED_COLUMNS["trades"])
    _positive(expectations, "price", "positive_price")
    _positive(expectations, "qty", "positive_size")
    expectations.append(
        gxe.ExpectColumnValuesToBeUnique(column="trade_id", **_tag("unique_trade_id"))
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeIncreasing(
            column="trade_id", strictly=True, **_tag("trade_id_increasing")
        )
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeInSet(
            column="aggressor_side", value_set=[-1, 0, 1], **_tag("aggressor_side_valid")
        )
    )
    _jumps(expectations, JUMP_PRICES["trades"], limits.max_jump_ratio)
    return gx.ExpectationSuite(name=SUITE_NAMES["trades"], expectations=expectations)


def bars_suite(quality: QualitySettings) -> gx.ExpectationSuite:
    """1-minute bars: open times strictly increasing and unique, no more than max_gap_bars
    missing in a row, OHLC consistent, prices > 0, volumes >= 0, no close jump."""
    limits = quality.bars
    expectations: list[Expectation] = []
    _common(
        expectations,
        list(REQUIRED_COLUMNS["bars"]),
        True,
        ("gap_bars", float(limits.max_gap_bars)),
        limits.min_rows,
        limits.max_rows,
        limits.min_coverage,
    )
    expectations.append(gxe.ExpectColumnValuesToBeUnique(column="ts_ns", **_tag("unique_ts")))
    _not_null(expectations, [c for c in REQUIRED_COLUMNS["bars"] if c not in BAR_OPTIONAL])
    for column in BAR_PRICES:
        _positive(expectations, column, "positive_price")
    for column in BAR_VOLUMES:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=0.0, max_value=FINITE_MAX, **_tag("non_negative_volume")
            )
        )
    expectations.append(
        gxe.ExpectColumnValuesToBeInSet(
            column="ohlc_ok", value_set=[True], **_tag("ohlc_consistent")
        )
    )
    _jumps(expectations, JUMP_PRICES["bars"], limits.max_jump_ratio)
    return gx.ExpectationSuite(name=SUITE_NAMES["bars"], expectations=expectations)


def features_suite_name(feature_set: FeatureSet) -> str:
    """features_v1 for FEATURES_V1, else the set's lake kind (bars_v1): results and Data
    Docs of two feature sets never mix."""
    return feature_kind(feature_set) if feature_set.name == BARS_V1 else SUITE_NAMES["features"]


def feature_gap_s(quality: QualitySettings, feature_set: FeatureSet) -> float:
    """The longest step between two feature rows: features.max_gap_s on the tick grid;
    for BARS_V1 (a row per bar) bars.max_gap_bars missing bars, as for the bars."""
    bar_s = feature_bar_s(feature_set)
    if bar_s is None:
        return quality.features.max_gap_s
    return bar_s * (quality.bars.max_gap_bars + 1)


def features_suite(quality: QualitySettings, feature_set: FeatureSet) -> gx.ExpectationSuite:
    """The feature files of `feature_set`: values finite, z values within +-z_clip, raw
    values within their ranges, rows increasing and no longer apart than `feature_gap_s`;
    coverage against features.min_coverage (BARS_V1: bars present / bars expected)."""
    limits = quality.features
    z_clip = float(feature_set.params["z_clip"])
    values = feature_set.columns + feature_set.raw_columns
    ranges = BAR_RAW_FEATURE_RANGES if feature_set.name == BARS_V1 else RAW_FEATURE_RANGES
    expectations: list[Expectation] = []
    _common(
        expectations,
        ["ts_ns", *values],
        True,
        ("gap_s", feature_gap_s(quality, feature_set)),
        limits.min_rows,
        limits.max_rows,
        limits.min_coverage,
    )
    _not_null(expectations, ["ts_ns"])
    # NaN is "missing" to GX (not-null catches it); +-inf is not, so a finite range does.
    for column in values:
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(column=column, **_tag("feature_finite"))
        )
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=-FINITE_MAX, max_value=FINITE_MAX, **_tag("feature_finite")
            )
        )
    for column in feature_set.columns:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=-z_clip, max_value=z_clip, **_tag("feature_range")
            )
        )
    for column in feature_set.raw_columns:
        if column not in ranges:
            continue
        low, high, exclusive = ranges[column]
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=low,
                max_value=high,
                strict_min=exclusive,
                **_tag("feature_range"),
            )
        )
    return gx.ExpectationSuite(name=features_suite_name(feature_set), expectations=expectations)


def build_suites(
    quality: QualitySettings, feature_set: FeatureSet
) -> dict[str, gx.ExpectationSuite]:
    """Gate kind (quotes, trades, bars, features) -> its suite."""
    return {
        "quotes": quotes_suite(quality),
        "trades": trades_suite(quality),
        "bars": bars_suite(quality),
        "features": features_suite(quality, feature_set),
    }


def open_project(project_root: Path) -> Any:
    """A file-mode GX project at `project_root/gx` (created if absent), progress bars off."""
    disable_telemetry()
    _share_compiled_templates()
    project_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=project_root)
    bars = context.variables.progress_bars  # a dict when read back from the YAML
    flags = dict(bars) if isinstance(bars, dict) else vars(bars) if bars is not None else {}
    if flags.get("globally", True) or flags.get("metric_calculations", True):
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        context.variables.save()
    return context


class _CompiledTemplates(BytecodeCache):
    """Jinja's bytecode cache in memory: every Data Docs view of this process shares the
    templates' compiled code (a bucket checks its template's source checksum)."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()

    def clear(self) -> None:
        self._code.clear()


_TEMPLATES = _CompiledTemplates()


def _share_compiled_templates() -> None:
    """GX builds a new Jinja environment for every view it makes (one per site section and
    one for the index, on every docs build), and each compiled the same templates again:
    about two thirds of a docs build here. A shared bytecode cache compiles each template
    once per process."""
    from great_expectations.render.view.view import DefaultJinjaView

    init = DefaultJinjaView.__init__
    if getattr(init, "_shares_templates", False):
        return

    # GX passes a view only the arguments its __init__ names (getfullargspec): the wrapper
    # names the same ones, so custom styles and views still reach it
    def shared_init(
        self: Any, custom_styles_directory: Any = None, custom_views_directory: Any = None
    ) -> None:
        init(self, custom_styles_directory, custom_views_directory)
        self.env.bytecode_cache = _TEMPLATES

    shared_init._shares_templates = True  # type: ignore[attr-defined]
    DefaultJinjaView.__init__ = shared_init  # type: ignore[method-assign]


def _stable_id(*parts: Any) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, json.dumps(parts, sort_keys=True, default=str)))


def save_with_stable_ids(context: Any, suite: gx.ExpectationSuite) -> None:
    """Store `suite` with ids derived from its content, so regenerating changes no byte."""
    context.suites.add_or_update(suite)
    stored = context.suites.get(suite.name)
    stored.id = _stable_id(suite.name)
    for index, expectation in enumerate(stored.expectations):
        config = expectation.configuration
        expectation.id = _stable_id(suite.name, index, config.type, config.kwargs, config.meta)
    store = context.expectations_store
    store.update(key=store.get_key(name=stored.name, id=stored.id), value=stored)


def export_project(
    project_root: Path, quality: QualitySettings, feature_set: FeatureSet
) -> list[Path]:
    """Write the suites into the GX project at `project_root/gx`; drop suites not ours.

    Returns the suite JSON files. Re-exporting unchanged settings rewrites identical files.
    """
    context = open_project(project_root)
    suites = build_suites(quality, feature_set)
    names = {suite.name for suite in suites.values()}
    for suite in suites.values():
        save_with_stable_ids(context, suite)
    for stale in [s.name for s in context.suites.all() if s.name not in names]:
        context.suites.delete(stale)
    return [suite_path(project_root, suite.name) for suite in suites.values()]


def suite_path(project_root: Path, suite_name: str) -> Path:
    return project_root / "gx" / "expectations" / f"{suite_name}.json"
