"""A federation home's sites: open the home, issue a site's credential, revoke it, list them.

Thin over :mod:`redfl.trust`: a site is a member of kind ``site`` whose bundle also carries
the URL it reaches the server at (``server_url``). ``redfl sites init/add/revoke/list`` and
the platform call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from redfl.trust import Bundle, Record, TrustHome, TrustHomeError

SERVER_URL = "server_url"
"""The bundle field holding the URL a site reaches the server at."""


def open_home(home: str | Path | None) -> TrustHome:
    """The federation home at ``home``.

    Raises
    ------
    ValueError
        ``sites.home: ...`` naming the folder and what is wrong with it.
    """
    if home is None:
        raise ValueError("sites.home: the federation home is not set")
    path = Path(home)
    if not path.is_dir():
        raise ValueError(f"sites.home: {path} does not exist; create it with 'redfl sites init'")
    try:
        return TrustHome(path)
    except TrustHomeError as error:
        raise ValueError(f"sites.home: {error}") from None


def check_server_url(url: str) -> str:
    """``url`` if a site can reach a server at it (``https://host[:port]``).

    Raises
    ------
    ValueError
        If it is not an https URL with a host, or has a path, query or credentials.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.username
        or port == -1
    ):
        raise ValueError(f"the server URL must be https://HOST[:PORT], got {url!r}")
    return url.rstrip("/")


def issue_site(home: TrustHome, name: str, server_url: str, days: int = 365) -> Bundle:
    """Issue site ``name``'s credential: its key, its certificate, the CA and the URL.

    Raises
    ------
    ValueError
        For a bad name, URL or validity, or a name that has a valid credential already.
    """
    url = check_server_url(server_url)
    return home.issue(name, "site", days=days).with_fields(**{SERVER_URL: url})


@dataclass(frozen=True)
class SiteRecord:
    """A site's credential as the register holds it, and its state now."""

    name: str
    serial: int
    not_after: datetime
    state: str
    """``valid``, ``expired`` or ``revoked: <reason>``."""


def list_sites(home: TrustHome) -> list[SiteRecord]:
    """Every site credential of the home, in issue order, with its state."""
    now = datetime.now(UTC)
    return [_site(record, now) for record in home.register().records if record.kind == "site"]


def _site(record: Record, now: datetime) -> SiteRecord:
    if record.revoked is not None:
        state = f"revoked: {record.revoked.why}"
    elif record.not_after < now:
        state = "expired"
    else:
        state = "valid"
    return SiteRecord(record.name, record.serial, record.not_after, state)
