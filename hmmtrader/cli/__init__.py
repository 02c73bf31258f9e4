"""The `hmmtrader` command line: one module per command group, assembled here. Heavy
libraries are imported inside the commands, so `--help` stays quick."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hmmtrader.cli import (
    bench,
    data,
    demo,
    evaluate,
    exchange,
    flows,
    ingest,
    models,
    node,
    ops,
    quickcheck,
    serve,
    simulate,
    stack,
)
from hmmtrader.cli.common import State, console, err_console, quiet_libraries
from trading.env import disable_telemetry
from trading.errors import HmmTraderError, InputError, store_failure

__all__ = ["app", "main", "run"]

app = typer.Typer(
    help="hmm-trader: regime-adaptive crypto trading with a model lifecycle.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
)
# groups
app.add_typer(ingest.app, name="ingest")
app.add_typer(data.data_app, name="data")
app.add_typer(data.quality_app, name="quality")
app.add_typer(flows.flow_app, name="flow")
app.add_typer(ops.ops_app, name="ops")
app.add_typer(bench.app, name="bench")
# top-level commands, in the order of the README
for module in (stack, data, models, evaluate, simulate, demo, serve, node, exchange, ops,
               quickcheck):  # fmt: skip
    app.add_typer(module.app)


def versions() -> str:
    """hmmtrader's version and the pinned stack's, from the installed metadata (no
    imports of the libraries themselves)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    stack = ("nautilus_trader", "prefect", "mlflow", "great_expectations", "hmmlearn",
             "scikit-learn")  # fmt: skip
    py = sys.version_info
    return (
        f"hmmtrader {of('hmm-trader')} (Python {py.major}.{py.minor}.{py.micro}; "
        + ", ".join(f"{dist} {of(dist)}" for dist in stack)
        + ")"
    )


def _version(value: bool) -> None:
    if value:
        console.print(versions(), highlight=False, soft_wrap=True)
        raise typer.Exit(0)


# commands that make a state root when --home names none; every other command refuses a
# --home that does not exist (a typo would otherwise read as an empty state and exit 0)
CREATES_STATE = ("demo", "ingest", "flow", "up", "bench")


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the versions and exit."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    config_dir: Annotated[
        Path | None, typer.Option(help="Directory with settings.yaml and symbols.yaml.")
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="State root (overrides HMMTRADER_HOME, default ./var).")
    ] = None,
) -> None:
    State.debug, State.config_dir, State.home = debug, config_dir, home
    quiet_libraries(debug)
    command = ctx.invoked_subcommand
    if home is not None and not home.is_dir() and not ctx.resilient_parsing:
        if home.exists():
            raise InputError(f"--home {home} is a file, not a directory; pass a state root")
        if command not in CREATES_STATE:
            raise InputError(
                f"--home {home} does not exist. Check the path; a new state root is made by "
                f"{', '.join(CREATES_STATE[:3])} (e.g. hmmtrader --home {home} demo)"
            )


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; expected failures print one line and return 1."""
    disable_telemetry()
    try:
        result = app(args=argv, prog_name="hmmtrader", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.TyperException as exc:  # typer's (vendored click) usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            console.print(ctx.get_help())
            return 2
        where = ctx.command_path if ctx is not None else "hmmtrader"
        err_console.print(
            f"[bold red]error:[/] {exc.format_message()} (see: {where} --help)",
            highlight=False,
            soft_wrap=True,
        )
        return getattr(exc, "exit_code", 2)
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except HmmTraderError as exc:
        if State.debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted: nothing was written for the unfinished step")
        return 130
    except Exception as exc:
        what = store_failure(exc)
        if what is None or State.debug:
            raise
        err_console.print(
            f"[bold red]error:[/] {what} (hmmtrader --debug ... shows the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


def main() -> None:
    sys.exit(run())
