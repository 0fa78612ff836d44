"""A trust home: the folder that holds a federation's CA and records what it issued.

Layout (the folder itself has mode 0700)::

    ca.key         the CA's private key (0600): whoever reads it can mint any identity
    ca.pem         the CA certificate (0644): the one root every member trusts
    server.key     the server's private key (0600)
    server.pem     the server's TLS certificate for the names given at init (0644)
    register.json  every issued credential and its revocation, if any (0644)
    crl.pem        a CRL signed by the CA listing the revoked serials (0644)

:meth:`TrustHome.init` writes the folder beside its target under a hidden name and renames it
into place, so a home appears whole or not at all; it never writes over an existing one.
:meth:`TrustHome.issue` and :meth:`TrustHome.revoke` read, change and replace the register
under an exclusive lock on the folder's ``.lock`` file, so two processes that issue or revoke
at once do not lose each other's change.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from redfl.trust.bundle import Bundle
from redfl.trust.certs import (
    ca_certificate,
    cert_pem,
    key_pem,
    load_key,
    member_certificate,
    new_key,
    revocation_list,
)
from redfl.trust.files import PRIVATE, PUBLIC, check_private, read_private, write_atomic
from redfl.trust.identity import LISTENING_KINDS, Kind, check_name, parse_kind
from redfl.trust.register import Record, Register, Revocation

__all__ = ["CLOCK_SKEW", "TrustHome", "TrustHomeError"]

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
SERVER_KEY = "server.key"
SERVER_CERT = "server.pem"
REGISTER = "register.json"
CRL = "crl.pem"
LOCK = ".lock"

CLOCK_SKEW = timedelta(minutes=5)
"""How far before its issue a certificate's validity starts by default, so that a peer whose
clock is a little behind does not refuse a fresh certificate as not yet valid."""


class TrustHomeError(ValueError):
    """A folder is not a usable trust home, or cannot become one; the message names it."""


class TrustHome:
    """An existing trust home.

    Parameters
    ----------
    path
        The folder written by :meth:`init`.

    Attributes
    ----------
    path
        The folder.
    ca_pem
        The CA certificate (PEM).
    ca_cert_path, server_cert_path, server_key_path
        The CA certificate file, the server's TLS certificate and its private key (0600).
    register_path
        The register file.
    crl_path
        The CRL file, rewritten at every revocation.

    Raises
    ------
    TrustHomeError
        If a file of the home is missing, or a private key file is accessible by group or
        others.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.ca_cert_path = self.path / CA_CERT
        self.server_cert_path = self.path / SERVER_CERT
        self.server_key_path = self.path / SERVER_KEY
        self.register_path = self.path / REGISTER
        self.crl_path = self.path / CRL
        missing = [
            f
            for f in (CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT, REGISTER, CRL)
            if not (self.path / f).is_file()
        ]
        if missing:
            raise TrustHomeError(
                f"{self.path} is not a trust home ({', '.join(missing)} missing); "
                "create one with TrustHome.init"
            )
        for private in (CA_KEY, SERVER_KEY):
            try:
                check_private(self.path / private)
            except ValueError as exc:
                raise TrustHomeError(str(exc)) from None
        self.ca_pem = self.ca_cert_path.read_text()

    def register(self) -> Register:
        """The register as the file holds it now."""
        return Register.load(self.register_path)

    @classmethod
    def init(
        cls,
        path: Path,
        server_names: Sequence[str] = ("127.0.0.1", "localhost"),
        *,
        server_name: str = "server",
        ca_name: str = "redfl federation CA",
        ca_days: int = 3650,
        server_days: int = 365,
    ) -> TrustHome:
        """Create a trust home: a CA, the server's TLS credential, a register and a CRL.

        Parameters
        ----------
        path
            The folder to create; it may exist only as an empty folder.
        server_names
            The IP addresses and DNS names members reach the server at (IP addresses become
            IP address names of the certificate, the others DNS names).
        server_name
            The server's member name (its kind is ``"server"``).
        ca_name
            The CA certificate's common name.
        ca_days, server_days
            How long the CA and the server certificate are valid.

        Returns
        -------
        TrustHome
            The new home.

        Raises
        ------
        TrustHomeError
            If ``path`` exists and is not an empty folder (in particular, an existing home).
        ValueError
            If a server name, the server's member name or a duration is invalid.
        """
        path = Path(path)
        check_name(server_name)
        if not server_names:
            raise ValueError("give at least one IP address or DNS name for the server")
        _check_days(ca_days, server_days)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            what = "a trust home" if (path / CA_KEY).exists() else "not an empty folder"
            raise TrustHomeError(f"refusing to init {path}: it exists and is {what}")
        path.parent.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        ca_key = new_key()
        ca = ca_certificate(ca_key, ca_name, now - CLOCK_SKEW, now + timedelta(days=ca_days))
        temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.init-"))
        try:
            write_atomic(temp / CA_KEY, key_pem(ca_key), PRIVATE)
            write_atomic(temp / CA_CERT, cert_pem(ca), PUBLIC)
            key, cert, record = _member(
                ca_key, ca, server_name, "server", server_names, now - CLOCK_SKEW, server_days
            )
            write_atomic(temp / SERVER_KEY, key, PRIVATE)
            write_atomic(temp / SERVER_CERT, cert, PUBLIC)
            register = Register((record,))
            register.save(temp / REGISTER)
            _write_crl(temp / CRL, ca_key, ca, register, now)
            os.rename(temp, path)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return cls(path)

    def issue(
        self,
        name: str,
        kind: Kind | str,
        *,
        days: int = 365,
        hosts: Sequence[str] = (),
        valid_from: datetime | None = None,
    ) -> Bundle:
        """Issue a credential to a member: a fresh key and a certificate signed by the CA.

        Parameters
        ----------
        name
            The member's name: 1-64 letters, digits, ``-``, ``_``, ``.``, starting with a
            letter or digit. No other unrevoked, unexpired credential may have it.
        kind
            What the member is, one of :data:`~redfl.trust.identity.KINDS`.
        days
            How long the certificate is valid.
        hosts
            For kinds that listen (server, lcp, relay, proxy): the IP addresses and DNS names
            peers reach it at, for their hostname check.
        valid_from
            When the validity starts (default: now minus :data:`CLOCK_SKEW`); a time in the
            past with few ``days`` issues an already expired certificate, e.g. for tests.

        Returns
        -------
        Bundle
            The member's key, certificate and the CA certificate, without free-form fields;
            add them with :meth:`Bundle.with_fields` and hand it over with :meth:`Bundle.write`.

        Raises
        ------
        ValueError
            If the name, kind, days or hosts are invalid, the name has a valid credential
            already, or the certificate would outlive the CA.
        """
        check_name(name)
        member_kind = parse_kind(kind)
        _check_days(days)
        if hosts and member_kind not in LISTENING_KINDS:
            raise ValueError(
                f"hosts are only for kinds that listen ({', '.join(sorted(LISTENING_KINDS))}), "
                f"not for {member_kind!r}"
            )
        now = datetime.now(UTC)
        start = now - CLOCK_SKEW if valid_from is None else valid_from.astimezone(UTC)
        ca = x509.load_pem_x509_certificate(self.ca_pem.encode())
        if start + timedelta(days=days) > ca.not_valid_after_utc:
            raise ValueError(
                f"a credential of {days} days from {start:%Y-%m-%d} would outlive the CA "
                f"(valid until {ca.not_valid_after_utc:%Y-%m-%d})"
            )
        with self._locked():
            register = self.register()
            for held in register.named(name):
                if held.revoked is None and held.not_after >= now:
                    raise ValueError(
                        f"{name!r} already has a valid credential (kind {held.kind}, serial "
                        f"{held.serial:x}, valid until {held.not_after:%Y-%m-%d %H:%M} UTC): "
                        "revoke it before issuing the name again"
                    )
            ca_key = load_key(read_private(self.path / CA_KEY))
            key, cert, record = _member(ca_key, ca, name, member_kind, hosts, start, days)
            register.adding(record).save(self.register_path)
        return Bundle(key_pem=key.decode(), cert_pem=cert.decode(), ca_pem=self.ca_pem)

    def revoke(self, name: str, reason: str) -> list[Record]:
        """Revoke every unrevoked credential of ``name``, at once.

        The register is replaced first (verifiers refuse the credential from their next
        check on), then the CRL is rewritten.

        Parameters
        ----------
        name
            The member's name.
        reason
            Why, in words; kept in the register.

        Returns
        -------
        list of Record
            The records revoked now, as the register holds them afterwards.

        Raises
        ------
        ValueError
            If the reason is empty or the name has no unrevoked credential.
        """
        if not reason.strip():
            raise ValueError("give a reason for the revocation")
        with self._locked():
            register = self.register()
            serials = {r.serial for r in register.named(name) if r.revoked is None}
            if not serials:
                known = "only revoked credentials" if register.named(name) else "no credential"
                raise ValueError(f"cannot revoke {name!r}: the register holds {known} of it")
            now = datetime.now(UTC)
            register = register.revoking(serials, Revocation(when=now, why=reason))
            register.save(self.register_path)
            ca_key = load_key(read_private(self.path / CA_KEY))
            ca = x509.load_pem_x509_certificate(self.ca_pem.encode())
            _write_crl(self.crl_path, ca_key, ca, register, now)
        return [r for r in register.records if r.serial in serials]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, PRIVATE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _check_days(*days: int) -> None:
    for value in days:
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"a validity in days must be a positive integer, got {value!r}")


def _member(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    name: str,
    kind: Kind,
    hosts: Sequence[str],
    start: datetime,
    days: int,
) -> tuple[bytes, bytes, Record]:
    """A fresh key (PEM), its certificate (PEM) and the register record for them."""
    key = new_key()
    cert = member_certificate(
        ca_key, ca, key.public_key(), name, kind, hosts, start, start + timedelta(days=days)
    )
    record = Record(
        name=name,
        kind=kind,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
    return key_pem(key), cert_pem(cert), record


def _write_crl(
    path: Path,
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    register: Register,
    now: datetime,
) -> None:
    """Write the CRL of ``register``'s revoked serials; its next update is the CA's expiry
    (the file is rewritten at every revocation, never left stale)."""
    revoked = [(r.serial, r.revoked.when) for r in register.records if r.revoked is not None]
    crl = revocation_list(ca_key, ca, revoked, now, ca.not_valid_after_utc)
    write_atomic(path, crl.public_bytes(serialization.Encoding.PEM), PUBLIC)
