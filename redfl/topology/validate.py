"""Checks on a topology: connectivity (weak and strong), naming the offending nodes. No Ray."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from redfl.topology.graph import Topology

SHOWN = 10
"""How many offending node ids an error message lists."""


class TopologyError(ValueError):
    """A topology is malformed or unfit for an algorithm; the message names the nodes."""


def shown(ids: list[str]) -> str:
    """``ids`` for an error message: the first few, then how many more."""
    head = ", ".join(repr(i) for i in ids[:SHOWN])
    return f"[{head}{f', ... ({len(ids) - SHOWN} more)' if len(ids) > SHOWN else ''}]"


def reachable(adjacency: Mapping[str, set[str]], start: str) -> set[str]:
    """The nodes reachable from ``start`` (``start`` included), breadth first."""
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in adjacency[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def components(topology: Topology) -> list[list[str]]:
    """The weakly connected components, each in node order, largest first."""
    undirected: dict[str, set[str]] = {n: set(topology.edges[n]) for n in topology.nodes}
    for source, targets in topology.edges.items():
        for target in targets:
            undirected[target].add(source)
    left = set(topology.nodes)
    found = []
    for node_id in topology.nodes:
        if node_id in left:
            part = reachable(undirected, node_id)
            left -= part
            found.append([n for n in topology.nodes if n in part])
    return sorted(found, key=len, reverse=True)


def check_topology(
    topology: Topology, *, allow_disconnected: bool = False, strongly_connected: bool = False
) -> Topology:
    """Return ``topology`` if it is fit for use, else raise :class:`TopologyError`.

    Parameters
    ----------
    allow_disconnected:
        Accept a graph in several pieces (default: an error naming the cut-off nodes).
    strongly_connected:
        Also require every node to reach every other along directed edges (what a
        directed-graph algorithm needs to mix everyone's values).

    Examples
    --------
    >>> check_topology(Topology.from_edges(["a", "b", "c"], [("a", "b")]))
    Traceback (most recent call last):
    ...
    redfl.topology.validate.TopologyError: the topology is disconnected (2 components): nodes ['c'] are cut off from 'a'; pass allow_disconnected=True to accept it
    """  # noqa: E501
    if not topology.nodes:
        raise TopologyError("the topology has no node")
    parts = components(topology)
    if len(parts) > 1 and not allow_disconnected:
        cut = [n for part in parts[1:] for n in part]
        raise TopologyError(
            f"the topology is disconnected ({len(parts)} components): nodes {shown(cut)} are "
            f"cut off from {parts[0][0]!r}; pass allow_disconnected=True to accept it"
        )
    if strongly_connected and len(parts) == 1:
        root = topology.nodes[0]
        forward = reachable(topology.edges, root)
        backward = reachable(topology.senders(), root)
        unreached = [n for n in topology.nodes if n not in forward]
        stuck = [n for n in topology.nodes if n not in backward]
        if unreached or stuck:
            reasons: list[str] = []
            if unreached:
                reasons.append(f"nodes {shown(unreached)} cannot be reached from {root!r}")
            if stuck:
                reasons.append(f"nodes {shown(stuck)} cannot reach {root!r}")
            raise TopologyError(
                f"the directed topology is not strongly connected: {'; '.join(reasons)}"
            )
    return topology


def check_undirected(topology: Topology, algorithm: str) -> None:
    """Raise :class:`TopologyError` naming the one-way edges if ``topology`` is directed."""
    one_way = [
        f"{s}->{t}"
        for s in topology.nodes
        for t in sorted(topology.edges[s])
        if s not in topology.edges[t]
        or topology.weights.get((s, t)) != topology.weights.get((t, s))
    ]
    if one_way:
        raise TopologyError(
            f"{algorithm} needs an undirected graph (symmetric edges and weights); "
            f"one-way edges: {shown(one_way)}"
        )
