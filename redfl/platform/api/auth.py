"""``/api/auth``: log in (rate-limited, audited), refresh, log out, who am I.

Login limits (failed attempts within ``login_window_seconds``): ``login_max_failures`` for one
user from one address (that user is refused from that address only: an attacker cannot lock
a user out of the addresses they use), and ``login_max_address_failures`` from one address
for any users. A refused attempt (429) is audited but is not a failure: it does not extend
the lock, which ends when enough failures have left the window (``Retry-After`` says when).

The client's address is the peer's; ``X-Forwarded-For`` counts only when the peer is one of
the ``trusted_proxies`` (none by default), and then names the nearest address that is not a
trusted proxy.

Refresh tokens are single use and belong to the family of their login; a spent one used
again revokes the family. Logging out revokes the family (refresh and access tokens alike,
on every server of the database: see :mod:`redfl.platform.api.revoked`).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from redfl.platform.api.deps import SettingsDep, StoreDep, TokensDep, Viewer
from redfl.platform.api.revoked import RevokedTokens
from redfl.platform.api.schemas import (
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    TokenPair,
    UserOut,
)
from redfl.platform.logs import LOG
from redfl.platform.models import User
from redfl.platform.security import (
    InvalidToken,
    TokenService,
    digest,
    hash_password,
    needs_rehash,
    new_family,
    new_refresh_token,
    verify_password,
)
from redfl.platform.settings import Settings
from redfl.platform.store import Store

router = APIRouter(prefix="/api/auth", tags=["auth"])

INVALID = "invalid username or password"
_optional_bearer = HTTPBearer(auto_error=False)


def _trusted(address: str, proxies: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(p, strict=False) for p in proxies)


def client_address(request: Request, trusted_proxies: Sequence[str]) -> str:
    """The address a request comes from: the peer's, or (from a trusted proxy) the
    nearest untrusted address of ``X-Forwarded-For``.

    Examples
    --------
    >>> from starlette.requests import Request
    >>> scope = {"type": "http", "client": ("10.0.0.2", 1),
    ...          "headers": [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.3")]}
    >>> client_address(Request(scope), ())
    '10.0.0.2'
    >>> client_address(Request(scope), ("10.0.0.0/8",))
    '203.0.113.9'
    """
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, trusted_proxies):
            return hop
    return peer


def _issue(
    user: User, store: Store, tokens: TokenService, settings: Settings, family: str
) -> TokenPair:
    refresh, refresh_hash = new_refresh_token()
    expires = datetime.now(UTC) + timedelta(seconds=settings.refresh_token_seconds)
    store.add_refresh_token(user.id, refresh_hash, expires, family)
    return TokenPair(
        access_token=tokens.issue_access(user.id, user.name, user.role, family=family),
        refresh_token=refresh,
        expires_in=tokens.access_seconds,
        username=user.name,
        role=user.role,
    )


def _refuse(store: Store, username: str, address: str, reason: str) -> HTTPException:
    store.record_login(username, address, success=False, reason=reason)
    LOG.warning(
        "login failed",
        extra={"event": "login_failed", "username": username, "address": address, "reason": reason},
    )
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=INVALID, headers={"WWW-Authenticate": "Bearer"}
    )


def _locked_for(store: Store, username: str, address: str, settings: Settings) -> float:
    """Seconds until ``username`` may try again from ``address`` (0: now)."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=settings.login_window_seconds)
    wait = 0.0
    for name, limit in (
        (username, settings.login_max_failures),
        ("", settings.login_max_address_failures),
    ):
        times = store.failure_times(since, username=name, address=address, limit=limit)
        if len(times) >= limit:  # locked until the limit-th newest failure leaves the window
            leaves = times[limit - 1] + timedelta(seconds=settings.login_window_seconds)
            wait = max(wait, (leaves - now).total_seconds())
    return wait


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
    """Exchange a username (any case) and password for an access token and a refresh token.

    Rate-limited per user and address and per address (see the module's description):
    429 with ``Retry-After`` until the failures that caused it leave the window.
    """
    address = client_address(request, settings.trusted_proxies)
    wait = _locked_for(store, body.username, address, settings)
    if wait > 0:
        store.record_login(body.username, address, success=False, reason="rate limited")
        LOG.warning(
            "login refused",
            extra={"event": "login_limited", "username": body.username, "address": address},
        )
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="too many failed logins; try again later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    user = store.user_by_name(body.username)
    if not verify_password(None if user is None else user.password_hash, body.password):
        raise _refuse(
            store, body.username, address, "unknown user" if user is None else "bad password"
        )
    assert user is not None
    if needs_rehash(user.password_hash):
        store.set_password_hash(user.name, hash_password(body.password), end_sessions=False)
    store.record_login(user.name, address, success=True, reason="ok")
    LOG.info("login", extra={"event": "login", "username": user.name, "address": address})
    response.headers["Cache-Control"] = "no-store"
    return _issue(user, store, tokens, settings, new_family())


@router.post("/refresh", responses={401: {"description": "Invalid refresh token"}})
def refresh(
    body: RefreshRequest,
    response: Response,
    store: StoreDep,
    tokens: TokensDep,
    settings: SettingsDep,
    request: Request,
) -> TokenPair:
    """Spend a refresh token (single use) for a new pair of tokens of the same login.

    A token spent already revokes its login's every token (a stolen token replayed)."""
    spent = store.use_refresh_token(digest(body.refresh_token))
    if spent is None:
        _remember_revocations(request)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="invalid refresh token")
    response.headers["Cache-Control"] = "no-store"
    return _issue(spent.user, store, tokens, settings, spent.family)


def _remember_revocations(request: Request) -> None:
    """Apply the revocations just stored to this server at once."""
    revoked: RevokedTokens = request.app.state.revoked
    revoked.load(request.app.state.sessions)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(
    request: Request,
    store: StoreDep,
    tokens: TokensDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
    body: LogoutRequest | None = None,
) -> None:
    """End a login: its refresh token (in the body) and its access token (the bearer
    header) are revoked, with every token of the same login. Unknown or invalid tokens are
    ignored."""
    if body is not None and body.refresh_token:
        store.revoke_refresh_token(digest(body.refresh_token))
    if credentials is not None:
        try:
            claims = tokens.decode_access(credentials.credentials)
        except InvalidToken:
            claims = None
        if claims is not None:
            store.revoke_family(claims.family)  # its refresh tokens, denied until they expire
            for token_id in (claims.token_id, claims.family):
                store.revoke_token_id(token_id, claims.expires)
    _remember_revocations(request)


@router.get("/me")
def me(user: Viewer) -> UserOut:
    """The logged-in user."""
    return UserOut.model_validate(user)
