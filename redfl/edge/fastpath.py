"""The proxy's fast path: the forwarded device routes as a plain ASGI middleware.

FastAPI describes ``/job``, ``/task``, ``/result`` and ``/selection`` (the OpenAPI schema,
the docs), but its per-request machinery (routing, dependency solving, a JSON parse into
Python objects, validation, a response class) costs several times the proxy's own work. This
middleware answers those four routes itself, with the same checks in the same order: the
token first (401), then the body, validated by the route's pydantic model straight from the
bytes (400 ``INVALID_REQUEST``), then the forward. Other requests go to FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import ValidationError

from redfl.edge.protocol import ErrorReply, Status
from redfl.edge.tokens import TokenError, TokenSigner, bearer_token

__all__ = ["FastPath"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_JSON = (b"content-type", b"application/json")


def describe(exc: ValidationError) -> str:
    """One line: each error's location and message (as FastAPI's handler reports them)."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request body"


class FastPath:
    """ASGI middleware answering the forwarded routes of the routing proxy.

    Parameters
    ----------
    app : ASGIApp
        The FastAPI app (everything else).
    router : Any
        The proxy's :class:`redfl.edge.proxy.Router` (``forward(path, body, device)``).
    signer : TokenSigner
        Verifies device tokens.
    requests : dict[str, type]
        Route path -> pydantic request model.
    """

    def __init__(
        self, app: ASGIApp, router: Any, signer: TokenSigner, requests: dict[str, Any]
    ) -> None:
        self.app, self.router, self.signer, self.requests = app, router, signer, requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle a forwarded route, or pass the request on."""
        model = self.requests.get(scope.get("path", "")) if scope["type"] == "http" else None
        if model is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        body = await _read_body(receive)
        try:
            device = self.signer.verify(bearer_token(authorization))
        except TokenError as exc:
            await _reply(send, 401, _error(Status.ERROR, str(exc)))
            return
        try:
            model.model_validate_json(body)
        except ValidationError as exc:
            await _reply(send, 400, _error(Status.INVALID_REQUEST, describe(exc)))
            return
        status, content = await self.router.forward(scope["path"], body, device)
        await _reply(send, status, content)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error(status: Status, reason: str) -> bytes:
    return ErrorReply(status=status, reason=reason).model_dump_json().encode()


async def _reply(send: Send, status: int, content: bytes) -> None:
    headers = [_JSON, (b"content-length", str(len(content)).encode("ascii"))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
