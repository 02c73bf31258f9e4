"""The ops API of the trading node (`hmmtrader ops serve`, default 127.0.0.1:8060).

GET /health, /status, /metrics; bearer token (HMMTRADER_OPS__TOKEN): POST /kill, /enable,
/retrain. State: the node's SQLite file (kill switch, sessions, heartbeat snapshot), shared
with the running node, which polls the switch and writes a snapshot about every second.
/retrain starts a run of the nightly-retrain Prefect deployment (a worker executes it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, ValidationError

from serving.auth import ApiError, check_bearer, install_error_handlers
from trading.node.state import NodeState, Session, SwitchState, open_state
from trading.settings import AppConfig, OpsSettings

log = logging.getLogger("hmmtrader.ops")

ACTOR = "ops-api"
DEPLOY_HINT = (
    "register the deployments from the checkout: .venv/bin/prefect --no-prompt deploy --all "
    "(see prefect.yaml)"
)


def prefect_api_url(ops: OpsSettings) -> str | None:
    """ops.prefect_api_url, else PREFECT_API_URL (read when asked, not at import)."""
    return ops.prefect_api_url or os.environ.get("PREFECT_API_URL") or None


# ---- response and request models --------------------------------------------------------
class _Loose(BaseModel):
    """Parts of the node's snapshot: documented fields, anything else passed through."""

    model_config = ConfigDict(extra="allow")


class KillSwitch(BaseModel):
    engaged: bool = Field(description="true: trading is disabled")
    flatten: bool = Field(description="engaging asked the node to close open positions")
    reason: str
    changed_by: str = Field(description="ops-api, ops-cli, node (unclean restart), setup")
    changed_at: str = Field(description="UTC, ISO 8601")

    @classmethod
    def of(cls, s: SwitchState) -> KillSwitch:
        return cls(
            engaged=s.engaged,
            flatten=s.flatten,
            reason=s.reason,
            changed_by=s.changed_by,
            changed_at=s.changed_at,
        )


class SwitchResponse(KillSwitch):
    trading_enabled: bool


class NodeInfo(BaseModel):
    running: bool = Field(
        description="the latest session has not ended and its heartbeat (or start, before "
        "the first heartbeat) is at most ops.stale_after_s old"
    )
    session: int | None = Field(default=None, description="the latest node session")
    heartbeat_at: str | None = Field(default=None, description="its last heartbeat (UTC)")
    heartbeat_age_s: float | None = None
    ended_cleanly: bool | None = Field(
        default=None,
        description="true: the session recorded a clean exit; false: it stopped "
        "heartbeating without one (crash, kill); null: running or never ran",
    )


class Position(_Loose):
    symbol: str
    side: str | None = None
    qty: float | None = None
    avg_px: float | None = None
    unrealized_pnl_usd: float | None = None


class OpenOrder(_Loose):
    client_order_id: str
    symbol: str | None = None
    side: str | None = None
    type: str | None = None
    qty: float | None = None
    price: float | None = None


class FoundAtStart(_Loose):
    """What the venue had open when the node's strategy started (after a restart, what
    reconciliation found): positions adopted, orders claimed."""

    positions: list[Position] = Field(default_factory=list)
    open_orders: list[OpenOrder] = Field(default_factory=list)


class MlHealth(_Loose):
    inference: str | None = Field(default=None, description="in_process or remote")
    version: str | None = Field(default=None, description="the model version the node trades on")
    healthy: bool | None = None
    last_error: str | None = None
    latency_blocks: int | None = None
    registry_anomaly: str | None = Field(
        default=None,
        description="the production alias moved outside promote/rollback: why, and what "
        "the node trades instead (null: none)",
    )


class Regime(_Loose):
    state: int | None = Field(default=None, description="the active regime state")
    posterior: list[float] | None = Field(default=None, description="per state")
    confidence: float | None = None
    drift: float | None = None
    action: int | None = Field(default=None, description="-1 SELL, 0 HOLD, 1 BUY")


class StatusResponse(BaseModel):
    """Body fields (mode ... blocks) come from the node's latest heartbeat snapshot; null
    when no node ever wrote one."""

    trading_enabled: bool
    kill_switch: KillSwitch
    node: NodeInfo
    mode: str | None = None
    symbols: list[str] | None = None
    trader_id: str | None = None
    model_version: str | None = None
    positions: list[Position] | None = None
    realized_pnl_usd: float | None = None
    unrealized_pnl_usd: float | None = None
    realized_by_symbol: dict[str, float] | None = None
    unrealized_by_symbol: dict[str, float] | None = None
    equity_usd: float | None = Field(default=None, description="account balance + open PnL")
    regime: dict[str, Regime] | None = Field(default=None, description="per symbol, last step")
    ml_health: MlHealth | None = Field(default=None, description="the snapshot's `model` object")
    orders: int | None = None
    market_time: str | None = None
    recent_trades: list[dict[str, Any]] | None = Field(
        default=None, description="the session's newest closed trades (up to 50), oldest first"
    )
    closed_trades: int | None = Field(default=None, description="closed trades this session")
    pnl_by_day: dict[str, float] | None = Field(
        default=None, description="net PnL of the session's closed trades by UTC day"
    )
    trading_from: str | None = Field(
        default=None, description="a replay's warm-up ends at this market time (no orders before)"
    )
    blocks: dict[str, int] | None = Field(default=None, description="guardrail blocks by reason")
    open_orders: list[OpenOrder] | None = Field(default=None, description="open on the venue")
    found_at_start: FoundAtStart | None = Field(
        default=None, description="open on the venue when the session started"
    )
    snapshot_session: int | None = Field(default=None, description="the session that wrote it")
    snapshot_at: str | None = None
    snapshot_errors: list[str] = Field(
        default_factory=list, description="snapshot fields that could not be read"
    )


Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class KillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = Field(description="why (recorded in the audit trail)")
    flatten: StrictBool = Field(default=True, description="also close open positions")


class EnableRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


class RetrainResponse(BaseModel):
    flow_run_id: str
    flow_run_name: str
    deployment: str
    state: str
    prefect_api_url: str


# ---- status -------------------------------------------------------------------------------
def _age_s(at: str | None, now: dt.datetime) -> float | None:
    if not at:
        return None
    try:
        t = dt.datetime.fromisoformat(at)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return round(max(0.0, (now - t).total_seconds()), 3)


def _node_info(session: Session | None, stale_after_s: float, now: dt.datetime) -> NodeInfo:
    if session is None:
        return NodeInfo(running=False)
    age = _age_s(session.heartbeat_at, now)
    alive_age = age if age is not None else _age_s(session.started_at, now)
    running = session.ended_at is None and alive_age is not None and alive_age <= stale_after_s
    ended: bool | None = None
    if session.ended_at is not None:
        ended = session.clean
    elif not running:
        ended = False
    return NodeInfo(
        running=running,
        session=session.id,
        heartbeat_at=session.heartbeat_at,
        heartbeat_age_s=age,
        ended_cleanly=ended,
    )


def _field(body: dict[str, Any], key: str, kind: Any, errors: list[str]) -> Any:
    """body[key] validated as `kind`; None (and a note) when the node wrote something else."""
    from pydantic import TypeAdapter

    value = body.get(key)
    if value is None:
        return None
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in (key, *first.get("loc", ())))
        errors.append(f"{where}: {first.get('msg', 'invalid')}")
        return None


def build_status(state: NodeState, ops: OpsSettings) -> StatusResponse:
    """The ops view of the state file (the API's /status and `hmmtrader ops status --local`)."""
    now = dt.datetime.now(dt.UTC)
    switch = state.switch()
    session = state.last_session()
    snapshot = state.status()
    out = StatusResponse(
        trading_enabled=switch.trading_enabled,
        kill_switch=KillSwitch.of(switch),
        node=_node_info(session, ops.stale_after_s, now),
    )
    if snapshot is None:
        return out
    body, updated_at, session_id = snapshot
    out.snapshot_session, out.snapshot_at = session_id, updated_at
    if not isinstance(body, dict):
        out.snapshot_errors.append(f"snapshot is a {type(body).__name__}, not an object")
        return out
    errors = out.snapshot_errors
    out.mode = _field(body, "mode", str, errors)
    out.symbols = _field(body, "symbols", list[str], errors)
    out.trader_id = _field(body, "trader_id", str, errors)
    out.positions = _field(body, "positions", list[Position], errors)
    out.realized_pnl_usd = _field(body, "realized_pnl_usd", float, errors)
    out.unrealized_pnl_usd = _field(body, "unrealized_pnl_usd", float, errors)
    out.realized_by_symbol = _field(body, "realized_by_symbol", dict[str, float], errors)
    out.unrealized_by_symbol = _field(body, "unrealized_by_symbol", dict[str, float], errors)
    out.equity_usd = _field(body, "equity_usd", float, errors)
    out.regime = _field(body, "regime", dict[str, Regime], errors)
    out.orders = _field(body, "orders", int, errors)
    out.market_time = _field(body, "market_time", str, errors)
    out.trading_from = _field(body, "trading_from", str, errors)
    out.recent_trades = _field(body, "recent_trades", list[dict[str, Any]], errors)
    out.closed_trades = _field(body, "closed_trades", int, errors)
    out.pnl_by_day = _field(body, "pnl_by_day", dict[str, float], errors)
    out.blocks = _field(body, "blocks", dict[str, int], errors)
    out.open_orders = _field(body, "open_orders", list[OpenOrder], errors)
    out.found_at_start = _field(body, "found_at_start", FoundAtStart, errors)
    model = body.get("model")
    if isinstance(model, dict) and model.get("version") is not None:
        model = {**model, "version": str(model["version"])}  # "3" or 3: the same version
    out.ml_health = _field({"model": model}, "model", MlHealth, errors)
    out.model_version = out.ml_health.version if out.ml_health else None
    return out


# ---- metrics ------------------------------------------------------------------------------
class OpsMetrics:
    """One registry per app; gauges are set from the state file at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.trading_enabled = Gauge(
            "hmmtrader_trading_enabled", "1: kill switch released, 0: engaged", registry=r
        )
        self.node_running = Gauge(
            "hmmtrader_node_running",
            "1 while the latest node session is heartbeating (within ops.stale_after_s)",
            registry=r,
        )
        self.heartbeat_age = Gauge(
            "hmmtrader_node_heartbeat_age_seconds",
            "Seconds since the node's last heartbeat (NaN: none yet)",
            registry=r,
        )

    def update(self, status: StatusResponse) -> None:
        self.trading_enabled.set(1 if status.trading_enabled else 0)
        self.node_running.set(1 if status.node.running else 0)
        age = status.node.heartbeat_age_s
        self.heartbeat_age.set(math.nan if age is None else age)


# ---- retrain ------------------------------------------------------------------------------
async def trigger_retrain(ops: OpsSettings) -> RetrainResponse:
    """A run of ops.deployment on the Prefect API; ApiError (503/404) says what is wrong."""
    import httpx

    url = prefect_api_url(ops)
    if not url:
        raise ApiError(
            503,
            "no Prefect API configured: set PREFECT_API_URL or ops.prefect_api_url "
            "(HMMTRADER_OPS__PREFECT_API_URL) for the ops server, then restart it",
        )
    name = ops.deployment
    if name.count("/") != 1 or not all(name.split("/")):
        raise ApiError(503, f"ops.deployment must be FLOW/DEPLOYMENT, got {name!r}")
    from prefect.client.orchestration import PrefectClient
    from prefect.exceptions import ObjectNotFound

    unreachable = f"Prefect API not reachable at {url}"
    try:
        async with PrefectClient(url, httpx_settings={"timeout": ops.timeout_s}) as client:
            problem = await client.api_healthcheck()
            if problem is not None:
                raise ApiError(
                    503,
                    f"{unreachable}: {type(problem).__name__}: {problem} (is it running, and "
                    "does the URL end in /api?)".replace("\n", " "),
                )
            try:
                deployment = await client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise ApiError(
                    404, f"deployment {name!r} not found on the Prefect API at {url}: {DEPLOY_HINT}"
                ) from None
            run = await client.create_flow_run_from_deployment(deployment.id)
    except ApiError:
        raise
    except httpx.HTTPStatusError as exc:
        raise ApiError(
            503, f"Prefect API at {url} refused: {exc.response.status_code} {exc.response.text}"
        ) from None
    except (httpx.HTTPError, OSError) as exc:
        raise ApiError(503, f"{unreachable}: {type(exc).__name__}: {exc}") from None
    log.warning("retrain requested: flow run %s (%s) of %s", run.name, run.id, name)
    return RetrainResponse(
        flow_run_id=str(run.id),
        flow_run_name=run.name or "",
        deployment=name,
        state=(run.state.name if run.state is not None else None) or "unknown",
        prefect_api_url=url,
    )


# ---- the app ------------------------------------------------------------------------------
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no bearer token"},
    403: {"description": "wrong token, or the server has no token (HMMTRADER_OPS__TOKEN)"},
    422: {"description": "invalid body; `detail` names the field"},
}


def create_ops_app(config: AppConfig) -> FastAPI:
    ops = config.settings.ops
    state = open_state(config)
    metrics = OpsMetrics()
    bearer = HTTPBearer(auto_error=False, description="HMMTRADER_OPS__TOKEN")

    app = FastAPI(title="hmm-trader ops API", version="1", description=(__doc__ or "").strip())
    app.state.node_state = state

    async def operator(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        check_bearer(
            creds,
            ops.token,
            "ops actions are disabled: the server has no token "
            "(set HMMTRADER_OPS__TOKEN and restart it)",
        )

    install_error_handlers(app, log)

    async def status_now() -> StatusResponse:
        return await asyncio.to_thread(build_status, state, ops)

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/status",
        response_model=StatusResponse,
        summary="Kill switch, node liveness, positions, PnL, model health",
    )
    async def status() -> StatusResponse:
        return await status_now()

    @app.post(
        "/kill",
        response_model=SwitchResponse,
        dependencies=[Depends(operator)],
        summary="Engage the kill switch: the node cancels orders (and flattens) and stops",
        responses=AUTH_ERRORS,
    )
    async def kill(req: KillRequest) -> SwitchResponse:
        s = await asyncio.to_thread(state.engage, req.reason, ACTOR, flatten=req.flatten)
        log.warning("kill switch ENGAGED via the ops API (flatten=%s): %s", req.flatten, req.reason)
        return SwitchResponse(trading_enabled=s.trading_enabled, **KillSwitch.of(s).model_dump())

    @app.post(
        "/enable",
        response_model=SwitchResponse,
        dependencies=[Depends(operator)],
        summary="Release the kill switch: the node may trade again",
        responses=AUTH_ERRORS,
    )
    async def enable(req: EnableRequest) -> SwitchResponse:
        s = await asyncio.to_thread(state.enable, req.reason, ACTOR)
        log.warning("kill switch released via the ops API: %s", req.reason)
        return SwitchResponse(trading_enabled=s.trading_enabled, **KillSwitch.of(s).model_dump())

    @app.post(
        "/retrain",
        response_model=RetrainResponse,
        dependencies=[Depends(operator)],
        summary="Start a run of the nightly-retrain Prefect deployment (ops.deployment)",
        responses={
            401: AUTH_ERRORS[401],
            403: AUTH_ERRORS[403],
            404: {"description": "the deployment is not registered on the Prefect API"},
            503: {"description": "no Prefect API configured, or it is unreachable"},
        },
    )
    async def retrain() -> RetrainResponse:
        return await trigger_retrain(ops)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        metrics.update(await status_now())
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
