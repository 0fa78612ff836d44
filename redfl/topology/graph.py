"""A directed graph of node ids; an undirected edge is two directed ones.

The graphs a federation uses are built by :mod:`redfl.topology.builders` (``ring``,
``mesh``, ``star``, ``k_connect``, ``custom``; exported by :mod:`redfl.topology`): the one
factory, where ``directed`` says whether edges go one way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass
class Topology:
    """Who may send to whom.

    Examples
    --------
    >>> t = Topology.from_edges(["a", "b", "c"], [("a", "b"), ("b", "c")], directed=True)
    >>> sorted(t.neighbours("b")), t.allows("a", "b"), t.allows("b", "a")
    (['c'], True, False)
    """

    nodes: list[str] = field(default_factory=list)
    edges: dict[str, set[str]] = field(default_factory=dict)
    weights: dict[tuple[str, str], float] = field(default_factory=dict)
    """Optional edge weights, keyed ``(source, target)``; empty when unweighted."""

    def add_node(self, node_id: str) -> None:
        """Add a node with no edges (no-op if present)."""
        if node_id not in self.edges:
            self.nodes.append(node_id)
            self.edges[node_id] = set()

    def add_edge(
        self,
        source: str,
        target: str,
        *,
        directed: bool = False,
        weight: float | None = None,
    ) -> None:
        """Allow ``source`` to send to ``target`` (and back unless ``directed``).

        ``weight``, when given, is stored for the edge (and its reverse unless ``directed``).
        """
        for node_id in (source, target):
            if node_id not in self.edges:
                raise KeyError(f"unknown node {node_id!r}: add it before its edges")
        if source == target:
            raise ValueError(f"self-loop on {source!r} is not allowed")
        self.edges[source].add(target)
        if not directed:
            self.edges[target].add(source)
        if weight is not None:
            self.weights[(source, target)] = float(weight)
            if not directed:
                self.weights[(target, source)] = float(weight)

    def neighbours(self, node_id: str) -> set[str]:
        """The nodes ``node_id`` may send to."""
        try:
            return self.edges[node_id]
        except KeyError:
            raise KeyError(f"unknown node {node_id!r}") from None

    def allows(self, source: str, target: str) -> bool:
        """Whether ``source`` may send to ``target``."""
        return target in self.edges.get(source, ())

    def senders(self) -> dict[str, set[str]]:
        """For every node, the nodes that may send to it (its in-neighbours)."""
        incoming: dict[str, set[str]] = {node_id: set() for node_id in self.nodes}
        for source, targets in self.edges.items():
            for target in targets:
                incoming[target].add(source)
        return incoming

    @property
    def directed(self) -> bool:
        """Whether some edge has no reverse edge (with the same weight, if weighted)."""
        for source, targets in self.edges.items():
            for target in targets:
                if source not in self.edges[target]:
                    return True
                if self.weights.get((source, target)) != self.weights.get((target, source)):
                    return True
        return False

    def num_edges(self) -> int:
        """How many directed edges (an undirected edge counts twice)."""
        return sum(len(targets) for targets in self.edges.values())

    @classmethod
    def from_edges(
        cls, nodes: Sequence[str], edges: Iterable[tuple[str, str]], *, directed: bool = False
    ) -> Topology:
        """A graph from a node list and an edge list (one-way edges when ``directed``)."""
        topology = cls()
        for node_id in nodes:
            topology.add_node(node_id)
        for source, target in edges:
            topology.add_edge(source, target, directed=directed)
        return topology
