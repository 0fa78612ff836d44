"""Who a credential speaks for: a member's name and kind, and how both sit in a certificate.

A member certificate carries its name twice, in ways a verifier reads back without guessing:
the subject common name is the name, and exactly one URI subject alternative name reads
``urn:redfl:<kind>:<name>``. :func:`identity_of` reads them from a certificate and refuses
one where they disagree or are missing; it checks no signature (that is the verifier's job).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = [
    "KINDS",
    "LISTENING_KINDS",
    "Identity",
    "Kind",
    "UntrustedError",
    "check_name",
    "identity_of",
    "identity_uri",
    "parse_kind",
]

Kind = Literal["site", "server", "lcp", "relay", "proxy", "operator"]
"""What a member is: a site process, a federation or edge server, a leaf client process, a
relay, a routing proxy, or an operator's tool."""

KINDS: tuple[Kind, ...] = get_args(Kind)
"""Every kind, in a fixed order."""

LISTENING_KINDS: frozenset[Kind] = frozenset({"server", "lcp", "relay", "proxy"})
"""Kinds that also accept connections: their certificates are valid for TLS servers too."""

NAME_RULE = "1-64 characters: letters, digits, '-', '_' and '.', starting with a letter or a digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_URI_PREFIX = "urn:redfl:"


class UntrustedError(Exception):
    """A peer or certificate is not trusted here; the message says why.

    Parameters
    ----------
    reason
        Why, in words (e.g. ``"revoked at ...: lost laptop"``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """A verified (or at least read) member identity.

    Attributes
    ----------
    name
        The member's name, unique among the valid credentials of its trust home.
    kind
        What the member is.
    serial
        The serial number of the certificate it was read from.
    """

    name: str
    kind: Kind
    serial: int


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid member name.

    Raises
    ------
    ValueError
        If it is not 1-64 letters, digits, ``-``, ``_`` or ``.``, starting with a letter or
        a digit (so that a name is also a safe file name and URN part).
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(f"invalid member name {name!r}: a name is {NAME_RULE}")
    return name


def parse_kind(kind: str) -> Kind:
    """Return ``kind`` as a :data:`Kind`.

    Raises
    ------
    ValueError
        If it is not one of :data:`KINDS`.
    """
    for known in KINDS:
        if kind == known:
            return known
    raise ValueError(f"invalid member kind {kind!r}: a kind is one of {', '.join(KINDS)}")


def identity_uri(name: str, kind: Kind) -> str:
    """The URI subject alternative name that carries a member's kind and name."""
    return f"{_URI_PREFIX}{kind}:{name}"


def identity_of(cert: x509.Certificate) -> Identity:
    """Read the identity a certificate claims, without checking who signed it.

    Raises
    ------
    UntrustedError
        If the certificate has no ``urn:redfl:<kind>:<name>`` URI, more than one, an unknown
        kind, an invalid name, or a common name other than that name.
    """
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    ours = [u for u in uris if u.startswith(_URI_PREFIX)]
    if len(ours) != 1:
        raise UntrustedError(
            f"the certificate carries {len(ours)} redfl identities "
            "(exactly one URI 'urn:redfl:<kind>:<name>' is required)"
        )
    kind_text, _, name = ours[0].removeprefix(_URI_PREFIX).partition(":")
    try:
        kind = parse_kind(kind_text)
        check_name(name)
    except ValueError as exc:
        raise UntrustedError(
            f"the certificate's identity {ours[0]!r} is malformed: {exc}"
        ) from None
    common = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if common != [name]:
        raise UntrustedError(
            f"the certificate's common name {common!r} does not match its identity {ours[0]!r}"
        )
    return Identity(name=name, kind=kind, serial=cert.serial_number)
