"""Error replies shared by the routing proxy and the LCPs: 400 and 401, never a 500.

FastAPI answers a body that fails validation with 422; here it is 400 with status
``INVALID_REQUEST`` and a one-line reason naming the field. A missing, bad or expired token
is 401 with status ``ERROR`` and the reason.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from redfl.edge.protocol import ErrorReply, Status

__all__ = ["InvalidRequest", "install_error_handlers", "invalid", "unauthorized"]

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorReply, "description": "Malformed body: status INVALID_REQUEST"},
    401: {"model": ErrorReply, "description": "Missing, bad or expired token"},
}
"""OpenAPI ``responses`` of every device route."""


class InvalidRequest(ValueError):
    """A request whose body parsed but whose content is unusable (answered with 400)."""


def invalid(reason: str) -> JSONResponse:
    """A 400 reply with status ``INVALID_REQUEST``."""
    body = ErrorReply(status=Status.INVALID_REQUEST, reason=reason)
    return JSONResponse(body.model_dump(mode="json"), status_code=400)


def unauthorized(reason: str) -> JSONResponse:
    """A 401 reply with status ``ERROR``."""
    body = ErrorReply(status=Status.ERROR, reason=reason)
    return JSONResponse(body.model_dump(mode="json"), status_code=401)


def _describe(exc: RequestValidationError) -> str:
    """One line: each error's location and message."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request body"


def install_error_handlers(app: FastAPI) -> None:
    """Answer validation errors and :class:`InvalidRequest` with 400 ``INVALID_REQUEST``."""

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return invalid(_describe(exc))

    async def on_invalid(request: Request, exc: Exception) -> Response:
        return invalid(str(exc))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InvalidRequest, on_invalid)
