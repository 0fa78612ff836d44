"""``/api/auth``: log in (rate-limited, audited), refresh, log out, who am I."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, Response, status

from redfl.platform.api.deps import SettingsDep, StoreDep, TokensDep, Viewer
from redfl.platform.api.schemas import LoginRequest, RefreshRequest, TokenPair, UserOut
from redfl.platform.logs import LOG
from redfl.platform.models import User
from redfl.platform.security import (
    TokenService,
    digest,
    hash_password,
    needs_rehash,
    new_refresh_token,
    verify_password,
)
from redfl.platform.settings import Settings
from redfl.platform.store import Store

router = APIRouter(prefix="/api/auth", tags=["auth"])

INVALID = "invalid username or password"


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _issue(user: User, store: Store, tokens: TokenService, settings: Settings) -> TokenPair:
    refresh, refresh_hash = new_refresh_token()
    expires = datetime.now(UTC) + timedelta(seconds=settings.refresh_token_seconds)
    store.add_refresh_token(user.id, refresh_hash, expires)
    return TokenPair(
        access_token=tokens.issue_access(user.id, user.name, user.role),
        refresh_token=refresh,
        expires_in=tokens.access_seconds,
        username=user.name,
        role=user.role,
    )


def _refuse(store: Store, username: str, address: str, reason: str, code: int) -> HTTPException:
    store.record_login(username, address, success=False, reason=reason)
    LOG.warning(
        "login failed",
        extra={"event": "login_failed", "username": username, "address": address, "reason": reason},
    )
    if code == status.HTTP_429_TOO_MANY_REQUESTS:
        return HTTPException(code, detail="too many failed logins; try again later")
    return HTTPException(code, detail=INVALID, headers={"WWW-Authenticate": "Bearer"})


@router.post(
    "/login",
    responses={401: {"description": "Bad credentials"}, 429: {"description": "Rate limited"}},
)
def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    store: StoreDep,
    tokens: TokensDep,
    settings: SettingsDep,
) -> TokenPair:
    """Exchange a username and password for an access token and a refresh token.

    After ``login_max_failures`` failed attempts within ``login_window_seconds`` for one
    username, or from one address, further attempts get 429 until the window has passed.
    """
    address = _address(request)
    since = datetime.now(UTC) - timedelta(seconds=settings.login_window_seconds)
    limit = settings.login_max_failures
    if (
        store.failed_logins(since, username=body.username) >= limit
        or store.failed_logins(since, address=address) >= limit
    ):
        error = _refuse(store, body.username, address, "rate limited", 429)
        error.headers = {"Retry-After": str(settings.login_window_seconds)}
        raise error
    user = store.user_by_name(body.username)
    if not verify_password(None if user is None else user.password_hash, body.password):
        reason = "unknown user" if user is None else "bad password"
        raise _refuse(store, body.username, address, reason, 401)
    assert user is not None
    if needs_rehash(user.password_hash):
        store.set_password_hash(user.name, hash_password(body.password))
    store.record_login(user.name, address, success=True, reason="ok")
    LOG.info("login", extra={"event": "login", "username": user.name, "address": address})
    response.headers["Cache-Control"] = "no-store"
    return _issue(user, store, tokens, settings)


@router.post("/refresh", responses={401: {"description": "Invalid refresh token"}})
def refresh(
    body: RefreshRequest,
    response: Response,
    store: StoreDep,
    tokens: TokensDep,
    settings: SettingsDep,
) -> TokenPair:
    """Spend a refresh token (single use) for a new pair of tokens."""
    user = store.use_refresh_token(digest(body.refresh_token))
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="invalid refresh token")
    response.headers["Cache-Control"] = "no-store"
    return _issue(user, store, tokens, settings)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(body: RefreshRequest, store: StoreDep) -> None:
    """Revoke a refresh token (an unknown one is ignored)."""
    store.revoke_refresh_token(digest(body.refresh_token))


@router.get("/me")
def me(user: Viewer) -> UserOut:
    """The logged-in user."""
    return UserOut.model_validate(user)
