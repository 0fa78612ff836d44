"""Request dependencies: the store of a request, the current user and role checks.

They are coroutines: FastAPI runs a plain function dependency in a worker thread, and those
hops cost more than the work of these functions. Only the endpoints (plain functions, so
their database calls stay off the event loop) and a user read from the store run in threads.

:func:`authenticate` and :func:`check_role` are the checks of the WebSocket endpoint too, so
a token is accepted or refused alike on HTTP and on the WebSocket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from redfl.platform.api.known_users import KnownUsers
from redfl.platform.api.revoked import RevokedTokens
from redfl.platform.models import User
from redfl.platform.security import InvalidToken, TokenService
from redfl.platform.settings import Settings
from redfl.platform.store import Store

RANK = {"viewer": 0, "researcher": 1, "admin": 2}
"""Roles by privilege: a role may do whatever a lower one may."""

_bearer = HTTPBearer(auto_error=False, description="An access token from /api/auth/login.")


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_tokens(request: Request) -> TokenService:
    """The app's token service."""
    tokens: TokenService = request.app.state.tokens
    return tokens


async def get_known_users(request: Request) -> KnownUsers:
    """The app's cache of users read from the store."""
    known: KnownUsers = request.app.state.known_users
    return known


async def get_store(request: Request) -> AsyncIterator[Store]:
    """A store over a session that lives as long as the request.

    Creating a session touches no database; the endpoint's first query opens it (in the
    endpoint's thread). Closing gives the connection back: on SQLite a local rollback, done
    here; on a server database a round trip, done in a worker thread.
    """
    sessions: sessionmaker[Session] = request.app.state.sessions
    session = sessions()
    try:
        yield Store(session)
    finally:
        if session.in_transaction() and session.get_bind().dialect.name != "sqlite":
            await run_in_threadpool(session.close)
        else:
            session.close()


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]
KnownUsersDep = Annotated[KnownUsers, Depends(get_known_users)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def _read_user(sessions: sessionmaker[Session], known: KnownUsers, user_id: int) -> User | None:
    generation = known.generation()
    with sessions() as session:
        user = Store(session).get_user(user_id)
    if user is not None:
        known.put(user, generation=generation)
    return user


async def authenticate(connection: HTTPConnection, token: str | None) -> User:
    """The user of the access token ``token``; a 401 :class:`HTTPException` saying why not.

    The one check of every caller, HTTP request or WebSocket. A revoked token (a logout, a
    reused refresh token, a new password) is refused (see
    :mod:`redfl.platform.api.revoked`). The user's row (existence, name, role) comes from
    :class:`KnownUsers`: a change through this server's API takes effect at once, one made
    elsewhere within ``user_cache_seconds`` (see :mod:`redfl.platform.api.known_users`).
    """
    if not token:
        raise _unauthorized("not authenticated")
    tokens: TokenService = connection.app.state.tokens
    known: KnownUsers = connection.app.state.known_users
    try:
        claims = tokens.decode_access(token)
    except InvalidToken as error:
        raise _unauthorized(str(error)) from None
    revoked: RevokedTokens = connection.app.state.revoked
    if revoked.refuses(claims):
        raise _unauthorized("token revoked")
    user = known.get(claims.user_id)
    if user is None:
        user = await run_in_threadpool(
            _read_user, connection.app.state.sessions, known, claims.user_id
        )
    if user is None or user.name != claims.name:
        raise _unauthorized("invalid token")
    return user


def check_role(user: User, role: str) -> None:
    """Nothing if ``user`` has ``role`` or a higher one; a 403 :class:`HTTPException` if not."""
    if RANK[user.role] < RANK[role]:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"needs role {role!r}, you are {user.role!r}"
        )


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user of the request's bearer token (:func:`authenticate`); 401 without one (the
    bearer scheme yields ``None`` for a missing header or another scheme)."""
    return await authenticate(request, None if credentials is None else credentials.credentials)


def require(role: str) -> Callable[[User], Coroutine[Any, Any, User]]:
    """A dependency that lets through users of ``role`` or higher; 403 for the others."""

    async def check(user: Annotated[User, Depends(current_user)]) -> User:
        check_role(user, role)
        return user

    check.__name__ = f"require_{role}"
    return check


Viewer = Annotated[User, Depends(require("viewer"))]
Researcher = Annotated[User, Depends(require("researcher"))]
Admin = Annotated[User, Depends(require("admin"))]

RunIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
"""A run id in a path (unknown ids are 404; malformed ones 422)."""
UserNamePath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
"""A user name in a path."""
