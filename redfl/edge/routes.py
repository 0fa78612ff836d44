"""The device routes as data: one table per service, answered on the fast path, described once.

A :class:`Route` declares a ``POST`` route in one place: its path, request model, reply model,
handler and how its caller is identified (its :class:`Auth`). The proxy, each LCP and the
server build their table of such routes; :class:`redfl.edge.fastpath.FastPath` answers them
and :func:`document` describes them in the app's OpenAPI schema (``/openapi.json``, the docs),
so what is served and what is documented cannot drift apart.

Every route is answered the same way, checks in this order: the caller's identity (401,
status ``ERROR``), then the body, validated by the request model (400, ``INVALID_REQUEST``),
then the handler (which may answer 400 by raising :class:`redfl.edge.errors.InvalidRequest`).

Ways to identify a caller:

* :class:`Public`: nobody (the handler gets ``""``): ``/enroll``, the server's ``/sync``.
* :class:`DeviceToken`: the device id of a verified bearer token (the proxy).
* :class:`ForwardedDevice`: the device id the proxy passes in ``x-redfl-device`` (an LCP,
  which listens on the loopback behind the proxy).

Another way (a component's mutual-TLS certificate, an operator credential) is one more
:class:`Auth` subclass: ``identify`` reads what it needs from the ASGI scope, ``refusal`` and
``security`` describe it in OpenAPI; a route takes it in its ``auth`` field.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from fastapi import FastAPI, Security, params
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel
from starlette.types import Scope

from redfl.edge.errors import Unauthorized
from redfl.edge.protocol import ErrorReply
from redfl.edge.tokens import TokenError, bearer_token

__all__ = [
    "DEVICE_HEADER",
    "Answer",
    "Auth",
    "DeviceToken",
    "ForwardedDevice",
    "Handler",
    "Public",
    "Route",
    "document",
    "header",
    "ok",
]

DEVICE_HEADER = "x-redfl-device"
"""Header in which the proxy passes the verified device id to an LCP."""

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


class ForwardedDevice(Auth):
    """The device id the routing proxy passes in the ``x-redfl-device`` header.

    Only for a service that listens where nothing but the proxy reaches it (an LCP on the
    loopback): the header is trusted as it is.
    """

    refusal = "No x-redfl-device header: reach LCPs through the routing proxy"
    _name = DEVICE_HEADER.encode("latin-1")

    def identify(self, scope: Scope) -> str:
        """Return the device id of the ``x-redfl-device`` header."""
        device = header(scope, self._name)
        if not device:
            raise Unauthorized("no device identity: reach LCPs through the routing proxy")
        return device

    def security(self) -> list[params.Depends]:
        """An API key in the ``x-redfl-device`` header."""
        scheme = APIKeyHeader(
            name=DEVICE_HEADER, auto_error=False, description="Set by the routing proxy."
        )
        return [Security(scheme)]


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
    """

    path: str
    request: type[Req]
    reply: type[BaseModel]
    handler: Handler[Req]
    auth: Auth
    responses: Mapping[int, str] = field(default_factory=dict)


_BAD_BODY = "Malformed body: status INVALID_REQUEST and the field at fault"
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _described(route: Route[Any]) -> APIRoute:
    """A FastAPI route that only describes ``route`` (it is never added to an app)."""

    async def endpoint(body: Any) -> None:
        """Not called: the fast path answers the route."""

    endpoint.__annotations__["body"] = route.request
    meanings = {400: _BAD_BODY}
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
