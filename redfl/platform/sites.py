"""The platform's own federation home, and what its runs with ``runtime = "sites"`` use.

The home is ``<data>/sites`` (its CA, the server certificate for ``sites_server_names``, the
register of sites), created when the app starts. Admins add and revoke its sites through
``/api/sites``; a web config's ``[sites]`` table names only the sites it expects (it may not
name a folder on the server): :func:`redfl.platform.untrusted.with_platform_sites` points it
at this home and at the operator's ``sites_listen``.
"""

from __future__ import annotations

import contextlib

from redfl.platform.settings import Settings
from redfl.trust import TrustHome, TrustHomeError


def ensure_sites_home(settings: Settings) -> TrustHome:
    """The platform's federation home, created on first use (servers sharing the data
    folder may race: one creates it, the others open it)."""
    path = settings.sites_home
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        with contextlib.suppress(TrustHomeError, OSError):  # made by another server meanwhile
            TrustHome.init(path, settings.sites_server_names, server_name="platform")
    return TrustHome(path)
