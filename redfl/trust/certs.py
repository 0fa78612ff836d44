"""Building keys, certificates and CRLs with ``cryptography``: the CA, members, revocations.

Every key is ECDSA on P-256 and every signature ECDSA with SHA-256. Python's ``ssl`` on
OpenSSL 3 handles Ed25519 certificates too, but only in TLS 1.3 handshakes between peers that
both offer Ed25519, and many other TLS stacks a member may run (browsers, Java, some HTTP
clients) refuse them; P-256 certificates work for TLS servers and clients in TLS 1.2 and 1.3 on
every stack that speaks TLS, and in FIPS builds of OpenSSL.

The CA certificate may sign certificates and CRLs and nothing else (``pathlen`` 0: no
intermediate CAs). A member certificate is not a CA, is for digital signatures, is for TLS
clients, and also for TLS servers when its kind listens (:data:`LISTENING_KINDS`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from redfl.trust.identity import LISTENING_KINDS, Kind, identity_uri

__all__ = [
    "ca_certificate",
    "cert_pem",
    "host_names",
    "key_pem",
    "load_key",
    "member_certificate",
    "new_key",
    "revocation_list",
]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (protect the file, not the bytes)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Read a PEM private key written by :func:`key_pem`.

    Raises
    ------
    ValueError
        If the text is not an unencrypted PEM private key, or not an elliptic-curve one.
    """
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"expected an elliptic-curve private key, got {type(key).__name__}")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    """A certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """Subject alternative names for the hosts a listener is reached at.

    IP addresses become IP address names, anything else a DNS name.

    Raises
    ------
    ValueError
        If a host is neither an IP address nor a valid DNS host name.
    """
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not isinstance(host, str) or _HOST.fullmatch(host) is None:
            raise ValueError(f"invalid host {host!r}: give an IP address or a DNS host name")
        names.append(x509.DNSName(host))
    return names


def ca_certificate(
    key: ec.EllipticCurvePrivateKey, common_name: str, not_before: datetime, not_after: datetime
) -> x509.Certificate:
    """A self-signed CA certificate that may sign member certificates and CRLs only."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def member_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    name: str,
    kind: Kind,
    hosts: Sequence[str],
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A member certificate signed by the CA.

    Parameters
    ----------
    ca_key, ca_cert
        The CA's key and certificate.
    public_key
        The member's public key.
    name, kind
        The member's identity: the common name is ``name`` and the only redfl URI is
        ``urn:redfl:<kind>:<name>`` (the caller has checked both).
    hosts
        IP addresses and DNS names a listening member is reached at (empty for a client).
    not_before, not_after
        The validity period.
    """
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind in LISTENING_KINDS:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity_uri(name, kind))]
    sans.extend(host_names(hosts))
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def revocation_list(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[tuple[int, datetime]],
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A CRL signed by the CA listing ``(serial, revoked at)`` pairs.

    Its CRL number is ``this_update`` in microseconds since the epoch, so that a later list
    has a larger number.
    """
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(int(this_update.timestamp() * 1_000_000)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    for serial, when in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
