"""`hmmtrader serve`: the inference server (serving.inference) on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from hmmtrader.cli.common import (
    AccessLog,
    LogLevel,
    check_port,
    configure_logging,
    console,
    load_config,
    run_uvicorn,
)
from trading.errors import InputError

app = typer.Typer()  # top-level command: serve


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
    access_log: AccessLog = False,
    log_level: LogLevel = "info",
) -> None:
    """Serve the registry's production model over HTTP (FastAPI + uvicorn), hot-swapping
    when the alias moves. Stop with Ctrl-C (or SIGTERM)."""
    from serving.inference.app import create_app
    from serving.inference.limits import uvicorn_options
    from trading.settings import ServingSettings

    config = load_config()
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
    check_port(serving.host, serving.port)
    configure_logging(log_level)
    token = "set" if serving.token is not None else "not set: admin endpoints disabled"
    console.print(
        f"serving {settings.registry.model_name}@{serving.alias} on "
        f"http://{serving.host}:{serving.port} (watcher every {serving.poll_interval_s:g} s; "
        f"admin token {token}); docs at /docs, metrics at /metrics",
        highlight=False,
    )
    run_uvicorn(
        create_app(config), serving.host, serving.port, log_level, access_log, graceful_s=10,
        **uvicorn_options(serving),
    )  # fmt: skip
