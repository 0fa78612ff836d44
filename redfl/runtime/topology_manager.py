"""``TopologyManager``: owns the graph, checks every send, knows where each node lives.

It is not a hop on the data path: every worker holds a copy and routes its own messages.
"""

from __future__ import annotations

from collections.abc import Sequence

from redfl.topology.graph import Topology


class NotNeighbourError(ValueError):
    """A node tried to send to a node it has no edge to."""


class TopologyManager:
    """The graph plus the placement of nodes on workers.

    Parameters
    ----------
    topology:
        Who may send to whom; ``None`` allows no messages at all (e.g. a star whose
        clients only answer fit/evaluate calls).
    placement:
        For each node id, the index of the worker that hosts it.
    """

    def __init__(self, topology: Topology | None, placement: dict[str, int]) -> None:
        self.topology = topology
        self.placement = placement
        self._senders: dict[str, set[str]] | None = None

    def neighbours(self, node_id: str) -> set[str]:
        """The ids ``node_id`` may send to."""
        if self.topology is None:
            return set()
        return self.topology.neighbours(node_id)

    def senders(self, node_id: str) -> set[str]:
        """The ids that may send to ``node_id`` (its in-neighbours)."""
        if self.topology is None:
            return set()
        if self._senders is None:
            self._senders = self.topology.senders()
        try:
            return self._senders[node_id]
        except KeyError:
            raise KeyError(f"unknown node {node_id!r}") from None

    def weights_into(self, node_id: str) -> dict[str, float]:
        """The weights of the edges into ``node_id``, by sender (empty when unweighted)."""
        if self.topology is None or not self.topology.weights:
            return {}
        return {j: self.topology.weights[(j, node_id)] for j in self.senders(node_id)}

    def check_send(self, sender: str, recipients: Sequence[str]) -> None:
        """Raise :class:`NotNeighbourError` unless every recipient is a neighbour.

        Recipients that are not nodes of the federation at all are named as unknown.
        """
        if not recipients:
            raise ValueError(f"node {sender!r} sent a message with no recipient")
        unknown = [r for r in recipients if r not in self.placement]
        if unknown:
            raise NotNeighbourError(
                f"node {sender!r} cannot send to {unknown[:10]}: unknown node id(s), not in "
                f"the federation"
            )
        allowed = self.neighbours(sender)
        bad = [r for r in recipients if r not in allowed]
        if bad:
            raise NotNeighbourError(
                f"node {sender!r} cannot send to {bad}: not its neighbour(s) in the topology "
                f"(neighbours: {sorted(allowed)[:10]}{' ...' if len(allowed) > 10 else ''})"
            )

    def worker_of(self, node_id: str) -> int:
        """The index of the worker hosting ``node_id``."""
        return self.placement[node_id]

    def route(self, recipients: Sequence[str]) -> dict[int, list[str]]:
        """Group recipients by hosting worker (each worker receives the message once)."""
        groups: dict[int, list[str]] = {}
        for node_id in recipients:
            groups.setdefault(self.placement[node_id], []).append(node_id)
        return groups
