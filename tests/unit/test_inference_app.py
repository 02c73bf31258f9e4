"""The inference server's app in process (FastAPI's test client), on a state root with no
model yet: liveness, readiness and /infer say why nothing is served, admin endpoints stay
closed without a token, oversized bodies are refused, and /metrics counts it all. The
served model itself: tests/integration/test_serving.py (a real server process)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.inference.app import create_app
from trading.settings import AppConfig

BODY = {"symbol": "BTCUSDT", "feature_version": "x", "rows": [[1.0]], "ts_ns": [1]}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_no_model_yet_is_not_ready_and_says_why(config: AppConfig) -> None:
    assert config.settings.serving.token is None  # the default: admin endpoints closed
    with TestClient(create_app(config)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        deadline = time.monotonic() + 60  # the first registry look runs in the background
        while "being loaded" in ready.json()["reason"] and time.monotonic() < deadline:
            time.sleep(0.1)
            ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "no 'production' version" in ready.json()["reason"], ready.json()

        infer = client.post("/infer", json=BODY)
        assert infer.status_code == 503 and "no 'production' version" in infer.text
        bad = client.post("/infer", json={**BODY, "rows": "not rows"})
        assert bad.status_code == 422 and "rows" in bad.text

        for path in ("/reload", "/rollback"):
            closed = client.post(path)
            assert closed.status_code == 403 and "no token" in closed.text, (path, closed.text)
        promote = client.post("/promote", json={"version": 1})
        assert promote.status_code == 403

        limit = config.settings.serving.max_body_bytes
        big = client.post("/infer", content=b"x" * (limit + 1),
                          headers={"content-type": "application/json"})  # fmt: skip
        assert big.status_code == 413 and str(limit) in big.text

        assert client.get("/no-such-path").status_code == 404
        metrics = _samples(client.get("/metrics").text)
    statuses = {
        dict(labels).get("status")
        for (name, labels), value in metrics.items()
        if name.endswith("_total") and value > 0 and dict(labels).get("status")
    }
    assert {"503", "403", "413"} <= statuses, sorted(s for s in statuses if s)
