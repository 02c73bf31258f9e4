"""Online filter streams: history replay on take-over, bounds, bad rows; the wire's step
object round-trips the kernel output exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.regime_fixtures import fast_settings, fitted_model, synthetic_dataset
from trading.regime.model import FeatureInputError, RegimeModel
from trading.regime.streams import ModelStreams, StreamHistory
from trading.strategy.inference import InProcessInference
from trading.strategy.remote import kernel_row, step_out

SECONDS = 6 * 3600


@pytest.fixture(scope="module")
def models() -> tuple[RegimeModel, RegimeModel, np.ndarray, np.ndarray]:
    a, _ = fitted_model(seconds=SECONDS, settings=fast_settings(k_min=4, k_max=4))
    b, _ = fitted_model(seconds=SECONDS, settings=fast_settings(k_min=3, k_max=3))
    data, _ = synthetic_dataset(seconds=SECONDS)
    ts, x = data.frames["BTCUSDT"]
    return a, b, ts, x


def run(streams: ModelStreams, key: str, ts: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.array([streams.step(key, x[i], int(ts[i])).copy() for i in range(len(ts))])


def test_take_over_replays_history(
    models: tuple[RegimeModel, RegimeModel, np.ndarray, np.ndarray],
) -> None:
    a, b, ts, x = models
    n, k = 900, 500
    history = StreamHistory(capacity=1_000)
    first = ModelStreams(a, history)
    run(first, "s", ts[:k], x[:k])
    second = ModelStreams(b, history)  # takes over the stream at row k
    got = run(second, "s", ts[k:n], x[k:n])
    want = run(ModelStreams(b, StreamHistory(0)), "s", ts[:n], x[:n])[k:]
    assert np.array_equal(got, want)  # as if b had seen the stream from its start


def test_take_over_with_a_short_history_replays_its_last_rows(
    models: tuple[RegimeModel, RegimeModel, np.ndarray, np.ndarray],
) -> None:
    a, b, ts, x = models
    k, cap = 700, 200
    history = StreamHistory(capacity=cap)
    run(ModelStreams(a, history), "s", ts[:k], x[:k])
    rows, stamps = history.rows("s") or (None, None)
    assert rows is not None and stamps is not None
    assert np.array_equal(stamps, ts[k - cap : k]) and np.array_equal(rows, x[k - cap : k])
    got = ModelStreams(b, history).step("s", x[k], int(ts[k])).copy()
    want = run(ModelStreams(b, StreamHistory(0)), "s", ts[k - cap : k + 1], x[k - cap : k + 1])
    assert np.array_equal(got, want[-1])


def test_streams_are_independent_and_bounded(
    models: tuple[RegimeModel, RegimeModel, np.ndarray, np.ndarray],
) -> None:
    a, _, ts, x = models
    history = StreamHistory(capacity=50, max_streams=2)
    streams = ModelStreams(a, history)
    alone = run(ModelStreams(a, StreamHistory(0)), "z", ts[:30], x[:30])
    for i in range(30):  # three interleaved streams: each equals its own run
        for key in ("p", "q"):
            assert np.array_equal(streams.step(key, x[i], int(ts[i])), alone[i])
    streams.step("r", x[0], int(ts[0]))
    assert history.keys() == ["q", "r"] and len(streams) == 2  # "p" was least recent


def test_bad_row_raises_and_leaves_the_stream_unchanged(
    models: tuple[RegimeModel, RegimeModel, np.ndarray, np.ndarray],
) -> None:
    a, _, ts, x = models
    history = StreamHistory(capacity=10)
    streams = ModelStreams(a, history)
    run(streams, "s", ts[:5], x[:5])
    bad = x[5].copy()
    bad[2] = np.nan
    with pytest.raises(FeatureInputError, match="non-finite"):
        streams.step("s", bad, int(ts[5]))
    with pytest.raises(FeatureInputError, match="columns"):
        streams.step("s", x[5][:-1], int(ts[5]))
    rows = history.rows("s")
    assert rows is not None and len(rows[1]) == 5
    got = streams.step("s", x[5], int(ts[5])).copy()
    assert np.array_equal(got, run(ModelStreams(a, StreamHistory(0)), "s", ts[:6], x[:6])[-1])


def test_in_process_inference_takes_over_with_a_history(
    models: tuple[RegimeModel, RegimeModel, np.ndarray, np.ndarray],
) -> None:
    a, b, ts, x = models
    old = InProcessInference(a, 1, StreamHistory(capacity=3_600))
    for i in range(300):
        old.step("BTCUSDT", x[i], int(ts[i]))
    new = InProcessInference(b, 2, old.history)
    fresh = InProcessInference(b, 2)
    for i in range(300):
        fresh.step("BTCUSDT", x[i], int(ts[i]))
    for i in range(300, 320):
        assert np.array_equal(
            new.step("BTCUSDT", x[i], int(ts[i])), fresh.step("BTCUSDT", x[i], int(ts[i]))
        )


def test_wire_step_round_trips_exactly(
    models: tuple[RegimeModel, RegimeModel, np.ndarray, np.ndarray],
) -> None:
    a, _, ts, x = models
    out = a.predict_array(x[:200], ts[:200])
    for i in range(len(out)):
        wire = json.loads(json.dumps(step_out(out[i], int(ts[i]))))
        assert wire["ts_ns"] == int(ts[i])
        assert np.array_equal(kernel_row(wire), out[i])


def test_model_slots_swap_keeps_the_replaced_version_as_standby(
    models: tuple[RegimeModel, RegimeModel, np.ndarray, np.ndarray],
) -> None:
    from trading.regime.slots import LoadedModel, ModelSlots

    a, b, ts, x = models
    history = StreamHistory(capacity=1_000)
    one = LoadedModel("m", 1, a, ModelStreams(a, history))
    two = LoadedModel("m", 2, b, ModelStreams(b, history))
    slots = ModelSlots()
    assert slots.swap(one) is None and (slots.active, slots.standby) == (one, None)
    run(one.streams, "s", ts[:300], x[:300])
    assert slots.swap(two) is one and (slots.active, slots.standby) == (two, one)
    assert slots.find(1) is one and slots.find(2) is two and slots.find(3) is None
    # back to version 1 from the standby: its streams are rebuilt from the shared history,
    # so it answers as a fresh model that saw the stream from the start
    assert slots.swap(one) is two and (slots.active, slots.standby) == (one, two)
    fresh = ModelStreams(a, StreamHistory(0))
    expected = run(fresh, "s", ts[:301], x[:301])[-1]
    assert np.array_equal(one.streams.step("s", x[300], int(ts[300])), expected)
