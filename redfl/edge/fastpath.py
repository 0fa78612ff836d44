"""The fast path: a plain ASGI middleware that answers a service's table of routes.

FastAPI's per-request machinery (routing, dependency solving, a JSON parse into Python
objects, validation, a response class) costs several times the work of a forward, so the
device routes of the proxy and of the LCPs, and the ``/sync`` of the server and the relays,
are answered here instead, from their :class:`redfl.edge.routes.Route` table: the caller's
identity first, from the headers and the TLS session (401), then the body's size against the
route's cap (413: a declared length over it is refused before a byte is read, and a body
that grows past it while being read is refused at that point and never kept; the connection
is then closed, so the rest is not read either), then the body, validated by the route's
pydantic model straight from the bytes (400 ``INVALID_REQUEST``), then the handler. Another
method on a route's path gets 405; every other request goes on to FastAPI (``/health``,
``/stats``, the OpenAPI schema and docs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from redfl.edge.errors import InvalidRequest, Unauthorized, describe, error_body
from redfl.edge.protocol import Status
from redfl.edge.routes import Route, document, header

__all__ = ["FastPath", "serve_routes"]

_JSON = (b"content-type", b"application/json")
_ALLOW = (b"allow", b"POST")
_CLOSE = (b"connection", b"close")  # a refused body's rest is not read: end the connection


class FastPath:
    """ASGI middleware answering the routes of a table.

    Parameters
    ----------
    app : ASGIApp
        The FastAPI app (everything else).
    routes : Sequence[Route]
        The routes to answer, each at its own path.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[Route[Any]]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a route of the table, or pass the request on."""
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        status, content, extra = await _answer(route, scope, receive)
        await _reply(send, status, content, *extra)


Headers = tuple[tuple[bytes, bytes], ...]


async def _answer(route: Route[Any], scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
    """The status, body and extra headers of the reply to a request of ``route``: the checks
    in their order (method, caller, body size, body), then the handler."""
    if scope["method"] != "POST":
        reason = f"method {scope['method']} not allowed: {route.path} takes POST"
        return 405, error_body(Status.ERROR, reason), (_ALLOW,)
    try:
        caller = route.auth.identify(scope)
    except Unauthorized as exc:
        return 401, error_body(Status.ERROR, str(exc)), (_CLOSE,)
    body = await _read_body(scope, receive, route.max_body)
    if body is None:
        reason = f"body too large: {route.path} takes at most {route.max_body:,} bytes"
        return 413, error_body(Status.INVALID_REQUEST, reason), (_CLOSE,)
    try:
        request = route.request.model_validate_json(body)
        status, content = await route.handler(request, caller, body)
    except ValidationError as exc:
        return 400, error_body(Status.INVALID_REQUEST, describe(exc)), ()
    except InvalidRequest as exc:
        return 400, error_body(Status.INVALID_REQUEST, str(exc)), ()
    return status, content, ()


def serve_routes(app: FastAPI, routes: Sequence[Route[Any]]) -> None:
    """Answer ``routes`` on the fast path in front of ``app``, and describe them in its
    OpenAPI schema (:func:`redfl.edge.routes.document`)."""
    app.add_middleware(FastPath, routes=routes)
    document(app, routes)


async def _read_body(scope: Scope, receive: Receive, cap: int) -> bytes | None:
    """The request's body, or None (nothing more read) once it is known to pass ``cap``."""
    declared = header(scope, b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _reply(send: Send, status: int, content: bytes, *extra: tuple[bytes, bytes]) -> None:
    headers = [_JSON, (b"content-length", str(len(content)).encode("ascii")), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
