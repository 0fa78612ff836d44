"""``VirtualNode``: the cheap description of a node, built into a live node on first use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redfl.core.roles import Role
from redfl.nodes.node import FederatedNode, NodeContext, NodePort

NodeFactory = Callable[..., FederatedNode]


@dataclass(frozen=True, slots=True)
class VirtualNode:
    """A node that costs nothing until built: a template, an id, roles and options.

    ``options`` are passed to ``template(**options)`` when the node is built, on the worker
    that hosts it; share one options mapping between many nodes and it is pickled once.
    ``resources`` (e.g. ``{"CPU": 1, "GPU": 0.25}``) gives the node a dedicated actor named
    ``federation_id/node_id`` with those resources.
    """

    template: NodeFactory
    node_id: str
    roles: frozenset[Role]
    index: int
    options: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, float] | None = None

    @property
    def dedicated(self) -> bool:
        """Whether the node gets an actor of its own."""
        return self.resources is not None

    def build(
        self, federation_id: str, seed: int, num_nodes: int, port: NodePort | None
    ) -> FederatedNode:
        """Instantiate, bind and set up the live node (runs where the node will live)."""
        node = self.template(**self.options)
        if not isinstance(node, FederatedNode):
            raise TypeError(
                f"node template {self.template!r} built {type(node).__name__}, not a FederatedNode"
            )
        context = NodeContext(self.node_id, self.roles, federation_id, seed, self.index, num_nodes)
        node.bind(context, port)
        node.setup()
        return node
