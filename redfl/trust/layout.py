"""Where a provisioned folder keeps its trust: the trust home and every member's bundle.

A folder that ``redfl tree`` writes holds::

    trust/                 the trust home (TrustHome): CA, register, CRL (mode 0700)
    credentials/           one bundle per member (mode 0700)
        server.json        the server's credential (the home's server key and certificate)
        <name>.json        every other member's (0600 each)

Every process of a deployment reads its own bundle and the register (``trust/register.json``,
public) from here; revocations are seen by every process that reads the register that
:meth:`TrustHome.revoke` rewrote. The CA key (``trust/ca.key``) is needed only where
credentials are issued or revoked: a copy of the folder for another host may leave it out,
with the bundles of the members that do not run there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from redfl.trust.bundle import Bundle, BundleError
from redfl.trust.home import TrustHome
from redfl.trust.identity import Kind

__all__ = [
    "CREDENTIALS",
    "TRUST",
    "bundle_path",
    "load_member",
    "provision_members",
    "register_path",
]

TRUST = "trust"
"""The trust home's folder, inside a provisioned folder."""
CREDENTIALS = "credentials"
"""The members' bundles' folder, inside a provisioned folder."""
SERVER = "server"
"""The server's member name (the trust home's own credential)."""


def register_path(folder: Path) -> Path:
    """The register of ``folder``'s trust home."""
    return Path(folder) / TRUST / "register.json"


def bundle_path(folder: Path, name: str) -> Path:
    """Where member ``name``'s bundle lies in ``folder``."""
    return Path(folder) / CREDENTIALS / f"{name}.json"


def load_member(folder: Path, name: str) -> Bundle:
    """Read member ``name``'s bundle from ``folder``.

    Raises
    ------
    BundleError
        If the bundle is missing (naming the file and how to make one), unsafe or malformed.
    """
    path = bundle_path(folder, name)
    try:
        return Bundle.load(path)
    except FileNotFoundError:
        raise BundleError(
            f"no credential for {name!r}: {path} is missing (provision the folder with "
            "'redfl tree', or copy the member's bundle there)"
        ) from None


def provision_members(
    folder: Path,
    members: Sequence[tuple[str, Kind, Sequence[str]]],
    server_names: Sequence[str],
    days: int = 365,
) -> list[str]:
    """Create ``folder``'s trust home and a bundle for the server and every member.

    Parameters
    ----------
    folder
        The provisioned folder (it must exist; ``trust/`` and ``credentials/`` must not).
    members
        ``(name, kind, hosts)`` of each member besides the server; ``hosts`` are the
        addresses a listening member is reached at (empty for kinds that do not listen).
    server_names
        The addresses and names the server is reached at.
    days
        How long the members' certificates are valid.

    Returns
    -------
    list of str
        The member names with a bundle, the server's first.

    Raises
    ------
    ValueError
        For a bad name, kind or host, or a name given twice.
    """
    folder = Path(folder)
    home = TrustHome.init(folder / TRUST, server_names, server_name=SERVER, server_days=days)
    credentials = folder / CREDENTIALS
    credentials.mkdir(mode=0o700)
    server = Bundle(
        key_pem=home.server_key_path.read_text(),
        cert_pem=home.server_cert_path.read_text(),
        ca_pem=home.ca_pem,
    )
    server.write(bundle_path(folder, SERVER))
    written = [SERVER]
    for name, kind, hosts in members:
        bundle = home.issue(name, kind, days=days, hosts=hosts)
        bundle.write(bundle_path(folder, name))
        written.append(name)
    return written
