"""`hmmtrader ops ...` and `hmmtrader dashboard`: serve the ops API (serving.ops), and its
client (status, kill, enable, retrain). The client talks to ops.url with ops.token;
`--local` acts on the node's state file directly (when the API is down)."""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from hmmtrader.cli.common import (
    AccessLog,
    LogLevel,
    check_port,
    configure_logging,
    console,
    load_config,
    run_uvicorn,
)
from trading.errors import ConfigError, InputError, SourceError

if TYPE_CHECKING:
    from trading.settings import AppConfig

app = typer.Typer()  # top-level command: dashboard
ops_app = typer.Typer(
    help="The trading node's ops API: status, kill switch, retrain (and its server).",
    no_args_is_help=True,
)

ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why (1-500 characters; kept in the audit trail).")
]
LocalOption = Annotated[
    bool,
    typer.Option(
        "--local",
        help="Act on the node's state file directly (node.kill_db), not through the API.",
    ),
]
UrlOption = Annotated[
    str | None, typer.Option("--url", help="Ops API (default ops.url, HMMTRADER_OPS__URL).")
]


# ---- the servers --------------------------------------------------------------------------
@ops_app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Interface (default ops.host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default ops.port, 8060).")
    ] = None,
    access_log: AccessLog = False,
    log_level: LogLevel = "info",
) -> None:
    """Serve the ops API (FastAPI + uvicorn): GET /status, /metrics; POST /kill, /enable,
    /retrain with the bearer token HMMTRADER_OPS__TOKEN. Stop with Ctrl-C (or SIGTERM)."""
    from serving.ops.app import create_ops_app, prefect_api_url
    from trading.node.state import state_path
    from trading.settings import OpsSettings

    config = load_config()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    ops = OpsSettings.model_validate({**config.settings.ops.model_dump(), **overrides})
    settings = config.settings.model_copy(update={"ops": ops})
    config = config.model_copy(update={"settings": settings})
    check_port(ops.host, ops.port)
    configure_logging(log_level)
    application = create_ops_app(config)  # opens (creates) the state file: errors stop here
    token = "set" if ops.token is not None else "NOT set: POST endpoints disabled"
    prefect = prefect_api_url(ops) or "not configured (POST /retrain answers 503)"
    console.print(
        f"ops API on http://{ops.host}:{ops.port} (state {state_path(config)}; token {token}; "
        f"Prefect API {prefect}); docs at /docs, metrics at /metrics",
        highlight=False,
        soft_wrap=True,
    )
    run_uvicorn(application, ops.host, ops.port, log_level, access_log, graceful_s=5,
                ws="websockets-sansio")  # fmt: skip


@app.command("dashboard")
def dashboard_cmd(
    host: Annotated[str | None, typer.Option(help="Interface (default dashboard.host).")] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port (default dashboard.port, 8050)."),
    ] = None,
    access_log: AccessLog = False,
    log_level: LogLevel = "info",
) -> None:
    """Serve the live dashboard: equity and PnL, each symbol's regime state and posterior,
    guardrail counts, model version, kill switch (button: ops token); past runs under
    HMMTRADER_HOME/runs. Also serves the ops API (/status, /kill, /enable, /metrics)."""
    from serving.ops.dashboard import create_dashboard_app
    from trading.node.state import state_path
    from trading.settings import DashboardSettings

    config = load_config()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    board = DashboardSettings.model_validate(
        {**config.settings.dashboard.model_dump(), **overrides}
    )
    settings = config.settings.model_copy(update={"dashboard": board})
    config = config.model_copy(update={"settings": settings})
    check_port(board.host, board.port)
    configure_logging(log_level)
    application = create_dashboard_app(config)
    token = "set" if config.settings.ops.token is not None else "NOT set: the kill button is off"
    console.print(
        f"dashboard on http://{board.host}:{board.port} (state {state_path(config)}; runs "
        f"{board.runs_dir or config.home / 'runs'}; ops token {token}); metrics at /metrics",
        highlight=False,
        soft_wrap=True,
    )
    run_uvicorn(
        application,
        board.host,
        board.port,
        log_level,
        access_log,
        graceful_s=5,
        ws="websockets-sansio",
    )  # the dashboard's /ws


# ---- the client ---------------------------------------------------------------------------
def _call(
    config: AppConfig, method: str, path: str, url: str | None, body: Any = None
) -> dict[str, Any]:
    """One request to the ops API; every failure is one line (SourceError / ConfigError)."""
    import httpx

    ops = config.settings.ops
    base = (url or ops.url).rstrip("/")
    headers = {"Authorization": f"Bearer {ops.token.get_secret_value()}"} if ops.token else {}
    try:
        response = httpx.request(
            method, base + path, json=body, headers=headers, timeout=ops.timeout_s
        )
    except httpx.ConnectError:
        hint = "" if path == "/retrain" else " (or use --local)"
        raise SourceError(
            f"ops API not reachable at {base}: start it with `hmmtrader ops serve`{hint}"
        ) from None
    except httpx.TimeoutException:
        raise SourceError(f"ops API at {base} did not answer within {ops.timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise SourceError(f"ops API at {base}: {type(exc).__name__}: {exc}") from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SourceError(
            f"{base}{path} answered {response.status_code} without a JSON object: is ops.url "
            "an ops API (`hmmtrader ops serve`)?"
        )
    if response.status_code >= 400:
        detail = str(data.get("detail", "")).replace("\n", " ")
        if response.status_code == 401 and ops.token is None:
            raise ConfigError(f"{base}{path}: {detail}; set HMMTRADER_OPS__TOKEN for the client")
        raise SourceError(f"{method} {base}{path}: {response.status_code} {detail}")
    return data


def _local_note(config: AppConfig) -> None:
    from trading.node.state import state_path

    console.print(
        f"(--local: read/wrote the state file {state_path(config)} directly, not the ops API)",
        highlight=False,
        soft_wrap=True,
    )


def _switch_line(s: dict[str, Any]) -> str:
    if s["engaged"]:
        flat = "flatten positions: yes" if s["flatten"] else "flatten positions: no"
        return (
            f"trading DISABLED: kill switch engaged by {s['changed_by']} at {s['changed_at']} "
            f"({flat}): {s['reason']}"
        )
    return f"trading ENABLED (by {s['changed_by']} at {s['changed_at']}: {s['reason']})"


def _money(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:+,.2f} USD"


def _num(value: Any, spec: str) -> str:
    return "-" if not isinstance(value, int | float) else format(value, spec)


def print_status(s: dict[str, Any]) -> None:
    """The /status JSON as readable lines (and a positions table)."""
    console.print(_switch_line(s["kill_switch"]), highlight=False, soft_wrap=True)
    n = s["node"]
    if n.get("session") is None:
        node = "node: never ran (no session in the state file)"
    elif n.get("running"):
        age = n.get("heartbeat_age_s")
        seen = f"{age:.1f} s ago" if isinstance(age, int | float) else "none yet"
        node = f"node: RUNNING (session {n['session']}, last heartbeat {seen})"
    else:
        how = {True: "ended cleanly", False: "stopped without a clean exit"}
        ended = how.get(n.get("ended_cleanly"), "stopped")
        node = (
            f"node: NOT running (session {n['session']} {ended}; "
            f"last heartbeat {n.get('heartbeat_at') or 'never'})"
        )
    console.print(node, highlight=False, soft_wrap=True)
    if s.get("snapshot_at") is None:
        return
    m = s.get("ml_health") or {}
    model = "-"
    if m:
        error = m.get("last_error") or "no error recorded"
        health = "healthy" if m.get("healthy") else f"UNHEALTHY ({error})"
        model = f"version {m.get('version') or '-'} ({m.get('inference') or '-'}, {health})"
    blocks = ", ".join(f"{k}={v}" for k, v in (s.get("blocks") or {}).items()) or "none"
    orders = s.get("orders")
    lines = [
        f"mode: {s.get('mode') or '-'}   symbols: {', '.join(s.get('symbols') or []) or '-'}   "
        f"trader: {s.get('trader_id') or '-'}",
        f"model: {model}",
        f"market time: {s.get('market_time') or '-'}   "
        f"orders: {orders if orders is not None else '-'}   guardrail blocks: {blocks}",
        f"PnL: realized {_money(s.get('realized_pnl_usd'))}, "
        f"unrealized {_money(s.get('unrealized_pnl_usd'))}",
    ]
    if m.get("registry_anomaly"):
        lines.insert(2, f"PRODUCTION ALIAS MOVED OUT OF BAND: {m['registry_anomaly']}")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    positions = s.get("positions") or []
    if positions:
        table = Table(title="Positions")
        for column in ("symbol", "side", "qty", "avg px", "unrealized USD"):
            table.add_column(column, justify="left" if column in ("symbol", "side") else "right")
        for p in positions:
            table.add_row(
                str(p.get("symbol", "-")),
                str(p.get("side") or "-"),
                _num(p.get("qty"), "g"),
                _num(p.get("avg_px"), ",.2f"),
                _num(p.get("unrealized_pnl_usd"), "+,.2f"),
            )
        console.print(table)
    else:
        console.print("positions: none (flat)")
    for o in s.get("open_orders") or []:
        price = _num(o.get("price"), ",.2f") if o.get("price") is not None else "market"
        console.print(
            f"open order: {o.get('client_order_id')} {o.get('side') or '-'} {o.get('type') or ''} "
            f"{_num(o.get('qty'), 'g')} {o.get('symbol') or '-'} @ {price}",
            highlight=False,
            soft_wrap=True,
        )
    found = s.get("found_at_start") or {}
    if found.get("positions") or found.get("open_orders"):
        held = ", ".join(
            f"{p.get('symbol')} {p.get('side')} {_num(p.get('qty'), 'g')} @ {_num(p.get('avg_px'), ',.2f')}"
            for p in found.get("positions") or []
        )
        claimed = ", ".join(str(o.get("client_order_id")) for o in found.get("open_orders") or [])
        console.print(
            f"found on the venue at start: positions {held or 'none'}; open orders "
            f"{claimed or 'none'}",
            highlight=False,
            soft_wrap=True,
        )
    if s.get("snapshot_session") not in (None, n.get("session")):
        console.print(
            f"(snapshot from session {s['snapshot_session']}, written {s['snapshot_at']})",
            highlight=False,
        )
    for problem in s.get("snapshot_errors") or []:
        console.print(f"[yellow]snapshot field unreadable:[/] {problem}", highlight=False)


@ops_app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
    local: LocalOption = False,
    url: UrlOption = None,
) -> None:
    """Trading enabled or not (and why), node running or not, mode, model version,
    positions and PnL."""
    config = load_config()
    if local:
        from serving.ops.app import build_status
        from trading.node.state import open_state

        status = build_status(open_state(config), config.settings.ops).model_dump(mode="json")
    else:  # no FastAPI import on this path: the client stays quick
        status = _call(config, "GET", "/status", url)
    if as_json:
        print(json.dumps(status, indent=2))
        return
    print_status(status)
    if local:
        _local_note(config)


def _local_actor() -> str:
    try:
        return f"ops-cli ({getpass.getuser()})"
    except (OSError, KeyError):
        return "ops-cli"


def _check_reason(reason: str) -> str:
    text = reason.strip()
    if not 1 <= len(text) <= 500:
        raise InputError("--reason must be 1 to 500 characters (not only spaces)")
    return text


@ops_app.command("kill")
def kill_cmd(
    reason: ReasonOption,
    flatten: Annotated[
        bool, typer.Option("--flatten/--no-flatten", help="Also close open positions.")
    ] = True,
    local: LocalOption = False,
    url: UrlOption = None,
) -> None:
    """Engage the kill switch: the node cancels open orders, flattens positions (unless
    --no-flatten) and stops trading until `hmmtrader ops enable`."""
    text = _check_reason(reason)
    config = load_config()
    if local:
        from trading.node.state import open_state

        s = open_state(config).engage(text, _local_actor(), flatten=flatten)
        switch = {k: getattr(s, k) for k in ("engaged", "flatten", "reason", "changed_by",
                                             "changed_at")}  # fmt: skip
    else:
        switch = _call(config, "POST", "/kill", url, {"reason": text, "flatten": flatten})
    console.print(_switch_line(switch), highlight=False, soft_wrap=True)
    if local:
        _local_note(config)


@ops_app.command("enable")
def enable_cmd(reason: ReasonOption, local: LocalOption = False, url: UrlOption = None) -> None:
    """Release the kill switch: the node may trade again."""
    text = _check_reason(reason)
    config = load_config()
    if local:
        from trading.node.state import open_state

        s = open_state(config).enable(text, _local_actor())
        switch = {k: getattr(s, k) for k in ("engaged", "flatten", "reason", "changed_by",
                                             "changed_at")}  # fmt: skip
    else:
        switch = _call(config, "POST", "/enable", url, {"reason": text})
    console.print(_switch_line(switch), highlight=False, soft_wrap=True)
    if local:
        _local_note(config)


@ops_app.command("retrain")
def retrain_cmd(url: UrlOption = None) -> None:
    """Start a run of the nightly-retrain Prefect deployment (ops.deployment) through the
    ops API; a Prefect worker executes it. Prints the flow run id."""
    run = _call(load_config(), "POST", "/retrain", url)
    console.print(
        f"flow run {run['flow_run_name']} ({run['state']}) of {run['deployment']} on "
        f"{run['prefect_api_url']}",
        highlight=False,
        soft_wrap=True,
    )
    print(run["flow_run_id"])
