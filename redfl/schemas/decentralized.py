"""Decentralised schemas: ring, mesh, k-connect and custom graphs of round-based nodes.

Every node runs its message-driven ``train(rounds)`` loop concurrently (many nodes per
worker, each blocked in ``receive`` on a thread of its own), talking only to its
neighbours. The schema checks the graph against what the node's algorithm needs
(``requires``), builds per-round history from the nodes' reports, and takes the final
model as the weighted mean of the models the nodes published.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.config import ResourcesConfig
from redfl.core.result import FederationResult, RoundRecord
from redfl.nodes.decentralized import DecentralizedNode
from redfl.runtime.virtual import NodeFactory
from redfl.schemas.base import RuntimeName, virtual_nodes
from redfl.schemas.callbacks import Callback
from redfl.schemas.graph import GraphFederation
from redfl.topology import builders
from redfl.topology.graph import Topology
from redfl.topology.validate import TopologyError, check_topology, check_undirected, shown


def check_requirement(topology: Topology, requires: str, allow_disconnected: bool) -> None:
    """Raise :class:`TopologyError` unless ``topology`` gives the algorithm what it needs."""
    if requires == "undirected":
        check_undirected(topology, "this algorithm (Metropolis-Hastings mixing)")
    check_topology(
        topology,
        allow_disconnected=allow_disconnected,
        strongly_connected=requires in ("strongly_connected", "ring"),
    )
    if requires == "ring":
        n = len(topology.nodes)
        wanted = 1 if topology.directed or n == 2 else 2
        bad = [i for i in topology.nodes if len(topology.neighbours(i)) != wanted]
        if bad or n < 2:
            raise TopologyError(
                f"ring sequential training needs a ring of >= 2 nodes (each node linked to "
                f"its two ring neighbours, or only to its successor when directed); nodes "
                f"{shown(bad)} have {len(topology.neighbours(bad[0])) if bad else 0} "
                f"neighbour(s), not {wanted}"
            )


def history_from_reports(
    reports: Mapping[str, list[dict[str, float]]], first_round: int, started: float
) -> list[RoundRecord]:
    """One record per round: metrics averaged over the nodes that reported them.

    ``loss`` in a node report is its training loss; ``test_loss`` and ``accuracy`` its
    evaluation; a round's ``seconds`` runs from the previous round's last node to its own.
    """
    rounds = max((len(r) for r in reports.values()), default=0)
    records, previous = [], started
    for k in range(rounds):
        entries = [r[k] for r in reports.values() if len(r) > k]
        ended = max(e.get("time", previous) for e in entries)
        names = sorted({name for e in entries for name in e} - {"time"})
        means = {
            name: sum(e[name] for e in entries if name in e) / sum(1 for e in entries if name in e)
            for name in names
        }
        records.append(
            RoundRecord(
                first_round + k,
                len(reports),
                len(entries),
                len(reports) - len(entries),
                max(0.0, ended - previous),
                means.get("loss"),
                means.get("test_loss"),
                means.get("accuracy"),
                means,
            )
        )
        previous = ended
    return records


class DecentralizedFederation(GraphFederation):
    """Round-based message-driven nodes on ``topology`` (base of the named schemas).

    Parameters
    ----------
    template:
        A :class:`~redfl.nodes.decentralized.DecentralizedNode` subclass (e.g.
        ``GossipNode``, a ``DSGDNode`` or ``RingSequentialNode`` subclass), built on its
        worker with ``template(**options)``.
    topology:
        The graph; node ids are its nodes.
    allow_disconnected:
        Accept a graph in several pieces (otherwise an error naming the cut-off nodes).
    callbacks:
        Called with each round's record once the nodes have finished.
    """

    def __init__(
        self,
        template: NodeFactory,
        topology: Topology,
        *,
        options: Mapping[str, Any] | None = None,
        roles: str = "train",
        allow_disconnected: bool = False,
        callbacks: Sequence[Callback] = (),
        seed: int = 0,
        runtime: RuntimeName = "ray",
        address: str | None = None,
        resources: ResourcesConfig | None = None,
        federation_id: str | None = None,
    ) -> None:
        if not (isinstance(template, type) and issubclass(template, DecentralizedNode)):
            raise TypeError(
                f"template must be a DecentralizedNode subclass (GossipNode, a DSGDNode or "
                f"RingSequentialNode subclass), got {template!r}"
            )
        check_requirement(topology, template.requires, allow_disconnected)
        nodes = virtual_nodes(template, topology.nodes, roles=roles, options=options)
        super().__init__(
            nodes,
            topology,
            seed=seed,
            runtime=runtime,
            address=address,
            resources=resources,
            federation_id=federation_id,
        )
        self.callbacks = list(callbacks)
        self.round = 0
        self._history: list[RoundRecord] = []

    def train(self, rounds: int = 1) -> FederationResult:
        """Run ``rounds`` more rounds on every node at once.

        Returns history (one record per round), the final model (mean of the nodes'
        published models, weighted by their ``weight``) and each node's reports.

        Raises
        ------
        FederationError
            If a node fails: its id and traceback; the other nodes are stopped.
        """
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        for callback in self.callbacks:
            callback.on_train_begin(rounds)
        started = time.time()
        outputs = self._run_nodes({"rounds": rounds})
        records = history_from_reports(outputs, self.round + 1, started)
        self.round += len(records)
        for record in records:
            self._history.append(record)
            for callback in self.callbacks:
                callback.on_round_end(record)
        result = FederationResult(list(self._history), self.final_parameters(), [], outputs)
        for callback in self.callbacks:
            callback.on_train_end(result)
        return result

    def final_parameters(self) -> Parameters | None:
        """The weighted mean of the models the nodes last published (``None`` if none)."""
        backend = self._start()
        total = WeightedSum()
        groups: dict[int, list[str]] = {}
        for node in self.nodes:
            groups.setdefault(self.worker_of(node.node_id), []).append(node.node_id)
        pending = [backend.submit(w, "sum_parameters", ids) for w, ids in sorted(groups.items())]
        for outcome in backend.gather(pending):
            if outcome.error is not None:
                raise outcome.error
            total.merge(outcome.value)
        if total.weight <= 0:
            return None
        return {k: v / total.weight for k, v in total.sums.items()}


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
