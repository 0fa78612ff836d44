"""The named decentralised schemas: ring, mesh, k-connect and custom graphs.

Each is a :class:`~redfl.schemas.decentralized.DecentralizedFederation` on a topology built
by :mod:`redfl.topology.builders`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redfl.runtime.virtual import NodeFactory
from redfl.schemas.decentralized import DecentralizedFederation
from redfl.topology import builders
from redfl.topology.graph import Topology


class RingFederation(DecentralizedFederation):
    """Nodes on a ring (``directed=True``: each node sends to its successor only)."""

    def __init__(
        self, template: NodeFactory, nodes: builders.Nodes, *, directed: bool = False, **kw: Any
    ) -> None:
        super().__init__(template, builders.ring(nodes, directed=directed), **kw)


class MeshFederation(DecentralizedFederation):
    """Nodes on the complete graph."""

    def __init__(self, template: NodeFactory, nodes: builders.Nodes, **kw: Any) -> None:
        super().__init__(template, builders.mesh(nodes), **kw)


class KConnectFederation(DecentralizedFederation):
    """Nodes on a connected random ``k``-regular graph (seeded by ``topology_seed``)."""

    def __init__(
        self,
        template: NodeFactory,
        nodes: builders.Nodes,
        k: int,
        *,
        topology_seed: int = 0,
        **kw: Any,
    ) -> None:
        super().__init__(template, builders.k_connect(nodes, k, seed=topology_seed), **kw)


class CustomFederation(DecentralizedFederation):
    """Nodes on a user-defined graph: a :class:`Topology`, an adjacency matrix (array or
    CSV path), an edge list or a networkx graph (see :func:`redfl.topology.custom`)."""

    def __init__(
        self,
        template: NodeFactory,
        graph: Any,
        *,
        nodes: Sequence[str] | None = None,
        directed: bool | None = None,
        allow_disconnected: bool = False,
        **kw: Any,
    ) -> None:
        topology = (
            graph
            if isinstance(graph, Topology)
            else builders.custom(
                graph, nodes=nodes, directed=directed, allow_disconnected=allow_disconnected
            )
        )
        super().__init__(template, topology, allow_disconnected=allow_disconnected, **kw)
