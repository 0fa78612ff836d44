"""Registers the shipped schemas (``topology.schema``): star and the decentralised graphs.

A graph schema builds its :class:`~redfl.topology.Topology` from the ``[topology]`` table
and the number of nodes; ``requires`` names the ``[topology]`` keys it needs (and only it
uses), ``allows`` the optional ones only it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redfl import topology as topo
from redfl.core.registries import SCHEMAS
from redfl.topology.graph import Topology

if TYPE_CHECKING:
    from redfl.core.config_tables import TopologyConfig

TopologyBuilder = Callable[["TopologyConfig", int], Topology]
"""Builds a graph schema's topology from ``[topology]`` and the number of nodes."""


@dataclass(frozen=True)
class SchemaSpec:
    """A registered schema.

    Attributes
    ----------
    graph:
        Whether it is a decentralised graph (then ``topology.algorithm`` is required).
    topology:
        The topology builder of a graph schema (``None`` for star).
    requires, allows:
        ``[topology]`` keys this schema needs / may use, that no other schema uses.
    """

    graph: bool
    topology: TopologyBuilder | None = None
    requires: tuple[str, ...] = ()
    allows: tuple[str, ...] = ()


def _ring(t: TopologyConfig, n: int) -> Topology:
    return topo.ring(n, directed=t.directed)


def _mesh(t: TopologyConfig, n: int) -> Topology:
    return topo.mesh(n)


def _k_connect(t: TopologyConfig, n: int) -> Topology:
    return topo.k_connect(n, t.k or 0, seed=t.topology_seed)


def _custom(t: TopologyConfig, n: int) -> Topology:
    return topo.custom(t.topology_file, allow_disconnected=t.allow_disconnected)


SCHEMAS.register("star", SchemaSpec(graph=False), description="clients around a server strategy")
SCHEMAS.register("ring", SchemaSpec(True, _ring, allows=("directed",)), description="a ring")
SCHEMAS.register("mesh", SchemaSpec(True, _mesh), description="every node linked to every other")
SCHEMAS.register(
    "k_connect",
    SchemaSpec(True, _k_connect, requires=("k",)),
    description="a random k-regular-ish graph (seeded by topology_seed)",
)
SCHEMAS.register(
    "custom",
    SchemaSpec(True, _custom, requires=("topology_file",)),
    description="an adjacency matrix or edge list read from topology_file",
)
