"""Round-based message-driven nodes: gossip averaging, decentralised SGD, ring sequential.

The math lives in :mod:`redfl.algorithms.mixing` and :mod:`redfl.algorithms.gossip`; these
classes are the node loops around it. Each round's messages carry the round in their
header (``gossip/3``), so a fast neighbour one round ahead never mixes into this one.
After each round a node publishes ``round``, ``parameters`` and ``weight`` (how much its
model counts in the federation's final model) with ``update_version``.
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np

from redfl.algorithms.gossip import distance, mix
from redfl.algorithms.mixing import metropolis_hastings_row, uniform_row, weights_row
from redfl.core.arrays import Parameters, copy_parameters
from redfl.nodes.node import FederatedNode

Mixing = Literal["auto", "metropolis", "uniform", "weights"]


class DecentralizedNode(FederatedNode, ABC):
    """Base of the shipped algorithms: ``train(rounds)`` runs ``round(r)`` for each round.

    ``train`` returns one metrics dict per round (with ``time``, when the round ended);
    a second ``train`` call continues from the last round.

    Parameters
    ----------
    timeout:
        Seconds to wait for any one message before failing with a timeout error that
        names the node and the header it waited for.
    """

    requires: ClassVar[str] = "connected"
    """What the algorithm needs of the graph: ``connected``, ``undirected``,
    ``strongly_connected`` or ``ring``; the schemas check it before anything starts."""

    def __init__(self, timeout: float = 120.0) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = float(timeout)
        self.parameters: Parameters = {}
        self.rounds_done = 0
        self.share = 1.0

    def train(
        self, rounds: int = 1, resume: Mapping[str, Any] | None = None
    ) -> list[dict[str, float]]:
        """Run ``rounds`` more rounds; return each round's metrics.

        ``resume``: a state the node published, to continue from (a rollback after a worker
        loss, or a resumed run): the node is built afresh, runs :meth:`begin` (mixing
        weights, neighbour exchanges), then takes back that round's ``round``,
        ``parameters``, ``weight`` and :meth:`extra_state` (as attributes of the same
        names), so a node that keeps more state than it publishes must return it from
        :meth:`extra_state` to be restored exactly.

        Raises
        ------
        KeyError
            If ``resume`` lacks ``round``, ``parameters``, ``weight`` or an extra-state key.
        """
        if self.rounds_done == 0 or resume is not None:
            self.begin()
        if resume is not None:
            self.rounds_done = int(resume["round"])
            self.parameters = copy_parameters(resume["parameters"])
            self.share = float(resume["weight"])
            for name in self.extra_state():
                setattr(self, name, copy.deepcopy(resume[name]))
        reports = []
        for rnd in range(self.rounds_done + 1, self.rounds_done + rounds + 1):
            if not self.may_start_round(rnd):
                break
            metrics = {k: float(v) for k, v in self.round(rnd).items()}
            metrics["time"] = time.time()
            self.rounds_done = rnd
            self.update_version(
                round=rnd, parameters=self.parameters, weight=self.share, **self.extra_state()
            )
            self.report_round(rnd, metrics)
            reports.append(metrics)
        return reports

    def begin(self) -> None:
        """Runs once, before the first round (exchanges, initial values)."""

    def extra_state(self) -> dict[str, Any]:
        """More state to publish after each round, beside round, parameters and weight."""
        return {}

    @abstractmethod
    def round(self, rnd: int) -> dict[str, float]:
        """One round; returns its metrics."""

    def gather(self, header: str, senders: set[str]) -> dict[str, Any]:
        """Receive one ``header`` message from each of ``senders``: their bodies by sender."""
        bodies: dict[str, Any] = {}
        for _ in range(len(senders)):
            message = self.receive(header, timeout=self.timeout)
            if message is None or message.sender not in senders or message.sender in bodies:
                who = None if message is None else message.sender
                raise RuntimeError(f"node {self.node_id!r}: unexpected {header!r} from {who!r}")
            bodies[message.sender] = message.body
        return bodies

    def broadcast(self, header: str, body: Any) -> None:
        """Send to every neighbour (nothing when there is none)."""
        if self.neighbours:
            self.send(header, body)


class MixingNode(DecentralizedNode, ABC):
    """A node that averages with its neighbours each round, with mixing weights.

    ``mixing``: ``metropolis`` (Metropolis-Hastings; undirected graphs only; the node
    learns its neighbours' degrees in a first exchange), ``uniform`` (equal weight for
    itself and each sender; any graph) or ``auto`` (metropolis when the node's edges are
    symmetric, else uniform) or ``weights`` (the topology's edge weights: ``w_ij`` is the
    weight of the edge from ``j``, and the node keeps ``1 - sum_j w_ij``). Mixing everyone's
    values needs a strongly connected graph.
    """

    requires: ClassVar[str] = "strongly_connected"

    def __init__(self, timeout: float = 120.0, mixing: Mixing = "auto") -> None:
        super().__init__(timeout)
        if mixing not in ("auto", "metropolis", "uniform", "weights"):
            raise ValueError(
                f"mixing must be 'auto', 'metropolis', 'uniform' or 'weights', got {mixing!r}"
            )
        self.mixing: Mixing = mixing
        self.weights: dict[str, float] = {}

    def begin(self) -> None:
        """Work out this node's mixing weights."""
        out, into = self.neighbours, self.senders
        if self.mixing == "weights":
            self.weights = weights_row(self.node_id, self.weights_into)
            return
        symmetric = out == into
        if self.mixing == "metropolis" and not symmetric:
            raise ValueError(
                f"node {self.node_id!r}: metropolis mixing needs an undirected graph, but it "
                f"sends to {sorted(out - into)[:5]} and hears from {sorted(into - out)[:5]} "
                f"one way"
            )
        if self.mixing == "uniform" or not symmetric:
            self.weights = uniform_row(self.node_id, sorted(into))
            return
        self.broadcast("degree", len(out))
        degrees = self.gather("degree", into)
        self.weights = metropolis_hastings_row(self.node_id, len(out), degrees)

    def average(self, header: str, values: Parameters) -> tuple[Parameters, float]:
        """Send ``values`` to the neighbours, mix with theirs: (mixed, mean distance to theirs)."""
        self.broadcast(header, values)
        received = self.gather(header, self.senders)
        gap = float(np.mean([distance(values, v) for v in received.values()])) if received else 0.0
        return mix(self.node_id, values, received, self.weights), gap


class GossipNode(MixingNode):
    """Gossip averaging of a float64 vector ``x`` (seeded standard normal by default).

    With Metropolis-Hastings weights on a connected undirected graph, every node's ``x``
    converges to the exact mean of the initial vectors and their sum never changes.

    Parameters
    ----------
    size:
        Length of the vector.
    record:
        Also publish ``trajectory``: the node's vector after each round (for analysis).
    """

    requires: ClassVar[str] = "undirected"

    def __init__(
        self,
        size: int = 10,
        record: bool = False,
        timeout: float = 120.0,
        mixing: Mixing = "auto",
    ) -> None:
        super().__init__(timeout, mixing)
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self.record = record
        self.trajectory: list[np.ndarray] = []

    def initial_value(self) -> np.ndarray:
        """The node's starting vector: a function of (seed, node index)."""
        rng = np.random.default_rng([self.context.seed, self.context.index, 0x6055])
        return rng.standard_normal(self.size)

    def begin(self) -> None:
        """Mixing weights, then the initial vector."""
        super().begin()
        self.parameters = {"x": np.asarray(self.initial_value(), dtype=np.float64)}
        if self.record:
            self.trajectory.append(self.parameters["x"].copy())

    def round(self, rnd: int) -> dict[str, float]:
        """Exchange vectors with the neighbours and mix."""
        self.parameters, gap = self.average(f"gossip/{rnd}", self.parameters)
        if self.record:
            self.trajectory.append(self.parameters["x"].copy())
        return {"neighbour_gap": gap}

    def extra_state(self) -> dict[str, Any]:
        """``trajectory`` (the vector after each round, initial first) when recording."""
        return {"trajectory": list(self.trajectory)} if self.record else {}


class ModelNode(ABC):
    """The learning hooks of :class:`DSGDNode` and :class:`RingSequentialNode`."""

    @abstractmethod
    def initial_parameters(self) -> Parameters:
        """The model every node starts from."""

    @abstractmethod
    def local_step(self, parameters: Parameters, rnd: int) -> tuple[Parameters, dict[str, Any]]:
        """Local training from ``parameters``: (new parameters, metrics such as ``loss``)."""

    def evaluate(self, parameters: Parameters, rnd: int) -> dict[str, Any]:
        """Metrics of ``parameters`` (e.g. ``accuracy``, ``test_loss``); none by default."""
        return {}


class DSGDNode(MixingNode, ModelNode):
    """Decentralised SGD (Lian et al., NeurIPS 2017, adapt-then-combine form).

    Each round: a local training step from the node's model, then averaging of the new
    model with the neighbours' (mixing weights as in :class:`MixingNode`), then
    :meth:`evaluate` of the mixed model. Subclass it and define the hooks.
    """

    def begin(self) -> None:
        """Mixing weights, then the initial model."""
        super().begin()
        self.parameters = copy_parameters(self.initial_parameters())

    def round(self, rnd: int) -> dict[str, float]:
        """Local step, average with neighbours, evaluate."""
        trained, metrics = self.local_step(self.parameters, rnd)
        self.parameters, gap = self.average(f"dsgd/{rnd}", trained)
        return {**metrics, "neighbour_gap": gap, **self.evaluate(self.parameters, rnd)}


class RingSequentialNode(DecentralizedNode, ModelNode):
    """Ring sequential training: one model travels the ring, each node trains it in turn.

    In each round the ``start`` node trains the model and passes it on; every node
    trains what it receives and forwards it to its other neighbour (the only one on a
    directed ring); when the model is back, the start node evaluates it. The final model
    is the start node's.

    Parameters
    ----------
    start:
        Id of the node that starts each lap (default: the node of index 0).
    """

    requires: ClassVar[str] = "ring"

    def __init__(self, start: str | None = None, timeout: float = 120.0) -> None:
        super().__init__(timeout)
        self.start = start

    @property
    def is_start(self) -> bool:
        """Whether this node starts (and ends) each lap."""
        if self.start is None:
            return self.context.index == 0
        return self.node_id == self.start

    def begin(self) -> None:
        """The start node takes the initial model; only its model counts in the end."""
        self.share = 1.0 if self.is_start else 0.0
        if self.is_start:
            self.parameters = copy_parameters(self.initial_parameters())

    def successor(self, came_from: str | None) -> str:
        """The next node: the neighbour the model did not come from (first, when starting)."""
        onward = sorted(self.neighbours - {came_from}) or sorted(self.neighbours)
        if not onward:
            raise RuntimeError(f"node {self.node_id!r} has no neighbour to pass the model to")
        return onward[0]

    def round(self, rnd: int) -> dict[str, float]:
        """Train and pass on; the start node also waits for the lap to end and evaluates."""
        header = f"lap/{rnd}"
        if self.is_start:
            trained, metrics = self.local_step(self.parameters, rnd)
            self.send(header, trained, to=self.successor(None))
            back = self.receive(header, timeout=self.timeout)
            assert back is not None
            self.parameters = back.body
            return {**metrics, **self.evaluate(self.parameters, rnd)}
        message = self.receive(header, timeout=self.timeout)
        assert message is not None
        self.parameters, metrics = self.local_step(message.body, rnd)
        self.send(header, self.parameters, to=self.successor(message.sender))
        return dict(metrics)
