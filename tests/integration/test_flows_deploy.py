"""Deployments against a real `prefect server` on 127.0.0.1, on SQLite and on PostgreSQL:
`prefect work-pool create`, `prefect deploy --all` from prefect.yaml and the scheduler's
cron runs on both; on SQLite (the default, always here) an operator's run of
nightly-retrain executed by a real process worker (other processes from start to end).

The worker's night runs once: what it exercises (prefect.yaml's entrypoint, work pool and
job environment, the worker's flow-run process) does not depend on the server's database,
and a night costs about 30 s of a worker's time on two cores. PostgreSQL is the production
backend: deploy, work pool and the scheduler are proven on it."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli_env import isolated_env
from tests.integration.postgres import database_exists, postgres_database, require_postgres
from tests.integration.prefect_env import Api, cli_env, new_server, prefect_cli, worker
from tests.profile import LENIENT, SHORT_NIGHTS
from trading.regime.config import RegistrySettings
from trading.regime.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NIGHT1 = dt.date(2024, 1, 2)
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    """(backend, the PostgreSQL database: created for the test, dropped after it)."""
    if request.param == "sqlite":
        yield "sqlite", None
        return
    require_postgres()
    with postgres_database("hmmtrader_prefect") as database:
        yield "postgresql", database
    assert not database_exists(database)  # dropped


def test_deploy_worker_runs_nightly_and_cron_schedules(
    backend: tuple[str, str | None], tmp_path: Path
) -> None:
    kind, database = backend
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}" if database else None
    home = tmp_path / "home"
    with ExitStack() as stack:
        server = stack.enter_context(new_server(tmp_path, url))
        env = cli_env(
            server.api_url,
            tmp_path / "prefect-cli",
            {**LENIENT, **SHORT_NIGHTS, "HMMTRADER_HOME": str(home)},
        )
        api = Api(server.api_url)
        prefect_cli(env, "work-pool", "create", "hmmtrader", "--type", "process")
        deploy_out = prefect_cli(env, "--no-prompt", "deploy", "--all", timeout=180)
        for name in ("nightly-retrain", "backfill", "canary", "simulate"):
            assert name in deploy_out
        deployment = api.get("/deployments/name/nightly-retrain/nightly-retrain")
        assert deployment["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
        assert deployment["schedules"][0]["schedule"]["timezone"] == "UTC"

        if kind != "sqlite":
            scheduled = _scheduled_runs(api, deployment["id"])
            _assert_cron(scheduled)
            print(f"{kind}: deployed, {len(scheduled)} cron runs scheduled")
            return
        # an operator triggers a run; the process worker executes it
        log = tmp_path / "worker.log"
        stack.enter_context(worker(env, log))
        out = prefect_cli(env, "deployment", "run", "nightly-retrain/nightly-retrain",
                          "--param", f"night={NIGHT1}")  # fmt: skip
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", out)
        assert run_id, out

        # meanwhile the server's scheduler has created the cron runs (02:00 UTC, future days)
        scheduled = _scheduled_runs(api, deployment["id"])
        _assert_cron(scheduled)

        try:
            run = api.wait_run(run_id.group(1), timeout_s=240)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-3000:]}") from None
        assert run["deployment_id"] == deployment["id"]
        assert run["state"]["type"] == "COMPLETED", log.read_text(errors="replace")[-3000:]
        subflows = api.flow_runs(parent_flow_run_id={"any_": [run["id"]]})
        keys = {a["key"] for a in api.artifacts([run["id"], *(r["id"] for r in subflows)])}
        assert {"nightly-summary", "canary-hmm-regime", "promotion-hmm-regime"} <= keys
    with isolated_env({}):
        assert Registry(RegistrySettings(), home).aliases().get("production") == 1
    print(f"{kind}: deployed, {len(scheduled)} cron runs scheduled, the worker's night passed")


def _assert_cron(scheduled: list[dict[str, Any]]) -> None:
    assert scheduled, "no scheduled runs from the cron deployment"
    for run in scheduled:
        when = dt.datetime.fromisoformat(str(run["expected_start_time"]))
        assert (when.hour, when.minute) == (2, 0)


def _scheduled_runs(api: Api, deployment_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        runs = api.flow_runs(
            deployment_id={"any_": [deployment_id]}, state={"type": {"any_": ["SCHEDULED"]}}
        )
        runs = [r for r in runs if r["auto_scheduled"]]  # not the operator's run
        if runs or time.monotonic() > deadline:
            return runs
        time.sleep(1)
