"""Device tokens: HMAC-SHA256 signed, bound to a device id, with an expiry.

A token is ``base64url(payload) "." base64url(hmac_sha256(secret, base64url(payload)))`` with
the JSON payload ``{"sub": device_id, "exp": unix_seconds}``. Only the holder of the server
secret can make one; the routing proxy reads the device id from a verified token, never from
anything the device asserts.

>>> signer = TokenSigner(b"k" * 32, ttl=60.0, clock=lambda: 1000.0)
>>> token, expires = signer.issue("device-1")
>>> signer.verify(token), expires
('device-1', 1060.0)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable

__all__ = ["TokenError", "TokenSigner", "bearer_token", "secret_matches"]


class TokenError(ValueError):
    """A token is missing, malformed, forged or expired; the message is the reason."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issue and verify device tokens.

    Parameters
    ----------
    secret : bytes
        Server secret, at least 16 bytes.
    ttl : float, default 86400
        Token lifetime in seconds, > 0.
    clock : Callable[[], float], default time.time
        Source of Unix time.
    """

    def __init__(
        self, secret: bytes, ttl: float = 86_400.0, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 16:
            raise ValueError(f"token secret must be at least 16 bytes, got {len(secret)}")
        if not 0 < ttl < math.inf:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        self._secret = secret
        self.ttl = ttl
        self.clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, device_id: str) -> tuple[str, float]:
        """Return a token for ``device_id`` and its expiry (Unix seconds)."""
        expires = self.clock() + self.ttl
        payload = _b64(json.dumps({"sub": device_id, "exp": expires}).encode())
        return f"{payload}.{self._sign(payload)}", expires

    def verify(self, token: str) -> str:
        """Return the device id of a valid token.

        Raises
        ------
        TokenError
            ``malformed token``, ``bad signature`` or ``token expired``.
        """
        payload, _, signature = token.partition(".")
        if not payload or not signature:
            raise TokenError("malformed token")
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise TokenError("bad signature")
        try:
            claims = json.loads(_unb64(payload))
            device, expires = str(claims["sub"]), float(claims["exp"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise TokenError("malformed token") from None
        if expires <= self.clock():
            raise TokenError("token expired")
        return device


def bearer_token(header: str | None) -> str:
    """Return the token of an ``Authorization: Bearer <token>`` header.

    Raises
    ------
    TokenError
        ``missing token`` when the header is absent or not a bearer token.
    """
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("missing token: send 'Authorization: Bearer <token>' from /enroll")
    return token.strip()


def secret_matches(given: str, expected: str) -> bool:
    """Compare an enrollment secret in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())
