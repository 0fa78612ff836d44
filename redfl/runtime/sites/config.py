"""The ``[sites]`` table: where the server listens, its trust home, the sites it expects.

``expected`` names the sites in order; site ``i`` hosts client ``i``, whose node id is the
site's name, whatever the runtime: the same config run with ``runtime = "ray"`` or
``"local"`` (where the other keys are unused) simulates the same clients with the same node
ids, indices and random streams, each on a worker of its own as each site is, so the final
parameters are the same bits.

Examples
--------
>>> table = SitesConfig(home="fed-home", expected=["hospital-a", "hospital-b"])
>>> table.address(), table.join_timeout
(('127.0.0.1', 8443), 300.0)
>>> from pydantic import ValidationError
>>> try:
...     SitesConfig(expected=["a", "a"])
... except ValidationError as error:
...     print(error.errors()[0]["msg"])
Value error, site names must be unique; repeated: ['a']
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter

from pydantic import Field, field_validator

from redfl.core.config import SERVER_FILE, Strict
from redfl.trust.identity import check_name

SERVER_EXTRA = ("uvicorn", "httptools")
"""The modules the server side needs (the ``sites`` extra)."""
SITE_EXTRA = ("httpx",)
"""The modules a site needs (the ``sites`` extra)."""
INSTALL_HINT = "pip install 'redfl[sites]'"
"""How to install the ``sites`` extra."""

_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})")


class SitesConfig(Strict):
    """The ``[sites]`` table of a federation config.

    Attributes
    ----------
    home:
        The federation home (``redfl sites init``): the CA, the server's TLS certificate
        and the register of sites; needed by ``runtime = "sites"`` only. A relative path in
        a config file is read from the file's folder.
    listen:
        ``host:port`` the server serves mutual TLS on (an address of this machine).
    expected:
        The sites' names, in order: site ``i`` hosts client ``i``, and its name is that
        client's node id in every runtime.
    join_timeout:
        Seconds the server waits for every expected site before the first round; past it
        the run fails naming the sites missing.
    """

    home: str | None = Field(
        default=None, min_length=1, max_length=4096, json_schema_extra=SERVER_FILE
    )
    listen: str = Field(default="127.0.0.1:8443", max_length=300)
    expected: list[str] = Field(min_length=1, max_length=10_000)
    join_timeout: float = Field(default=300.0, gt=0.0, le=86_400.0)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        match = _LISTEN.fullmatch(value)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise ValueError("must be host:port (a port from 1 to 65535), e.g. 0.0.0.0:8443")
        return value

    @field_validator("expected")
    @classmethod
    def _expected(cls, value: list[str]) -> list[str]:
        for name in value:
            check_name(name)
        repeated = sorted(name for name, count in Counter(value).items() if count > 1)
        if repeated:
            raise ValueError(f"site names must be unique; repeated: {repeated[:5]}")
        return value

    def address(self) -> tuple[str, int]:
        """The host and port of ``listen`` (an IPv6 host without its brackets)."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` cannot be imported here (found without importing them)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_extra(modules: tuple[str, ...], who: str) -> None:
    """Refuse to go on without the ``sites`` extra.

    Raises
    ------
    ValueError
        ``<who> needs the sites extra (pip install 'redfl[sites]'): missing ...``.
    """
    missing = missing_modules(modules)
    if missing:
        raise ValueError(
            f"{who} needs the sites extra ({INSTALL_HINT}): missing {', '.join(missing)}"
        )
