"""`hmmtrader quickcheck`: the operator handbook's full-stack check, one line per check."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from hmmtrader.cli.common import console, load_config

app = typer.Typer()  # top-level command: quickcheck


class Check(StrEnum):  # a list of choices: typer takes an Enum there, not a Literal
    inference = "inference"
    backtest = "backtest"
    dashboard = "dashboard"
    ops = "ops"
    canary = "canary"


@app.command("quickcheck")
def quickcheck_cmd(
    check: Annotated[
        list[Check] | None,
        typer.Option("--check", help="Run only these (repeatable)."),
    ] = None,
    hours: Annotated[
        float,
        typer.Option(min=0.25, max=24, help="Backtest and canary window: the lake's last hours."),
    ] = 1.0,
    candidate: Annotated[
        str | None, typer.Option(help="Canary candidate version (default: the newest).")
    ] = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote", help="Promote the candidate when its canary passes (default: dry run)."
        ),
    ] = False,
) -> None:
    """The full-stack check, one line each: inference server healthy, a backtest writes its
    CSVs, dashboard /metrics reachable, ops API answers, canary + promote cycle. Exit 1 when
    any check fails."""
    from hmmtrader.quickcheck import CHECKS, TITLES, CheckResult, QuickcheckOptions, run_checks

    chosen = tuple(c.value for c in check) if check else CHECKS
    config = load_config()
    opts = QuickcheckOptions(
        checks=chosen, hours=hours, candidate=candidate, promote=promote,
        timeout_s=config.settings.ops.timeout_s,
    )  # fmt: skip

    def show(result: CheckResult) -> None:
        mark = "[green]✔ PASS[/]" if result.ok else "[red]✘ FAIL[/]"
        console.print(
            f"{mark} {TITLES[result.name]} ({result.seconds:.1f} s): {result.detail}",
            highlight=False,
            soft_wrap=True,
        )

    results = run_checks(config, opts, show)
    failed = [r.name for r in results if not r.ok]
    console.print(
        f"quickcheck: {len(results) - len(failed)} passed, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else ""),
        highlight=False,
    )
    if failed:
        raise typer.Exit(1)
