"""Bearer tokens of a served model: Ed25519-signed JSON Web Tokens (PyJWT, ``EdDSA``).

Each deployment has its own signing key, made when it is deployed and kept (mode 0600) only
where it was deployed from; its replicas hold the public key and verify every request
with it, so a replica cannot mint tokens and a token for one deployment is refused by
another (its ``aud`` claim names the deployment). A token's claims are
``{"iss": "redfl", "aud": <deployment>, "jti": <token id>, "iat", "exp"}``.

A token is refused when it is missing, malformed, signed by another key, for another
deployment, expired (by the verifier's clock, injectable for tests) or revoked: its id is
in the verifier's revoked set, which a replica receives with its settings. Making a new key
revokes every token at once.

This module imports no web framework and no Ray.

>>> key = TokenKey.generate()
>>> issued = key.issue("digits", ttl=60.0, now=1000.0)
>>> check = TokenCheck(key.public_pem(), "digits", clock=lambda: 1030.0)
>>> check.verify(issued.token) == issued.token_id, issued.expires_at
(True, 1060.0)
>>> check.revoked = frozenset([issued.token_id])
>>> check.verify(issued.token)
Traceback (most recent call last):
...
redfl.trust.bearer.TokenError: token revoked
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from redfl.trust.bearer import TokenError, bearer_token

__all__ = ["IssuedToken", "TokenCheck", "TokenError", "TokenKey", "bearer_token"]

_ALGORITHM = "EdDSA"
_ISSUER = "redfl"


@dataclass(frozen=True)
class IssuedToken:
    """A token, its id (to revoke it) and its expiry (Unix seconds)."""

    token: str
    token_id: str
    expires_at: float


class TokenKey:
    """A deployment's signing key (Ed25519): issues its tokens.

    Parameters
    ----------
    private:
        The private key.
    """

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> TokenKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> TokenKey:
        """The key of :meth:`to_pem`'s text.

        Raises
        ------
        ValueError
            If ``data`` is not an unencrypted PEM Ed25519 private key.
        """
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"not an Ed25519 private key: {type(private).__name__}")
        return cls(private)

    def to_pem(self) -> bytes:
        """The private key as unencrypted PKCS #8 PEM (keep it mode 0600)."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> str:
        """The public key (SubjectPublicKeyInfo PEM): what replicas verify tokens with."""
        return (
            self._private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def issue(self, audience: str, ttl: float, now: float | None = None) -> IssuedToken:
        """A token for deployment ``audience``, valid ``ttl`` seconds from ``now``.

        Raises
        ------
        ValueError
            If ``ttl`` is not a positive finite number.
        """
        if not 0 < ttl < math.inf:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        issued = time.time() if now is None else now
        token_id = secrets.token_hex(8)
        claims = {
            "iss": _ISSUER,
            "aud": audience,
            "jti": token_id,
            "iat": int(issued),
            "exp": issued + ttl,
        }
        token = jwt.encode(claims, self._private, algorithm=_ALGORITHM)
        return IssuedToken(token, token_id, issued + ttl)


class TokenCheck:
    """Verifies the tokens of one deployment.

    Parameters
    ----------
    public_pem:
        The deployment's public key (:meth:`TokenKey.public_pem`).
    audience:
        The deployment's name: tokens for another deployment are refused.
    revoked:
        Ids of revoked tokens.
    clock:
        Source of Unix time for expiry.

    Raises
    ------
    ValueError
        If ``public_pem`` is not an Ed25519 public key.
    """

    def __init__(
        self,
        public_pem: str,
        audience: str,
        revoked: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        public = serialization.load_pem_public_key(public_pem.encode("ascii"))
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError(f"not an Ed25519 public key: {type(public).__name__}")
        self._public = public
        self.audience = audience
        self.revoked = frozenset(revoked)
        self.clock = clock

    def verify(self, token: str) -> str:
        """The id of a valid token.

        Raises
        ------
        TokenError
            ``malformed token``, ``bad signature``, ``token for another deployment``,
            ``token expired`` or ``token revoked``.
        """
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=[_ALGORITHM],
                audience=self.audience,
                issuer=_ISSUER,
                options={
                    "require": ["iss", "aud", "jti", "exp"],
                    "verify_exp": False,  # expiry by our clock, below
                    "verify_iat": False,
                },
            )
            token_id, expires = str(claims["jti"]), float(claims["exp"])
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token for another deployment") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise TokenError("malformed token") from None
        if not expires > self.clock():  # a NaN expiry never passes
            raise TokenError("token expired")
        if token_id in self.revoked:
            raise TokenError("token revoked")
        return token_id
