"""Who is on the other end of an edge hop: certificates checked against the tree's CA and
register, remembered until the register changes, and the operator's signed tokens.

Every edge component (the server, each relay and LCP, the routing proxy) holds a bundle that
``redfl tree`` issued from the tree's trust home (:mod:`redfl.trust`), and every hop between
components is mutually authenticated TLS: the listening side asks for a certificate in the
handshake (the CA as its only root) and a route then names the caller from it
(:class:`~redfl.edge.routes.PeerCertificate`); the calling side checks the certificate and
host name of what it reached (:func:`redfl.trust.client_context`) and its member name
(:meth:`Peers.acceptor`).

The handshake proves the peer holds a key the CA certified; :class:`Peers` adds what only
the register knows. It checks a certificate in full once (the CA's signature, validity,
identity, register, revocation: :class:`redfl.trust.Verifier`) and remembers the result
until the register file changes (one ``stat`` per request: a revocation is seen by the very
next request, on any connection) or the certificate expires. Measured in-process, a full
check costs about 0.2 ms of CPU and a remembered one about 2 us, so the device fast path
pays for the check once per connection, not per request.

Operators reach ``/stats`` (and the server's ``/status``) with their operator bundle: as a
client certificate where the listener speaks TLS, or, where it does not (a routing proxy on
plain HTTP behind a TLS terminator), with an *operator token*
(:func:`redfl.trust.operator.operator_token`, which says what it holds); :meth:`Peers.operator`
checks one, its certificate as above (revocation included).
"""

from __future__ import annotations

import base64
import os
import ssl
import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509

from redfl.trust import Bundle, Identity, Kind, UntrustedError, Verifier
from redfl.trust.operator import MAX_OPERATOR_TOKEN_S, OPERATOR_ALGORITHM, OPERATOR_AUDIENCE

__all__ = ["Peers", "peer_pem"]


def peer_pem(extensions: Mapping[str, object] | None) -> str | None:
    """The client certificate (PEM) of a request's ASGI ``tls`` extension, if it has one.

    The servers of :mod:`redfl.edge.serve` fill ``scope["extensions"]["tls"]`` as the ASGI
    TLS extension describes it (``client_cert_chain``: the peer's certificate first).
    """
    tls = (extensions or {}).get("tls")
    if not isinstance(tls, Mapping):
        return None
    chain = tls.get("client_cert_chain")
    if not chain:
        return None
    first = next(iter(chain))
    return first if isinstance(first, str) else None


class Peers:
    """Checks peers' certificates against one CA and its register, remembering the results.

    Parameters
    ----------
    ca_pem : str
        The CA certificate (PEM), e.g. a member bundle's ``ca_pem``.
    register_path : Path
        The trust home's register (``trust/register.json`` of the tree's folder); revoked
        credentials are refused from the next request on.
    clock : Callable[[], float], default time.time
        Unix time, for expiry (certificates and operator tokens).
    """

    def __init__(
        self, ca_pem: str, register_path: Path, clock: Callable[[], float] = time.time
    ) -> None:
        self.register_path = Path(register_path)
        self.clock = clock
        self._verifier = Verifier(
            ca_pem, self.register_path, clock=lambda: datetime.fromtimestamp(clock(), UTC)
        )
        self._known: dict[str, tuple[Identity, float]] = {}  # PEM -> identity, not after
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, bundle: Bundle, register_path: Path) -> Peers:
        """Peers checked with ``bundle``'s CA and the register at ``register_path``."""
        return cls(bundle.ca_pem, register_path)

    def identity(self, pem: str) -> Identity:
        """The verified identity of a peer certificate (PEM).

        Raises
        ------
        UntrustedError
            As :meth:`redfl.trust.Verifier.identity` (foreign CA, expired, unregistered,
            revoked, malformed), or when the register cannot be read.
        """
        try:
            info = os.stat(self.register_path)
        except OSError as exc:
            raise UntrustedError(f"the register cannot be read, refusing everyone: {exc}") from None
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        now = self.clock()
        with self._lock:
            if stamp != self._stamp:  # issued or revoked since: check everyone again
                self._known.clear()
                self._stamp = stamp
            known = self._known.get(pem)
        if known is not None and now <= known[1]:
            return known[0]
        try:
            der = ssl.PEM_cert_to_DER_cert(pem)
        except ValueError:
            raise UntrustedError("the peer's certificate is not a PEM certificate") from None
        who = self._verifier.identity(der)
        expires = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
        with self._lock:
            if len(self._known) >= 100_000:
                self._known.clear()
            self._known[pem] = (who, expires)
        return who

    def accept(self, pem: str, allowed: Mapping[Kind, Collection[str] | None]) -> Identity:
        """:meth:`identity`, then the kind (and, if the kind lists names, the name) must be
        one ``allowed`` names.

        Raises
        ------
        UntrustedError
            As :meth:`identity`, or ``kind ... is not accepted here`` / ``... is not a
            member this endpoint expects``.
        """
        who = self.identity(pem)
        if who.kind not in allowed:
            raise UntrustedError(
                f"{who.kind} {who.name!r}: kind {who.kind!r} is not accepted here "
                f"(accepted: {', '.join(sorted(allowed))})"
            )
        names = allowed[who.kind]
        if names is not None and who.name not in names:
            raise UntrustedError(f"{who.kind} {who.name!r} is not a member this endpoint expects")
        return who

    def acceptor(
        self, allowed: Mapping[Kind, Collection[str] | None]
    ) -> Callable[[bytes | None], None]:
        """A check, for a client, of the certificate of the service it reached: a member
        ``allowed`` names, as for :meth:`accept` (see
        :class:`redfl.edge.forward.LcpConnections`).

        The returned function takes the peer's DER certificate and raises
        :class:`UntrustedError` when it is not such a member.
        """

        def check(der: bytes | None) -> None:
            if not der:
                raise UntrustedError("the service presented no certificate")
            self.accept(ssl.DER_cert_to_PEM_cert(der), allowed)

        return check

    def operator(self, token: str, audience: str = OPERATOR_AUDIENCE) -> Identity:
        """The operator an operator token (:func:`redfl.trust.operator.operator_token`)
        speaks for.

        Raises
        ------
        UntrustedError
            If the token is malformed, carries no certificate or one this CA and register
            refuse, is not an operator's, is not signed by that certificate's key, names
            another audience, is expired, or claims a life over
            :data:`MAX_OPERATOR_TOKEN_S`.
        """
        try:
            chain: Any = jwt.get_unverified_header(token).get("x5c")
            der = base64.b64decode(chain[0], validate=True)
        except (jwt.InvalidTokenError, TypeError, IndexError, KeyError, ValueError):
            raise UntrustedError("malformed operator token (no x5c certificate)") from None
        who = self.accept(ssl.DER_cert_to_PEM_cert(der), {"operator": None})
        key = x509.load_der_x509_certificate(der).public_key()
        try:
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[OPERATOR_ALGORITHM],
                audience=audience,
                options={"require": ["sub", "iat", "exp", "aud"], "verify_exp": False},
            )
            issued, expires = float(claims["iat"]), float(claims["exp"])
        except jwt.InvalidSignatureError:
            raise UntrustedError("operator token: bad signature") from None
        except jwt.InvalidAudienceError:
            raise UntrustedError(f"operator token: not for {audience!r}") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise UntrustedError("malformed operator token") from None
        if claims["sub"] != who.name:
            raise UntrustedError("operator token: its subject is not its certificate's name")
        if expires - issued > MAX_OPERATOR_TOKEN_S:
            raise UntrustedError(
                f"operator token: a life of {expires - issued:g} s is over the "
                f"{MAX_OPERATOR_TOKEN_S:g} s allowed"
            )
        if expires <= self.clock():
            raise UntrustedError("operator token expired")
        return who
