"""`hmmtrader bench serve`: this inference server vs `mlflow models serve` on the same
registered version, rows, client and load. Throughput and p50/p99 latency of both; the
goal is >= 3x MLflow's throughput and <= 1/3 of its p99. Shared JSON result (hmmtrader.bench).

Everything runs in a throw-away state root (synthetic lake, SQLite registry) with both
servers on free loopback ports; nothing contacts another host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from hmmtrader.bench import BenchResult
from trading.errors import HmmTraderError
from trading.process import LOOPBACK, ProcessError, ServerProcess, child_env, free_port, venv_exe

if TYPE_CHECKING:
    from trading.settings import AppConfig

SYMBOL = "BTCUSDT"
DAY = dt.date(2024, 1, 1)
SYNTHETIC_SECONDS = 4 * 3600  # ~13,800 ready feature rows after the warm-up
SEED = 7
HEALTH_TIMEOUT_S = 180.0  # cold imports + model load; far longer than needed when idle
REQUEST_TIMEOUT_S = 30.0
TOLERANCE = 1e-9
GOAL_THROUGHPUT_RATIO = 3.0
GOAL_P99_RATIO = 3.0  # ours must be at most 1/3 of MLflow's p99
JSON_HEADERS = {"content-type": "application/json"}
STEP_FIELDS = ("confidence", "exp_edge_bp", "drift_score", "p_down", "p_flat", "p_up")


class BenchServeError(HmmTraderError):
    """The serving bench could not run: a server did not start or the servers disagree."""


# ---- latency statistics (pure) --------------------------------------------------------
@dataclass
class LoadRun:
    """One timed stretch of load against one server."""

    latencies_s: list[float] = field(default_factory=list)  # successful requests only
    errors: int = 0
    elapsed_s: float = 0.0
    first_error: str = ""


@dataclass(frozen=True)
class ServerStats:
    server: str
    requests: int  # answered 200
    errors: int  # other status or no answer
    seconds: float
    throughput: float  # successful requests per second
    p50_ms: float
    p99_ms: float
    first_error: str = ""


def percentile_ms(latencies_s: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100, linear interpolation) in milliseconds; NaN if empty."""
    if len(latencies_s) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(latencies_s, dtype=np.float64), q) * 1000.0)


def summarize(server: str, runs: Sequence[LoadRun]) -> ServerStats:
    """The runs of one server taken together: counts add up, time adds up, percentiles
    over every successful request."""
    latencies = [x for run in runs for x in run.latencies_s]
    seconds = sum(run.elapsed_s for run in runs)
    errors = sum(run.errors for run in runs)
    first_error = next((run.first_error for run in runs if run.first_error), "")
    return ServerStats(
        server=server,
        requests=len(latencies),
        errors=errors,
        seconds=seconds,
        throughput=len(latencies) / seconds if seconds > 0 else 0.0,
        p50_ms=percentile_ms(latencies, 50),
        p99_ms=percentile_ms(latencies, 99),
        first_error=first_error,
    )


def goals_text(ours: ServerStats, mlflow: ServerStats) -> tuple[str, bool]:
    throughput_ratio = ours.throughput / mlflow.throughput if mlflow.throughput > 0 else 0.0
    p99_ratio = mlflow.p99_ms / ours.p99_ms if ours.p99_ms > 0 else 0.0
    throughput_ok = throughput_ratio >= GOAL_THROUGHPUT_RATIO
    p99_ok = p99_ratio >= GOAL_P99_RATIO
    text = (
        f"goals: throughput ratio {throughput_ratio:.2f}x (goal >= {GOAL_THROUGHPUT_RATIO:g}x: "
        f"{'met' if throughput_ok else 'not met'}); p99 {ours.p99_ms:.2f} ms vs MLflow "
        f"{mlflow.p99_ms:.2f} ms = 1/{p99_ratio:.2f} (goal <= 1/{GOAL_P99_RATIO:g}: "
        f"{'met' if p99_ok else 'not met'})"
    )
    return text, throughput_ok and p99_ok


# ---- model and payloads ---------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    config: AppConfig
    model_name: str
    version: int


def prepare_model(config: AppConfig, home: Path, console: Console) -> Prepared:
    """A few synthetic hours of BTCUSDT, their features, a quick fit, registered and
    promoted (forced, reason "bench") in the registry under `home`."""
    from trading.data.lake import Lake
    from trading.data.synthetic import ingest_synthetic
    from trading.features.store import compute_range, write_features
    from trading.paths import StatePaths
    from trading.regime.pipeline import configured_feature_set, train_and_register
    from trading.regime.registry import Registry

    regime = config.settings.regime.model_copy(update={"k_min": 4, "k_max": 4, "restarts": 1})
    settings = config.settings.model_copy(update={"home": home, "regime": regime})
    config = config.model_copy(update={"settings": settings})
    lake = Lake(StatePaths(home).lake)
    venue = config.instruments.venue
    began = time.perf_counter()
    console.print(f"[1/5] generating {SYNTHETIC_SECONDS / 3600:g} synthetic hours of {SYMBOL} ...")
    ingest_synthetic(config, lake, [SYMBOL], DAY, 1, SEED, seconds=SYNTHETIC_SECONDS)
    fs = configured_feature_set(config)
    write_features(lake, venue, SYMBOL, compute_range(lake, venue, SYMBOL, DAY, DAY, fs))
    console.print(f"      lake and features ready in {time.perf_counter() - began:.1f} s")
    began = time.perf_counter()
    console.print("[2/5] training a model (K=4, one restart) and registering it ...")
    outcome = train_and_register(config, [SYMBOL], DAY, DAY)
    registry = Registry(settings.registry, home)
    version = outcome.registered.version
    registry.promote(version, force=True, reason="bench", by="bench")
    console.print(
        f"      {registry.name} version {version} promoted to production "
        f"in {time.perf_counter() - began:.1f} s"
    )
    return Prepared(config, registry.name, version)


@dataclass(frozen=True)
class Payloads:
    ours: bytes
    mlflow: bytes
    rows: int


def feature_window(
    config: AppConfig, columns: list[str], rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """The last `rows` consecutive grid rows (ts_ns, X in `columns` order) of the lake."""
    from trading.data.lake import Lake
    from trading.features.store import read_features
    from trading.features.v1 import step_ns
    from trading.paths import StatePaths
    from trading.regime.pipeline import configured_feature_set

    fs = configured_feature_set(config)
    lake = Lake(StatePaths(config.home).lake)
    table, _ = read_features(lake, config.instruments.venue, SYMBOL, DAY, DAY, expected=fs)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise BenchServeError(f"the feature files lack the model's column(s) {', '.join(missing)}")
    ts = table.column("ts_ns").to_numpy().astype(np.int64)
    features = np.column_stack([table.column(c).to_numpy() for c in columns]).astype(np.float64)
    step = step_ns(fs)
    # the last index where `rows` consecutive grid steps end
    breaks = np.flatnonzero(np.diff(ts) != step) + 1
    start = max(int(breaks[-1]) if len(breaks) else 0, len(ts) - rows)
    if len(ts) - start < rows:
        raise BenchServeError(
            f"the synthetic lake has no {rows} consecutive feature rows "
            f"(longest tail: {len(ts) - start}); ask for fewer --rows"
        )
    return ts[start:], features[start:]


def build_payloads(
    ts: np.ndarray, features: np.ndarray, columns: list[str], feature_version: str
) -> Payloads:
    """The same rows in both wire formats, serialized once (the client does no JSON work
    while timing)."""
    ts_list = [int(t) for t in ts]
    rows = features.tolist()
    ours = {
        "symbol": SYMBOL,
        "feature_version": feature_version,
        "rows": rows,
        "ts_ns": ts_list,
        "mode": "window",
        "session": "bench",
    }
    # params.feature_version: MLflow checks the version too (as ours does)
    mlflow = {
        "dataframe_split": {
            "columns": [*columns, "ts_ns"],
            "data": [[*row, t] for row, t in zip(rows, ts_list, strict=True)],
        },
        "params": {"feature_version": feature_version},
    }
    return Payloads(orjson.dumps(ours), orjson.dumps(mlflow), len(rows))


def compare_answers(ours: dict[str, Any], mlflow: dict[str, Any], rows: int) -> float:
    """Raise BenchServeError unless both answers carry the same numbers for every row
    (within TOLERANCE); the largest absolute difference otherwise."""
    steps = ours.get("steps")
    predictions = mlflow.get("predictions")
    if not isinstance(steps, list) or len(steps) != rows:
        raise BenchServeError(f"our /infer answered no {rows} steps: {str(ours)[:300]}")
    if not isinstance(predictions, list) or len(predictions) != rows:
        raise BenchServeError(
            f"MLflow /invocations answered no {rows} predictions: {str(mlflow)[:300]}"
        )
    worst = 0.0
    for i, (step, pred) in enumerate(zip(steps, predictions, strict=True)):
        if int(step["state"]) != int(pred["state"]) or step["action"] != pred["action"]:
            raise BenchServeError(
                f"the servers disagree on row {i}: ours state {step['state']} "
                f"{step['action']}, MLflow state {pred['state']} {pred['action']}"
            )
        pairs = [(name, step[name], pred[name]) for name in STEP_FIELDS]
        pairs += [
            (f"posterior_{k}", p, pred[f"posterior_{k}"]) for k, p in enumerate(step["posterior"])
        ]
        for name, a, b in pairs:
            diff = abs(float(a) - float(b))
            if not diff <= TOLERANCE:  # NaN fails too
                raise BenchServeError(
                    f"the servers disagree on row {i}, {name}: ours {a!r}, MLflow {b!r} "
                    f"(tolerance {TOLERANCE:g})"
                )
            worst = max(worst, diff)
    return worst


# ---- load -----------------------------------------------------------------------------
async def _load(url: str, path: str, body: bytes, concurrency: int, seconds: float) -> LoadRun:
    """`concurrency` workers, each sending the request back to back until `seconds` have
    passed (a request started before the end is waited for and counted)."""
    run = LoadRun()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        clock = time.perf_counter

        async def worker(deadline: float) -> None:
            while clock() < deadline:
                began = clock()
                try:
                    resp = await client.post(path, content=body, headers=JSON_HEADERS)
                except httpx.HTTPError as exc:
                    run.errors += 1
                    run.first_error = run.first_error or f"{type(exc).__name__}: {exc}"
                    continue
                spent = clock() - began
                if resp.status_code == 200:
                    run.latencies_s.append(spent)
                else:
                    run.errors += 1
                    run.first_error = run.first_error or (
                        f"HTTP {resp.status_code}: {resp.text[:300]}"
                    )

        began = clock()
        await asyncio.gather(*(worker(began + seconds) for _ in range(concurrency)))
        run.elapsed_s = clock() - began
    return run


def run_load(url: str, path: str, body: bytes, concurrency: int, seconds: float) -> LoadRun:
    return asyncio.run(_load(url, path, body, concurrency, seconds))


# ---- the bench ------------------------------------------------------------------------
def _check_local_registry(config: AppConfig) -> None:
    if config.settings.registry.tracking_uri is not None:
        raise BenchServeError(
            "bench serve uses a throw-away local registry, but registry.tracking_uri is "
            f"set ({config.settings.registry.tracking_uri}); unset it for the bench"
        )


def _start_servers(
    prepared: Prepared, home: Path, console: Console
) -> tuple[ServerProcess, ServerProcess]:
    from trading.regime.registry import default_tracking_uri

    config, version = prepared.config, prepared.version
    ours_port, mlflow_port = free_port(), free_port()

    def ours_ready(resp: httpx.Response) -> bool:
        if resp.status_code != 200:
            return False
        body = resp.json()
        return bool(body.get("ready")) and body.get("version") == version

    env = child_env(drop_prefixes=("HMMTRADER_HOME",))
    ours = ServerProcess(
        "our server",
        [venv_exe("hmmtrader"), "--config-dir", str(config.config_dir.resolve()),
         "--home", str(home), "serve", "--port", str(ours_port), "--log-level", "warning"],
        home / "ours.log", env=env, cwd=Path.cwd(),  # cwd: the .env this process read
        url=f"http://{LOOPBACK}:{ours_port}", health_path="/ready", healthy=ours_ready,
        timeout_s=HEALTH_TIMEOUT_S,
    )  # fmt: skip
    uri = default_tracking_uri(home)
    mlflow = ServerProcess(
        "MLflow server",
        [venv_exe("mlflow"), "models", "serve",
         "-m", f"models:/{prepared.model_name}/{version}", "--env-manager", "local",
         "-h", LOOPBACK, "-p", str(mlflow_port), "-w", "1"],
        home / "mlflow.log", env={**env, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri},
        cwd=home, url=f"http://{LOOPBACK}:{mlflow_port}", health_path="/ping",
        timeout_s=HEALTH_TIMEOUT_S,
    )  # fmt: skip
    console.print(
        f"[3/5] starting both servers on version {version}: ours at {ours.url}, "
        f"mlflow models serve at {mlflow.url} ..."
    )
    return ours, mlflow


def _wait_both(ours: ServerProcess, mlflow: ServerProcess, console: Console) -> None:
    try:
        ours_s, mlflow_s = ours.wait_healthy(), mlflow.wait_healthy()
    except ProcessError as exc:
        raise BenchServeError(str(exc)) from None
    console.print(f"      ours ready after {ours_s:.1f} s, MLflow's after {mlflow_s:.1f} s")


def _verify(
    prepared: Prepared, ours: ServerProcess, mlflow: ServerProcess, rows: int, console: Console
) -> Payloads:
    ready = httpx.get(ours.url + "/ready", timeout=10).json()
    info = ready["info"]
    columns, feature_version = list(info["columns"]), str(info["feature_version"])
    ts, features = feature_window(prepared.config, columns, rows)
    payloads = build_payloads(ts, features, columns, feature_version)
    answers = []
    targets = [(ours, "/infer", payloads.ours), (mlflow, "/invocations", payloads.mlflow)]
    for server, path, body in targets:
        resp = httpx.post(server.url + path, content=body, headers=JSON_HEADERS, timeout=60)
        if resp.status_code != 200:
            raise BenchServeError(
                f"{server.name} answered POST {path} with HTTP {resp.status_code}: "
                f"{resp.text[:500]}"
            )
        answers.append(resp.json())
    worst = compare_answers(answers[0], answers[1], rows)
    console.print(
        f"[4/5] both servers give the same {rows} step(s) for the same rows "
        f"(largest difference {worst:.1e}; {len(payloads.ours):,} / {len(payloads.mlflow):,} "
        "request bytes)"
    )
    return payloads


def _measure(
    ours: ServerProcess,
    mlflow: ServerProcess,
    payloads: Payloads,
    seconds: float,
    concurrency: int,
    console: Console,
) -> tuple[ServerStats, ServerStats]:
    """Warm both up, then ours, MLflow, MLflow, ours for seconds / 2 each (drift in the
    machine's load hits both alike)."""
    targets = {
        "ours": (ours.url, "/infer", payloads.ours),
        "mlflow": (mlflow.url, "/invocations", payloads.mlflow),
    }
    warmup_s = min(2.0, seconds / 4)
    for url, path, body in targets.values():
        run_load(url, path, body, concurrency, warmup_s)
    load_1m = os.getloadavg()[0]
    console.print(
        f"[5/5] load: {concurrency} concurrent clients, {seconds:g} s per server "
        f"(in halves: ours, MLflow, MLflow, ours) after {warmup_s:g} s warm-up each; "
        f"machine load average {load_1m:.1f} on {os.cpu_count()} cores ..."
    )
    runs: dict[str, list[LoadRun]] = {"ours": [], "mlflow": []}
    for key in ("ours", "mlflow", "mlflow", "ours"):
        url, path, body = targets[key]
        run = run_load(url, path, body, concurrency, seconds / 2)
        runs[key].append(run)
        console.print(
            f"      {key}: {len(run.latencies_s):,} requests, {run.errors} errors in "
            f"{run.elapsed_s:.1f} s"
        )
    ours_stats = summarize("hmmtrader serve", runs["ours"])
    mlflow_stats = summarize("mlflow models serve", runs["mlflow"])
    for s in (ours_stats, mlflow_stats):
        if s.requests == 0:
            raise BenchServeError(f"{s.server}: no request succeeded; first error: {s.first_error}")
    return ours_stats, mlflow_stats


def _report(
    ours: ServerStats, mlflow: ServerStats, rows: int, concurrency: int, console: Console
) -> None:
    table = Table(title=f"bench serve: {rows} row(s) per request, {concurrency} concurrent")
    for column in ("server", "requests", "errors", "req/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "server" else "right")
    for s in (ours, mlflow):
        table.add_row(
            s.server,
            f"{s.requests:,}",
            f"{s.errors:,}",
            f"{s.throughput:,.1f}",
            f"{s.p50_ms:.2f}",
            f"{s.p99_ms:.2f}",
        )
    console.print(table)
    for s in (ours, mlflow):
        if s.errors:
            console.print(f"[red]{s.server}: {s.errors} failed requests; first: {s.first_error}")
    console.print(goals_text(ours, mlflow)[0], highlight=False)


def result_of(ours: ServerStats, mlflow: ServerStats, rows: int, concurrency: int) -> BenchResult:
    ratio = ours.throughput / mlflow.throughput if mlflow.throughput > 0 else 0.0
    extra = {
        "ours_p50_ms": round(ours.p50_ms, 3),
        "ours_p99_ms": round(ours.p99_ms, 3),
        "mlflow_p50_ms": round(mlflow.p50_ms, 3),
        "mlflow_p99_ms": round(mlflow.p99_ms, 3),
        "p99_ratio": round(mlflow.p99_ms / ours.p99_ms, 3) if ours.p99_ms > 0 else 0.0,
        "errors": float(ours.errors + mlflow.errors),
    }
    return BenchResult(
        f"serve_throughput_{rows}rows_c{concurrency}",
        round(ours.throughput, 1),
        "req/s",
        round(mlflow.throughput, 1),
        round(ratio, 2),
        extra,
    )


def bench_serve(
    config: AppConfig, seconds: float, concurrency: int, rows: int, console: Console
) -> BenchResult:
    """Both servers on the same freshly trained version; same rows, client and load."""
    _check_local_registry(config)
    max_rows = config.settings.serving.max_batch_rows
    if rows > max_rows:
        raise BenchServeError(f"--rows {rows} exceeds serving.max_batch_rows {max_rows}")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(
        prefix="hmmtrader-bench-serve-", ignore_cleanup_errors=True
    ) as tmp:
        home = Path(tmp)
        prepared = prepare_model(config, home, console)
        ours, mlflow = _start_servers(prepared, home, console)
        try:
            ours.launch()
            try:
                mlflow.launch()
                _wait_both(ours, mlflow, console)
                payloads = _verify(prepared, ours, mlflow, rows, console)
                ours_stats, mlflow_stats = _measure(
                    ours, mlflow, payloads, seconds, concurrency, console
                )
            finally:
                mlflow.stop()
        finally:
            ours.stop()
    _report(ours_stats, mlflow_stats, rows, concurrency, console)
    console.print(f"total {time.perf_counter() - began:.0f} s", highlight=False)
    return result_of(ours_stats, mlflow_stats, rows, concurrency)
