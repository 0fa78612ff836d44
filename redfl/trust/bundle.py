"""A bundle: the one file a member receives, out of band, to join a federation.

It holds the member's private key, its certificate, the CA certificate it trusts peers by, and
free-form fields from whoever issued it (the server's URL, say). Whoever holds the file *is*
the member until the credential expires or is revoked, so it is written with mode 0600 and
:meth:`Bundle.load` refuses one that group or others may access. Its shape::

    {"format": "redfl-trust-bundle", "version": 1,
     "key": "-----BEGIN PRIVATE KEY-----...", "cert": "-----BEGIN CERTIFICATE-----...",
     "ca": "-----BEGIN CERTIFICATE-----...", "fields": {"server_url": "https://..."}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from redfl.trust.certs import load_key
from redfl.trust.files import PRIVATE, FileModeError, read_private, write_atomic
from redfl.trust.identity import Identity, UntrustedError, identity_of

__all__ = ["Bundle", "BundleError", "JsonValue"]

FORMAT = "redfl-trust-bundle"
VERSION = 1

JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
"""A value JSON can hold: what a bundle's free-form fields may be."""


class BundleError(ValueError):
    """A bundle is unsafe or malformed; the message says which file and what is wrong."""


@dataclass(frozen=True)
class Bundle:
    """A member's credential and what it needs to reach its federation.

    Construction checks that the PEM texts parse, that the key belongs to the certificate,
    that the CA signed the certificate, and that the certificate carries a redfl identity.

    Attributes
    ----------
    key_pem
        The member's private key (PKCS#8 PEM).
    cert_pem
        The member's certificate (PEM), signed by the CA.
    ca_pem
        The CA certificate (PEM): the only root the member trusts peers by.
    fields
        Free-form values from the issuer, e.g. ``{"server_url": "https://..."}``.

    Raises
    ------
    BundleError
        If any check fails.
    """

    key_pem: str
    cert_pem: str
    ca_pem: str
    fields: dict[str, JsonValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            key = load_key(self.key_pem.encode())
            cert = x509.load_pem_x509_certificate(self.cert_pem.encode())
            ca = x509.load_pem_x509_certificate(self.ca_pem.encode())
        except (AttributeError, ValueError, TypeError) as exc:
            raise BundleError(f"a key or certificate does not parse: {exc}") from None
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            raise BundleError("the private key does not belong to the certificate")
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):
            raise BundleError("the certificate is not signed by the bundle's CA") from None
        try:
            identity_of(cert)
        except UntrustedError as exc:
            raise BundleError(str(exc)) from None
        if not isinstance(self.fields, dict) or not all(isinstance(k, str) for k in self.fields):
            raise BundleError(f"fields must be a JSON object, got {self.fields!r:.80}")

    @property
    def identity(self) -> Identity:
        """The member's name, kind and serial, as its certificate states them."""
        return identity_of(x509.load_pem_x509_certificate(self.cert_pem.encode()))

    def with_fields(self, **fields: JsonValue) -> Bundle:
        """This bundle with ``fields`` added to (or replacing) its free-form fields."""
        return replace(self, fields={**self.fields, **fields})

    def write(self, path: Path, *, replace: bool = False) -> None:
        """Write the bundle as JSON to ``path`` with mode 0600, atomically.

        Parameters
        ----------
        path
            The file to write.
        replace
            Whether an existing file may be replaced (by default it is an error).

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``replace`` is false.
        """
        text = json.dumps(self.as_json(), indent=2) + "\n"
        write_atomic(Path(path), text.encode(), PRIVATE, replace=replace)

    def as_json(self) -> dict[str, Any]:
        """The bundle as the JSON object of its file (what :meth:`load` reads back)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "key": self.key_pem,
            "cert": self.cert_pem,
            "ca": self.ca_pem,
            "fields": self.fields,
        }

    @classmethod
    def load(cls, path: Path) -> Bundle:
        """Read a bundle file.

        Raises
        ------
        BundleError
            If group or others may access the file, or it is not a well-formed bundle; the
            message names the file.
        FileNotFoundError
            If there is no such file.
        """
        try:
            raw: Any = json.loads(read_private(Path(path)))
        except FileModeError as exc:
            raise BundleError(f"refusing bundle: {exc}") from None
        except ValueError as exc:
            raise BundleError(f"bundle {path} is not JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BundleError(f"bundle {path} is not a {FORMAT} file")
        if raw.get("version") != VERSION:
            raise BundleError(f"bundle {path} has version {raw.get('version')!r}, not {VERSION}")
        texts = {k: raw.get(k) for k in ("key", "cert", "ca")}
        missing = sorted(k for k, v in texts.items() if not isinstance(v, str))
        if missing:
            raise BundleError(f"bundle {path} lacks PEM text for {', '.join(missing)}")
        try:
            return cls(
                key_pem=raw["key"],
                cert_pem=raw["cert"],
                ca_pem=raw["ca"],
                fields=raw.get("fields", {}),
            )
        except BundleError as exc:
            raise BundleError(f"bundle {path} is malformed: {exc}") from None
