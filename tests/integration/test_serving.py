"""The inference server as a real `hmmtrader serve` process on 127.0.0.1 against a real
registry (MLflow on SQLite) holding real fitted versions: load, infer, promote, rollback,
hot swap on alias change (also under load), a broken version that is never activated,
auth, validation, metrics, and in-process vs HTTP parity."""

from __future__ import annotations

import itertools
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.integration.cli_env import isolated_env
from tests.integration.processes import HMMTRADER
from tests.integration.serving_env import (
    TOKEN,
    InferenceServer,
    broken,
    model_and_rows,
    register,
    registry_at,
    server,
    server_env,
)
from tests.integration.worlds import served_home
from trading.regime import kernel
from trading.regime.pyfunc import predict_frame
from trading.regime.registry import TAG_FLOORS, Registry, RegistryError
from trading.strategy.inference import InProcessInference
from trading.strategy.remote import RemoteInference, ServingClient, ServingError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_ROWS = 64  # the test server's serving.max_batch_rows
MAX_BODY = 262_144  # and serving.max_body_bytes


@dataclass
class Stack:
    home: Path
    registry: Registry
    server: InferenceServer
    ts: np.ndarray
    X: np.ndarray
    feature_version: str


@pytest.fixture(scope="module", autouse=True)
def _env() -> Iterator[None]:
    with isolated_env({}):
        yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """v1 (4 states) = production, v2 (3 states), v3 broken (NaN means); one server."""
    root = tmp_path_factory.mktemp("serving")
    home = served_home(root / "home")  # v1 (k=4, production) and v2 (k=3)
    m4, ts, X = model_and_rows(4)
    registry = registry_at(home)
    assert register(registry, broken(m4), ts, X, "broken") == 3
    assert registry.aliases()["production"] == 1
    srv = server(
        home,
        root / "server.log",
        {
            "HMMTRADER_SERVING__MAX_BATCH_ROWS": str(MAX_ROWS),
            "HMMTRADER_SERVING__MAX_BODY_BYTES": str(MAX_BODY),
        },
    ).start()
    try:
        ready = srv.wait_ready(1)
        yield Stack(home, registry, srv, ts, X, ready["info"]["feature_version"])
    finally:
        srv.stop()


def in_process(stack: Stack, version: int) -> InProcessInference:
    model, v = stack.registry.load(version)
    return InProcessInference(model, v)


def promote_and_wait(stack: Stack, version: int) -> None:
    stack.registry.promote(version, force=True, reason="test")
    stack.server.wait_ready(version, timeout_s=30)


# ---- parity: in process and over HTTP --------------------------------------------------
def test_same_outputs_in_process_and_over_http(stack: Stack) -> None:
    promote_and_wait(stack, 1)
    local = in_process(stack, 1)
    with ServingClient(stack.server.url) as client:
        remote = RemoteInference(client, session=f"parity-{uuid.uuid4().hex[:8]}")
        assert (remote.version, remote.n_states, remote.horizon_s) == (
            "1",
            local.n_states,
            local.horizon_s,
        )
        assert remote.feature_set.version == local.feature_set.version
        n = 1_500
        eth = stack.X[::-1]  # a second symbol's stream, interleaved with the first
        for i in range(n):
            for symbol, rows in (("BTCUSDT", stack.X), ("ETHUSDT", eth)):
                want = local.step(symbol, rows[i], int(stack.ts[i])).copy()
                got = remote.step(symbol, rows[i], int(stack.ts[i]))
                assert np.array_equal(got, want), (symbol, i, got, want)
        # a window (with a hole: the filter restarts there) equals the registry pyfunc
        idx = np.r_[0:40, 100:124]
        body = client.infer(
            "BTCUSDT", stack.X[idx], stack.ts[idx],
            feature_version=stack.feature_version, mode="window",
        )  # fmt: skip
    frame = pd.DataFrame(stack.X[idx], columns=local.model.columns)
    frame["ts_ns"] = stack.ts[idx]
    want_frame = predict_frame(local.model, frame)
    got_frame = pd.DataFrame(
        [{**{k: v for k, v in s.items() if k != "posterior"},
          **{f"posterior_{k}": p for k, p in enumerate(s["posterior"])}} for s in body["steps"]]
    )  # fmt: skip
    assert body["version"] == 1 and len(got_frame) == len(idx)
    for column in want_frame.columns:
        assert (got_frame[column].to_numpy() == want_frame[column].to_numpy()).all(), column


# ---- the model lifecycle through the server ---------------------------------------------
def test_load_promote_rollback_hot_swap_and_broken_version(stack: Stack) -> None:
    promote_and_wait(stack, 1)
    url, reg = stack.server.url, stack.registry
    with ServingClient(url, token=TOKEN) as client:
        models = client.models()
        assert [v["version"] for v in models["versions"]] == [1, 2, 3]
        assert models["active"]["version"] == 1 and models["alias"] == "production"

        # load into standby: not promoted, not served
        assert client.load(2)["standby"]["version"] == 2
        assert client.models()["standby"]["version"] == 2
        assert client.ready().version == 1 and reg.aliases()["production"] == 1
        assert infer_version(client, stack) == 1

        # promote: the CLI's rule (a passed canary, or force with a reason)
        with pytest.raises(ServingError, match="canary") as refused:
            client.promote(2)
        assert refused.value.status == 409 and reg.aliases()["production"] == 1
        reg.set_tags(2, {"canary_verdict": "passed"})
        assert client.promote(2) == {"production": 2, "was": 1, "active": 2}
        assert reg.aliases()["production"] == 2 and reg.aliases()["previous"] == 1
        assert infer_version(client, stack) == 2
        assert client.models()["standby"]["version"] == 1  # blue/green: the old one stays

        # rollback
        assert client.rollback() == {"production": 1, "was": 2, "active": 1}
        assert infer_version(client, stack) == 1

        # hot swap when someone else moves the alias (the CLI, in another process)
        proc = subprocess.run(
            [HMMTRADER, "--home", str(stack.home), "promote", "2"],
            capture_output=True, text=True, env=server_env(), timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        stack.server.wait_ready(2, timeout_s=20)
        assert infer_version(client, stack) == 2

        # a version that fails its smoke test is never promoted: load, then move
        with pytest.raises(ServingError, match="version 3 failed") as not_moved:
            client.promote(3, force=True, reason="broken on purpose")
        assert not_moved.value.status == 503 and reg.aliases()["production"] == 2
        with pytest.raises(RegistryError, match="version 3 failed its load check"):
            reg.promote(3, force=True, reason="broken on purpose")
        assert reg.aliases()["production"] == 2
        # ... and when someone moves the alias to it anyway (the MLflow UI's alias editor,
        # here the same client call): no promote recorded it and it has no passed canary,
        # so the server keeps version 2 without loading 3; /models says why, the metric
        # counts it
        reg.client.set_registered_model_alias(reg.name, "production", "3")
        deadline = time.monotonic() + 30
        while not ((guard := client.models()["production_guard"]) or {}).get("anomaly"):
            assert time.monotonic() < deadline, client.models()
            time.sleep(0.2)
        assert (guard["alias"], guard["serving"], guard["blocked"]) == (3, 2, True)
        assert "version 3 outside promote/rollback" in guard["anomaly"]
        assert (
            "no canary verdict" in guard["anomaly"]
            and "version 2 is still served" in guard["anomaly"]
        )
        assert client.models()["last_error"] is None  # version 3 was never loaded
        assert client.ready().version == 2 and infer_version(client, stack) == 2
        assert client.reload()["version"] == 2  # a reload follows the guard, not the alias
        text = httpx.get(stack.server.url + "/metrics").text
        assert (
            'hmmtrader_production_out_of_band{alias_version="3",blocked="true",served_version="2"} 1.0'
            in text
        )
        moves = re.search(r"^hmmtrader_production_out_of_band_moves_total (\S+)$", text, re.M)
        assert moves and float(moves.group(1)) == 1.0, moves
        assert "production alias: production was moved to version 3" in stack.server.log()
        # once version 3 carries a passed canary, the guard lets the alias through: it is
        # loaded, fails its smoke test and is never activated; the failure is visible
        reg.set_tags(3, {"canary_verdict": "passed"})
        deadline = time.monotonic() + 30
        while (client.models()["last_error"] or {}).get("version") != 3:
            assert time.monotonic() < deadline, client.models()
            time.sleep(0.2)
        error = client.models()["last_error"]
        assert error["stage"] == "pass its smoke test" and "non-finite" in error["message"]
        assert client.ready().version == 2 and infer_version(client, stack) == 2
        with pytest.raises(ServingError, match="version 3 failed") as reload_failed:
            client.reload()  # retried on demand, refused again
        assert reload_failed.value.status == 503
        assert "version 3 failed to pass its smoke test" in stack.server.log()
        assert client.models()["active"]["version"] == 2

        # unknown versions
        with pytest.raises(ServingError, match="no version 99") as missing:
            client.load(99)
        assert missing.value.status == 404
    reg.client.set_registered_model_alias(reg.name, "production", "2")  # back, out of band
    assert reg.aliases()["production"] == 2


def infer_version(client: ServingClient, stack: Stack) -> int:
    body = client.infer(
        "BTCUSDT", stack.X[:3], stack.ts[:3], feature_version=stack.feature_version, mode="window"
    )
    return int(body["version"])


# ---- swap under load ---------------------------------------------------------------------
def test_swap_under_fixed_rate_load(stack: Stack) -> None:
    """50 stream steps/s for 12 s; the alias moves at 5 s. 0 failures, each answer names
    its version, the version switches once, and every answer equals what that version
    computes in process (v2 takes over the stream with the replayed history)."""
    promote_and_wait(stack, 1)
    rate, duration, swap_at = 50.0, 12.0, 5.0
    session = f"load-{uuid.uuid4().hex[:8]}"
    results: list[tuple[int, int, dict[str, Any] | str]] = []

    def load() -> None:
        with httpx.Client(base_url=stack.server.url, timeout=10) as http:
            began = time.monotonic()
            i = 0
            while (now := time.monotonic() - began) < duration:
                body = {
                    "symbol": "BTCUSDT", "feature_version": stack.feature_version,
                    "rows": [stack.X[i].tolist()], "ts_ns": [int(stack.ts[i])],
                    "session": session,
                }  # fmt: skip
                try:
                    r = http.post("/infer", json=body)
                    results.append((i, r.status_code, r.json() if r.status_code == 200 else r.text))
                except httpx.HTTPError as exc:
                    results.append((i, -1, repr(exc)))
                i += 1
                time.sleep(max(0.0, i / rate - (time.monotonic() - began)))
            del now

    worker = threading.Thread(target=load)
    began = time.monotonic()
    worker.start()
    time.sleep(swap_at)
    stack.registry.promote(2, force=True, reason="swap under load")
    worker.join(duration + 30)
    elapsed = time.monotonic() - began
    assert not worker.is_alive()

    failures = [(i, s, b) for i, s, b in results if s != 200]
    assert failures == [], failures[:5]
    assert elapsed >= duration and len(results) >= 0.9 * rate * duration, (elapsed, len(results))
    versions = [b["version"] for _, _, b in results if isinstance(b, dict)]
    switches = sum(1 for a, b in itertools.pairwise(versions) if a != b)
    assert versions[0] == 1 and versions[-1] == 2 and switches == 1
    first_v2 = versions.index(2)
    assert 0.2 * len(versions) < first_v2 < 0.8 * len(versions)
    print(
        f"swap under load: {len(results)} requests in {elapsed:.1f} s, 0 failed; "
        f"version 1 answered {first_v2}, then version 2 answered {len(versions) - first_v2}"
    )

    # each answer is exactly what its version computes, v2 with the stream's history
    v1, v2 = in_process(stack, 1), in_process(stack, 2)
    for i, _, body in results:
        assert isinstance(body, dict)
        row, ts = stack.X[i], int(stack.ts[i])
        out1 = v1.step("s", row, ts).copy()
        out2 = v2.step("s", row, ts).copy()
        want = out1 if body["version"] == 1 else out2
        step = body["steps"][0]
        assert step["state"] == int(want[0]) and step["confidence"] == want[5], i
        assert step["posterior"] == want[kernel.OUT_POSTERIOR :].tolist(), i
    assert "serving hmm-regime version 2" in stack.server.log()


# ---- auth, validation, metrics, logs -----------------------------------------------------
def test_auth(stack: Stack) -> None:
    url = stack.server.url
    for path in ("/reload", "/rollback", "/load", "/promote"):
        body = None if path in ("/reload", "/rollback") else {"version": 1}
        r = httpx.post(url + path, json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
        r = httpx.post(url + path, json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403 and "wrong bearer token" in r.text, (path, r.text)
        r = httpx.post(url + path, json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status_code == 401, (path, r.text)
    assert httpx.post(url + "/reload", headers=AUTH).status_code == 200


def infer_body(stack: Stack, n: int = 2, **changes: Any) -> dict[str, Any]:
    body = {
        "symbol": "BTCUSDT",
        "feature_version": stack.feature_version,
        "rows": stack.X[:n].tolist(),
        "ts_ns": [int(t) for t in stack.ts[:n]],
        "mode": "window",
    }
    body.update(changes)
    return body


def test_validation_names_the_field_and_never_500s(stack: Stack) -> None:
    url = stack.server.url + "/infer"
    columns = registry_columns(stack)
    width = len(columns)
    row = stack.X[0].tolist()

    def check(body: Any, status: int, *needles: str, raw: bytes | None = None) -> None:
        if raw is not None:
            r = httpx.post(url, content=raw, headers={"content-type": "application/json"})
        else:
            r = httpx.post(url, json=body)
        assert r.status_code == status, (body if raw is None else raw[:80], r.text)
        for needle in needles:
            assert needle in r.text, (needle, r.text)

    text_row = ", ".join(repr(v) for v in row[1:])
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = (
            f'{{"symbol":"BTCUSDT","feature_version":"{stack.feature_version}",'
            f'"rows":[[{literal}, {text_row}]],"ts_ns":[1]}}'
        ).encode()
        check(None, 422, "rows[0][0]", "finite", raw=raw)
    check(infer_body(stack, rows=[row[:-1], row]), 422, "rows[0]", f"have {width}")
    check(infer_body(stack, rows=[[*row, 1.0], row]), 422, "rows[0]")
    check(infer_body(stack, columns=columns[::-1]), 422, "columns", columns[0])
    check(infer_body(stack, columns=columns), 200)
    check(infer_body(stack, feature_version="FEATURES_V1@0000"), 422, "feature_version")
    check(infer_body(stack, ts_ns=[5, 5]), 422, "ts_ns[1]", "increase")
    check(infer_body(stack, ts_ns=[5]), 422, "ts_ns", "1 timestamps for 2 rows")
    check(infer_body(stack, n=MAX_ROWS + 1), 422, "rows", f"max_batch_rows {MAX_ROWS}")
    check(infer_body(stack, n=MAX_ROWS), 200)
    check(infer_body(stack, rows=[]), 422, "rows")
    check(infer_body(stack, rows=[["a"] * width, row]), 422, "rows[0][0]")
    check(infer_body(stack, symbol="btc/usdt"), 422, "symbol")
    check(infer_body(stack, mode="later"), 422, "mode")
    check(infer_body(stack, session="a b"), 422, "session")
    check(infer_body(stack, extra=1), 422, "extra")
    check(None, 422, raw=b'{"symbol": "BTCUSDT", "rows": [[1')
    check(None, 422, raw=b"[]")
    # bodies over serving.max_body_bytes: declared and chunked (no Content-Length)
    big = b'{"pad": "' + b"x" * (MAX_BODY + 10) + b'"}'
    r = httpx.post(url, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.text, r.text

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.text, r.text
    assert httpx.get(stack.server.url + "/health").json() == {"status": "ok"}


def registry_columns(stack: Stack) -> list[str]:
    columns: list[str] = httpx.get(stack.server.url + "/ready").json()["info"]["columns"]
    return columns


def test_metrics_and_no_token_in_logs(stack: Stack) -> None:
    url = stack.server.url
    assert httpx.post(url + "/infer", json=infer_body(stack)).status_code == 200
    assert httpx.post(url + "/infer", json=infer_body(stack, rows=[[1.0]])).status_code == 422
    text = httpx.get(url + "/metrics").text
    for needle in (
        'hmmtrader_http_requests_total{endpoint="/infer",method="POST",status="200"}',
        'hmmtrader_http_requests_total{endpoint="/infer",method="POST",status="422"}',
        'hmmtrader_http_request_duration_seconds_bucket{endpoint="/infer",le="0.005",'
        'method="POST",status="200"}',
        'hmmtrader_inference_errors_total{reason="invalid_input"}',
        "hmmtrader_model_version_info{",
        'drift_score{symbol="BTCUSDT"}',
        "hmmtrader_model_ready 1.0",
        'hmmtrader_model_swaps_total{result="ok"}',
    ):
        assert needle in text, needle
    version = httpx.get(url + "/ready").json()["version"]
    assert f'version="{version}"' in text
    assert f'hmmtrader_production_failed_floors{{version="{version}"}} 0.0' in text
    # a canary held the served version to its floors and it failed one: the next poll of
    # the alias exports it (the alert ProductionFailsCanaryFloors fires on it)
    stack.registry.set_tags(version, {TAG_FLOORS: "net_pnl"})
    try:
        needle = f'hmmtrader_production_failed_floors{{version="{version}"}} 1.0'
        deadline = time.monotonic() + 15
        while needle not in (text := httpx.get(url + "/metrics").text):
            assert time.monotonic() < deadline, "the failed floor never reached /metrics"
            time.sleep(0.2)
    finally:
        stack.registry.set_tags(version, {TAG_FLOORS: "none"})
    # the token went over the wire with every admin call above: it is in no log or page
    for page in ("/metrics", "/models", "/ready", "/openapi.json"):
        assert TOKEN not in httpx.get(url + page).text
    log = stack.server.log()
    assert "POST /reload" in log  # the access log is on: requests are logged ...
    assert TOKEN not in log  # ... but never their token


# ---- no production version yet, no token ---------------------------------------------------
def test_starts_without_production_and_without_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry = registry_at(home)
    m4, ts, X = model_and_rows(4)
    register(registry, m4, ts, X, "k4")  # a candidate, no production yet
    srv = server(home, tmp_path / "server.log")
    del srv.env["HMMTRADER_SERVING__TOKEN"]
    srv.start()
    try:
        deadline = time.monotonic() + 30
        while "no 'production' version" not in (r := httpx.get(srv.url + "/ready")).text:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.status_code == 503 and r.json()["ready"] is False
        body = {"symbol": "BTCUSDT", "feature_version": "x", "rows": [[1.0]], "ts_ns": [1]}
        r = httpx.post(srv.url + "/infer", json=body)
        assert r.status_code == 503 and "no 'production' version" in r.text, r.text
        r = httpx.post(srv.url + "/reload", headers=AUTH)
        assert r.status_code == 403 and "no token" in r.text, r.text
        registry.promote(1, force=True, reason="test")
        assert srv.wait_ready(1, timeout_s=30)["version"] == 1  # the watcher picks it up
    finally:
        srv.stop()
