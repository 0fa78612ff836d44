"""The registries, one per concept; the config reads its allowed names from them.

Each is filled by the module that defines its things (see :class:`~redfl.core.registry.Registry`):

- :data:`STRATEGIES`: ``redfl.algorithms.registry`` (name -> ``StrategySpec``)
- :data:`ATTACKS`: ``redfl.attacks.registry`` (``attack.kind`` -> ``AttackSpec``)
- :data:`ALGORITHMS`: ``redfl.nodes.algorithms`` (``topology.algorithm`` -> node base class)
- :data:`SCHEMAS`: ``redfl.schemas.registry`` (``topology.schema`` -> ``SchemaSpec``)
- :data:`RUNTIMES`: registered here (``federation.runtime`` -> backend class as ``module:Class``)

A schema defined elsewhere (the hierarchy) registers itself and adds its module with
``SCHEMAS.add_filler("redfl.schemas.hierarchy")`` so that configs see it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redfl.core.registry import Registry

if TYPE_CHECKING:
    from redfl.algorithms.registry import StrategySpec
    from redfl.attacks.registry import AttackSpec
    from redfl.schemas.registry import SchemaSpec

STRATEGIES: Registry[StrategySpec] = Registry("strategy", ["redfl.algorithms.registry"])
"""Server strategies by ``strategy.name``."""

ATTACKS: Registry[AttackSpec] = Registry("attack", ["redfl.attacks.registry"])
"""Attack simulations by ``attack.kind`` (``"none"`` is not an attack and not listed)."""

ALGORITHMS: Registry[type[object]] = Registry("algorithm", ["redfl.nodes.algorithms"])
"""Decentralised algorithms by ``topology.algorithm``: the node base class each needs (an
abstract :class:`~redfl.nodes.decentralized.DecentralizedNode` subclass)."""

SCHEMAS: Registry[SchemaSpec] = Registry("schema", ["redfl.schemas.registry"])
"""Schemas by ``topology.schema``."""

RUNTIMES: Registry[str] = Registry("runtime")
"""Runtimes by ``federation.runtime``: the backend class as ``module:Class``."""

RUNTIMES.register(
    "ray", "redfl.runtime.ray_backend:RayBackend", description="workers are Ray actors"
)
RUNTIMES.register(
    "local", "redfl.runtime.local:LocalBackend", description="in-process, deterministic oracle"
)
