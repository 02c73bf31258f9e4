"""`hmmtrader up | down | status`: the whole stack on this machine (hmmtrader.stack)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from hmmtrader.cli.common import State, console, err_console, load_config

if TYPE_CHECKING:
    from hmmtrader.stack import Part, PartStatus

app = typer.Typer()  # top-level commands: up, down, status

_STYLE = {"up": "green", "starting": "yellow", "down": "bold red"}


def _table(rows: list[PartStatus], parts: list[Part]) -> Table:
    links = {p.name: p.links for p in parts}
    table = Table(title="hmm-trader stack")
    for column in ("part", "state", "URL", "also", "pid", "log"):
        table.add_column(column, overflow="fold")
    for r in rows:
        also = " ".join(f"{k}: {v}" for k, v in links.get(r.name, {}).items())
        state = f"[{_STYLE.get(r.state, 'red')}]{r.state}[/]"
        table.add_row(r.title, state, r.url, also, str(r.pid or "-"), r.log)
    return table


def _problems(rows: list[PartStatus]) -> None:
    for r in rows:
        if r.state != "up" and r.detail:
            err_console.print(f"[red]{r.name}[/]: {r.detail}", highlight=False, soft_wrap=True)


@app.command("up")
def up_cmd(
    node: Annotated[
        Literal["replay", "paper", "testnet"],
        typer.Option("--node", help="The node's mode: replay plays the lake, offline."),
    ] = "replay",
    speed: Annotated[
        float, typer.Option(min=0, help="Replay pace: 1 real time, 60 a minute per second.")
    ] = 1.0,
    exchange_url: Annotated[
        str | None,
        typer.Option(help="Paper/testnet: a Binance-compatible exchange (`hmmtrader exchange`)."),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="Start only these parts, comma-separated: prefect, worker, mlflow, "
            "inference, dashboard, node."
        ),
    ] = None,
    prefect_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Prefect server and UI (taken: a free one).")
    ] = 4200,
    mlflow_port: Annotated[
        int, typer.Option(min=1, max=65535, help="MLflow UI (taken: a free one).")
    ] = 5000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the parts as JSON.")] = False,
) -> None:
    """Start the stack on this state root: inference server, trading node, dashboard with
    the ops API, Prefect server and worker, MLflow UI; one table of URLs. Each part runs on
    after this command returns (logs under <home>/up/logs); `hmmtrader down` stops them."""
    from hmmtrader.stack import UpOptions, read_record, up

    config = load_config()
    parts = tuple(p.strip() for p in only.split(",") if p.strip()) if only else ()
    opts = UpOptions(node_mode=node, speed=speed, exchange_url=exchange_url, parts=parts,
                     prefect_port=prefect_port, mlflow_port=mlflow_port)  # fmt: skip
    with err_console.status("starting the stack ...") as spinner:
        rows = up(config, opts, State.config_dir, echo=lambda text: spinner.update(text))
    _show(rows, read_record(config), as_json)
    if any(r.state != "up" for r in rows):
        raise typer.Exit(1)


def _show(rows: list[PartStatus], parts: list[Part], as_json: bool) -> None:
    if as_json:
        links = {p.name: p.links for p in parts}
        print(json.dumps([{**r.to_dict(), "links": links.get(r.name, {})} for r in rows], indent=2))
        return
    console.print(_table(rows, parts))
    _problems(rows)


@app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the parts as JSON.")] = False,
) -> None:
    """The parts `hmmtrader up` started: up, starting or down (with the end of its log).
    Exit 1 when a part is not up, 3 when nothing was started."""
    from hmmtrader.stack import read_record, status

    config = load_config()
    rows = status(config)
    if not rows:
        if as_json:
            print("[]")
        else:
            console.print(f"Nothing started on {config.home}: hmmtrader up starts the stack.")
        raise typer.Exit(3)
    _show(rows, read_record(config), as_json)
    if any(r.state != "up" for r in rows):
        raise typer.Exit(1)


@app.command("down")
def down_cmd(
    timeout: Annotated[
        float, typer.Option(min=0, help="Seconds each part has to stop before it is killed.")
    ] = 20.0,
) -> None:
    """Stop every part `hmmtrader up` started (SIGTERM: the node stops cleanly), kill what
    is left after --timeout."""
    from hmmtrader.stack import down

    config = load_config()
    stopped = down(config, timeout, echo=lambda text: console.print(text, highlight=False))
    console.print(
        f"stopped {len(stopped)} part(s)" + (f": {', '.join(stopped)}" if stopped else "")
        + "; nothing of the stack is left running",
        highlight=False,
    )  # fmt: skip
