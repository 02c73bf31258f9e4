"""What the inference server does before a request reaches a route: body size and body
read time limits, request counts and latency; and the uvicorn options it runs with.

Pure ASGI, so a body is refused while it arrives: 413 when it is (declared or streamed)
larger than serving.max_body_bytes, 408 when it is not fully received within
serving.body_timeout_s (a slow client would otherwise hold its connection for ever).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.inference.metrics import ServingMetrics, method_label
from trading.settings import ServingSettings


class BodyTooLargeError(StarletteHTTPException):
    """Raised from the receive channel: FastAPI passes HTTP exceptions through as they are."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_text(limit, limit + 1))


class BodyTimeoutError(StarletteHTTPException):
    """The body did not arrive in time; the connection is closed after the answer."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408,
            f"the request body was not received within serving.body_timeout_s "
            f"({timeout_s:g} s): send it at once",
            headers={"Connection": "close"},
        )


def _too_large_text(limit: int, size: int) -> str:
    return (
        f"request body of {size} bytes or more exceeds serving.max_body_bytes {limit}: "
        "send fewer rows per request"
    )


def uvicorn_options(settings: ServingSettings) -> dict[str, Any]:
    """uvicorn.run() options of `hmmtrader serve` (the body timeout is the middleware's)."""
    return {"timeout_keep_alive": settings.keep_alive_s}


class LimitsAndMetrics:
    """413 for bodies over the limit, 408 for bodies that take too long, request counts
    and latency by endpoint (route template; unknown paths are "other"), method and status."""

    def __init__(
        self, app: ASGIApp, settings: ServingSettings, metrics: ServingMetrics, known: set[str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.known = known
        self.limit = settings.max_body_bytes
        self.body_timeout_s = settings.body_timeout_s

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
                await self._refuse(send_wrapper, 413, _too_large_text(self.limit, declared))
                return
            seen = 0
            body_done = False
            deadline = asyncio.get_running_loop().time() + self.body_timeout_s

            async def limited_receive() -> Message:
                nonlocal seen, body_done
                if body_done:  # later receives wait for a disconnect: no deadline
                    return await receive()
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    raise BodyTimeoutError(self.body_timeout_s) from None
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.limit:
                        raise BodyTooLargeError(self.limit)
                    body_done = not message.get("more_body", False)
                else:
                    body_done = True
                return message

            try:
                await self.app(scope, limited_receive, send_wrapper)
            except (BodyTooLargeError, BodyTimeoutError) as exc:
                if not started:
                    await self._refuse(send_wrapper, exc.status_code, exc.detail)
        finally:
            m = self.metrics
            method = method_label(scope.get("method", ""))
            m.requests.labels(endpoint, method, str(status)).inc()
            m.latency.labels(endpoint, method, str(status)).observe(time.perf_counter() - t0)

    async def _refuse(self, send: Send, status: int, detail: str) -> None:
        body = orjson.dumps({"detail": detail})
        await send(
            {
                "type": "http.response.start",
                "status": status,
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
