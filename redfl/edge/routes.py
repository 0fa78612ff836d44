"""The device routes as data: one table per service, answered on the fast path, described once.

A :class:`Route` declares a ``POST`` route in one place: its path, request model, reply model,
handler, how its caller is identified (its :class:`Auth`) and the largest body it takes. The
proxy, each LCP, each relay and the server build their table of such routes;
:class:`redfl.edge.fastpath.FastPath` answers them and :func:`document` describes them in the
app's OpenAPI schema (``/openapi.json``, the docs), so what is served and what is documented
cannot drift apart.

Every route is answered the same way, checks in this order: the caller's identity, from the
request's headers and TLS session alone (401, status ``ERROR``); the body's declared length
against the route's ``max_body`` (413, before a byte of it is read), and its actual length
while it is read (413 as soon as it passes the cap, the rest never buffered); then the body,
validated by the request model (400, ``INVALID_REQUEST``); then the handler (which may answer
400 by raising :class:`redfl.edge.errors.InvalidRequest`).

Ways to identify a caller:

* :class:`Public`: nobody (the handler gets ``""``): the proxy's ``/enroll``, whose body holds
  the device's credential.
* :class:`DeviceToken`: the device id of a verified bearer token (the proxy).
* :class:`PeerCertificate`: the member named by the client certificate of a mutually
  authenticated TLS connection, of an accepted kind and name (the server's and relays'
  ``/sync``: a provisioned LCP or relay of the tree).
* :class:`ProxiedDevice`: the device id the routing proxy passes in ``x-redfl-device``, taken
  only from a caller whose certificate is the proxy's (an LCP's device routes).
* :class:`Operator`: an operator, by its certificate or its signed operator token
  (``/stats``, ``/status``; see :mod:`redfl.edge.peers`).

A GET route of FastAPI takes the same kinds through :func:`guard`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from fastapi import FastAPI, Request, Response, Security, params
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel
from starlette.types import Scope

from redfl.edge.errors import Unauthorized, error_body
from redfl.edge.peers import Peers, peer_pem
from redfl.edge.protocol import ErrorReply, Status
from redfl.edge.tokens import TokenError, bearer_token
from redfl.trust import Kind, UntrustedError
from redfl.trust.operator import OPERATOR_HEADER

__all__ = [
    "DEVICE_HEADER",
    "MAX_BODY",
    "Answer",
    "Auth",
    "DeviceToken",
    "Handler",
    "Operator",
    "PeerCertificate",
    "ProxiedDevice",
    "Public",
    "Route",
    "document",
    "guard",
    "header",
    "ok",
]

DEVICE_HEADER = "x-redfl-device"
"""Header in which the proxy passes the verified device id to an LCP."""
MAX_BODY = 64 * 1024
"""The largest body a route takes unless it says otherwise (bytes)."""

Answer = tuple[int, bytes]
"""A reply: the HTTP status and the JSON body."""
Req = TypeVar("Req", bound=BaseModel)
Handler = Callable[[Req, str, bytes], Awaitable[Answer]]
"""``(validated request, caller's identity, raw body) -> answer``."""


def ok(reply: BaseModel) -> Answer:
    """A 200 answer with ``reply`` as its JSON body."""
    return 200, reply.model_dump_json().encode()


def header(scope: Scope, name: bytes) -> str | None:
    """The value of header ``name`` (lower case) of an ASGI request, or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Auth(ABC):
    """How a route identifies its caller."""

    refusal: ClassVar[str] = ""
    """What a 401 from this kind means (OpenAPI); empty when it never refuses."""

    @abstractmethod
    def identify(self, scope: Scope) -> str:
        """Return the caller's identity from the request's ASGI scope.

        Raises
        ------
        Unauthorized
            When the caller cannot be identified; the message is the reason.
        """

    def security(self) -> list[params.Depends]:
        """The OpenAPI security scheme of this kind (as FastAPI dependencies), if any."""
        return []


class Public(Auth):
    """No identity: anyone may call the route; the handler gets ``""``."""

    def identify(self, scope: Scope) -> str:
        """Return ``""``."""
        return ""


class DeviceToken(Auth):
    """The device id of the ``Authorization: Bearer <token>`` header's verified token.

    Parameters
    ----------
    verify : Callable[[str], str]
        Returns a token's device id or raises ``TokenError``
        (:meth:`redfl.edge.tokens.TokenSigner.verify`).
    """

    refusal = "Missing, bad or expired device token"

    def __init__(self, verify: Callable[[str], str]) -> None:
        self.verify = verify

    def identify(self, scope: Scope) -> str:
        """Return the device id of the request's bearer token."""
        try:
            return self.verify(bearer_token(header(scope, b"authorization")))
        except TokenError as exc:
            raise Unauthorized(str(exc)) from None

    def security(self) -> list[params.Depends]:
        """HTTP bearer authentication."""
        scheme = HTTPBearer(auto_error=False, description="The token from ``POST /enroll``.")
        return [Security(scheme)]


class PeerCertificate(Auth):
    """The member named by the client certificate of the request's TLS connection.

    The certificate is checked against the tree's CA and register (revocations seen at the
    next request) by ``peers``; its kind must be one of ``allowed``'s keys and, where that
    kind lists names, its name one of them.

    Parameters
    ----------
    peers : Peers
        The verifier of this service.
    allowed : Mapping[Kind, Collection[str] | None]
        Kind -> the names accepted (``None``: any member of that kind).
    """

    refusal = "No client certificate, or one this tree does not accept for this route"

    def __init__(self, peers: Peers, allowed: Mapping[Kind, Collection[str] | None]) -> None:
        self.peers = peers
        self.allowed = dict(allowed)

    def identify(self, scope: Scope) -> str:
        """Return the member name of the caller's verified certificate."""
        pem = peer_pem(scope.get("extensions"))
        if pem is None:
            raise Unauthorized(
                "no client certificate: this route takes mutually authenticated TLS from "
                f"a member of kind {' or '.join(sorted(self.allowed))}"
            )
        try:
            return self.peers.accept(pem, self.allowed).name
        except UntrustedError as exc:
            raise Unauthorized(exc.reason) from None

    def security(self) -> list[params.Depends]:
        """Mutual TLS (OpenAPI's ``mutualTLS`` scheme is not in FastAPI: none is listed)."""
        return []


class ProxiedDevice(PeerCertificate):
    """The device id the routing proxy passes in the ``x-redfl-device`` header, from a
    caller whose client certificate is the tree's routing proxy's.

    An LCP never trusts the header alone: only a request on a TLS connection that the proxy
    opened with its own credential may name a device.

    Parameters
    ----------
    peers : Peers
        The verifier of this service.
    """

    refusal = "Not the routing proxy's certificate, or no x-redfl-device header"
    _name = DEVICE_HEADER.encode("latin-1")

    def __init__(self, peers: Peers) -> None:
        super().__init__(peers, {"proxy": None})

    def identify(self, scope: Scope) -> str:
        """Return the device id of the ``x-redfl-device`` header of the proxy's request."""
        super().identify(scope)
        device = header(scope, self._name)
        if not device:
            raise Unauthorized("no device identity: the proxy names the device in x-redfl-device")
        return device

    def security(self) -> list[params.Depends]:
        """The device's id in the ``x-redfl-device`` header (with the proxy's certificate)."""
        return _api_key(
            DEVICE_HEADER, "Set by the routing proxy, on its mutually authenticated connection."
        )


class Operator(Auth):
    """An operator of the tree: the client certificate of an operator bundle (on a TLS
    listener) or, without one, an operator token in the ``x-redfl-operator`` header.

    Parameters
    ----------
    peers : Peers
        The verifier of this service.
    """

    refusal = "No operator credential, or one that is forged, expired or revoked"
    _name = OPERATOR_HEADER.encode("latin-1")

    def __init__(self, peers: Peers) -> None:
        self.peers = peers

    def identify(self, scope: Scope) -> str:
        """Return the operator's member name."""
        token = header(scope, self._name)
        pem = peer_pem(scope.get("extensions"))
        try:
            if token:
                return self.peers.operator(token).name
            if pem is not None:
                return self.peers.accept(pem, {"operator": None}).name
        except UntrustedError as exc:
            raise Unauthorized(exc.reason) from None
        raise Unauthorized(
            "no operator credential: present the operator bundle's certificate (TLS) or an "
            "x-redfl-operator token (redfl edge stats --bundle ...)"
        )

    def security(self) -> list[params.Depends]:
        """An operator token in the ``x-redfl-operator`` header."""
        return _api_key(OPERATOR_HEADER, "An operator token signed with the operator bundle's key.")


def _api_key(name: str, description: str) -> list[params.Depends]:
    """The OpenAPI scheme of a credential in header ``name``."""
    return [Security(APIKeyHeader(name=name, auto_error=False, description=description))]


def guard(app: FastAPI, auth: Auth) -> params.Depends:
    """A FastAPI dependency that identifies the caller of a GET route with ``auth``; a
    refusal is answered 401 with the routes' error body (``status`` ``ERROR``, ``reason``)."""
    if Unauthorized not in app.exception_handlers:

        async def refuse(request: Request, exc: Exception) -> Response:
            body = error_body(Status.ERROR, str(exc))
            return Response(body, status_code=401, media_type="application/json")

        app.add_exception_handler(Unauthorized, refuse)

    def caller(request: Request) -> str:
        return auth.identify(request.scope)

    return params.Depends(caller)


@dataclass(frozen=True)
class Route(Generic[Req]):
    """A ``POST`` route of the fast path.

    Parameters
    ----------
    path : str
        The route's path, e.g. ``"/task"``.
    request : type[BaseModel]
        Model that validates the body (straight from the bytes).
    reply : type[BaseModel]
        Model of the 200 reply (for the OpenAPI schema).
    handler : Handler
        Answers a validated request.
    auth : Auth
        How the caller is identified, before the body is read.
    responses : Mapping[int, str], default {}
        Other statuses the handler answers (an :class:`ErrorReply` body), with their meaning,
        for the OpenAPI schema.
    max_body : int, default MAX_BODY
        The largest body taken, in bytes; a larger one gets 413 without being buffered.
    """

    path: str
    request: type[Req]
    reply: type[BaseModel]
    handler: Handler[Req]
    auth: Auth
    responses: Mapping[int, str] = field(default_factory=dict)
    max_body: int = MAX_BODY


_BAD_BODY = "Malformed body: status INVALID_REQUEST and the field at fault"
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _described(route: Route[Any]) -> APIRoute:
    """A FastAPI route that only describes ``route`` (it is never added to an app)."""

    async def endpoint(body: Any) -> None:
        """Not called: the fast path answers the route."""

    endpoint.__annotations__["body"] = route.request
    meanings = {400: _BAD_BODY, 413: f"A body over {route.max_body:,} bytes (not read)"}
    if route.auth.refusal:
        meanings[401] = route.auth.refusal
    meanings.update(route.responses)
    return APIRoute(
        route.path,
        endpoint,
        methods=["POST"],
        name=route.path.strip("/").replace("/", "_"),
        response_model=route.reply,
        description=inspect.getdoc(route.request),
        responses={
            code: {"model": ErrorReply, "description": text} for code, text in meanings.items()
        },
        dependencies=route.auth.security(),
    )


def document(app: FastAPI, routes: Sequence[Route[Any]]) -> None:
    """Describe ``routes`` in ``app``'s OpenAPI schema (and docs), beside the app's own routes.

    The fast path never answers 422, so the routes' 422 replies that FastAPI adds are dropped
    (with FastAPI's validation error schemas when no route of the app can answer 422).
    """
    described = [_described(route) for route in routes]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=[*app.routes, *described],
            )
            for route in routes:
                schema["paths"][route.path]["post"]["responses"].pop("422", None)
            operations = [op for path in schema["paths"].values() for op in path.values()]
            if not any("422" in op.get("responses", {}) for op in operations):
                for name in _VALIDATION_SCHEMAS:
                    schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
