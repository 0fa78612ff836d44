"""Decentralised schemas: ring, mesh, k-connect and custom graphs of round-based nodes.

Every node runs its message-driven ``train(rounds)`` loop concurrently (many nodes per
worker, each blocked in ``receive`` on a thread of its own), talking only to its
neighbours. The schema checks the graph against what the node's algorithm needs
(``requires``), builds per-round history from the nodes' reports, and takes the final
model as the weighted mean of the models the nodes published.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

from redfl.core.arrays import Parameters, WeightedSum, copy_parameters
from redfl.core.events import RoundFinished, RoundStarted
from redfl.core.result import FederationResult
from redfl.core.server_state import ServerState
from redfl.nodes.decentralized import DecentralizedNode
from redfl.runtime.backend import Backend
from redfl.runtime.port_runner import FreezeRounds, LimitRounds, RoundTotalsSince, SumParameters
from redfl.runtime.replies import RoundTotals
from redfl.runtime.virtual import NodeFactory
from redfl.runtime.watch import CONTROL_TIMEOUT_S
from redfl.schemas.base import FederationSettings, virtual_nodes
from redfl.schemas.callbacks import emit
from redfl.schemas.graph import GraphFederation
from redfl.schemas.records import round_record
from redfl.schemas.rollback import SNAPSHOT_EVERY, Lost, Snapshot, roll_back, run_nodes
from redfl.topology.graph import Topology
from redfl.topology.validate import TopologyError, check_topology, check_undirected, shown

State = Literal["fresh", "resuming", "stopped"]
"""Where a decentralised federation is between ``train`` calls: ``fresh`` (its nodes go on
from where they are, or start), ``resuming`` (a loaded server state: every node resumes from
its published state) or ``stopped`` (``stop()`` was called: a worker ended now is not rolled
back)."""


@dataclass(frozen=True)
class Launch:
    """How an attempt calls every node's ``train``: how many rounds, and whether each node
    resumes from the snapshot's state first."""

    rounds: int
    resume: bool


@dataclass
class Attempt:
    """How an attempt at running the nodes' rounds ended.

    Attributes
    ----------
    outputs:
        What each node's ``train`` returned (the attempt finished).
    lost:
        The workers lost meanwhile, by index, and why (the federation rolls back).
    error:
        A node's failure (the run ends with it).
    last_end:
        When the last recorded round ended (``time.time()``).
    last_round:
        The last round to run (lower than asked when a callback stopped the run).
    """

    last_end: float
    last_round: int
    outputs: dict[str, Any] = field(default_factory=dict)
    lost: Lost = field(default_factory=dict)
    error: BaseException | None = None


PROGRESS_POLL_S = 0.2
"""How often the driver asks the workers which rounds every node has finished."""
NODE_STATES = "node_states"
"""The key of the nodes' published states in :attr:`ServerState.extra`."""


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
    options:
        Keyword arguments of ``template`` (the same for every node).
    roles:
        The nodes' roles (``train``: they run rounds).
    allow_disconnected:
        Accept a graph in several pieces (otherwise an error naming the cut-off nodes).
    settings:
        Seed, runtime, resources, callbacks (each round's record as soon as every node
        has finished the round) and restarts (:class:`~redfl.schemas.base.FederationSettings`);
        no client or round timeout: a node bounds each wait for a message with its own
        ``timeout`` option.
    """

    def __init__(
        self,
        template: NodeFactory,
        topology: Topology,
        *,
        options: Mapping[str, Any] | None = None,
        roles: str = "train",
        allow_disconnected: bool = False,
        **settings: Unpack[FederationSettings],
    ) -> None:
        for name in ("client_timeout", "round_timeout"):
            if settings.get(name) is not None:
                raise ValueError(
                    f"{name}: timeouts are for round-driven clients; a decentralised node "
                    "bounds each wait for a message with its own 'timeout' option"
                )
        if not (isinstance(template, type) and issubclass(template, DecentralizedNode)):
            raise TypeError(
                f"template must be a DecentralizedNode subclass (GossipNode, a DSGDNode or "
                f"RingSequentialNode subclass), got {template!r}"
            )
        check_requirement(topology, template.requires, allow_disconnected)
        nodes = virtual_nodes(template, topology.nodes, roles=roles, options=options)
        super().__init__(nodes, topology, **settings)
        self._train_ids = [n.node_id for n in self.nodes if "train" in n.roles]
        self._train_nodes = len(self._train_ids)
        self._snapshot = Snapshot()
        self._replay = 0  # after a rollback: the last round recorded before it
        self._state: State = "fresh"

    @property
    def train_ids(self) -> list[str]:
        """The ids of the nodes with the train role (those that run rounds)."""
        return list(self._train_ids)

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
        launch = Launch(rounds, resume=self._state == "resuming")
        self._state = "fresh"
        backend = self._start()
        backend.call_all(self._limit(self._next_pause(), stop=False))  # lifts a past stop
        attempt = Attempt(time.time(), self.round + rounds)
        emit(self.callbacks, RoundStarted(self.round + 1, self._train_nodes))
        while True:
            attempt = self._attempt(backend, launch, attempt.last_round, attempt.last_end)
            if attempt.error is not None:
                raise attempt.error
            if not attempt.lost:
                break
            rnd = self.round + 1
            roll_back(backend, self._supervisor, attempt.lost, self._snapshot, self.worker_of, rnd)
            # Back to the snapshot: the rounds recorded since run again, their records kept.
            self._replay, self.round = self.round, self._snapshot.round
            launch = Launch(attempt.last_round - self.round, resume=self.round > 0)
            backend.call_all(self._limit(self._next_pause(), stop=False))
            emit(self.callbacks, RoundStarted(rnd, self._train_nodes))
        result = FederationResult(list(self._history), self.final_parameters(), [], attempt.outputs)
        for callback in self.callbacks:
            callback.on_train_end(result)
        return result

    def _attempt(self, backend: Backend, launch: Launch, last: int, previous: float) -> Attempt:
        """Run the nodes (on a thread), recording rounds as every node completes them, up
        to round ``last`` (``previous``: when the last recorded round ended)."""
        attempt = Attempt(previous, last)

        def per_node(node_id: str) -> dict[str, Any]:
            if not launch.resume:
                return {"rounds": launch.rounds}
            return {"rounds": launch.rounds, "resume": self._snapshot.states.get(node_id)}

        def run() -> None:
            try:
                attempt.outputs, attempt.lost = run_nodes(
                    backend,
                    self._train_ids,
                    self.worker_of,
                    per_node,
                    self.round + 1,
                    lambda: self._state == "stopped",
                )
            except BaseException as error:
                attempt.error = error

        runner = threading.Thread(target=run, name="redfl-decentralized-train", daemon=True)
        runner.start()
        stopping = False
        while True:  # records go out as rounds complete on every node, not at the end
            finished = not runner.is_alive()
            if self._stopped():
                # stop() is ending the workers (another thread): the runner reports how
                # the nodes ended, and the backend is no longer asked anything
                runner.join()
                return attempt
            try:
                attempt.last_end, stop = self._emit_rounds(
                    backend, attempt.last_round, attempt.last_end
                )
            except Exception:
                if not self._stopped():
                    raise
                continue  # stopped while asking: the check above ends the attempt
            if stop and not stopping:
                stopping, attempt.last_round = True, self._stop_at_boundary(backend)
                continue  # record every round up to the boundary before ending
            if finished:
                return attempt
            runner.join(PROGRESS_POLL_S)

    def _stopped(self) -> bool:
        """Whether :meth:`stop` was called (from any thread)."""
        return self._state == "stopped"

    def _stop_at_boundary(self, backend: Backend) -> int:
        """Stop every node after the highest round any node has started (that round ends
        everywhere, no later one starts): freeze the gates, read, set the limit."""
        started = [o.result() for o in backend.call_all(FreezeRounds())]
        last = max([self.round, *started])
        backend.call_all(self._limit(last, stop=True))
        return last

    def _emit_rounds(self, backend: Backend, last: int, previous: float) -> tuple[float, bool]:
        """Record (and pass to callbacks) every round all nodes finished: the last end time
        and whether a callback asked to stop."""
        merged: dict[int, RoundTotals] = {}
        since = RoundTotalsSince(self.round + 1)
        pending = [backend.call(w, since) for w in range(backend.num_workers)]
        for outcome in backend.gather(pending, timeout=CONTROL_TIMEOUT_S):
            for rnd, reported in (outcome.value or {}).items():
                merged.setdefault(rnd, RoundTotals()).merge(reported)
        stop = False
        while self.round < last:
            totals = merged.get(self.round + 1)
            if totals is None or totals.nodes < self._train_nodes:
                break
            record = round_record(self.round + 1, totals, self._train_nodes, previous)
            previous = max(previous, totals.ended)
            self.round += 1
            if self.round % self._snapshot_every() == 0:
                self._snapshot.take(backend, self.round, self._train_nodes)
            pause = self.checkpoint_every and self.round % self.checkpoint_every == 0
            if self.round <= self._replay:  # run again after a rollback: recorded already
                if pause:
                    backend.call_all(self._limit(self._next_pause(), stop=False))
                continue
            self._history.append(record)
            if emit(self.callbacks, RoundFinished(record)):
                stop = True
            elif pause:
                backend.call_all(self._limit(self._next_pause(), stop=False))
            if self.round < last:
                emit(self.callbacks, RoundStarted(self.round + 1, self._train_nodes))
        return previous, stop

    def _snapshot_every(self) -> int:
        """Rounds between rollback snapshots: the checkpoints' (:data:`SNAPSHOT_EVERY` if none)."""
        return self.checkpoint_every or SNAPSHOT_EVERY

    def _limit(self, rnd: int | None, stop: bool) -> LimitRounds:
        return LimitRounds(rnd, stop, self._snapshot_every())

    def _next_pause(self) -> int | None:
        """The round after which nodes wait next (``None``: they never wait)."""
        every = self.checkpoint_every
        return (self.round // every + 1) * every if every else None

    def server_state(self, config_digest: str = "") -> ServerState:
        """The state after the last completed round: every node's published state.

        Nodes run their rounds without a global barrier; a checkpoint after round ``k`` is
        taken while every node waits at its worker's round gate before round ``k + 1``
        (:class:`~redfl.runtime.round_gate.RoundGate`), so the states the nodes published
        for round ``k`` (round, parameters, weight and their extra state) are all there.
        They go into ``extra["node_states"]``; a federation built from the same config
        that loads the state resumes each node from its own (the path a rollback after a
        worker loss takes too).

        Raises
        ------
        RuntimeError
            If the nodes' states of the last round are not all published (not at a round
            boundary).
        """
        if self._snapshot.round != self.round:
            self._snapshot.take(self._start(), self.round, len(self._train_ids))
        if self._snapshot.round != self.round:
            raise RuntimeError(
                f"the nodes' states of round {self.round} are not all published; "
                "a checkpoint is taken at a round boundary only"
            )
        parameters = self.final_parameters() or {}
        return ServerState(
            self.round,
            copy_parameters(parameters),
            {},
            self.history,
            [],
            self.seed,
            config_digest,
            {NODE_STATES: dict(sorted(self._snapshot.states.items()))},
        )

    def load_server_state(self, state: ServerState) -> None:
        """Continue from ``state``: the next ``train`` resumes every node from it."""
        if state.seed != self.seed:
            raise ValueError(f"the state's seed is {state.seed}, the federation's {self.seed}")
        self.round, self._history = state.round, list(state.history)
        self._snapshot = Snapshot(state.round, dict(state.extra.get(NODE_STATES) or {}))
        self._state = "resuming" if state.round > 0 else "fresh"

    def stop(self) -> None:
        """Stop the nodes and the workers (a worker ended now is not rolled back)."""
        self._state = "stopped"
        super().stop()

    def final_parameters(self) -> Parameters | None:
        """The weighted mean of the models the nodes last published (``None`` if none)."""
        backend = self._start()
        total = WeightedSum()
        groups: dict[int, list[str]] = {}
        for node in self.nodes:
            groups.setdefault(self.worker_of(node.node_id), []).append(node.node_id)
        pending = [backend.call(w, SumParameters(ids)) for w, ids in sorted(groups.items())]
        for outcome in backend.gather(pending, timeout=CONTROL_TIMEOUT_S):
            total.merge(outcome.result())
        if total.weight <= 0:
            return None
        return {k: v / total.weight for k, v in total.sums.items()}
