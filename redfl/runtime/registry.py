"""The runtimes by name (:data:`RUNTIMES`, ``federation.runtime``): how workers are reached.

An entry builds the :class:`~redfl.runtime.backend.Backend` from
:class:`RuntimeOptions` and says what the runtime can do for a federation: whether its
workers are processes it can end and time out (``supervised``), whether it re-creates a
lost worker or the worker comes back by itself (``recreates``), whether a client may run on
another worker than its own (``movable``), and what must hold before a run starts
(``check``). Adding a runtime is one entry here (and its backend module); a federation
chooses it by name and never compares names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from redfl.core.registry import Registry
from redfl.runtime.backend import Backend
from redfl.runtime.local import LocalBackend
from redfl.runtime.resources import ResourcesConfig
from redfl.runtime.sites.config import SERVER_EXTRA, SitesConfig, require_extra


@dataclass(frozen=True)
class RuntimeOptions:
    """What a federation tells its runtime.

    Attributes
    ----------
    address:
        The Ray cluster to join (``None``: the embedded instance).
    resources:
        How workers are sized and placed.
    sites:
        The ``[sites]`` table (the ``sites`` runtime's listen address, trust home and
        expected sites).
    """

    address: str | None = None
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    sites: SitesConfig | None = None


@dataclass(frozen=True)
class RuntimeSpec:
    """A registered runtime.

    Attributes
    ----------
    make:
        Builds the backend for a federation.
    supervised:
        Whether workers are processes that the runtime ends and times out (client and
        round timeouts, worker losses and capacity checks need it).
    recreates:
        Whether the runtime re-creates a lost worker (and a round waits for it), or a lost
        worker comes back by itself when it can (a site reconnects): then nothing waits for
        it, and a call to it fails at once while it is away.
    movable:
        Whether a client may run on another worker than its own (work stealing, re-runs of
        a lost worker's clients); a site's client runs at its site only.
    check:
        Raises ``ValueError`` saying what is missing for this runtime to run here (an
        extra, a table, a trust home), before anything is created.
    """

    make: Callable[[RuntimeOptions], Backend]
    supervised: bool
    recreates: bool = True
    movable: bool = True
    check: Callable[[RuntimeOptions], None] | None = None


def _ray(options: RuntimeOptions) -> Backend:
    from redfl.runtime.ray_backend import RayBackend  # Ray is imported when it is used

    return RayBackend(options.address, current_group=options.resources.placement_group == "current")


def _local(options: RuntimeOptions) -> Backend:
    return LocalBackend()


def _sites(options: RuntimeOptions) -> Backend:
    from redfl.runtime.sites.backend import SitesBackend  # uvicorn is imported when used

    return SitesBackend(_sites_table(options))


def _check_sites(options: RuntimeOptions) -> None:
    require_extra(SERVER_EXTRA, "runtime 'sites'")
    from redfl.runtime.sites.admin import open_home

    open_home(_sites_table(options).home)


def _sites_table(options: RuntimeOptions) -> SitesConfig:
    table = options.sites
    if table is None or table.home is None:
        raise ValueError(
            "runtime 'sites' needs a [sites] table with home (the federation home of "
            "'redfl sites init'), listen and expected"
        )
    return table


RUNTIMES: Registry[RuntimeSpec] = Registry("runtime")
"""Runtimes by ``federation.runtime``."""

RUNTIMES.register("ray", RuntimeSpec(_ray, supervised=True), description="workers are Ray actors")
RUNTIMES.register(
    "local", RuntimeSpec(_local, supervised=False), description="in-process, deterministic oracle"
)
RUNTIMES.register(
    "sites",
    RuntimeSpec(_sites, supervised=True, recreates=False, movable=False, check=_check_sites),
    description="each client runs at its own site, reached over mutual TLS",
)
