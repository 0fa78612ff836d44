"""A site, from Python: ``redfl.site.run(credentials, client=..., options=...)``.

The same as ``redfl site run``: the site's own client class (the one simulated) with its own
options joins the server its credential names, over mutual TLS and outbound only, and
serves the run's rounds (see :mod:`redfl.runtime.sites.agent`).

Examples
--------
>>> import redfl.site
>>> callable(redfl.site.run)
True
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict, Unpack

from redfl.runtime.sites.config import SITE_EXTRA, require_extra
from redfl.runtime.virtual import NodeFactory
from redfl.trust import Bundle

__all__ = ["SiteSettings", "run"]


class SiteSettings(TypedDict, total=False):
    """How a site runs: its folder, whether it stays for the next run, where its lines go,
    and what stops it (see :func:`redfl.runtime.sites.agent.run_site`)."""

    workdir: str | Path | None
    stay: bool
    echo: Callable[[str], None]
    stop: threading.Event | None


def run(
    credentials: str | Path | Bundle,
    *,
    client: NodeFactory | str,
    options: Mapping[str, Any] | str | Path | None = None,
    **settings: Unpack[SiteSettings],
) -> None:
    """Run a site until the run ends: :func:`redfl.runtime.sites.agent.run_site` (its
    parameters and errors), after checking that the ``sites`` extra is installed.

    Raises
    ------
    ValueError
        If the ``sites`` extra is missing, or as :func:`~redfl.runtime.sites.agent.run_site`.
    """
    require_extra(SITE_EXTRA, "redfl.site.run")
    from redfl.runtime.sites.agent import run_site

    run_site(credentials, client, options, **settings)
