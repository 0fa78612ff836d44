"""Request dependencies: the store of a request, the current user and role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from redfl.platform.models import User
from redfl.platform.security import InvalidToken, TokenService
from redfl.platform.settings import Settings
from redfl.platform.store import Store

RANK = {"viewer": 0, "researcher": 1, "admin": 2}
"""Roles by privilege: a role may do whatever a lower one may."""

_bearer = HTTPBearer(auto_error=False, description="An access token from /api/auth/login.")


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_tokens(request: Request) -> TokenService:
    """The app's token service."""
    tokens: TokenService = request.app.state.tokens
    return tokens


def get_store(request: Request) -> Iterator[Store]:
    """A store over a session that lives as long as the request."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    with sessions() as session:
        yield Store(session)


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def current_user(
    store: StoreDep,
    tokens: TokensDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user of the request's bearer token; 401 without a valid token.

    The role is read from the store, so a role change or deletion takes effect at once.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("not authenticated")
    try:
        claims = tokens.decode_access(credentials.credentials)
    except InvalidToken as error:
        raise _unauthorized(str(error)) from None
    user = store.get_user(claims.user_id)
    if user is None or user.name != claims.name:
        raise _unauthorized("invalid token")
    return user


def require(role: str) -> Callable[[User], User]:
    """A dependency that lets through users of ``role`` or higher; 403 for the others."""

    def check(user: Annotated[User, Depends(current_user)]) -> User:
        if RANK[user.role] < RANK[role]:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail=f"needs role {role!r}, you are {user.role!r}"
            )
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
