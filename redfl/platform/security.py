"""Passwords (argon2id), access tokens (JWT, HS256) and refresh tokens (random, stored hashed).

Examples
--------
>>> tokens = TokenService(b"k" * 32, access_seconds=60)
>>> claims = tokens.decode_access(tokens.issue_access(user_id=7, name="ada", role="admin"))
>>> claims.user_id, claims.role
(7, 'admin')
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cachetools import LRUCache

ALGORITHM = "HS256"
MAX_VERIFIED = 10_000
"""How many verified access tokens :class:`TokenService` remembers; past that the least
recently used make room."""
MIN_PASSWORD = 8
MAX_PASSWORD = 1024

_HASHER = PasswordHasher()


class InvalidToken(ValueError):
    """An access token that is malformed, expired, of the wrong kind or wrongly signed."""


def check_password_rules(password: str) -> None:
    """Refuse a password that is too short or too long (the message says the bounds)."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(
            f"password: must be {MIN_PASSWORD} to {MAX_PASSWORD} characters, got {len(password)}"
        )


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (salted; parameters inside the hash)."""
    return _HASHER.hash(password)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _HASHER.hash(secrets.token_hex(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``.

    With ``None`` (an unknown user) a dummy hash is checked, so the answer takes as long.
    """
    try:
        return _HASHER.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    return _HASHER.check_needs_rehash(password_hash)


def new_refresh_token() -> tuple[str, str]:
    """A fresh refresh token and its SHA-256 digest (only the digest is stored)."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> str:
    """The stored form of a refresh token: its SHA-256, hexadecimal."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_family() -> str:
    """A fresh token family: the id shared by the tokens of one login (32 hex digits)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class AccessClaims:
    """What an access token says: the user's id, name and role, when it expires, its own
    id (``jti``) and the family of the login it came from (``fam``; either can be revoked)."""

    user_id: int
    name: str
    role: str
    expires: datetime
    token_id: str = ""
    family: str = ""


class TokenService:
    """Issue and check access tokens signed with one secret key."""

    def __init__(self, secret: bytes, access_seconds: int) -> None:
        self._secret = secret
        self.access_seconds = access_seconds
        self._verified: LRUCache[str, AccessClaims] = LRUCache(MAX_VERIFIED)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenService(access_seconds={self.access_seconds})"

    def issue_access(
        self,
        user_id: int,
        name: str,
        role: str,
        now: datetime | None = None,
        family: str | None = None,
    ) -> str:
        """A signed access token for the user, valid for ``access_seconds`` from ``now``,
        with a fresh id and the login's ``family`` (a new one when not given)."""
        issued = now or datetime.now(UTC)
        payload = {
            "sub": str(user_id),
            "name": name,
            "role": role,
            "typ": "access",
            "jti": secrets.token_hex(16),
            "fam": family or new_family(),
            "iat": int(issued.timestamp()),
            "exp": int((issued + timedelta(seconds=self.access_seconds)).timestamp()),
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def decode_access(self, token: str) -> AccessClaims:
        """The claims of a valid access token; :class:`InvalidToken` says why not.

        A token whose signature was verified once is remembered with its claims (the
        :data:`MAX_VERIFIED` most recently used); it is refused again as soon as it expires.
        """
        with self._lock:
            known = self._verified.get(token)
        if known is not None:
            if time.time() >= known.expires.timestamp():
                raise InvalidToken("token expired")
            return known
        claims = self._verify(token)
        with self._lock:
            self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> AccessClaims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp", "iat", "typ", "jti", "fam"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.PyJWTError:
            raise InvalidToken("invalid token") from None
        if payload.get("typ") != "access" or not str(payload["sub"]).isdigit():
            raise InvalidToken("invalid token")
        return AccessClaims(
            user_id=int(payload["sub"]),
            name=str(payload.get("name", "")),
            role=str(payload.get("role", "")),
            expires=datetime.fromtimestamp(int(payload["exp"]), UTC),
            token_id=str(payload["jti"]),
            family=str(payload["fam"]),
        )
