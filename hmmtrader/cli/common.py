"""What every command shares: the consoles, the global options and the config they load,
option types, the rich renderers of the core's progress callbacks, and the uvicorn runner
of the servers."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from trading.errors import InputError

if TYPE_CHECKING:
    from trading.data.lake import Lake
    from trading.regime.registry import Registry
    from trading.settings import AppConfig

# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class State:
    """The global options (`hmmtrader --debug --config-dir --home COMMAND`)."""

    debug = False
    config_dir: Path | None = None
    home: Path | None = None


def quiet_libraries(debug: bool) -> None:
    """Library warnings and MLflow's info lines stay out of normal output; --debug shows
    them. MLflow sets its loggers' level from MLFLOW_LOGGING_LEVEL when it is imported
    (a user's setting wins)."""
    import os
    import warnings

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if debug else "ERROR")
    if debug:
        warnings.simplefilter("default")
        return
    warnings.simplefilter("ignore")
    for name in ("mlflow", "alembic"):  # in case MLflow was imported before
        logging.getLogger(name).setLevel(logging.ERROR)


def load_config() -> AppConfig:
    """configs/ (or --config-dir), HMMTRADER_* and .env, with --home applied."""
    from trading.settings import load_settings

    config = load_settings(State.config_dir)
    if State.home is not None:
        settings = config.settings.model_copy(update={"home": State.home})
        config = config.model_copy(update={"settings": settings})
    return config


def optional_day(text: str | None, option: str) -> dt.date | None:
    """An optional YYYY-MM-DD option: None when not given; a bad date names `option`."""
    from trading.data.inputs import parse_day

    return parse_day(text, option) if text else None


def open_registry(config: AppConfig) -> Registry:
    """The configured registry (quiet_libraries keeps MLflow's lines out of the output)."""
    from trading.regime.registry import Registry

    return Registry(config.settings.registry, config.home)


def lake_of(config: AppConfig) -> Lake:
    from trading.data.lake import Lake
    from trading.paths import StatePaths

    return Lake(StatePaths(config.home).lake)


Symbols = Annotated[str, typer.Option("--symbols", help="Comma-separated, e.g. BTCUSDT,ETHUSDT.")]
StartDay = Annotated[str, typer.Option("--start", help="First UTC day, YYYY-MM-DD.")]
EndDay = Annotated[str, typer.Option("--end", help="Last UTC day (inclusive), YYYY-MM-DD.")]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"], typer.Option(help="Log level.")]
# choices that --help lists (typer shows a Literal's values and refuses others)
FeatureSetName = Literal["features_v1", "bars_v1"]
TaskRunnerName = Literal["threads", "dask"]
AccessLog = Annotated[bool, typer.Option(help="Log every request (uvicorn).")]


# ---- progress: the core reports through callbacks, the shell draws them -------------------
def fraction_bar(transient: bool = True) -> Progress:
    """A bar per task for callbacks that report a fraction done (backtests, canaries)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


@contextmanager
def progress_callback(
    unit: Literal["items", "bytes"] = "items", show: bool = True
) -> Iterator[Callable[[str, int, int | None], None]]:
    """Draw the core's `(what, done, total)` progress callbacks on stderr; yields the
    callback. "items": one bar that names the current item (days, files); "bytes": a
    download bar per `what` (a file). Nothing is drawn when `show` is off."""
    if unit == "bytes":
        columns: tuple[Any, ...] = (BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                    TimeRemainingColumn())  # fmt: skip
    else:
        columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    progress = Progress(
        TextColumn("{task.description}"), *columns, console=Console(stderr=True), disable=not show
    )
    tasks: dict[str, TaskID] = {}

    def update(what: str, done: int, total: int | None) -> None:
        key = what if unit == "bytes" else ""
        if key not in tasks:
            tasks[key] = progress.add_task(what, total=total)
        progress.update(tasks[key], description=what, completed=done, total=total)

    with progress:
        yield update


# ---- servers --------------------------------------------------------------------------------
def check_port(host: str, port: int) -> None:
    """A clear error before starting a server on a port that is taken."""
    with socket.socket() as s:
        # as uvicorn binds: connections of a previous server in TIME_WAIT do not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another --port "
                "(or stop what is using it)"
            ) from None


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("hmmtrader")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def run_uvicorn(
    application: Any,
    host: str,
    port: int,
    log_level: str,
    access_log: bool,
    *,
    graceful_s: int,
    **options: Any,
) -> None:
    """Serve `application` until Ctrl-C or SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn

    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=access_log,
        timeout_graceful_shutdown=graceful_s,
        server_header=False,
        **options,
    )
