"""What every flow needs at its edge: the config, Prefect's home under the state root,
and the task runner the config asks for (threads, or Dask)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from trading.env import disable_telemetry
from trading.paths import StatePaths
from trading.settings import AppConfig, load_settings


def prefect_env(config: AppConfig) -> None:
    """Offline defaults, and PREFECT_HOME under the state root unless set (call before
    Prefect is imported: its settings are read then)."""
    disable_telemetry()
    os.environ.setdefault("PREFECT_HOME", str(StatePaths(config.home).prefect.resolve()))


def flow_config() -> AppConfig:
    """The config of a flow run: configs/ (or HMMTRADER_CONFIG_DIR) and HMMTRADER_* of the
    process (the worker's environment, or the CLI's)."""
    config = load_settings()
    prefect_env(config)
    return config


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def task_runner(config: AppConfig, address: str | None = None) -> Any:
    """Prefect's thread pool, or a DaskTaskRunner on `address` (default: the configured
    scheduler; with none, the runner starts a local cluster of its own)."""
    flows = config.settings.flows
    if flows.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        address = address or flows.dask_address
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs=_local_cluster_kwargs(config))
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=flows.max_workers)


def _local_cluster_kwargs(config: AppConfig) -> dict[str, Any]:
    return {
        "n_workers": config.settings.flows.dask_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "host": "127.0.0.1",
    }


@contextmanager
def shared_cluster(config: AppConfig) -> Iterator[str | None]:
    """One Dask scheduler for every subflow of a run: the configured one, or a local
    cluster for the duration of the block. Threads: no cluster (yields None)."""
    flows = config.settings.flows
    if flows.task_runner != "dask" or flows.dask_address:
        yield flows.dask_address
        return
    from distributed import LocalCluster

    with LocalCluster(**_local_cluster_kwargs(config)) as cluster:
        yield str(cluster.scheduler_address)
