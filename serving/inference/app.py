"""The inference server: the registry's `production` model (alias configurable) over HTTP.

GET /health, /ready, /models, /metrics; POST /infer; admin (bearer token): POST /load,
/promote, /rollback, /reload. A watcher polls the alias and hot-swaps (blue/green, see
trading.regime.slots). Per-symbol filter state is kept on the server (stream mode, one stream
per session and symbol) or the client sends a self-contained window (window mode).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import ApiError, check_bearer, install_error_handlers
from serving.inference.metrics import ServingMetrics
from trading.errors import HmmTraderError, InputError
from trading.regime.model import FeatureInputError
from trading.regime.registry import PRODUCTION, PromotionRefusedError, Registry
from trading.regime.slots import LoadedModel, ModelLoadError, ModelSlots, load_version, now_iso
from trading.regime.streams import StreamHistory
from trading.settings import AppConfig
from trading.strategy.remote import (
    InferRequest,
    InferResponse,
    PromoteRequest,
    Ready,
    VersionRequest,
    step_out,
)

log = logging.getLogger("hmmtrader.serving")


class ModelServer:
    """Slots, watcher and registry access of one server process."""

    def __init__(self, config: AppConfig) -> None:
        s = config.settings
        self.config = config
        self.settings = s.serving
        self.alias = s.serving.alias
        self.metrics = ServingMetrics()
        self.history = StreamHistory(s.serving.history_rows, s.serving.max_streams)
        self.slots = ModelSlots()
        self.reason = "starting: the model is being loaded"
        self.last_error: dict[str, Any] | None = None
        self.last_poll: str | None = None
        self.last_poll_error = ""
        self._failed: int | None = None  # the watcher does not retry this version
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._registry: Registry | None = None

    # ---- registry -----------------------------------------------------------------------
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.config.settings.registry, self.config.home)
        return self._registry

    def _alias_version(self) -> int | None:
        return self.registry().aliases().get(self.alias)

    # ---- slots --------------------------------------------------------------------------
    @property
    def active(self) -> LoadedModel | None:
        return self.slots.active

    @property
    def standby(self) -> LoadedModel | None:
        return self.slots.standby

    def _set_active(self, loaded: LoadedModel) -> None:
        old = self.slots.swap(loaded)
        self.reason = ""
        self.metrics.model_ready.set(1)
        self.metrics.model_version.info(
            {"model": loaded.name, "version": str(loaded.version), "alias": self.alias}
        )
        self.metrics.swaps.labels("ok").inc()
        log.info(
            "serving %s version %d (%s)%s",
            loaded.name,
            loaded.version,
            loaded.feature_version,
            f"; version {old.version} kept as standby" if old is not None else "",
        )

    async def _load(self, version: int) -> LoadedModel:
        try:
            return await asyncio.to_thread(load_version, self.registry(), version, self.history)
        except ModelLoadError as exc:
            self.last_error = {
                "version": exc.version,
                "stage": exc.stage,
                "message": exc.message,
                "at": now_iso(),
            }
            self.metrics.swaps.labels("failed").inc()
            log.error("model %s: %s; still serving %s", self.alias, exc, self._serving_text())
            raise

    def _serving_text(self) -> str:
        return f"version {self.active.version}" if self.active else "nothing"

    async def activate(self, version: int) -> LoadedModel:
        """Load (or take from standby) `version`, smoke-test it and swap it in."""
        if self.active is not None and self.active.version == version:
            return self.active
        loaded = self.slots.find(version) or await self._load(version)
        self._set_active(loaded)
        self._failed = None
        return loaded

    async def sync_alias(self, *, retry_failed: bool) -> dict[str, Any]:
        """Re-read the alias; swap when it points at another version."""
        async with self._lock:
            before = self.active.version if self.active else None
            try:
                target = await asyncio.to_thread(self._alias_version)
                self.last_poll, self.last_poll_error = now_iso(), ""
            except Exception as exc:
                self.last_poll, self.last_poll_error = now_iso(), f"{type(exc).__name__}: {exc}"
                if self.active is None:
                    self.reason = f"model registry unreachable: {self.last_poll_error}"
                raise ApiError(503, f"model registry unreachable: {exc}") from exc
            if target is None:
                if self.active is None:
                    self.reason = (
                        f"{self.registry().name} has no {self.alias!r} version yet "
                        "(promote one: hmmtrader promote VERSION)"
                    )
                return {"alias": self.alias, "version": before, "changed": False}
            if target != before and (retry_failed or target != self._failed):
                try:
                    await self.activate(target)
                except ModelLoadError as exc:
                    self._failed = target
                    if self.active is None:
                        self.reason = str(exc)
                    raise ApiError(503, str(exc)) from exc
            after = self.active.version if self.active else None
            return {"alias": self.alias, "version": after, "changed": after != before}

    async def watch(self) -> None:
        interval = self.settings.poll_interval_s
        while True:
            try:
                await self.sync_alias(retry_failed=False)
            except ApiError:
                pass  # recorded in last_poll_error / last_error and logged
            except Exception:  # never let the watcher die
                log.exception("alias watcher")
            await asyncio.sleep(interval)

    async def start(self) -> None:
        self._watcher = asyncio.create_task(self.watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with suppress(asyncio.CancelledError):
                await self._watcher

    # ---- views --------------------------------------------------------------------------
    def ready(self) -> Ready:
        a = self.active
        name = self._registry.name if self._registry else self.config.settings.registry.model_name
        if a is None:
            return Ready(ready=False, reason=self.reason, alias=self.alias, model=name)
        return Ready.model_validate(
            {"ready": True, "alias": self.alias, "model": a.name, "version": a.version,
             "info": a.info()}
        )  # fmt: skip

    def models(self) -> dict[str, Any]:
        versions: list[dict[str, Any]] = []
        registry_error = ""
        try:
            for v in self.registry().versions():
                versions.append(
                    {"version": v.version, "aliases": v.aliases, "canary": v.canary,
                     "created": v.created.isoformat(timespec="seconds")}
                )  # fmt: skip
        except Exception as exc:
            registry_error = f"{type(exc).__name__}: {exc}"
        return {
            "model": self.ready().model,
            "alias": self.alias,
            "active": self.active.info() if self.active else None,
            "standby": self.standby.info() if self.standby else None,
            "versions": versions,
            "registry_error": registry_error,
            "last_error": self.last_error,
            "watcher": {
                "poll_interval_s": self.settings.poll_interval_s,
                "last_poll": self.last_poll,
                "last_poll_error": self.last_poll_error,
            },
        }

    # ---- inference ----------------------------------------------------------------------
    def infer(self, req: InferRequest) -> dict[str, Any]:
        loaded = self.active  # in-flight requests finish on the model they started with
        if loaded is None:
            self.metrics.inference_errors.labels("not_ready").inc()
            raise ApiError(503, f"no model loaded: {self.reason}")
        try:
            return self._infer(loaded, req)
        except ApiError:
            self.metrics.inference_errors.labels("invalid_input").inc()
            raise

    def _infer(self, loaded: LoadedModel, req: InferRequest) -> dict[str, Any]:
        n = len(req.rows)
        limit = self.settings.max_batch_rows
        if n > limit:
            raise ApiError(422, f"{n} rows exceed serving.max_batch_rows {limit}", ["body", "rows"])
        if len(req.ts_ns) != n:
            raise ApiError(422, f"{len(req.ts_ns)} timestamps for {n} rows", ["body", "ts_ns"])
        model = loaded.model
        if req.feature_version != loaded.feature_version:
            raise ApiError(
                422,
                f"rows are {req.feature_version} but the served model (version "
                f"{loaded.version}) reads {loaded.feature_version}",
                ["body", "feature_version"],
            )
        columns = model.columns
        if req.columns is not None and req.columns != columns:
            raise ApiError(
                422,
                f"columns must be exactly {', '.join(columns)} (in this order)",
                ["body", "columns"],
            )
        width = len(columns)
        for i, row in enumerate(req.rows):
            if len(row) != width:
                raise ApiError(
                    422,
                    f"row has {len(row)} values; {loaded.feature_version} rows have {width} "
                    f"({', '.join(columns)})",
                    ["body", "rows", i],
                )
        ts = np.asarray(req.ts_ns, dtype=np.int64)
        if n > 1:
            back = np.flatnonzero(np.diff(ts) <= 0)
            if len(back):
                i = int(back[0]) + 1
                raise ApiError(
                    422, "timestamps must increase within a request", ["body", "ts_ns", i]
                )
        x = np.asarray(req.rows, dtype=np.float64)
        try:
            if req.mode == "window":
                out = model.predict_array(x, ts)
                steps = [step_out(out[i], int(ts[i])) for i in range(n)]
            else:
                key = (req.session, req.symbol)
                steps = [
                    step_out(loaded.streams.step(key, x[i], int(ts[i])), int(ts[i]))
                    for i in range(n)
                ]
        except FeatureInputError as exc:
            raise ApiError(422, str(exc), ["body", "rows"]) from exc
        self.metrics.inference_rows.labels(req.mode).inc(n)
        self.metrics.drift_score.labels(req.symbol).set(steps[-1]["drift_score"])
        return {
            "model": loaded.name,
            "version": loaded.version,
            "feature_version": loaded.feature_version,
            "symbol": req.symbol,
            "mode": req.mode,
            "steps": steps,
        }


# ---- middleware -----------------------------------------------------------------------
class BodyTooLargeError(StarletteHTTPException):
    """Raised from the receive channel: FastAPI passes HTTP exceptions through as they are."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_text(limit, limit + 1))


def _too_large_text(limit: int, size: int) -> str:
    return (
        f"request body of {size} bytes or more exceeds serving.max_body_bytes {limit}: "
        "send fewer rows per request"
    )


class LimitsAndMetrics:
    """Pure ASGI: 413 for bodies over the limit (declared or streamed), request counts and
    latency by endpoint (route template; unknown paths are "other") and status."""

    def __init__(self, app: ASGIApp, server: ModelServer, known: set[str]) -> None:
        self.app = app
        self.server = server
        self.known = known
        self.limit = server.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope.get("path", "")
        endpoint = path if path in self.known else "other"
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.limit:
                await self._too_large(send_wrapper, declared)
                return
            seen = 0

            async def limited_receive() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.limit:
                        raise BodyTooLargeError(self.limit)
                return message

            try:
                await self.app(scope, limited_receive, send_wrapper)
            except BodyTooLargeError:
                if not started:
                    await self._too_large(send_wrapper, seen)
        finally:
            m = self.server.metrics
            method = scope.get("method", "")
            m.requests.labels(endpoint, method, str(status)).inc()
            m.latency.labels(endpoint, method, str(status)).observe(time.perf_counter() - t0)

    async def _too_large(self, send: Send, size: int) -> None:
        body = orjson.dumps({"detail": _too_large_text(self.limit, size)})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# ---- the app --------------------------------------------------------------------------
def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not parseable (not UTF-8 JSON)"},
    413: {"description": "the body exceeds serving.max_body_bytes"},
    422: {"description": "invalid input; `detail` names the field"},
    503: {"description": "no model loaded (or the registry is unreachable); `detail` says why"},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no bearer token"},
    403: {"description": "wrong token, or the server has no token configured"},
    **ERRORS,
}


def create_app(config: AppConfig, server: ModelServer | None = None) -> FastAPI:
    server = server or ModelServer(config)
    bearer = HTTPBearer(auto_error=False, description="HMMTRADER_SERVING__TOKEN")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(
        title="hmm-trader inference server",
        version="1",
        description=(__doc__ or "").strip(),
        lifespan=lifespan,
    )
    app.state.server = server

    async def admin(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        check_bearer(
            creds,
            server.settings.token,
            "admin endpoints are disabled: the server has no token "
            "(set HMMTRADER_SERVING__TOKEN and restart it)",
        )

    install_error_handlers(app, log)

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        response_model=Ready,
        summary="Readiness: a model is loaded (which version)",
        responses={503: {"model": Ready, "description": "not ready; `reason` says why"}},
    )
    async def ready() -> Response:
        r = server.ready()
        return _json(r.model_dump(), 200 if r.ready else 503)

    @app.get("/models", summary="Registered versions, the active and standby slots")
    async def models() -> dict[str, Any]:
        return await asyncio.to_thread(server.models)

    @app.post(
        "/infer",
        response_model=InferResponse,
        summary="Regime, posterior and action for each feature row",
        responses=ERRORS,
    )
    async def infer(req: InferRequest) -> Response:
        return _json(server.infer(req))

    async def _registry_call(fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await fn()
        except PromotionRefusedError as exc:
            raise ApiError(409, str(exc)) from exc
        except InputError as exc:
            raise ApiError(404 if "has no version" in str(exc) else 422, str(exc)) from exc
        except ModelLoadError as exc:
            serving = server.active.version if server.active else "nothing"
            raise ApiError(503, f"{exc}; still serving {serving}") from exc
        except HmmTraderError as exc:
            raise ApiError(409, str(exc)) from exc

    @app.post(
        "/load",
        dependencies=[Depends(admin)],
        summary="Load a version into the standby slot (not promoted, not served)",
        responses={**ADMIN_ERRORS, 404: {"description": "no such version"},
                   409: {"description": "refused by the registry"}},
    )  # fmt: skip
    async def load(req: VersionRequest) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            version = await asyncio.to_thread(server.registry().resolve, req.version)
            async with server._lock:
                if server.active is not None and server.active.version == version:
                    return {"standby": None, "detail": f"version {version} is already active"}
                if server.standby is None or server.standby.version != version:
                    server.slots.standby = await server._load(version)
                assert server.standby is not None
                return {"standby": server.standby.info()}

        result: dict[str, Any] = await _registry_call(go)
        return result

    @app.post(
        "/promote",
        dependencies=[Depends(admin)],
        summary="Promote a version (as `hmmtrader promote`), then swap to it",
        responses={**ADMIN_ERRORS, 404: {"description": "no such version"},
                   409: {"description": "refused: no passed canary (force with a reason)"}},
    )  # fmt: skip
    async def promote(req: PromoteRequest) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            registry = server.registry()
            if req.force and not req.reason.strip():
                raise ApiError(422, "force needs a reason (it is recorded)", ["body", "reason"])
            before, after = await asyncio.to_thread(
                registry.promote, req.version, force=req.force, reason=req.reason
            )
            return await _after_alias_move(before, after)

        result: dict[str, Any] = await _registry_call(go)
        return result

    @app.post(
        "/rollback",
        dependencies=[Depends(admin)],
        summary="production <- previous (as `hmmtrader rollback`), then swap",
        responses={**ADMIN_ERRORS, 409: {"description": "nothing to roll back to"}},
    )
    async def rollback() -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            was, now = await asyncio.to_thread(server.registry().rollback)
            return await _after_alias_move(was, now)

        result: dict[str, Any] = await _registry_call(go)
        return result

    async def _after_alias_move(before: int | None, after: int) -> dict[str, Any]:
        result: dict[str, Any] = {"production": after, "was": before}
        if server.alias == PRODUCTION:
            async with server._lock:
                await server.activate(after)
        result["active"] = server.active.version if server.active else None
        return result

    @app.post(
        "/reload",
        dependencies=[Depends(admin)],
        summary="Re-read the alias now (and retry a version that failed to load)",
        responses=ADMIN_ERRORS,
    )
    async def reload() -> dict[str, Any]:
        return await server.sync_alias(retry_failed=True)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    known = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(LimitsAndMetrics, server=server, known=known)
    return app
