"""Bearer tokens on the wire: the one error every token check raises, and the one reader of
an ``Authorization: Bearer <token>`` header, shared by the edge's device tokens and a served
model's tokens.

>>> bearer_token("Bearer abc")
'abc'
>>> bearer_token(None)
Traceback (most recent call last):
...
redfl.trust.bearer.TokenError: missing token: send 'Authorization: Bearer <token>'
"""

from __future__ import annotations

__all__ = ["TokenError", "bearer_token"]


class TokenError(ValueError):
    """A token is missing, malformed, forged, expired or revoked; the message says which."""


def bearer_token(header: str | None, where: str = "") -> str:
    """The token of an ``Authorization: Bearer <token>`` header.

    ``where``, when given, says where a token comes from, for the error's message.

    Raises
    ------
    TokenError
        ``missing token`` when the header is absent or not a bearer token.
    """
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        source = f" from {where}" if where else ""
        raise TokenError(f"missing token: send 'Authorization: Bearer <token>'{source}")
    return token.strip()
