"""Device tokens: JSON Web Tokens (HS256, PyJWT) bound to a device id, with an expiry.

A token's claims are ``{"sub": device_id, "iat": unix_seconds, "exp": unix_seconds}``,
signed with HMAC-SHA256 under the server secret: only its holder can make one, and the routing
proxy reads the device id from a verified token, never from anything the device asserts.
Expiry is checked against the signer's clock (injectable, for tests), not PyJWT's own. The
issue time lets a device's register refuse the tokens issued before a revocation or a new
credential (:mod:`redfl.edge.fleet`); it is a float, so two tokens issued in the same second
still differ.

The proxy verifies a token on every device request. PyJWT's full check (its strict base64
and header parsing, then the signature) costs ~30 us of CPU per token, against ~5.5 us for the
hand-written HMAC token this module used before and ~7 us for all the rest of the proxy's fast
path of a request (measured in-process with ``time.process_time``). So a verified token is
remembered until it expires, in a bounded least-recently-used cache
(``cachetools.TLRUCache``): a device's later requests cost one lookup (~1.5 us) and only a
token never seen, or pushed out of the cache, is checked in full. Only a token that passed the
full check enters the cache, keyed by its exact text, so the cache cannot vouch for a forged
or altered token.

This module imports no web framework; its error and header reader are :mod:`redfl.trust.bearer`'s.

>>> signer = TokenSigner(b"k" * 32, ttl=60.0, clock=lambda: 1000.0)
>>> token, expires = signer.issue("device-1")
>>> signer.verify(token), expires
('device-1', 1060.0)
>>> signer.claims(token)
Claims(device='device-1', issued=1000.0, expires=1060.0)
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import jwt
from cachetools import TLRUCache

from redfl.trust.bearer import TokenError
from redfl.trust.bearer import bearer_token as read_bearer

__all__ = ["Claims", "TokenError", "TokenSigner", "bearer_token", "secret_matches"]

_ALGORITHM = "HS256"
_MIN_SECRET = 32  # bytes: RFC 7518 asks an HS256 key to be at least as long as the hash


class Claims(NamedTuple):
    """What a verified token says: the device id, when it was issued and when it expires
    (Unix seconds)."""

    device: str
    issued: float
    expires: float


class TokenSigner:
    """Issue and verify device tokens.

    Parameters
    ----------
    secret : bytes
        Server secret, at least 32 bytes.
    ttl : float, default 86400
        Token lifetime in seconds, > 0.
    clock : Callable[[], float], default time.time
        Source of Unix time.
    cache_size : int, default 65536
        Verified tokens remembered until they expire (least recently used first out), >= 1;
        about 0.5 kB each.
    """

    def __init__(
        self,
        secret: bytes,
        ttl: float = 86_400.0,
        clock: Callable[[], float] = time.time,
        cache_size: int = 65_536,
    ) -> None:
        if len(secret) < _MIN_SECRET:
            raise ValueError(
                f"token secret must be at least {_MIN_SECRET} bytes, got {len(secret)}"
            )
        if not 0 < ttl < math.inf:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self._secret = secret
        self.ttl = ttl
        self.clock = clock
        self._verified: TLRUCache[str, Claims, float] = TLRUCache(
            cache_size, ttu=lambda token, claims, now: claims.expires, timer=clock
        )
        self._lock = threading.Lock()  # the cache is not thread-safe

    def derive_key(self, label: bytes) -> bytes:
        """A 32-byte key for another purpose, derived from the secret (HMAC-SHA256 of
        ``label``): the secret itself never leaves the signer."""
        return hmac.new(self._secret, label, "sha256").digest()

    def issue(self, device_id: str, ttl: float | None = None) -> tuple[str, float]:
        """Return a token for ``device_id`` and its expiry (Unix seconds); ``ttl`` (seconds,
        > 0) overrides the signer's lifetime, e.g. for tokens issued in advance."""
        lifetime = self.ttl if ttl is None else ttl
        if not 0 < lifetime < math.inf:
            raise ValueError(f"ttl must be > 0 seconds, got {lifetime}")
        now = self.clock()
        claims = {"sub": device_id, "iat": now, "exp": now + lifetime}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM), now + lifetime

    def verify(self, token: str) -> str:
        """Return the device id of a valid token.

        Raises
        ------
        TokenError
            ``malformed token``, ``bad signature`` or ``token expired``.
        """
        return self.claims(token).device

    def claims(self, token: str) -> Claims:
        """Return the claims of a valid token (remembered until it expires).

        Raises
        ------
        TokenError
            ``malformed token``, ``bad signature`` or ``token expired``.
        """
        with self._lock:
            known = self._verified.get(token)
        if known is not None:
            return known
        try:
            decoded = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                options={
                    "require": ["sub", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )  # exp and iat: our clock's
            claims = Claims(str(decoded["sub"]), float(decoded["iat"]), float(decoded["exp"]))
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise TokenError("malformed token") from None
        if claims.expires <= self.clock():
            raise TokenError("token expired")
        with self._lock:
            self._verified[token] = claims
        return claims


def bearer_token(header: str | None) -> str:
    """The device token of an ``Authorization: Bearer <token>`` header (see
    :func:`redfl.trust.bearer.bearer_token`); its error points to ``/enroll``."""
    return read_bearer(header, "/enroll")


def secret_matches(given: str, expected: str) -> bool:
    """Compare an enrollment secret in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())
