"""Operator tokens: how the holder of an operator bundle proves itself in a request header.

An operator (a person's tool, or the platform acting for its users) reaches a service of the
tree with its operator bundle: as the client certificate of a mutually authenticated TLS
connection and, for a listener without client certificates (a routing proxy on plain HTTP
behind a TLS terminator), with an *operator token* in the :data:`OPERATOR_HEADER` header. The
token is a JWT (ES256) signed with the operator's private key that carries its certificate
(``x5c``), names its audience and lives :data:`MAX_OPERATOR_TOKEN_S` seconds at most, so a
copy is worthless a minute later. The service checks the certificate against its CA and
register (revocation included) and the signature with the certificate's key.

>>> MAX_OPERATOR_TOKEN_S
300.0
"""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from redfl.trust.bundle import Bundle

__all__ = [
    "MAX_OPERATOR_TOKEN_S",
    "OPERATOR_ALGORITHM",
    "OPERATOR_AUDIENCE",
    "OPERATOR_HEADER",
    "operator_token",
]

OPERATOR_AUDIENCE = "redfl-edge-operator"
"""The ``aud`` claim of an operator token."""
MAX_OPERATOR_TOKEN_S = 300.0
"""The longest life an operator token may claim (``exp - iat``), in seconds."""
OPERATOR_ALGORITHM = "ES256"
"""The signature algorithm of an operator token (the bundles' keys are ECDSA P-256)."""
OPERATOR_HEADER = "x-redfl-operator"
"""The request header that carries an operator token."""


def operator_token(
    bundle: Bundle,
    ttl: float = 60.0,
    audience: str = OPERATOR_AUDIENCE,
    clock: Callable[[], float] = time.time,
) -> str:
    """A short-lived token that proves the holder of ``bundle`` (an operator's) to a
    service: send it as ``x-redfl-operator: <token>``.

    Raises
    ------
    ValueError
        If the bundle is not an operator's, or ``ttl`` is not in (0,
        :data:`MAX_OPERATOR_TOKEN_S`].
    """
    if bundle.identity.kind != "operator":
        raise ValueError(f"an operator token needs an operator bundle, got {bundle.identity.kind}")
    if not 0 < ttl <= MAX_OPERATOR_TOKEN_S:
        raise ValueError(f"ttl must be in (0, {MAX_OPERATOR_TOKEN_S:g}] seconds, got {ttl}")
    key = load_pem_private_key(bundle.key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("an operator bundle's key must be an EC key")
    der = ssl.PEM_cert_to_DER_cert(bundle.cert_pem)
    now = clock()
    claims = {"sub": bundle.identity.name, "aud": audience, "iat": now, "exp": now + ttl}
    x5c = [base64.b64encode(der).decode("ascii")]
    return jwt.encode(claims, key, algorithm=OPERATOR_ALGORITHM, headers={"x5c": x5c})
