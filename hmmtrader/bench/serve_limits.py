"""The inference server's limits, measured against a real `hmmtrader serve` on a free
loopback port serving a freshly trained model (as `bench serve` builds it):

- symbols: N distinct symbols through POST /infer (stream mode, one row each); the
  /metrics page, its `drift_score` series and the server's RSS before and after.
- health: GET /health latency idle (the baseline, same run) and while ten 4,096-row
  /infer requests are in flight, back to back (the load runs in a separate process, so
  the sampler's timing is not the load generator's GIL); p50 / p99 / max.

    hmmtrader bench serve-limits [--symbols 60000] [--seconds 20] [--home DIR]

Ends with one JSON line per measurement (hmmtrader.bench.BenchResult).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import orjson
from rich.console import Console

from hmmtrader.bench import BenchResult
from hmmtrader.bench.serve import JSON_HEADERS, SYMBOL, feature_window, prepare_model
from trading.process import LOOPBACK, ServerProcess, child_env, free_port, venv_exe

if TYPE_CHECKING:
    from hmmtrader.bench.serve import Prepared
    from trading.settings import AppConfig

LOAD_CLIENTS = 10
LOAD_ROWS = 4096
HEALTH_EVERY_S = 0.01


def start_server(prepared: Prepared, home: Path, env: dict[str, str]) -> ServerProcess:
    port = free_port()

    def ready(resp: httpx.Response) -> bool:
        return resp.status_code == 200 and resp.json().get("version") == prepared.version

    server = ServerProcess(
        "hmmtrader serve",
        [venv_exe("hmmtrader"), "--config-dir", str(prepared.config.config_dir.resolve()),
         "--home", str(home), "serve", "--port", str(port), "--log-level", "warning"],
        home / "serve.log", env=child_env(env, drop_prefixes=("HMMTRADER_HOME",)),
        cwd=Path.cwd(), url=f"http://{LOOPBACK}:{port}", health_path="/ready", healthy=ready,
        timeout_s=180.0,
    )  # fmt: skip
    return server.start()


def rss_mb(server: ServerProcess) -> float:
    """The server process's resident set (Linux /proc), in MB."""
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for process {server.pid}")


# ---- symbols ----------------------------------------------------------------------------
def drift_series(page: str) -> int:
    return sum(1 for line in page.splitlines() if line.startswith("drift_score{"))


async def _distinct_symbols(url: str, body: dict[str, object], n: int, clients: int) -> int:
    answered: dict[int, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def worker(start: int) -> None:
            for i in range(start, n, clients):
                payload = orjson.dumps({**body, "symbol": f"S{i:07d}"})
                resp = await http.post("/infer", content=payload, headers=JSON_HEADERS)
                answered[resp.status_code] = answered.get(resp.status_code, 0) + 1

        await asyncio.gather(*(worker(c) for c in range(clients)))
    return answered.get(200, 0)


def measure_symbols(
    server: ServerProcess, body: dict[str, object], n: int, console: Console
) -> BenchResult:
    url = server.url
    page_before = httpx.get(url + "/metrics").text
    rss_before = rss_mb(server)
    began = time.perf_counter()
    ok = asyncio.run(_distinct_symbols(url, body, n, 8))
    spent = time.perf_counter() - began
    page_after = httpx.get(url + "/metrics").text
    rss_after = rss_mb(server)
    console.print(
        f"symbols: {n:,} distinct symbols in {spent:.0f} s ({ok:,} answered 200); /metrics "
        f"{len(page_before):,} -> {len(page_after):,} bytes, drift_score series "
        f"{drift_series(page_before)} -> {drift_series(page_after)}; server RSS "
        f"{rss_before:.0f} -> {rss_after:.0f} MB (+{rss_after - rss_before:.0f} MB)",
        highlight=False,
    )
    return BenchResult(
        f"serve_distinct_symbols_{n}",
        round(rss_after - rss_before, 1),
        "MB RSS growth",
        0.0,
        0.0,
        {
            "metrics_bytes_before": float(len(page_before)),
            "metrics_bytes_after": float(len(page_after)),
            "drift_series_after": float(drift_series(page_after)),
            "rss_mb_before": round(rss_before, 1),
            "rss_mb_after": round(rss_after, 1),
            "answered_200": float(ok),
        },
    )


# ---- health under load ------------------------------------------------------------------
def _load_process(url: str, body: bytes, seconds: float, counts: dict[str, int]) -> None:
    """Ten clients sending the 4,096-row request back to back for `seconds`."""

    async def run() -> None:
        limits = httpx.Limits(max_connections=LOAD_CLIENTS)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
            deadline = time.monotonic() + seconds

            async def worker() -> None:
                while time.monotonic() < deadline:
                    try:
                        resp = await http.post("/infer", content=body, headers=JSON_HEADERS)
                        key = str(resp.status_code)
                    except httpx.HTTPError as exc:
                        key = type(exc).__name__
                    counts[key] = counts.get(key, 0) + 1

            await asyncio.gather(*(worker() for _ in range(LOAD_CLIENTS)))

    asyncio.run(run())


def sample_health(url: str, seconds: float) -> list[float]:
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.perf_counter()
            http.get("/health").raise_for_status()
            latencies.append(time.perf_counter() - began)
            time.sleep(HEALTH_EVERY_S)
    return latencies


def stats_ms(latencies: list[float]) -> tuple[float, float, float]:
    a = np.asarray(latencies) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def measure_health(
    server: ServerProcess, body: bytes, seconds: float, console: Console
) -> BenchResult:
    url = server.url
    idle = stats_ms(sample_health(url, min(5.0, seconds)))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        counts = manager.dict()
        load = ctx.Process(target=_load_process, args=(url, body, seconds + 4.0, counts))
        load.start()
        time.sleep(2.0)  # every client has a request in flight
        loaded = stats_ms(sample_health(url, seconds))
        load.join()
        answered = dict(counts)
    console.print(
        f"health: idle p50 {idle[0]:.1f} / p99 {idle[1]:.1f} / max {idle[2]:.1f} ms; with "
        f"{LOAD_CLIENTS} x {LOAD_ROWS}-row /infer in flight p50 {loaded[0]:.1f} / p99 "
        f"{loaded[1]:.1f} / max {loaded[2]:.1f} ms; /infer answers {answered}",
        highlight=False,
    )
    return BenchResult(
        "serve_health_p99_under_infer_load",
        round(loaded[1], 2),
        "ms",
        round(idle[1], 2),
        round(idle[1] / loaded[1], 3) if loaded[1] > 0 else 0.0,
        {
            "idle_p50_ms": round(idle[0], 2),
            "idle_max_ms": round(idle[2], 2),
            "loaded_p50_ms": round(loaded[0], 2),
            "loaded_max_ms": round(loaded[2], 2),
            **{f"infer_{k}": float(v) for k, v in answered.items()},
        },
    )


# ---- entry points -----------------------------------------------------------------------
def bench_serve_limits(
    config: AppConfig,
    symbols: int,
    seconds: float,
    home: Path | None,
    console: Console,
    env: dict[str, str] | None = None,
) -> list[BenchResult]:
    """Both measurements (a 0 skips one) against a server on `home` (a temporary state
    root when None; a given one is reused: its model is trained once)."""
    with tempfile.TemporaryDirectory(prefix="hmmtrader-bench-limits-") as tmp:
        home = (home or Path(tmp)).resolve()
        marker = home / "bench-version.txt"
        if marker.is_file():
            from hmmtrader.bench.serve import Prepared

            name, version = marker.read_text().split()
            settings = config.settings.model_copy(update={"home": home})
            prepared = Prepared(
                config.model_copy(update={"settings": settings}), name, int(version)
            )
        else:
            prepared = prepare_model(config, home, console)
            marker.write_text(f"{prepared.model_name} {prepared.version}")
        results = []
        with start_server(prepared, home, env or {}) as server:
            info = httpx.get(server.url + "/ready").json()["info"]
            ts, rows = feature_window(prepared.config, list(info["columns"]), LOAD_ROWS)
            if seconds > 0:
                window = {"symbol": SYMBOL, "feature_version": info["feature_version"],
                          "rows": rows.tolist(), "ts_ns": ts.tolist(), "mode": "window"}  # fmt: skip
                results.append(measure_health(server, orjson.dumps(window), seconds, console))
            if symbols > 0:
                one = {"feature_version": info["feature_version"], "rows": rows[:1].tolist(),
                       "ts_ns": ts[:1].tolist(), "mode": "stream"}  # fmt: skip
                results.append(measure_symbols(server, one, symbols, console))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--symbols", type=int, default=60_000, help="0: skip")
    parser.add_argument("--seconds", type=float, default=20.0, help="0: skip the health run")
    parser.add_argument("--home", type=Path, help="reuse (or create) this state root")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args()
    from trading.settings import load_settings

    env = dict(item.split("=", 1) for item in args.env)
    results = bench_serve_limits(
        load_settings(), args.symbols, args.seconds, args.home, Console(), env
    )
    for result in results:
        print(result.to_json())


if __name__ == "__main__":
    main()
