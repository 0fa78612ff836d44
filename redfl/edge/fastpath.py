"""The device routes on a fast path: a plain ASGI middleware for the proxy and the LCPs.

FastAPI describes ``/job``, ``/task``, ``/result`` and ``/selection`` (the OpenAPI schema,
the docs), but its per-request machinery (routing, dependency solving, a JSON parse into
Python objects, validation, a response class) costs several times the work of a forward.
This middleware answers those four routes itself (and the proxy's ``/enroll``), with the
same checks in the same order: the identity first (401; not for a public route such as
``/enroll``), then the body, validated by the route's pydantic model straight from the bytes
(400 ``INVALID_REQUEST``), then the handler. Other requests go to FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from pydantic import ValidationError

from redfl.edge.errors import InvalidRequest
from redfl.edge.protocol import ErrorReply, Status
from redfl.edge.tokens import TokenError, TokenSigner, bearer_token

__all__ = ["FastPath", "header_identity", "token_identity"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_JSON = (b"content-type", b"application/json")
DEVICE_HEADER = b"x-redfl-device"


def describe(exc: ValidationError) -> str:
    """One line: each error's location and message (as FastAPI's handler reports them)."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request body"


Identify = Callable[[str | None, str | None], str]
"""``(authorization header, x-redfl-device header) -> device id``; raises TokenError."""
Handle = Callable[[str, bytes, Any, str], Awaitable[tuple[int, bytes]]]
"""``(path, body, validated request, device) -> (status, reply body)``."""


class FastPath:
    """ASGI middleware answering the device routes of the proxy or of an LCP.

    Parameters
    ----------
    app : ASGIApp
        The FastAPI app (everything else).
    identify : Identify
        Returns the device id from the request's headers, or raises ``TokenError`` (401).
    handle : Handle
        Answers a validated request.
    requests : dict[str, type]
        Route path -> pydantic request model.
    public : Collection[str], default ()
        Paths answered without an identity (the handler gets ``""`` as the device).
    """

    def __init__(
        self,
        app: ASGIApp,
        identify: Identify,
        handle: Handle,
        requests: dict[str, Any],
        public: Collection[str] = (),
    ) -> None:
        self.app, self.identify, self.handle, self.requests = app, identify, handle, requests
        self.public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle a device route, or pass the request on."""
        model = self.requests.get(scope.get("path", "")) if scope["type"] == "http" else None
        if model is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization = device_header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == DEVICE_HEADER:
                device_header = value.decode("latin-1")
        body = await _read_body(receive)
        try:
            public = scope["path"] in self.public
            device = "" if public else self.identify(authorization, device_header)
        except TokenError as exc:
            await _reply(send, 401, _error(Status.ERROR, str(exc)))
            return
        try:
            request = model.model_validate_json(body)
        except ValidationError as exc:
            await _reply(send, 400, _error(Status.INVALID_REQUEST, describe(exc)))
            return
        try:
            status, content = await self.handle(scope["path"], body, request, device)
        except InvalidRequest as exc:
            status, content = 400, _error(Status.INVALID_REQUEST, str(exc))
        await _reply(send, status, content)


def token_identity(signer: TokenSigner) -> Identify:
    """The proxy's identity: the device id of a verified bearer token."""

    def identify(authorization: str | None, device_header: str | None) -> str:
        return signer.verify(bearer_token(authorization))

    return identify


def header_identity(authorization: str | None, device_header: str | None) -> str:
    """An LCP's identity: the device id the proxy passed in ``x-redfl-device``."""
    if not device_header:
        raise TokenError("no device identity: reach LCPs through the routing proxy")
    return device_header


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
