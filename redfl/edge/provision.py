"""What the edge services read from a provisioning folder: ``lcp_map.json``, the edge
secrets and each component's credential.

``lcp_map.json`` (written by ``redfl tree``) maps each LCP name to ``{"host", "port"}``; LCPs
are reached over TLS (``https://host:port``). ``edge_secrets.json`` holds the token-signing
secret and the development enrolment secret; it is created (mode 0600) on first use when
missing, never rewritten. A component's credential is its bundle in ``credentials/`` and the
tree's register (:mod:`redfl.trust.layout`): :class:`Member`.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from redfl.edge.peers import Peers
from redfl.trust import Bundle, client_context, server_context
from redfl.trust.layout import load_member, register_path

__all__ = ["EdgeSecrets", "LcpAddress", "Member", "load_or_create_secrets", "read_lcp_map"]

LCP_MAP = "lcp_map.json"
SECRETS = "edge_secrets.json"


class LcpAddress(BaseModel):
    """Where an LCP listens."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)

    @property
    def url(self) -> str:
        """Base URL of the LCP (TLS)."""
        return f"https://{self.host}:{self.port}"


class EdgeSecrets(BaseModel):
    """The token secret (hex, >= 32 bytes) and the enrollment secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_secret: str = Field(min_length=64, pattern=r"^([0-9a-f]{2})+$")
    enroll_secret: str = Field(min_length=8)


def read_lcp_map(tree_dir: Path) -> dict[str, LcpAddress]:
    """Read ``tree_dir/lcp_map.json``.

    Raises
    ------
    ValueError
        If the file is missing, not JSON, empty, or an entry lacks a valid host or port.
    """
    path = Path(tree_dir) / LCP_MAP
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} not found: run 'redfl tree' to provision the tree") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path} must map LCP names to {{host, port}}, got {raw!r:.80}")
    out = {}
    for name, entry in raw.items():
        try:
            out[str(name)] = LcpAddress.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join([str(name), *(str(p) for p in first["loc"])])
            raise ValueError(f"{path}: entry {where}: {first['msg']}") from None
    return out


def load_or_create_secrets(tree_dir: Path) -> EdgeSecrets:
    """Read ``tree_dir/edge_secrets.json``, creating it with fresh secrets when missing."""
    path = Path(tree_dir) / SECRETS
    if not path.exists():
        fresh = EdgeSecrets(token_secret=secrets.token_hex(32), enroll_secret=secrets.token_hex(16))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(fresh.model_dump_json(indent=2))
    try:
        return EdgeSecrets.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc.errors()[0]['msg']}") from None


@dataclass(frozen=True)
class Member:
    """An edge component's credential and the verifier of its peers.

    Attributes
    ----------
    name : str
        The member's name (``server``, ``proxy``, an LCP's or relay's site name).
    bundle : Bundle
        Its key, certificate and the tree's CA.
    peers : Peers
        Checks the certificates of the members it meets against the CA and the tree's
        register.
    """

    name: str
    bundle: Bundle
    peers: Peers

    @classmethod
    def load(cls, tree_dir: Path, name: str) -> Member:
        """Member ``name`` of the folder ``tree_dir``.

        Raises
        ------
        ValueError
            If its bundle is missing, unsafe or malformed (a :class:`redfl.trust.BundleError`
            naming the file).
        """
        bundle = load_member(tree_dir, name)
        return cls(name, bundle, Peers.of(bundle, register_path(tree_dir)))

    def server_tls(self) -> ssl.SSLContext:
        """TLS for the member's listener: its certificate, a client certificate required."""
        return server_context(self.bundle)

    def client_tls(self) -> ssl.SSLContext:
        """TLS for the member's calls: its certificate, the service's checked."""
        return client_context(self.bundle)
