"""The inference server's app in process, serving a real fitted model, against what
clients can send: any number of symbols (bounded metrics and memory), large requests
(computed off the event loop, at most serving.infer_threads at once), rows the model never
saw (flagged, HOLD with confidence 0), timestamps that go back in a stream (409, nothing
changed), and bodies at the edges of the published schema (the server agrees with it),
slow bodies (408) and wrong methods (405 with Allow)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from serving.inference.app import ModelServer, create_app
from tests.regime_fixtures import fast_settings, fitted_model, synthetic_dataset
from trading.regime import kernel
from trading.regime.model import RegimeModel
from trading.regime.pyfunc import predict_frame
from trading.regime.slots import LoadedModel
from trading.regime.streams import ModelStreams, StreamHistory, StreamOrderError
from trading.settings import AppConfig
from trading.strategy.inference import InProcessInference
from trading.strategy.remote import InferRequest, PromoteRequest, steps_out

SECONDS = 6 * 3600  # the model tests/unit/test_streams.py uses too (fitted once per run)
FLAGGED = [False, True, True, True, True, False]  # the rows made out of distribution below


@pytest.fixture(scope="module")
def fitted() -> tuple[RegimeModel, np.ndarray, np.ndarray]:
    model, _ = fitted_model(seconds=SECONDS, settings=fast_settings(k_min=4, k_max=4))
    data, _ = synthetic_dataset(seconds=SECONDS)
    ts, x = data.frames["BTCUSDT"]
    return model, ts, x


def served(
    config: AppConfig, model: RegimeModel, **serving: Any
) -> tuple[FastAPI, ModelServer, LoadedModel]:
    """The app with `model` active as version 1 (no registry needed) and `serving`
    settings changed."""
    section = config.settings.serving.model_copy(update=serving)
    settings = config.settings.model_copy(update={"serving": section})
    config = config.model_copy(update={"settings": settings})
    server = ModelServer(config)
    loaded = LoadedModel("hmm-regime", 1, model, ModelStreams(model, server.history))
    server._set_active(loaded)
    return create_app(config, server), server, loaded


def body(model: RegimeModel, rows: np.ndarray, ts: np.ndarray, **changes: Any) -> dict[str, Any]:
    out = {
        "symbol": "BTCUSDT",
        "feature_version": model.feature_set.version,
        "rows": np.asarray(rows).tolist(),
        "ts_ns": [int(t) for t in ts],
        "mode": "window",
    }
    out.update(changes)
    return out


def drift_labels(text: str) -> set[str]:
    return {
        s.labels["symbol"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "drift_score"
    }


# ---- 9: bounded label values and stream state -------------------------------------------
def test_distinct_symbols_get_no_series_or_memory_of_their_own(
    config: AppConfig, fitted: tuple[RegimeModel, np.ndarray, np.ndarray]
) -> None:
    model, ts, x = fitted
    app, server, loaded = served(config, model, max_streams=64)
    stream = {"mode": "stream", "session": "probe"}
    with TestClient(app) as client:
        for extra in (stream, {"symbol": "S0"}):
            assert (
                client.post("/infer", json=body(model, x[:1], ts[:1], **extra)).status_code == 200
            )
        client.get("/metrics")  # /metrics' own series exist from here on
        first = client.get("/metrics").text
        for i in range(1, 2_000):  # what POST /infer runs, without the HTTP round trips
            req = InferRequest(**body(model, x[:1], ts[:1], symbol=f"S{i}", **stream))
            assert len(server.infer(req)["steps"]) == 1
        r = client.post("/infer", json=body(model, x[:1], ts[:1], symbol="S2000", **stream))
        assert r.status_code == 200, r.text
        after = client.get("/metrics").text
    assert drift_labels(after) == {"BTCUSDT", "other"}  # configs/symbols.yaml, plus the rest
    assert abs(len(after) - len(first)) < 200, (len(first), len(after))  # counters' digits only
    # stream state: at most serving.max_streams streams, each a few rows' worth of memory
    assert len(server.history) == len(loaded.streams) == 64
    ring_bytes = sum(r.rows.nbytes + r.ts.nbytes for r in server.history._rings.values())
    assert ring_bytes <= 64 * 64 * (x.shape[1] + 1) * 8


# ---- 10: computing off the event loop, bounded ------------------------------------------
def test_infer_computes_off_the_event_loop_and_refuses_beyond_its_queue(
    config: AppConfig, fitted: tuple[RegimeModel, np.ndarray, np.ndarray]
) -> None:
    model, ts, x = fitted
    app, server, _ = served(config, model, infer_threads=1, infer_queue=1)
    started, release = threading.Event(), threading.Event()
    real_infer = server.infer

    def slow_infer(req: Any) -> dict[str, Any]:  # a model that takes as long as we say
        started.set()
        release.wait(5)
        return real_infer(req)

    server.infer = slow_infer  # type: ignore[method-assign]
    payload = body(model, x[:4], ts[:4])

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.post("/infer", json=payload))
            assert await asyncio.to_thread(started.wait, 5)
            health = await client.get("/health")  # answered while the model computes
            assert health.json() == {"status": "ok"}
            assert not first.done(), "/health waited for /infer: it computes on the loop"
            second = asyncio.create_task(client.post("/infer", json=payload))  # waits
            await asyncio.sleep(0.05)
            busy = await client.post("/infer", json=payload)  # one computing, one waiting
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
            assert "serving.infer_queue" in busy.json()["detail"]
            release.set()
            for task in (first, second):
                r = await task
                assert r.status_code == 200 and len(r.json()["steps"]) == 4, r.text

    asyncio.run(asyncio.wait_for(scenario(), 30))


# ---- 11: out-of-distribution rows --------------------------------------------------------
def test_rows_beyond_the_training_range_are_flagged_hold_with_no_confidence(
    config: AppConfig, fitted: tuple[RegimeModel, np.ndarray, np.ndarray]
) -> None:
    model, ts, x = fitted
    batch = model.predict_array(x, ts)
    assert not batch[:, kernel.OUT_OOD].any()  # no training row is out of distribution
    assert model.ood_bound() == model.feature_set.params["z_clip"] == 10.0
    app, _, _ = served(config, model)
    rows = x[100:106].copy()
    rows[1, :] = 50.0  # every column
    rows[2, :] = 1e308
    rows[3, 0] = -10.5  # one standardized column just beyond z_clip
    rows[4, model.columns.index("raw_spread_bp")] = 1e6  # an HMM input, log() then z > 10
    with TestClient(app) as client:
        for mode in ("window", "stream"):
            r = client.post("/infer", json=body(model, rows, ts[100:106], mode=mode))
            assert r.status_code == 200, r.text
            steps = r.json()["steps"]
            assert [s["out_of_distribution"] for s in steps] == FLAGGED
            for s in steps[1:5]:
                assert (s["action"], s["confidence"], s["exp_edge_bp"]) == ("HOLD", 0.0, 0.0)
            assert np.isfinite([s["posterior"] for s in steps]).all()
            assert abs(sum(steps[5]["posterior"]) - 1.0) < 1e-9  # the filter carries on
        metrics = client.get("/metrics").text
        assert "hmmtrader_inference_out_of_distribution_rows_total 8.0" in metrics
        nan = b'{"symbol":"BTCUSDT","feature_version":"x","rows":[[NaN]],"ts_ns":[1]}'
        r = client.post("/infer", content=nan, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "finite" in r.text
    # the node's in-process inference shares the kernel: the same answer
    local = InProcessInference(model, 1)
    out = [local.step("BTCUSDT", rows[i], int(ts[100 + i])).copy() for i in range(6)]
    assert [bool(o[kernel.OUT_OOD]) for o in out] == FLAGGED
    assert all(o[kernel.OUT_ACTION] == 0 and o[kernel.OUT_CONFIDENCE] == 0 for o in out[1:5])
    frame = predict_frame(model, _frame(model, rows, ts[100:106]))
    assert frame["out_of_distribution"].tolist() == FLAGGED


def _frame(model: RegimeModel, rows: np.ndarray, ts: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=model.columns)
    frame["ts_ns"] = ts
    return frame


def test_the_out_of_distribution_bound_is_configurable(
    config: AppConfig, fitted: tuple[RegimeModel, np.ndarray, np.ndarray]
) -> None:
    model, ts, x = fitted
    rows = x[:2].copy()
    rows[1, 0] = 50.0
    app, _, _ = served(config, model, max_abs_z=100.0)
    with TestClient(app) as client:
        steps = client.post("/infer", json=body(model, rows, ts[:2])).json()["steps"]
    assert [s["out_of_distribution"] for s in steps] == [False, False]


# ---- 12: streams only move forward ------------------------------------------------------
def test_a_stream_refuses_timestamps_that_go_back_and_stays_unchanged(
    config: AppConfig, fitted: tuple[RegimeModel, np.ndarray, np.ndarray]
) -> None:
    model, ts, x = fitted
    app, _, _ = served(config, model)
    want = _fresh_steps(model, ts[:6], x[:6])
    stream = {"mode": "stream", "session": "order"}
    with TestClient(app) as client:

        def post(i: int, j: int, **extra: Any) -> httpx.Response:
            return client.post("/infer", json=body(model, x[i:j], ts[i:j], **stream, **extra))

        assert post(0, 3).json()["steps"] == want[:3]
        back = post(1, 2)
        assert back.status_code == 409, back.text
        assert f"not after this stream's last step {int(ts[2])}" in back.json()["detail"]
        assert back.json()["loc"] == ["body", "ts_ns", 0]
        assert post(2, 3).status_code == 409  # the same step again
        assert post(3, 6).json()["steps"] == want[3:6]  # as if the refused ones never came
        restarted = post(0, 2, reset=True)
        assert restarted.json()["steps"] == want[:2]
        metrics = client.get("/metrics").text
        assert 'hmmtrader_inference_errors_total{reason="stream_order"} 2.0' in metrics


def _fresh_steps(model: RegimeModel, ts: np.ndarray, x: np.ndarray) -> list[dict[str, Any]]:
    out = ModelStreams(model, StreamHistory(0)).run("fresh", x, ts)
    return steps_out(out, ts)


def test_model_streams_run_checks_the_order_under_the_history_lock(
    fitted: tuple[RegimeModel, np.ndarray, np.ndarray],
) -> None:
    model, ts, x = fitted
    history = StreamHistory(capacity=100)
    streams = ModelStreams(model, history)
    streams.run("s", x[:5], ts[:5])
    with pytest.raises(StreamOrderError, match="only moves forward"):
        streams.run("s", x[4:6], ts[4:6])
    assert streams.last_ts("s") == int(ts[4]) and len(history.rows("s")[1]) == 5  # type: ignore[index]
    # a model taking the stream over (no filter yet) knows its last step from the history
    assert ModelStreams(model, history).last_ts("s") == int(ts[4])
    streams.forget("s")
    assert streams.last_ts("s") is None and history.rows("s") is None
    # rings grow with the rows they hold, up to the history's capacity
    streams.run("t", x[:100], ts[:100])
    held = history.rows("t")
    assert held is not None and np.array_equal(held[0], x[:100])
    assert np.array_equal(held[1], ts[:100])
    streams.step("t", x[100], int(ts[100]))
    assert np.array_equal(history.rows("t")[0], x[1:101])  # type: ignore[index]


# ---- 13: the published schema, slow bodies, 405 -----------------------------------------
def test_the_schema_states_what_the_server_checks(
    config: AppConfig, fitted: tuple[RegimeModel, np.ndarray, np.ndarray]
) -> None:
    model, ts, x = fitted
    app, _, _ = served(config, model, max_batch_rows=8)
    width = len(model.columns)
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
        schemas = spec["components"]["schemas"]
        op = spec["paths"]["/infer"]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/InferRequest"
        }
        assert {"408", "409", "413", "422", "503"} <= set(op["responses"])
        infer = schemas["InferRequest"]
        rows = infer["properties"]["rows"]
        assert rows["maxItems"] == infer["properties"]["ts_ns"]["maxItems"] == 8
        assert rows["items"]["minItems"] == rows["items"]["maxItems"] == width
        assert infer["properties"]["feature_version"]["enum"] == [model.feature_set.version]
        validator = Draft202012Validator(infer)

        ok = body(model, x[:2], ts[:2])
        cases: dict[str, dict[str, Any]] = {
            "ok": ok,
            "integral float timestamps": {**ok, "ts_ns": [float(t) for t in ts[:2]]},
            "max rows": body(model, x[:8], ts[:8]),
            "one row too many": body(model, x[:9], ts[:9]),
            "a short row": {**ok, "rows": [x[0].tolist()[:-1], x[1].tolist()]},
            "a long row": {**ok, "rows": [[*x[0].tolist(), 1.0], x[1].tolist()]},
            "another feature version": {**ok, "feature_version": "FEATURES_V1@0000"},
            "the columns": {**ok, "columns": model.columns},
            "no columns": {**ok, "columns": None},
            "reversed columns": {**ok, "columns": model.columns[::-1]},
            "a lower-case symbol": {**ok, "symbol": "btc"},
            "another symbol": {**ok, "symbol": "SOL2"},
            "a bad session": {**ok, "session": "a b"},
            "an unknown mode": {**ok, "mode": "later"},
            "an extra field": {**ok, "extra": 1},
            "a fractional timestamp": {**ok, "ts_ns": [int(ts[0]), float(ts[1]) + 0.5]},
            "a negative timestamp": {**ok, "ts_ns": [-1, int(ts[1])]},
            "no rows": {**ok, "rows": [], "ts_ns": []},
            "a stream restart": {**ok, "mode": "stream", "reset": True},
        }
        for name, case in cases.items():
            r = client.post("/infer", json=case)
            valid = validator.is_valid(case)
            assert (r.status_code == 200) == valid, (name, valid, r.status_code, r.text)
            assert r.status_code in (200, 422), (name, r.text)

    promote = Draft202012Validator(schemas["PromoteRequest"])
    promotions: list[tuple[dict[str, Any], bool]] = [
        ({"version": 2.0}, True),  # 2.0 is the integer 2 in JSON
        ({"version": 2, "force": True, "reason": "canary skipped: hotfix"}, True),
        ({"version": 2, "force": True}, False),
        ({"version": 2, "force": True, "reason": " \t"}, False),
        ({"version": 2, "force": False, "reason": ""}, True),
    ]
    for promotion, allowed in promotions:  # the schema and the server's rule agree
        assert promote.is_valid(promotion) == allowed, promotion
        refused = PromoteRequest.model_validate(promotion).forced_without_reason()
        assert refused == (not allowed), promotion


def test_a_slow_body_gets_408_and_the_connection_closes(config: AppConfig) -> None:
    settings = config.settings.model_copy(
        update={"serving": config.settings.serving.model_copy(update={"body_timeout_s": 0.3})}
    )
    app = create_app(config.model_copy(update={"settings": settings}))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not sent:
            sent.append({"type": "first chunk"})
            return {"type": "http.request", "body": b'{"symbol": "BTC', "more_body": True}
        await asyncio.sleep(3600)  # the rest never comes
        raise AssertionError("unreachable")

    messages: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/infer", "raw_path": b"/infer", "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8010), "client": ("127.0.0.1", 5000),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }  # fmt: skip
    began = time.monotonic()
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    assert time.monotonic() - began < 3
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert start["status"] == 408 and headers["connection"] == "close", messages
    assert b"serving.body_timeout_s" in b"".join(m.get("body", b"") for m in messages)


def test_wrong_methods_get_405_with_allow(config: AppConfig) -> None:
    with TestClient(create_app(config)) as client:
        r = client.get("/infer")
        assert r.status_code == 405 and r.headers["allow"] == "POST", r.headers
        r = client.post("/health")
        assert r.status_code == 405 and r.headers["allow"] == "GET", r.headers
