"""`hmmtrader serve` (the inference server) and `hmmtrader bench serve`. They register on
trading.cli's app (see hmmtrader/cli.py); trading/ never imports serving/."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Annotated

import typer

from trading.cli import _config, app, bench_app, console
from trading.errors import InputError


def _check_port(host: str, port: int) -> None:
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


@app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Interface (default serving.host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default serving.port, 8010).")
    ] = None,
    alias: Annotated[
        str | None, typer.Option(help="Registry alias served (default serving.alias).")
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option("--poll-interval", help="Seconds between alias checks (hot swap)."),
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn).")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the registry's production model over HTTP (FastAPI + uvicorn), hot-swapping
    when the alias moves. Stop with Ctrl-C (or SIGTERM)."""
    import uvicorn

    from serving.app import create_app
    from trading.settings import ServingSettings

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise InputError(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    config = _config()
    overrides = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "alias": alias,
            "poll_interval_s": poll_interval,
        }.items()
        if v is not None
    }
    try:
        serving = ServingSettings.model_validate(
            {**config.settings.serving.model_dump(), **overrides}
        )
    except ValueError as exc:
        raise InputError(f"invalid option: {exc}".replace("\n", " ")) from None
    settings = config.settings.model_copy(update={"serving": serving})
    config = config.model_copy(update={"settings": settings})
    _check_port(serving.host, serving.port)
    configure_logging(log_level)
    token = "set" if serving.token is not None else "not set: admin endpoints disabled"
    console.print(
        f"serving {settings.registry.model_name}@{serving.alias} on "
        f"http://{serving.host}:{serving.port} (watcher every {serving.poll_interval_s:g} s; "
        f"admin token {token}); docs at /docs, metrics at /metrics",
        highlight=False,
    )
    uvicorn.run(
        create_app(config),
        host=serving.host,
        port=serving.port,
        log_level=log_level.lower(),
        access_log=access_log,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


@bench_app.command("serve")
def bench_serve_cmd(
    seconds: Annotated[
        float, typer.Option(min=2, max=600, help="Load duration per server.")
    ] = 15.0,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight.")] = 8,
    rows: Annotated[
        int, typer.Option(min=1, max=4096, help="Feature rows per request (a window).")
    ] = 16,
) -> None:
    """This server vs `mlflow models serve` on the same model, client and load: throughput
    and p50/p99 latency of both (one JSON line at the end)."""
    from serving.bench import bench_serve

    print(bench_serve(_config(), seconds, concurrency, rows, console).to_json())
