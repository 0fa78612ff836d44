"""Request middleware (pure ASGI): request ids, access log, HTTP metrics, security headers.

Every response carries ``X-Request-ID`` (the client's, when it is a sane token, else a new
one) and the security headers below; every request is logged as one JSON line and counted
by route template (never by raw path, so unknown paths cannot grow the label set).
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redfl.platform.asgi import HttpMiddleware
from redfl.platform.logs import LOG, REQUEST_ID
from redfl.platform.metrics import PlatformMetrics

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_SECURITY_RAW = tuple(
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in SECURITY_HEADERS.items()
)
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
UNMATCHED = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The template of the route that served ``scope`` (``/api/runs/{run_id}``), or
    ``<unmatched>``."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    return str(scope["path"]) if "endpoint" in scope else UNMATCHED


class RequestContext(HttpMiddleware):
    """Give each request an id, log it, count it and add the security headers."""

    def __init__(self, app: ASGIApp, metrics: PlatformMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with its id set; record status and latency afterwards."""
        given = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                raw = [(k, v) for k, v in message.get("headers") or () if k != b"x-request-id"]
                present = {k for k, _ in raw}
                raw.append((b"x-request-id", request_id.encode("latin-1")))
                raw.extend(h for h in _SECURITY_RAW if h[0] not in present)
                message["headers"] = raw
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            method = str(scope["method"])
            self.metrics.record_request(method, route, status, seconds)
            LOG.info(
                "request",
                extra={
                    "event": "request",
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                },
            )
            REQUEST_ID.reset(token)
