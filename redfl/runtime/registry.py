"""The runtimes by name (:data:`RUNTIMES`, ``federation.runtime``): how workers are reached.

An entry builds the :class:`~redfl.runtime.backend.Backend` and says what the runtime can
do for a federation: whether its workers are processes it can end, re-create and time out
(``supervised``). Adding a runtime is one entry here (and its backend module); a federation
chooses it by name and never compares names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redfl.core.registry import Registry
from redfl.runtime.backend import Backend
from redfl.runtime.local import LocalBackend
from redfl.runtime.resources import ResourcesConfig


@dataclass(frozen=True)
class RuntimeSpec:
    """A registered runtime.

    Attributes
    ----------
    make:
        Builds the backend for a federation: ``make(address, resources)``.
    supervised:
        Whether workers are processes that the runtime ends, re-creates and times out
        (client and round timeouts, worker restarts, capacity checks need it).
    """

    make: Callable[[str | None, ResourcesConfig], Backend]
    supervised: bool


def _ray(address: str | None, resources: ResourcesConfig) -> Backend:
    from redfl.runtime.ray_backend import RayBackend  # Ray is imported when it is used

    return RayBackend(address, current_group=resources.placement_group == "current")


def _local(address: str | None, resources: ResourcesConfig) -> Backend:
    return LocalBackend()


RUNTIMES: Registry[RuntimeSpec] = Registry("runtime")
"""Runtimes by ``federation.runtime``."""

RUNTIMES.register("ray", RuntimeSpec(_ray, supervised=True), description="workers are Ray actors")
RUNTIMES.register(
    "local", RuntimeSpec(_local, supervised=False), description="in-process, deterministic oracle"
)
