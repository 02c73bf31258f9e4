"""The Prefect flows against a real `prefect server` on 127.0.0.1: nights that promote,
reject, re-run and block; the Dask task runner; deployments, a process worker and cron
(SQLite and PostgreSQL; these run in the background while the nights run, see below)."""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from flows.server import LocalPrefectServer
from tests.integration.cli_env import config_for, isolated_env
from tests.integration.mlflow_server import database_exists, postgres_database, postgres_problem
from tests.integration.prefect_env import (
    FAST,
    IMPOSSIBLE,
    LENIENT,
    Api,
    cli_env,
    new_server,
    prefect_cli,
    prefect_server,
    worker,
)
from trading.data.lake import Lake
from trading.regime.registry import Registry

# the nights test: 716 s and >900 s in fresh-clone runs beside the other xdist worker
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

NIGHT1, NIGHT2, NIGHT3 = dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectServer]:
    with prefect_server(tmp_path_factory.mktemp("prefect")) as running:
        yield running


@contextmanager
def flows_on(server: LocalPrefectServer, home: Path, **env: str) -> Iterator[None]:
    """In-process flow runs reporting to `server`, state under `home`. No flow-run
    heartbeats: Prefect's heartbeat thread sleeps in 1 s steps and each (sub)flow run
    joins it on exit, up to 1 s per run (some 30 runs here); nothing here asserts on them."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    overrides = {**FAST, **env, "HMMTRADER_HOME": str(home), "PREFECT_API_URL": server.api_url}
    settings = {PREFECT_API_URL: server.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    with isolated_env(overrides), temporary_settings(settings):
        try:
            yield
        finally:  # send the buffered logs while the API is still configured
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)


def lake_state(home: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (home / "lake").rglob("*") if p.is_file()}


def registry_of(home: Path) -> Registry:
    config = config_for(home)
    return Registry(config.settings.registry, home)


def run_named(api: Api, name: str) -> dict[str, Any]:
    runs = api.flow_runs(name={"any_": [name]})
    assert len(runs) >= 1, name
    return max(runs, key=lambda r: str(r["created"]))


def crossed_quotes(home: Path, symbol: str, day: dt.date, rows: int = 25) -> None:
    """Corrupt a lake file in place: the first rows' ask below the bid (metadata kept, so
    ingest sees the day as present and does not replace it)."""
    path = Lake(home / "lake").path("BINANCE", symbol, "quotes", day)
    table = pq.read_table(path)
    bid = table.column("bid").to_numpy().copy()
    ask = table.column("ask").to_numpy().copy()
    ask[:rows] = bid[:rows] - 1.0
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("ask"), "ask", pa.array(ask))
    pq.write_table(table, path, compression="zstd")


def test_nights_promote_reject_rerun_block_and_dask(
    server: LocalPrefectServer, tmp_path: Path
) -> None:
    from flows.nightly import nightly_retrain
    from trading.nightly import steps

    api = Api(server.api_url)
    home = tmp_path / "home"

    # night 1: no production yet; the candidate meets the (lenient) floors and is promoted
    with flows_on(server, home, **LENIENT):
        report = nightly_retrain(NIGHT1)
    assert [d.decision for d in report.decisions] == ["promoted"]
    assert registry_of(home).aliases() == {"candidate": 1, "production": 1}
    run = run_named(api, f"nightly-retrain-{NIGHT1}")
    assert run["state"]["type"] == "COMPLETED"
    keys = {a["key"] for a in api.artifacts()}
    assert {"ingest", "data-quality-quotes-trades", "features", "data-quality-features",
            "training-hmm-regime", "canary-hmm-regime", "promotion-hmm-regime",
            "nightly-summary"} <= keys  # fmt: skip
    promotion = api.latest_artifact("promotion-hmm-regime")["data"]
    assert "PROMOTED" in promotion and "version 1" in promotion
    assert report.trained[0].run_id in promotion and "models:/hmm-regime/1" in promotion
    canary = api.latest_artifact("canary-hmm-regime")["data"]
    assert "the floors only" in canary and "min_trades" in canary
    training = api.latest_artifact("training-hmm-regime")["data"]
    assert "val_bic" in training and report.trained[0].run_id in training

    # the same night again: no lake file rewritten, no version, no MLflow run, no backtest
    before_lake = lake_state(home)
    registry = registry_of(home)
    runs_before = len(registry.client.search_runs([registry._experiment_id()]))
    canaries_before = sorted((home / "runs").iterdir())
    with flows_on(server, home, **LENIENT):
        again = nightly_retrain(NIGHT1)
    assert lake_state(home) == before_lake
    assert [i.version for i in registry.versions()] == [1]
    assert len(registry.client.search_runs([registry._experiment_id()])) == runs_before
    assert sorted((home / "runs").iterdir()) == canaries_before
    assert again.trained[0].reused and again.decisions[0].decision == "unchanged"
    assert all(not o.written for o in again.ingest)
    assert all(f.days == 0 and f.present == 1 for f in again.features)

    # night 2 on the Dask task runner (local cluster), with a floor no candidate meets:
    # the canary fails, production stays version 1, the artifact lists the failing rule
    with flows_on(server, home, HMMTRADER_FLOWS__TASK_RUNNER="dask", **IMPOSSIBLE):
        rejected = nightly_retrain(NIGHT2)
    assert run_named(api, f"nightly-retrain-{NIGHT2}")["state"]["type"] == "COMPLETED"
    assert [d.decision for d in rejected.decisions] == ["rejected"]
    assert rejected.canaries[0].production == 1
    assert "min_trades" in rejected.canaries[0].failed_rules
    assert registry_of(home).aliases()["production"] == 1
    canary = api.latest_artifact("canary-hmm-regime")["data"]
    assert "FAILED" in canary and "`min_trades`" in canary and "production version 1" in canary
    assert re.search(r"\| min_trades \|.*\| FAIL \|", canary)
    promotion = api.latest_artifact("promotion-hmm-regime")["data"]
    assert "REJECTED" in promotion and "min_trades" in promotion
    pids = set()
    for sub in api.flow_runs(name={"any_": [f"ingest-{NIGHT2}", f"features-{NIGHT2}",
                                            f"train-{NIGHT2}"]}):  # fmt: skip
        logs = api.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [sub["id"]]}}})
        pids |= {int(m) for log in logs for m in re.findall(r", pid (\d+)", log["message"])}
    assert pids and os.getpid() not in pids  # the per-symbol tasks ran in Dask workers

    # night 3 with a crossed book injected: stops at validate, nothing registered
    with flows_on(server, home, **LENIENT):
        config = config_for(home)
        plan = steps.plan_night(config, NIGHT3)
        for symbol in plan.symbols:
            steps.ingest_symbol(config, symbol, plan)
        crossed_quotes(home, "BTCUSDT", NIGHT3)
        with pytest.raises(steps.QualityBlockedError, match="crossed_book"):
            nightly_retrain(NIGHT3)
    assert run_named(api, f"nightly-retrain-{NIGHT3}")["state"]["type"] == "FAILED"
    assert [i.version for i in registry_of(home).versions()] == [1, 2]
    assert registry_of(home).aliases()["production"] == 1
    quality = api.latest_artifact("data-quality-quotes-trades")["data"]
    assert "BLOCKED" in quality and "crossed_book" in quality and "BTCUSDT" in quality
    summary = api.latest_artifact("nightly-summary")["data"]
    assert "Stopped" in summary and "crossed_book" in summary
    assert not api.flow_runs(name={"any_": [f"train-{NIGHT3}"]})


# ---- deployments, a process worker and cron, on SQLite and PostgreSQL -------------------
#
# Each backend's scenario (server, `prefect work-pool create`, `prefect deploy --all`, the
# scheduler's cron runs, a `prefect worker` executing a triggered nightly-retrain run) is
# other processes from start to end. The module's first test starts them all in one
# background thread, one after the other, so they run on the second core while the
# in-process nights above keep the first busy; each deploy test then asserts on what its
# scenario saw. The background thread reads no os.environ (the nights change it): servers,
# API clients and the CLI environment are made in the main thread before the nights start.

DEPLOY_TEST = "test_deploy_worker_runs_nightly_and_cron_schedules"
BACKENDS = ("sqlite", "postgresql")


@dataclass
class Deployed:
    """What one backend's scenario saw, for its test to assert."""

    home: Path
    database: str | None  # the PostgreSQL database (dropped when the scenario ended)
    deploy_out: str
    deployment: dict[str, Any]
    scheduled: list[dict[str, Any]]
    run: dict[str, Any]
    artifact_keys: set[str]  # of the triggered run and its subflow runs
    worker_log: str


@dataclass
class Scenario:
    backend: str
    tmp: Path
    server: LocalPrefectServer
    api: Api
    env: dict[str, str]
    database: str | None
    resources: ExitStack  # the launched server; the database

    def run(self, stop: threading.Event) -> Deployed:
        try:
            return self._run(stop)
        finally:
            self.resources.close()  # server stopped, database dropped: at once, not at teardown

    def _run(self, stop: threading.Event) -> Deployed:
        def check() -> None:
            if stop.is_set():
                raise RuntimeError(f"{self.backend} deploy scenario cancelled")

        env, api = self.env, self.api
        assert self.server.process is not None
        while self.server.process.poll() is None:  # (wait_healthy raises if it exited)
            check()
            try:
                api.get("/health")
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        self.server.wait_healthy()
        prefect_cli(env, "work-pool", "create", "hmmtrader", "--type", "process")
        check()
        deploy_out = prefect_cli(env, "--no-prompt", "deploy", "--all", timeout=180)
        deployment = api.get("/deployments/name/nightly-retrain/nightly-retrain")
        # the server's scheduler creates the cron runs (02:00 UTC, future days)
        scheduled: list[dict[str, Any]] = []
        for _ in range(60):
            check()
            scheduled = api.flow_runs(
                deployment_id={"any_": [deployment["id"]]},
                state={"type": {"any_": ["SCHEDULED"]}},
            )
            if scheduled:
                break
            time.sleep(1)
        # an operator triggers a run; the process worker executes it
        log = self.tmp / "worker.log"
        with worker(env, log):
            out = prefect_cli(env, "deployment", "run", "nightly-retrain/nightly-retrain",
                              "--param", f"night={NIGHT1}")  # fmt: skip
            run_id = re.search(r"UUID: ([0-9a-f-]{36})", out)
            assert run_id, out
            try:
                run = api.wait_run(run_id.group(1), timeout_s=600, stop=stop)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-3000:]}") from None
        subflows = api.flow_runs(parent_flow_run_id={"any_": [run["id"]]})
        run_ids = [run["id"], *(r["id"] for r in subflows)]
        return Deployed(
            home=self.tmp / "home",
            database=self.database,
            deploy_out=deploy_out,
            deployment=deployment,
            scheduled=scheduled,
            run=run,
            artifact_keys={a["key"] for a in api.artifacts(run_ids)},
            worker_log=log.read_text(errors="replace"),
        )


def _scenario(backend: str, tmp: Path, base_env: dict[str, str]) -> Scenario:
    resources = ExitStack()
    try:
        database = None
        if backend == "postgresql":
            database = resources.enter_context(postgres_database("hmmtrader_prefect"))
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}" if database else None
        # launched now, waited for in the background (900 s: it may wait its turn)
        server = new_server(tmp, url, timeout_s=900).launch()
        resources.callback(server.stop)
        extra = {**FAST, **LENIENT, "HMMTRADER_HOME": str(tmp / "home")}
        env = cli_env(server.api_url, tmp / "prefect-cli", extra, base=base_env)
        return Scenario(backend, tmp, server, Api(server.api_url), env, database, resources)
    except BaseException:
        resources.close()
        raise


def _postgres_skip() -> None:
    """Skip the PostgreSQL case when no PostgreSQL answers, except under CI=true."""
    problem = postgres_problem()
    if problem and os.environ.get("CI") != "true":
        pytest.skip(problem)
    assert problem is None, problem


@pytest.fixture(scope="module", autouse=True)
def deployed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Deployed]]]:
    """The scenarios of the deploy tests selected in this session, running in the
    background from the module's first test on (see above)."""
    backends = [
        item.callspec.params["backend"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is request.module
        and item.originalname == DEPLOY_TEST
    ]
    if "postgresql" in backends and postgres_problem():
        backends.remove("postgresql")  # its test skips (or fails under CI=true)
    base_env = dict(os.environ)
    stop = threading.Event()
    futures: dict[str, Future[Deployed]] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploy") as pool:
        try:
            for backend in BACKENDS:
                if backend in backends:
                    scenario = _scenario(backend, tmp_path_factory.mktemp(backend), base_env)
                    futures[backend] = pool.submit(scenario.run, stop)
            yield futures
        finally:
            stop.set()  # a scenario still going stops at its next check


@pytest.mark.parametrize("backend", BACKENDS)
def test_deploy_worker_runs_nightly_and_cron_schedules(
    backend: str, deployed: dict[str, Future[Deployed]]
) -> None:
    if backend == "postgresql":
        _postgres_skip()
    assert backend in deployed, f"{backend}: PostgreSQL was unreachable when the module began"
    seen = deployed[backend].result(timeout=840)
    for name in ("nightly-retrain", "backfill", "canary"):
        assert name in seen.deploy_out
    deployment = seen.deployment
    assert deployment["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert deployment["schedules"][0]["schedule"]["timezone"] == "UTC"
    assert seen.scheduled, "no scheduled runs from the cron deployment"
    for run in seen.scheduled:
        when = dt.datetime.fromisoformat(str(run["expected_start_time"]))
        assert (when.hour, when.minute) == (2, 0) and run["auto_scheduled"]
    assert seen.run["deployment_id"] == deployment["id"]
    assert seen.run["state"]["type"] == "COMPLETED", seen.worker_log[-3000:]
    assert registry_of(seen.home).aliases().get("production") == 1
    assert {"nightly-summary", "canary-hmm-regime", "promotion-hmm-regime"} <= seen.artifact_keys
    if backend == "postgresql":
        assert seen.database and not database_exists(seen.database)  # dropped after
