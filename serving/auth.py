"""What the HTTP servers (inference server, ops API) share: `ApiError`, the bearer-token
check and the JSON error handlers. Light on purpose (no model or registry imports)."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An answer other than 200, with a message for the client."""

    def __init__(
        self,
        status: int,
        message: str,
        loc: list[str | int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.loc = loc
        self.headers = headers


def loc_text(loc: list[Any] | tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def check_bearer(
    creds: HTTPAuthorizationCredentials | None, token: SecretStr | None, disabled: str
) -> None:
    """403 `disabled` when the server has no token, 401 without a token, 403 when wrong.
    Constant-time comparison; the token is never logged or echoed."""
    if token is None:
        raise ApiError(403, disabled)
    if creds is None or not creds.credentials:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
    if not hmac.compare_digest(creds.credentials.encode(), token.get_secret_value().encode()):
        raise ApiError(403, "wrong bearer token")


def install_error_handlers(app: FastAPI, log: logging.Logger) -> None:
    """Every error is JSON with a `detail` text; 422s name the field (`loc`); 401s carry
    `WWW-Authenticate: Bearer`, 405s `Allow` (the router's headers are kept); anything
    unexpected is a logged 500 without internals."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        body: dict[str, Any] = {"detail": exc.message}
        if exc.loc:
            body["detail"] = f"{loc_text(exc.loc)}: {exc.message}"
            body["loc"] = exc.loc
        headers = dict(exc.headers or {})
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(body, status_code=exc.status, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()[:20]
        ]
        text = "; ".join(f"{loc_text(e['loc'])}: {e['msg']}" for e in errors[:5])
        return JSONResponse({"detail": text, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )
