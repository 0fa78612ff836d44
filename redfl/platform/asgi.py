"""The skeleton of the platform's pure ASGI middleware: HTTP requests are handled, every other
scope (WebSocket, lifespan) passes through unchanged.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware:
    """Wraps ``app``: :meth:`handle` serves each HTTP request, other scopes go straight on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand an HTTP request to :meth:`handle`; call the app with anything else."""
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request; subclasses call ``self.app`` around their own work."""
        raise NotImplementedError
