"""`hmmtrader bench serve`'s pure parts: latency statistics, goals, payloads, the check
that both servers give the same numbers, and the JSON result."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest

from hmmtrader.bench.serve import (
    BenchServeError,
    LoadRun,
    ServerStats,
    build_payloads,
    compare_answers,
    goals_text,
    percentile_ms,
    result_of,
    summarize,
)


def stats(server: str, throughput: float, p50_ms: float, p99_ms: float) -> ServerStats:
    return ServerStats(server, 100, 0, 1.0, throughput, p50_ms, p99_ms)


def test_percentile_is_linear_and_in_ms() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentile_ms(latencies, 50) == pytest.approx(50.5)
    assert percentile_ms(latencies, 99) == pytest.approx(99.01)
    assert percentile_ms([0.002], 99) == pytest.approx(2.0)
    assert math.isnan(percentile_ms([], 50))


def test_summarize_adds_runs_up() -> None:
    runs = [
        LoadRun([0.001] * 30, errors=1, elapsed_s=2.0, first_error="HTTP 500: boom"),
        LoadRun([0.003] * 10, errors=2, elapsed_s=3.0),
    ]
    s = summarize("x", runs)
    assert (s.requests, s.errors, s.seconds) == (40, 3, 5.0)
    assert s.throughput == pytest.approx(8.0)
    assert s.p50_ms == pytest.approx(1.0)
    assert s.p99_ms == pytest.approx(3.0)
    assert s.first_error == "HTTP 500: boom"


def test_summarize_of_nothing_is_zero_throughput() -> None:
    s = summarize("x", [LoadRun(errors=5, elapsed_s=0.0)])
    assert s.throughput == 0.0 and s.errors == 5 and math.isnan(s.p99_ms)


@pytest.mark.parametrize(
    ("ours", "mlflow", "met"),
    [
        (stats("a", 300, 2, 10), stats("b", 100, 6, 30), True),  # exactly 3x and 1/3
        (stats("a", 299, 2, 10), stats("b", 100, 6, 30), False),  # throughput short
        (stats("a", 400, 2, 11), stats("b", 100, 6, 30), False),  # p99 short
    ],
)
def test_goals(ours: ServerStats, mlflow: ServerStats, met: bool) -> None:
    text, ok = goals_text(ours, mlflow)
    assert ok is met
    assert text.count("not met") == (0 if met else 1)


def test_result_carries_both_servers() -> None:
    result = result_of(stats("a", 900.04, 2.0, 8.0), stats("b", 150.0, 20.0, 64.0), 16, 8)
    data = json.loads(result.to_json())
    assert data["name"] == "serve_throughput_16rows_c8"
    assert (data["value"], data["unit"], data["baseline"], data["ratio"]) == (
        900.0,
        "req/s",
        150.0,
        6.0,
    )
    assert data["extra"] == {
        "ours_p50_ms": 2.0,
        "ours_p99_ms": 8.0,
        "mlflow_p50_ms": 20.0,
        "mlflow_p99_ms": 64.0,
        "p99_ratio": 8.0,
        "errors": 0.0,
    }


def test_payloads_hold_the_same_rows() -> None:
    ts = np.array([1_700_000_000_000_000_000, 1_700_000_001_000_000_000], dtype=np.int64)
    X = np.array([[0.1, -2.5], [1e-300, 3.0]])
    p = build_payloads(ts, X, ["a_z", "raw_a"], "FEATURES_V1-abc")
    ours, mlflow = orjson.loads(p.ours), orjson.loads(p.mlflow)
    assert p.rows == 2
    assert ours["rows"] == X.tolist() and ours["ts_ns"] == ts.tolist()
    assert ours["mode"] == "window" and ours["feature_version"] == "FEATURES_V1-abc"
    split = mlflow["dataframe_split"]
    assert split["columns"] == ["a_z", "raw_a", "ts_ns"]
    assert split["data"] == [[0.1, -2.5, ts[0]], [1e-300, 3.0, ts[1]]]
    assert mlflow["params"] == {"feature_version": "FEATURES_V1-abc"}


def answers(n: int = 2) -> tuple[dict[str, Any], dict[str, Any]]:
    steps, predictions = [], []
    for i in range(n):
        posterior = [0.7, 0.2, 0.1]
        numbers = {"confidence": 0.6, "exp_edge_bp": 1.5 + i, "drift_score": 0.01,
                   "p_down": 0.2, "p_flat": 0.5, "p_up": 0.3}  # fmt: skip
        steps.append({"ts_ns": i, "state": 0, "posterior": posterior, "action": "HOLD", **numbers})
        predictions.append(
            {"state": 0, "action": "HOLD", **numbers,
             **{f"posterior_{k}": p for k, p in enumerate(posterior)}}
        )  # fmt: skip
    return {"steps": steps}, {"predictions": predictions}


def test_same_answers_pass() -> None:
    ours, mlflow = answers()
    mlflow["predictions"][1]["p_up"] += 1e-12
    assert compare_answers(ours, mlflow, 2) == pytest.approx(1e-12, rel=0.01)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("p_up", 0.31, "row 1, p_up"),
        ("posterior_2", 0.1 + 1e-6, "row 1, posterior_2"),
        ("confidence", float("nan"), "row 1, confidence"),
        ("state", 2, "row 1: ours state 0"),
        ("action", "BUY", "row 1: ours state 0 HOLD, MLflow state 0 BUY"),
    ],
)
def test_different_answers_fail(key: str, value: object, message: str) -> None:
    ours, mlflow = answers()
    mlflow["predictions"][1][key] = value
    with pytest.raises(BenchServeError, match="disagree") as err:
        compare_answers(ours, mlflow, 2)
    assert message in str(err.value)


def test_wrong_row_count_fails() -> None:
    ours, mlflow = answers(2)
    with pytest.raises(BenchServeError, match="no 3 steps"):
        compare_answers(ours, mlflow, 3)
    with pytest.raises(BenchServeError, match="no 2 predictions"):
        compare_answers(ours, {"error_code": "BAD_REQUEST"}, 2)
