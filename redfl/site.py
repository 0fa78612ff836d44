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
from typing import Any

from redfl.runtime.sites.config import SITE_EXTRA, require_extra
from redfl.runtime.virtual import NodeFactory
from redfl.trust import Bundle

__all__ = ["run"]


def run(
    credentials: str | Path | Bundle,
    *,
    client: NodeFactory | str,
    options: Mapping[str, Any] | str | Path | None = None,
    workdir: str | Path | None = None,
    stay: bool = False,
    echo: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """Run a site until the run ends (or, with ``stay``, until ``stop`` is set).

    Parameters
    ----------
    credentials:
        The site's credential bundle (the file ``redfl sites add`` wrote, or the loaded
        :class:`~redfl.trust.Bundle`).
    client:
        The client class or ``module:Class``, the very class simulated.
    options:
        The client's options (this site's own), a mapping or a TOML file.
    workdir:
        The folder to run in (relative paths in the options are read from it).
    stay:
        Serve the next run when one ends.
    echo:
        Where the one-line reports go.
    stop:
        Set it to make the site return.

    Raises
    ------
    ValueError
        A bad credential, options file, option or client, or the sites extra missing.
    redfl.runtime.sites.agent.SiteRefused
        The server refused the credential, or is not the federation's.
    """
    require_extra(SITE_EXTRA, "redfl.site.run")
    from redfl.runtime.sites.agent import run_site

    run_site(credentials, client, options, workdir=workdir, stay=stay, echo=echo, stop=stop)
