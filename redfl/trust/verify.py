"""Who is on the other end: check a peer certificate and name the member it belongs to.

A TLS handshake made with :mod:`redfl.trust.tls` contexts has already checked the chain to the
CA and the validity period; it cannot know the register. A :class:`Verifier` checks all of it
again from the certificate alone, then what only the register and the endpoint know: that the
credential was issued and is not revoked, that its kind is one this endpoint accepts, and that
its name is one it expects.

Revocation is seen at once: before every check the verifier looks at the register file's
inode, size and modification time (one ``stat``) and reads the file again only when they
changed. The home replaces the file atomically, so a check made after :meth:`TrustHome.revoke
<redfl.trust.home.TrustHome.revoke>` returns refuses the credential. A verifier built without a
register (a member checking the server with only its bundle) cannot see revocations.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from redfl.trust.bundle import Bundle
from redfl.trust.home import TrustHome
from redfl.trust.identity import Identity, Kind, UntrustedError, identity_of, parse_kind
from redfl.trust.register import Register, RegisterError

__all__ = ["Verifier"]


@dataclass(frozen=True)
class _Seen:
    """The register as read, and the file state it was read at."""

    stamp: tuple[int, int, int]
    register: Register


class Verifier:
    """Checks peer certificates against one CA, its register and an endpoint's expectations.

    Parameters
    ----------
    ca_pem
        The CA certificate (PEM).
    register_path
        The register file, or None to skip the register (then revoked credentials pass).
    kinds
        The kinds this endpoint accepts (None: any kind).
    names
        The member names this endpoint expects (None: any name).
    clock
        Returns the current time (UTC); the default reads the system clock.

    Notes
    -----
    A verifier may be shared by threads: its only changing state, the register it last read,
    is replaced as a whole.
    """

    def __init__(
        self,
        ca_pem: str | bytes,
        register_path: Path | None,
        *,
        kinds: Iterable[Kind | str] | None = None,
        names: Iterable[str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        pem = ca_pem.encode() if isinstance(ca_pem, str) else ca_pem
        self._ca = x509.load_pem_x509_certificate(pem)
        self._register_path = None if register_path is None else Path(register_path)
        self._kinds = None if kinds is None else frozenset(parse_kind(k) for k in kinds)
        self._names = None if names is None else frozenset(names)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._seen: _Seen | None = None

    @classmethod
    def of(
        cls,
        source: TrustHome | Bundle,
        *,
        kinds: Iterable[Kind | str] | None = None,
        names: Iterable[str] | None = None,
    ) -> Verifier:
        """A verifier for an endpoint, from a trust home or a member's bundle.

        Parameters
        ----------
        source
            A trust home: its CA and its register (revocations are seen at once). A bundle:
            its CA and no register, for a member checking its peers' kinds and names (e.g.
            that it reached a ``"server"``); such a verifier cannot see revocations.
        kinds, names
            As for :class:`Verifier`.
        """
        if isinstance(source, TrustHome):
            return cls(source.ca_pem, source.register_path, kinds=kinds, names=names)
        return cls(source.ca_pem, None, kinds=kinds, names=names)

    def identity(self, peer_cert_der: bytes) -> Identity:
        """Verify a peer's certificate and return whom it identifies.

        Parameters
        ----------
        peer_cert_der
            The certificate in DER, e.g. ``SSLSocket.getpeercert(binary_form=True)``.

        Returns
        -------
        Identity
            The member's name, kind and certificate serial.

        Raises
        ------
        UntrustedError
            If the certificate does not parse, is not signed by this CA, is expired or not yet
            valid, carries no well-formed identity, is unknown to the register or revoked, has a
            kind this endpoint does not accept, or a name it does not expect; or the register
            cannot be read (the verifier fails closed).
        """
        try:
            cert = x509.load_der_x509_certificate(peer_cert_der)
        except ValueError:
            raise UntrustedError("the peer's certificate is not a DER X.509 certificate") from None
        try:
            cert.verify_directly_issued_by(self._ca)
        except (InvalidSignature, ValueError, TypeError):
            raise UntrustedError(
                f"the certificate ({cert.subject.rfc4514_string()}) is not signed by this CA "
                f"({self._ca.subject.rfc4514_string()})"
            ) from None
        now = self._clock()
        if now < cert.not_valid_before_utc:
            raise UntrustedError(
                f"the certificate is not yet valid (from {cert.not_valid_before_utc})"
            )
        if now > cert.not_valid_after_utc:
            raise UntrustedError(f"the certificate expired at {cert.not_valid_after_utc}")
        who = identity_of(cert)
        label = f"{who.kind} {who.name!r} (serial {who.serial:x})"
        if self._register_path is not None:
            record = self._register(self._register_path).by_serial(who.serial)
            if record is None:
                raise UntrustedError(f"{label} is not in the register")
            if (record.name, record.kind) != (who.name, who.kind):
                raise UntrustedError(
                    f"{label} is registered as {record.kind} {record.name!r}: mismatch"
                )
            if record.revoked is not None:
                raise UntrustedError(
                    f"{label} was revoked at {record.revoked.when:%Y-%m-%d %H:%M:%S} UTC: "
                    f"{record.revoked.why}"
                )
        if self._kinds is not None and who.kind not in self._kinds:
            raise UntrustedError(
                f"{label}: kind {who.kind!r} is not accepted here "
                f"(accepted: {', '.join(sorted(self._kinds))})"
            )
        if self._names is not None and who.name not in self._names:
            raise UntrustedError(f"{label}: name {who.name!r} is not expected here")
        return who

    def _register(self, path: Path) -> Register:
        """The register, read again only when the file changed since the last read."""
        try:
            info = os.stat(path)
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
            seen = self._seen
            if seen is None or seen.stamp != stamp:
                seen = _Seen(stamp, Register.load(path))
                self._seen = seen
        except (OSError, RegisterError) as exc:
            raise UntrustedError(f"the register cannot be read, refusing everyone: {exc}") from None
        return seen.register
