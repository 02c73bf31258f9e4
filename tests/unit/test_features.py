"""FEATURES_V1 and BARS_V1: batch == online, no look-ahead, descriptors, clean output."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hmmtrader.cli import run
from tests.conftest import BINANCE_SAMPLES
from tests.real_bars import real_bars
from trading.data.files import ingest_files
from trading.data.lake import Lake, day_start_ns
from trading.data.synthetic import generate
from trading.errors import InputError
from trading.features.bars import OnlineBarFeatures, bars_batch
from trading.features.descriptor import (
    METADATA_KEY,
    FeatureParams,
    FeatureSet,
    FeatureVersionError,
    bars_v1,
    features_v1,
)
from trading.features.store import compute_range, read_features, write_features
from trading.features.v1 import (
    OnlineFeatures,
    compute_batch,
    online_to_array,
    replay_online,
    step_ns,
)
from trading.settings import AppConfig

DAY = dt.date(2024, 1, 1)
# small windows so that the 46-second real sample has ready rows
SAMPLE_PARAMS = FeatureParams(
    grid_s=0.1,
    vol_window_s=1.0,
    flow_window_s=0.5,
    queue_halflife_s=0.5,
    autocorr_window_s=2.0,
    standardize_window_s=10.0,
    standardize_min_s=2.0,
    max_gap_s=5.0,
)
# short windows for synthetic hours (a full day with defaults is tested separately)
HOUR_PARAMS = FeatureParams(standardize_window_s=900.0, standardize_min_s=120.0)


def _synthetic(config: AppConfig, seconds: int | None, symbol: str = "BTCUSDT"):
    (day,) = generate(
        {symbol: config.symbol(symbol)}, DAY, 1, 7, config.settings.synthetic, seconds=seconds
    )
    return day


def _assert_parity(fs: FeatureSet, quotes, trades, funding=None, until_ns=0) -> np.ndarray:
    batch = compute_batch(fs, quotes, trades, funding, until_ns=until_ns).rows
    online = online_to_array(
        replay_online(OnlineFeatures(fs), quotes, trades, funding, until_ns), step_ns(fs)
    )
    assert online.shape == batch.shape
    assert np.array_equal(online[:, :2], batch[:, :2])  # same grid rows, same warm-up
    ready = batch[:, 1] == 1.0
    assert ready.sum() > 0
    diff = np.abs(online[ready, 2:] - batch[ready, 2:])
    assert float(diff.max()) <= 1e-9
    # not approximately: the same compiled code runs in both forms
    assert np.array_equal(online, batch, equal_nan=True)
    return batch


@pytest.fixture
def sample_lake(config: AppConfig, lake: Lake) -> Lake:
    ingest_files(
        config,
        lake,
        [BINANCE_SAMPLES / "btcusdt-quotes.parquet", BINANCE_SAMPLES / "btcusdt-trades.parquet"],
        "BTCUSDT",
    )
    return lake


def test_parity_on_real_samples(sample_lake: Lake) -> None:
    fs = features_v1(SAMPLE_PARAMS)
    quotes = sample_lake.read("BINANCE", "BTCUSDT", "quotes")
    trades = sample_lake.read("BINANCE", "BTCUSDT", "trades")
    until = int(quotes.column("ts_ns")[-1].as_py()) + 10**9
    batch = _assert_parity(fs, quotes, trades, until_ns=until)
    # 46 s of data on a 0.1 s grid
    assert 400 <= len(batch) <= 470
    assert (batch[:, 1] == 1.0).sum() > 300


def test_parity_on_a_synthetic_day(config: AppConfig) -> None:
    day = _synthetic(config, None)
    fs = features_v1()  # the defaults: 1 s grid, 75-minute standardization
    batch = _assert_parity(fs, day.quotes, day.trades, until_ns=day_start_ns(DAY) + 86_400 * 10**9)
    assert len(batch) == 86_400
    assert (batch[:, 1] == 1.0).sum() > 85_000


def test_parity_across_a_gap_and_with_funding(config: AppConfig) -> None:
    day = _synthetic(config, 3 * 3600)
    ts = day.quotes.column("ts_ns").to_numpy()
    cut_lo, cut_hi = ts[0] + 3600 * 10**9, ts[0] + 3600 * 10**9 + 600 * 10**9  # 10 minutes

    def cut(table: pa.Table) -> pa.Table:
        t = table.column("ts_ns")
        return table.filter(pc.or_(pc.less(t, cut_lo), pc.greater_equal(t, cut_hi)))

    funding = pa.table(
        {
            "ts_ns": np.array([ts[0] - 3600 * 10**9, ts[0] + 2 * 3600 * 10**9], dtype=np.int64),
            "rate": [0.0001, -0.00025],
        }
    )
    fs = features_v1(HOUR_PARAMS.model_copy(update={"funding": True}))
    result = compute_batch(fs, cut(day.quotes), cut(day.trades), funding)
    assert result.segments == 2
    batch = _assert_parity(fs, cut(day.quotes), cut(day.trades), funding)
    grid = step_ns(fs)
    stamps = batch[:, 0] * grid
    assert not ((stamps > cut_lo + 2 * grid) & (stamps < cut_hi)).any()  # nothing in the gap
    after = batch[stamps >= cut_hi]
    assert after[0, 1] == 0.0  # the warm-up starts again after the gap
    raw = {name: 2 + i for i, name in enumerate(fs.base)}
    rows = batch[batch[:, 1] == 1.0]
    assert np.all(rows[:, raw["time_to_funding_h"]] >= 0)
    late = rows[rows[:, 0] * grid >= ts[0] + 2 * 3600 * 10**9]
    assert np.allclose(late[:, raw["funding_rate_bp"]], -2.5)
    assert np.all(np.diff(late[:, raw["time_to_funding_h"]]) < 0)


def test_invalid_ticks_are_skipped_alike(config: AppConfig) -> None:
    day = _synthetic(config, 1800)
    bid = day.quotes.column("bid").to_numpy().copy()
    ask = day.quotes.column("ask").to_numpy().copy()
    bid[[100, 200, 300]] = np.nan
    ask[400] = bid[400] - 1.0  # crossed
    quotes = day.quotes.set_column(1, "bid", pa.array(bid)).set_column(2, "ask", pa.array(ask))
    fs = features_v1(HOUR_PARAMS)
    assert compute_batch(fs, quotes, day.trades).skipped == 4
    online = OnlineFeatures(fs)
    replay_online(online, quotes, day.trades)
    assert online.skipped == 4
    _assert_parity(fs, quotes, day.trades)


def test_no_look_ahead(config: AppConfig) -> None:
    day = _synthetic(config, 2 * 3600)
    fs = features_v1(HOUR_PARAMS)
    t_cut = int(day.quotes.column("ts_ns")[0].as_py()) + 5400 * 10**9 + 123_456_789
    before = compute_batch(fs, day.quotes, day.trades).rows

    def perturb_quotes(table: pa.Table) -> pa.Table:
        frame = table.to_pandas()
        late = frame["ts_ns"] > t_cut
        rng = np.random.default_rng(3)
        factor = 1 + rng.normal(0, 0.01, late.sum())
        frame.loc[late, "bid"] = frame.loc[late, "bid"] * factor
        frame.loc[late, "ask"] = frame.loc[late, "ask"] * factor + 5.0
        frame.loc[late, "bid_size"] = frame.loc[late, "bid_size"] * 7.0
        return pa.Table.from_pandas(frame, preserve_index=False)

    def perturb_trades(table: pa.Table) -> pa.Table:
        frame = table.to_pandas()
        late = frame["ts_ns"] > t_cut
        frame.loc[late, "aggressor_side"] = -frame.loc[late, "aggressor_side"]
        frame.loc[late, "qty"] = frame.loc[late, "qty"] * 13.0
        extra = frame[late].head(500).copy()
        extra["trade_id"] += 10**9
        merged = pd.concat([frame, extra]).sort_values("ts_ns", kind="stable")
        return pa.Table.from_pandas(merged, preserve_index=False)

    after = compute_batch(fs, perturb_quotes(day.quotes), perturb_trades(day.trades)).rows
    grid = step_ns(fs)
    upto = before[:, 0] * grid <= t_cut
    assert upto.sum() > 5000
    assert np.array_equal(before[upto], after[: upto.sum()], equal_nan=True)
    # and the change is visible right after t
    assert not np.array_equal(before[~upto][:10], after[upto.sum() : upto.sum() + 10])


def test_clean_synthetic_day_has_only_finite_features(config: AppConfig, lake: Lake) -> None:
    from trading.data.synthetic import ingest_synthetic

    ingest_synthetic(config, lake, ["ETHUSDT"], DAY, 1, 11)
    fs = features_v1(config.settings.features)
    result = compute_range(lake, "BINANCE", "ETHUSDT", DAY, DAY, fs)
    table = result.table
    assert table.num_rows > 85_000
    values = np.column_stack([table.column(c).to_numpy() for c in fs.columns + fs.raw_columns])
    assert np.isfinite(values).all()
    z = values[:, : len(fs.columns)]
    assert np.abs(z).max() <= fs.params["z_clip"]
    for name in ("raw_imbalance", "raw_sign_imbalance", "raw_signed_delta"):
        col = table.column(name).to_numpy()
        assert col.min() >= -1 and col.max() <= 1
    assert table.column("raw_spread_bp").to_numpy().min() > 0
    assert np.all(np.diff(table.column("ts_ns").to_numpy()) == 10**9)


def test_feature_files_round_trip_with_descriptor(config: AppConfig, lake: Lake) -> None:
    from trading.data.synthetic import ingest_synthetic

    ingest_synthetic(config, lake, ["BTCUSDT"], DAY, 1, 5)
    fs = features_v1(HOUR_PARAMS)
    result = compute_range(lake, "BINANCE", "BTCUSDT", DAY, DAY, fs)
    written = write_features(lake, "BINANCE", "BTCUSDT", result)
    assert [w.day for w in written] == [DAY]
    path = lake.path("BINANCE", "BTCUSDT", "features_v1", DAY)
    meta = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    assert meta["name"] == "FEATURES_V1" and meta["columns"] == fs.columns
    assert meta["hash"] == fs.hash and meta["params"]["standardize_window_s"] == 900.0

    table, found = read_features(lake, "BINANCE", "BTCUSDT", DAY, DAY, expected=fs)
    assert found == fs and found.hash == fs.hash
    assert table.equals(result.table)

    other = features_v1()  # default parameters: another version of the same set
    with pytest.raises(FeatureVersionError) as err:
        read_features(lake, "BINANCE", "BTCUSDT", DAY, DAY, expected=other)
    message = str(err.value)
    assert fs.version in message and other.version in message
    assert "standardize_window_s" in message
    with pytest.raises(FeatureVersionError, match="BARS_V1"):
        bars_v1().require(fs)

    # an edited descriptor is refused, and so is a file without one
    tampered = dict(meta, params=dict(meta["params"], z_clip=3.0))
    raw = pq.read_table(path)
    pq.write_table(raw.replace_schema_metadata({METADATA_KEY: json.dumps(tampered)}), path)
    with pytest.raises(FeatureVersionError, match="edited"):
        read_features(lake, "BINANCE", "BTCUSDT", DAY, DAY)
    pq.write_table(raw.replace_schema_metadata(None), path)
    with pytest.raises(FeatureVersionError, match="no feature-set descriptor"):
        read_features(lake, "BINANCE", "BTCUSDT", DAY, DAY)
    with pytest.raises(InputError, match="hmmtrader features"):
        read_features(
            lake, "BINANCE", "BTCUSDT", DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=1)
        )


def test_descriptor_hash_is_stable_and_parameter_sensitive() -> None:
    a, b = features_v1(), features_v1(FeatureParams())
    assert a.hash == b.hash and a.version.startswith("FEATURES_V1@")
    assert features_v1(FeatureParams(grid_s=2.0)).hash != a.hash
    assert FeatureSet.from_json(a.to_json()) == a
    assert features_v1(FeatureParams(funding=True)).columns[-2:] == [
        "time_to_funding_h",
        "funding_rate_bp",
    ]
    with pytest.raises(ValueError, match="shorter than grid_s"):
        FeatureParams(grid_s=5.0, flow_window_s=1.0)


def test_bars_batch_equals_online_and_has_no_look_ahead(config: AppConfig) -> None:
    (day,) = generate({"BTCUSDT": config.symbol("BTCUSDT")}, DAY, 1, 3, config.settings.synthetic)
    bars = day.bars
    fs = bars_v1()
    batch = bars_batch(bars, fs)
    online = OnlineBarFeatures(fs)
    rows = []
    for ts, h, low, c, v in zip(
        *(bars.column(n).to_pylist() for n in ("ts_ns", "high", "low", "close", "volume")),
        strict=True,
    ):
        rows.extend(online.on_bar(ts, h, low, c, v))
    assert np.array_equal(online_to_array(rows, step_ns(fs)), batch, equal_nan=True)
    ready = batch[batch[:, 1] == 1.0]
    assert len(ready) > 1000 and np.isfinite(ready).all()
    # row i (stamped at bar i's close) must not change when later bars change
    cut = 900
    changed = bars.set_column(
        bars.schema.get_field_index("close"),
        "close",
        pa.array(
            np.r_[
                bars.column("close").to_numpy()[:cut], bars.column("close").to_numpy()[cut:] * 1.05
            ]
        ),
    )
    after = bars_batch(changed, fs)
    assert np.array_equal(batch[:cut], after[:cut], equal_nan=True)
    assert not np.array_equal(batch[cut], after[cut], equal_nan=True)
    assert int(batch[0, 0]) * step_ns(fs) == bars.column("ts_ns")[0].as_py() + 60 * 10**9


def test_bars_batch_equals_online_on_real_bars() -> None:
    """Three days of the real BTCUSDT month: the online form row for row equals the batch."""
    frame = real_bars("BTCUSDT").iloc[: 3 * 1440]
    fs = bars_v1()
    bars = pa.table(
        {
            "ts_ns": frame["open_ms"].to_numpy(dtype=np.int64) * 1_000_000,
            **{c: frame[c].to_numpy(dtype=np.float64) for c in ("high", "low", "close", "volume")},
        }
    )
    batch = bars_batch(bars, fs)
    online = OnlineBarFeatures(fs)
    rows = []
    for ts, h, low, c, v in frame[["open_ms", "high", "low", "close", "volume"]].itertuples(
        index=False
    ):
        rows.extend(online.on_bar(int(ts) * 1_000_000, h, low, c, v))
    assert np.array_equal(online_to_array(rows, step_ns(fs)), batch, equal_nan=True)
    assert (batch[:, 1] == 1.0).sum() > 3 * 1440 - 400


def test_features_cli(config: AppConfig, home, capsys: pytest.CaptureFixture[str]) -> None:
    def features(*extra: str, symbol: str = "BTCUSDT", start: str = "2024-01-01") -> int:
        argv = ["features", "--symbols", symbol, "--start", start, "--end", "2024-01-01"]
        return run([*argv, *extra])

    assert run(["ingest", "synthetic", "--symbols", "BTCUSDT", "--start", "2024-01-01"]) == 0
    capsys.readouterr()
    assert features() == 0
    out = capsys.readouterr().out
    assert "FEATURES_V1@" in out and "86,400" in out
    assert Lake(home / "lake").days("BINANCE", "BTCUSDT", "features_v1") == [DAY]
    assert features("--set", "bars_v1") == 0
    assert Lake(home / "lake").days("BINANCE", "BTCUSDT", "bars_v1") == [DAY]

    assert features(symbol="ETHUSDT") == 1
    assert "no quotes for ETHUSDT" in capsys.readouterr().err
    assert features("--set", "nope") == 2
    assert "'nope' is not one of 'features_v1', 'bars_v1'" in capsys.readouterr().err
    assert features(start="2024-01-02") == 1
    assert "swap them" in capsys.readouterr().err


def test_independent_pandas_implementation_agrees(config: AppConfig) -> None:
    """The bench's pandas baseline, written separately, computes the same numbers."""
    from hmmtrader.bench.features import pandas_features

    day = _synthetic(config, 3 * 3600)
    fs = features_v1(HOUR_PARAMS)
    ours = compute_batch(fs, day.quotes, day.trades).rows
    base = pandas_features(day.quotes, day.trades, fs.params)
    skip = 900 + 400  # both standardization windows full
    n = min(len(ours), len(base))
    assert n > 10_000 - 200
    raw = base[list(fs.base)].to_numpy()[skip:n]
    assert np.allclose(ours[skip:n, 2 : 2 + len(fs.base)], raw, rtol=1e-9, atol=1e-9)
    z = base[[f"{c}_z" for c in fs.columns]].to_numpy()[skip:n]
    assert float(np.abs(ours[skip:n, 2 + len(fs.base) :] - z).max()) < 1e-6


def test_bench_features_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(["bench", "features", "--days", "1", "--repeats", "1", "--online-ticks", "20000"]) == 0
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["name"] == "features_v1_batch" and result["unit"] == "ticks/s"
    assert result["value"] > 0 and result["baseline"] > 0
    assert result["ratio"] == pytest.approx(result["value"] / result["baseline"], rel=0.01)
