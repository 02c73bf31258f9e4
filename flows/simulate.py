"""`hmmtrader simulate` as a Prefect flow: the retrain-and-promote policy backtested over
history (trading/nightly/simulate.py), with its independent work (each night's fit, each
policy's backtest of a day) submitted as tasks to the flows' task runner (Prefect's thread
pool, or Dask with `flows.task_runner: dask`). What depends on the previous night's
production (registering, the canary, promotion) runs in the flow, night by night.

The flow run shows one task run per fit ("fit <night>") and per policy backtest
("backtest v<version> <day>"); the result is a markdown artifact (`simulate-<model>`) and
the run directory of `hmmtrader simulate` (nights.csv, equity.png, summary.json).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.runtime import artifact_key, flow_config, shared_cluster, task_runner
from trading.nightly import reports
from trading.nightly.simulate import SimulationResult, default_run_dir, nights_of
from trading.nightly.simulate import simulate as simulate_nights


def _run_name() -> str:
    from prefect.runtime import flow_run

    start, end = flow_run.parameters.get("start"), flow_run.parameters.get("end")
    return f"simulate-{start or 'first'}-{end or 'next'}"


@task(name="simulate-step", task_run_name="{label}", cache_policy=NO_CACHE)
def simulate_step(label: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """One fit or one policy backtest of the simulation."""
    get_run_logger().info("%s on %s, pid %d", label, socket.gethostname(), os.getpid())
    return fn(*args)


class _Submitted:
    """A task run's future as simulate's Work expects it."""

    def __init__(self, future: Any) -> None:
        self.future = future

    def result(self) -> Any:
        return self.future.result()

    def cancel(self) -> None:
        """Cancel the task if it has not started (threads: concurrent.futures; Dask)."""
        wrapped = getattr(self.future, "wrapped_future", None)
        if wrapped is not None:
            wrapped.cancel()


class TaskRunnerWork:
    """simulate's Work on a started Prefect task runner: each submit is a task run."""

    def __init__(self, runner: Any, workers: int) -> None:
        self.runner, self.workers = runner, workers

    def submit(self, label: str, fn: Callable[..., Any], *args: Any) -> _Submitted:
        parameters = {"label": label, "fn": fn, "args": args}
        return _Submitted(self.runner.submit(simulate_step, parameters))

    def close(self, cancel: bool = False) -> None:
        """The runner is closed by the flow (its `with` block waits for running tasks)."""


@flow(name="simulate", flow_run_name=_run_name)
def simulate(
    start: dt.date | None = None,
    end: dt.date | None = None,
    nights: int = 5,
    model: str | None = None,
    out: str | None = None,
    log_mlflow: bool = True,
) -> SimulationResult:
    """Simulate the nightly loop over nights [start, end] (default: `nights` nights from
    start; the synthetic source's first night without start) in a sandbox registry, and
    compare the gated policy with never retraining, always promoting the newest, flat and
    buy-and-hold on the same days. `out`: the run directory (default
    <home>/runs/simulate-<start>-<end>-<time>; an existing one is resumed)."""
    config = flow_config()
    chosen = nights_of(config, start, end, nights)
    run_dir = Path(out) if out else default_run_dir(config, chosen)
    logger = get_run_logger()
    logger.info("simulate %d nights %s..%s in %s", len(chosen), chosen[0], chosen[-1], run_dir)
    flows = config.settings.flows
    shown = {"quarter": -1}

    def progress(message: str, fraction: float) -> None:
        logger.info("%s", message)
        quarter = int(fraction * 4)
        if quarter > shown["quarter"]:
            shown["quarter"] = quarter
            logger.info("simulate: %d%%", round(fraction * 100))

    with shared_cluster(config) as address, task_runner(config, address) as runner:
        workers = flows.dask_workers if flows.task_runner == "dask" else flows.max_workers
        work = TaskRunnerWork(runner, workers)
        result = simulate_nights(config, chosen, run_dir, model=model, progress=progress,
                                 log_mlflow=log_mlflow, work=work)  # fmt: skip
    create_markdown_artifact(
        reports.simulate_markdown(result),
        key=artifact_key("simulate", result.model_name),
        description=f"simulate {result.model_name}, nights {chosen[0]}..{chosen[-1]}",
    )
    return result
