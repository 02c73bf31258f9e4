"""The inference server: the registry's `production` model (alias configurable) over HTTP.

GET /health, /ready, /models, /metrics; POST /infer; admin (bearer token): POST /load,
/promote, /rollback, /reload. A watcher polls the alias and hot-swaps (blue/green, see
trading.regime.slots). Per-symbol filter state is kept on the server (stream mode, one stream
per session and symbol) or the client sends a self-contained window (window mode).

/infer parses, computes and serialises in worker threads (serving.infer_threads at once,
serving.infer_queue more waiting, then 503), never on the event loop: /health, /ready and
/metrics answer while large requests compute. Limits before routing: serving/inference/limits.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from serving.auth import ApiError, check_bearer, install_error_handlers
from serving.inference.limits import LimitsAndMetrics
from serving.inference.metrics import ServingMetrics
from serving.inference.schema import INFER_BODY, install_openapi, is_json
from trading.errors import HmmTraderError, InputError, store_failure
from trading.regime import kernel
from trading.regime.model import FeatureInputError
from trading.regime.registry import (
    PRODUCTION,
    TAG_FLOORS,
    ProductionGuard,
    PromotionRefusedError,
    Registry,
)
from trading.regime.slots import LoadedModel, ModelLoadError, ModelSlots, load_version, now_iso
from trading.regime.streams import StreamHistory, StreamOrderError
from trading.settings import AppConfig
from trading.strategy.remote import (
    InferRequest,
    InferResponse,
    PromoteRequest,
    Ready,
    VersionRequest,
    steps_out,
)

log = logging.getLogger("hmmtrader.serving")
SWITCH_INTERVAL_S = 0.001


class ModelServer:
    """Slots, watcher and registry access of one server process."""

    def __init__(self, config: AppConfig) -> None:
        s = config.settings
        self.config = config
        self.settings = s.serving
        self.alias = s.serving.alias
        self.metrics = ServingMetrics(config.instruments.symbols)
        self.history = StreamHistory(s.serving.history_rows, s.serving.max_streams)
        self._compute = ThreadPoolExecutor(s.serving.infer_threads, "infer")
        self._infer_pending = 0  # /infer requests computing or waiting for a thread
        self._switch_interval_s = sys.getswitchinterval()
        self.slots = ModelSlots()
        self.reason = "starting: the model is being loaded"
        self.last_error: dict[str, Any] | None = None
        self.last_poll: str | None = None
        self.last_poll_error = ""
        self._failed: int | None = None  # the watcher does not retry this version
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._registry: Registry | None = None
        self.guard: ProductionGuard | None = None  # the production alias's last check
        self._out_of_band: tuple[int | None, int | None] | None = None
        # the poll thread and a request's reload both look at the guard: one move is
        # counted once (without it both could see it as new and count it twice)
        self._guard_lock = threading.Lock()

    # ---- registry -----------------------------------------------------------------------
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.config.settings.registry, self.config.home)
        return self._registry

    def _alias_version(self) -> int | None:
        """The version to serve: for `production`, the guarded one (an out-of-band move to
        a version without a passed canary or a recorded force reason is not followed)."""
        registry = self.registry()
        if self.alias == PRODUCTION:
            guard = registry.guard()
            self._guard_seen(guard)
            version = guard.serving
        else:
            version = registry.aliases().get(self.alias)
        if version is not None:
            self._floors_of(registry, version)
        return version

    def _guard_seen(self, guard: ProductionGuard) -> None:
        with self._guard_lock:
            gauge = self.metrics.production_out_of_band
            gauge.clear()
            if guard.anomaly:
                labels = (str(guard.alias), str(guard.serving), str(guard.blocked).lower())
                gauge.labels(*labels).set(1)
            key = (guard.alias, guard.recorded) if guard.anomaly else None
            if key is not None and key != self._out_of_band:
                self.metrics.production_out_of_band_moves.inc()
                log.error("production alias: %s", guard.anomaly)
            self._out_of_band = key
            self.guard = guard

    def _floors_of(self, registry: Registry, version: int) -> None:
        """The metric of the floors `version` failed as production on its latest canary
        check (tag floors_failed; the canary writes it)."""
        failed = registry.version_tags(version).get(TAG_FLOORS, "none")
        count = 0 if failed in ("none", "") else len(failed.split(","))
        gauge = self.metrics.production_failed_floors
        gauge.clear()
        gauge.labels(str(version)).set(count)

    # ---- slots --------------------------------------------------------------------------
    @property
    def active(self) -> LoadedModel | None:
        return self.slots.active

    @property
    def standby(self) -> LoadedModel | None:
        return self.slots.standby

    def _set_active(self, loaded: LoadedModel) -> None:
        if loaded.model.max_abs_z != self.settings.max_abs_z:
            loaded.model.set_ood_bound(self.settings.max_abs_z)  # its filters are rebuilt
        old = self.slots.swap(loaded)
        # what is loaded by now (imports, the models) lives as long as the process: keep it
        # out of the cyclic GC's full collections, ~250 ms of holding the GIL otherwise
        # (every request would wait for them)
        gc.freeze()
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
        # the event loop takes the GIL back from a computing /infer thread within this
        # (Python's default, 5 ms, is paid several times per /health request)
        self._switch_interval_s = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._watcher = asyncio.create_task(self.watch())

    async def stop(self) -> None:
        self._compute.shutdown(wait=False, cancel_futures=True)
        self._compute = ThreadPoolExecutor(self.settings.infer_threads, "infer")  # no threads yet
        sys.setswitchinterval(self._switch_interval_s)
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
            "production_guard": self.guard.to_dict() if self.guard else None,
            "last_error": self.last_error,
            "watcher": {
                "poll_interval_s": self.settings.poll_interval_s,
                "last_poll": self.last_poll,
                "last_poll_error": self.last_poll_error,
            },
        }

    # ---- inference ----------------------------------------------------------------------
    async def infer_json(self, body: bytes) -> bytes:
        """POST /infer off the event loop: the JSON body in, the JSON answer out."""
        s = self.settings
        if self._infer_pending >= s.infer_threads + s.infer_queue:
            self.metrics.inference_errors.labels("busy").inc()
            raise ApiError(
                503,
                f"busy: {self._infer_pending} /infer requests are computing or waiting "
                f"(serving.infer_threads {s.infer_threads} + serving.infer_queue "
                f"{s.infer_queue}); retry in a second",
                headers={"Retry-After": "1"},
            )
        self._infer_pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._compute, self._infer_bytes, body)
        finally:
            self._infer_pending -= 1

    def _infer_bytes(self, body: bytes) -> bytes:
        try:
            req = InferRequest.model_validate_json(body)
        except ValidationError as exc:  # as FastAPI reports a body it validated
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None
        return orjson.dumps(self.infer(req))

    def infer(self, req: InferRequest) -> dict[str, Any]:
        loaded = self.active  # in-flight requests finish on the model they started with
        if loaded is None:
            self.metrics.inference_errors.labels("not_ready").inc()
            raise ApiError(503, f"no model loaded: {self.reason}")
        try:
            return self._infer(loaded, req)
        except ApiError as exc:
            reason = "stream_order" if exc.status == 409 else "invalid_input"
            self.metrics.inference_errors.labels(reason).inc()
            raise

    def _check(self, loaded: LoadedModel, req: InferRequest) -> None:
        n = len(req.rows)
        limit = self.settings.max_batch_rows
        if n > limit:
            raise ApiError(422, f"{n} rows exceed serving.max_batch_rows {limit}", ["body", "rows"])
        if len(req.ts_ns) != n:
            raise ApiError(422, f"{len(req.ts_ns)} timestamps for {n} rows", ["body", "ts_ns"])
        if req.feature_version != loaded.feature_version:
            raise ApiError(
                422,
                f"rows are {req.feature_version} but the served model (version "
                f"{loaded.version}) reads {loaded.feature_version}",
                ["body", "feature_version"],
            )
        columns = loaded.model.columns
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

    def _infer(self, loaded: LoadedModel, req: InferRequest) -> dict[str, Any]:
        self._check(loaded, req)
        n = len(req.rows)
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
                out = loaded.model.predict_array(x, ts)
            else:
                key = (req.session, req.symbol)
                if req.reset:
                    loaded.streams.forget(key)
                out = loaded.streams.run(key, x, ts)
        except StreamOrderError as exc:
            raise ApiError(409, str(exc), ["body", "ts_ns", 0]) from exc
        except FeatureInputError as exc:
            raise ApiError(422, str(exc), ["body", "rows"]) from exc
        steps = steps_out(out, ts)
        m = self.metrics
        m.inference_rows.labels(req.mode).inc(n)
        m.set_drift(req.symbol, steps[-1]["drift_score"])
        ood = int(np.count_nonzero(out[:, kernel.OUT_OOD]))
        if ood:
            m.ood_rows.inc(ood)
        return {
            "model": loaded.name,
            "version": loaded.version,
            "feature_version": loaded.feature_version,
            "symbol": req.symbol,
            "mode": req.mode,
            "steps": steps,
        }


# ---- the app --------------------------------------------------------------------------
def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not parseable (not UTF-8 JSON)"},
    408: {"description": "the body was not received within serving.body_timeout_s"},
    413: {"description": "the body exceeds serving.max_body_bytes"},
    422: {"description": "invalid input; `detail` names the field"},
    503: {"description": "no model loaded (or the registry is unreachable); `detail` says why"},
}
INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"description": "stream mode: ts_ns not after the stream's last step (nothing changed)"},
    503: {
        "description": "no model loaded, or busy (serving.infer_threads + infer_queue "
        "requests already computing or waiting: retry after `Retry-After` seconds)"
    },
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
        responses=INFER_ERRORS,
        openapi_extra={"requestBody": INFER_BODY},
    )
    async def infer(request: Request) -> Response:
        # the body is parsed in the worker thread too (a 4,096-row body is ~30 ms of JSON)
        kind = request.headers.get("content-type")
        if kind is not None and not is_json(kind):
            raise ApiError(422, f"expected a JSON body, got content-type {kind!r}", ["body"])
        body = await request.body()
        return Response(await server.infer_json(body), media_type="application/json")

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
        except Exception as exc:  # the registry's store failed (read-only, unreachable)
            what = store_failure(exc)
            if what is None:
                raise
            raise ApiError(503, what) from exc

    def _loader(registry: Registry, loaded: dict[int, LoadedModel]) -> Callable[[int], None]:
        """The registry's check before it moves an alias: load and smoke-test the version
        here (it is then swapped in without a second load). Runs in the registry's thread."""

        def verify(version: int) -> None:
            found = server.slots.find(version)
            loaded[version] = found or load_version(registry, version, server.history)

        return verify

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
            if req.forced_without_reason():
                raise ApiError(422, "force needs a reason (it is recorded)", ["body", "reason"])
            loaded: dict[int, LoadedModel] = {}
            before, after = await asyncio.to_thread(
                registry.promote, req.version, force=req.force, reason=req.reason,
                verify=_loader(registry, loaded), by="inference API",
            )  # fmt: skip
            return await _after_alias_move(before, after, loaded.get(after))

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
            registry = server.registry()
            loaded: dict[int, LoadedModel] = {}
            was, now = await asyncio.to_thread(
                registry.rollback, verify=_loader(registry, loaded), by="inference API"
            )
            return await _after_alias_move(was, now, loaded.get(now))

        result: dict[str, Any] = await _registry_call(go)
        return result

    async def _after_alias_move(
        before: int | None, after: int, loaded: LoadedModel | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"production": after, "was": before}
        if server.alias == PRODUCTION:
            async with server._lock:
                if loaded is not None and server.slots.find(after) is None:
                    server.slots.standby = loaded  # loaded and checked before the move
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

    install_openapi(app, lambda: server.active, server.settings.max_batch_rows)
    known = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(
        LimitsAndMetrics, settings=server.settings, metrics=server.metrics, known=known
    )
    return app
