"""The message port: message-driven nodes (graph and decentralised schemas) on a worker.

:class:`RunNode` runs a node's ``train()`` to the end; it blocks on messages from other
nodes, so it is a ``blocking`` request (a thread of its own in-process, one of the actor's
threads on Ray). The runner is also every node's :class:`~redfl.nodes.node.NodePort`: it
checks sends against the topology, queues messages for nodes of its own worker and hands
the others to their workers (:class:`Deliver`, or on Ray :class:`DeliverBatch` through an
outbox). Nodes report per-round metrics here (:class:`RoundTotalsSince` reads them) and
publish models that :class:`SumParameters` folds.
"""

from __future__ import annotations

import pickle
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redfl.core.arrays import WeightedSum
from redfl.core.message import Message
from redfl.runtime.protocol import Handlers, NodeHost, Request, Runner
from redfl.runtime.replies import NodeFailed, RoundTotals
from redfl.runtime.round_gate import RoundGate

Packed = tuple[bytes, list[pickle.PickleBuffer]]
"""A message pickled once (protocol 5), its arrays out of band."""


class PortRunner(Runner):
    """Runs message-driven nodes and carries their messages; the nodes' ``NodePort``."""

    def __init__(self, host: NodeHost) -> None:
        super().__init__(host)
        self._lock = threading.Lock()
        self._running = 0
        self._rounds: dict[int, RoundTotals] = {}
        self.gate = RoundGate()
        self._published: dict[str, dict[int, dict[str, Any]]] = {}  # node -> round -> state
        self._keep_from = 0
        self._every = 1  # rounds kept for snapshots: the multiples of this
        host.port = self

    def register(self, handlers: Handlers) -> None:
        """Answer :class:`RunNode`, the deliveries, round totals and parameter sums."""
        handlers.add(RunNode, self.run_node)
        handlers.add(Deliver, self.deliver)
        handlers.add(DeliverBatch, self.deliver_batch)
        handlers.add(RoundTotalsSince, self.round_totals)
        handlers.add(SumParameters, self.sum_parameters)
        handlers.add(FreezeRounds, lambda request: self.gate.freeze())
        handlers.add(LimitRounds, self.limit_rounds)
        handlers.add(Snapshots, self.snapshots)
        handlers.add(Quiesce, self.quiesce)
        handlers.add(Rewind, self.rewind)

    def stats(self) -> dict[str, float]:
        """How many ``train()`` calls are running."""
        return {"running": self._running}

    def close(self) -> None:
        """Let nodes waiting at the round gate end their loops."""
        self.gate.close()

    # -- requests ------------------------------------------------------------------------
    def run_node(self, request: RunNode) -> Any:
        """Run the node's ``train(**arguments)`` to the end and return its output."""
        with self._lock:
            self._running += 1
        try:
            return self.host.node(request.node_id).train(**request.arguments)
        except Exception:
            raise NodeFailed(request.node_id, traceback.format_exc()) from None
        finally:
            with self._lock:
                self._running -= 1

    def deliver(self, request: Deliver) -> None:
        """Queue a message that arrived from another worker."""
        self.host.mailbox.put(request.message, request.node_ids)

    def deliver_batch(self, request: DeliverBatch) -> None:
        """Queue a batch of pickled messages; arrays are copied once, by the transport."""
        for (data, buffers), ids in request.items:
            self.host.mailbox.put(pickle.loads(data, buffers=buffers), ids)

    def round_totals(self, request: RoundTotalsSince) -> dict[int, RoundTotals]:
        """The totals of every round from ``first`` on (what the driver's history needs)."""
        with self._lock:
            return {r: t.copy() for r, t in self._rounds.items() if r >= request.first}

    def limit_rounds(self, request: LimitRounds) -> None:
        """Admit rounds up to ``request.round`` (see :class:`RoundGate`)."""
        with self._lock:
            self._every = max(1, request.snapshot_every)
        self.gate.set_limit(request.round, request.stop)

    def sum_parameters(self, request: SumParameters) -> WeightedSum:
        """The ``weight``-weighted sum of the ``parameters`` the nodes last published.

        Nodes with no such version (or a weight <= 0) are skipped.
        """
        total = WeightedSum()
        for node_id in request.node_ids:
            state = self.host.version(node_id)[1]
            weight = float(state.get("weight", 0.0))
            if weight > 0 and "parameters" in state:
                total.add(state["parameters"], weight)
        return total

    def snapshots(self, request: Snapshots) -> dict[str, dict[str, Any]]:
        """The states this worker's nodes published for ``round`` (older ones are dropped);
        a node whose last state is of ``round`` (it waits at the gate) gives that one."""
        with self._lock:
            self._keep_from = max(self._keep_from, request.round)
            found = {}
            for node_id, states in self._published.items():
                for rnd in [r for r in states if r < self._keep_from]:
                    del states[rnd]
                if request.round in states:
                    found[node_id] = states[request.round]
            for node_id in self.host.node_ids():
                state = self.host.version(node_id)[1]
                if node_id not in found and state.get("round") == request.round:
                    found[node_id] = state
            return found

    def quiesce(self, request: Quiesce) -> bool:
        """Deliver the messages still queued for other workers (rollback, first step)."""
        return self.host.quiesce(request.timeout)

    def rewind(self, request: Rewind) -> None:
        """Forget messages, live nodes and later rounds; restore the given versions."""
        versions = {n: (request.round, state) for n, state in request.states.items()}
        self.host.rewind(versions)
        with self._lock:
            self._rounds = {r: t for r, t in self._rounds.items() if r <= request.round}
            self._published = {n: {request.round: s} for n, s in request.states.items()}

    # -- NodePort ------------------------------------------------------------------------
    def neighbours(self, node_id: str) -> set[str]:
        """The ids ``node_id`` may send to."""
        return self.host.manager.neighbours(node_id)

    def senders(self, node_id: str) -> set[str]:
        """The ids that may send to ``node_id``."""
        return self.host.manager.senders(node_id)

    def weights_into(self, node_id: str) -> dict[str, float]:
        """The topology's weights of the edges into ``node_id`` (empty when unweighted)."""
        return self.host.manager.weights_into(node_id)

    def send(self, message: Message) -> None:
        """Check ``message`` against the topology and deliver it, each worker once."""
        manager = self.host.manager
        manager.check_send(message.sender, message.recipients)
        groups = manager.route(message.recipients)
        local = groups.pop(self.host.index, None)
        if local:
            self.host.mailbox.put(message, local)
        if groups:
            self.host.post(message, groups)

    def receive(
        self, node_id: str, header: str | None, block: bool, timeout: float | None
    ) -> Message | None:
        """Take the first queued message for ``node_id`` matching ``header``."""
        return self.host.mailbox.take(node_id, header, block, timeout)

    def publish_version(self, node_id: str, state: dict[str, Any]) -> int:
        """Store a snapshot of ``node_id``'s state under the next version number (and, when
        it names its ``round`` and that round is one snapshots keep, under that round, for
        :class:`Snapshots`)."""
        rnd = state.get("round")
        if isinstance(rnd, int):
            with self._lock:
                if rnd >= self._keep_from and rnd % self._every == 0:
                    self._published.setdefault(node_id, {})[rnd] = state
        return self.host.publish_version(node_id, state)

    def may_start_round(self, node_id: str, rnd: int) -> bool:
        """Whether ``node_id`` may start round ``rnd`` (waits at a pause or a freeze)."""
        return self.gate.enter(rnd)

    def report_round(self, node_id: str, rnd: int, metrics: dict[str, float]) -> None:
        """Fold a node's round metrics into this worker's totals for the round."""
        with self._lock:
            self._rounds.setdefault(rnd, RoundTotals()).add(metrics)


def pack(message: Message) -> Packed:
    """Pickle ``message`` once for :class:`DeliverBatch` (arrays out of band)."""
    buffers: list[pickle.PickleBuffer] = []
    return pickle.dumps(message, protocol=5, buffer_callback=buffers.append), buffers


@dataclass(frozen=True)
class RunNode(Request[Any]):
    """Run ``node_id``'s ``train(**arguments)`` to the end (-> its output)."""

    runner = PortRunner
    blocking = True

    node_id: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Deliver(Request[None]):
    """Queue ``message`` for the ``node_ids`` of the receiving worker."""

    runner = PortRunner

    message: Message
    node_ids: Sequence[str]


@dataclass(frozen=True)
class DeliverBatch(Request[None]):
    """Queue a batch of (pickled message, recipient ids) from another worker's outbox."""

    runner = PortRunner

    items: Sequence[tuple[Packed, Sequence[str]]]


@dataclass(frozen=True)
class RoundTotalsSince(Request[dict[int, RoundTotals]]):
    """The worker's metric totals of every round from ``first`` on."""

    runner = PortRunner

    first: int


@dataclass(frozen=True)
class SumParameters(Request[WeightedSum]):
    """The weighted sum of the models ``node_ids`` (hosted here) last published."""

    runner = PortRunner

    node_ids: Sequence[str]


@dataclass(frozen=True)
class FreezeRounds(Request[int]):
    """Let no node of the worker start a new round (-> the highest round started)."""

    runner = PortRunner


@dataclass(frozen=True)
class LimitRounds(Request[None]):
    """Admit rounds up to ``round`` (``None``: all); past it stop (or, else, pause); keep
    the states published for multiples of ``snapshot_every`` (rollback snapshots)."""

    runner = PortRunner

    round: int | None
    stop: bool
    snapshot_every: int = 1


@dataclass(frozen=True)
class Snapshots(Request[dict[str, dict[str, Any]]]):
    """The states the worker's nodes published for ``round`` (-> by node id)."""

    runner = PortRunner

    round: int


@dataclass(frozen=True)
class Quiesce(Request[bool]):
    """Deliver queued messages to other workers within ``timeout`` s (-> whether done)."""

    runner = PortRunner

    timeout: float


@dataclass(frozen=True)
class Rewind(Request[None]):
    """Back to ``round``: drop messages and live nodes; ``states`` are the nodes' versions."""

    runner = PortRunner

    round: int
    states: Mapping[str, dict[str, Any]]
