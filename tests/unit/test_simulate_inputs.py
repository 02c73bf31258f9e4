"""`hmmtrader simulate`'s inputs: which nights, and the run directory (a new one, or a
stopped run of the same arguments to resume); bad input says what is wrong."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from hmmtrader.cli import run
from tests.unit.test_nightly import with_flows
from trading.errors import InputError
from trading.nightly.simulate import _prepare_run_dir, _Work, nights_of, sandbox_config
from trading.settings import AppConfig, load_settings

D = dt.date


@pytest.fixture
def config(tmp_path: Path) -> AppConfig:
    base = load_settings()
    settings = base.settings.model_copy(update={"home": tmp_path / "home"})
    return base.model_copy(update={"settings": settings})


def test_nights_default_from_the_first_synthetic_night(config: AppConfig) -> None:
    flows = config.settings.flows
    first = flows.synthetic_origin + dt.timedelta(
        days=flows.train_days + config.settings.canary.holdout_days - 1
    )
    nights = nights_of(config, None, None, 5)
    assert nights == [first + dt.timedelta(days=i) for i in range(5)]
    assert nights_of(config, D(2024, 1, 3), D(2024, 1, 4), 5) == [D(2024, 1, 3), D(2024, 1, 4)]


@pytest.mark.parametrize(
    ("start", "end", "nights", "message"),
    [
        (D(2024, 1, 5), D(2024, 1, 5), 5, "must be after --start"),
        (D(2024, 1, 5), D(2024, 1, 3), 5, "must be after --start"),
        (D(2024, 1, 5), None, 1, "--nights must be at least 2"),
        (D(2024, 1, 5), D(2025, 6, 1), 5, "more than a year"),
        (D(2023, 12, 1), D(2024, 1, 5), 5, "before the synthetic market's origin"),
    ],
)
def test_bad_nights_say_what_is_wrong(
    config: AppConfig, start: D, end: D | None, nights: int, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        nights_of(config, start, end, nights)


def test_a_real_source_needs_a_start(config: AppConfig) -> None:
    with pytest.raises(InputError, match="--start is required"):
        nights_of(with_flows(config, source="archive"), None, None, 5)


def test_the_run_directory_is_new_or_a_stopped_run_of_the_same_arguments(
    config: AppConfig, tmp_path: Path
) -> None:
    request = {"model": "hmm-regime", "start": "2024-01-02", "end": "2024-01-06"}
    out = tmp_path / "run"
    state = _prepare_run_dir(config, out, request)
    user = config.home
    # the sandbox shares the user's lake, data-quality results and backtest KPIs, nothing else
    assert (state / "lake").resolve() == (user / "lake").resolve()
    assert (state / "quality" / "cache").resolve() == (user / "quality" / "cache").resolve()
    kpis = state / "cache" / "backtest-kpis"
    assert kpis.resolve() == (user / "cache" / "backtest-kpis").resolve()
    assert json.loads((out / "simulate.json").read_text()) == request
    sandbox = sandbox_config(config, state)
    assert sandbox.home == state and sandbox.settings.registry.tracking_uri is None
    assert _prepare_run_dir(config, out, request) == state  # resume: accepted
    with pytest.raises(InputError, match=r"other arguments \(end\)"):
        _prepare_run_dir(config, out, {**request, "end": "2024-01-09"})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a simulate run directory"):
        _prepare_run_dir(config, other, request)
    assert (other / "notes.txt").read_text() == "mine"  # nothing written there


def test_the_cli_refuses_bad_nights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "home").mkdir()
    home = str(tmp_path / "home")
    assert run(["--home", home, "simulate", "--start", "2024-01-05", "--end", "2024-01-04"]) == 1
    assert "must be after --start" in capsys.readouterr().err
    assert run(["--home", home, "simulate", "--start", "2024-13-01"]) == 1
    assert "--start" in capsys.readouterr().err
    assert run(["--home", home, "simulate", "--nights", "1"]) == 2  # typer's range check
    # the flow's command checks the same before it starts (or reaches) a Prefect server
    args = ["--home", home, "flow", "simulate", "--start", "2024-01-05", "--end", "2024-01-04"]
    assert run(args) == 1
    assert "must be after --start" in capsys.readouterr().err
    assert run(["--home", home, "flow", "simulate", "--task-runner", "ray"]) == 2
    assert "'ray' is not one of 'threads', 'dask'" in capsys.readouterr().err
    assert not (tmp_path / "home" / "runs").exists()  # nothing started
    assert not (tmp_path / "home" / "prefect").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_work_runs_in_worker_processes_or_inline(workers: int) -> None:
    """Fits and policy backtests go through _Work: spawned worker processes, or this
    process with one worker; a failure reaches the waiter either way."""
    work = _Work(workers)
    try:
        pids = {work.submit("pid", os.getpid).result() for _ in range(4)}
        failed = work.submit("bad", int, "not a number")
        with pytest.raises(ValueError, match="not a number"):
            failed.result()
    finally:
        work.close()
    assert work.workers == workers
    assert (os.getpid() in pids) == (workers == 1), pids


def test_backtests_in_threads_of_one_process_take_turns() -> None:
    """The simulate flow's thread pool backtests beside the canary: run_backtest holds a
    process-wide lock (Nautilus runs one kernel per process), so two threads never run an
    engine at once."""
    import threading
    import time

    from trading.backtest import engine

    assert engine.run_backtest.__wrapped__.__name__ == "run_backtest"  # type: ignore[attr-defined]
    inside: list[int] = []
    overlaps: list[int] = []

    @engine._one_engine_at_a_time
    def fake_run(n: int) -> int:
        inside.append(n)
        if len(inside) > 1:
            overlaps.append(n)
        time.sleep(0.05)
        inside.remove(n)
        return n

    threads = [threading.Thread(target=fake_run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [] and inside == []
