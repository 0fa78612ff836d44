"""Node classes for the Ray tests (a module Ray workers can import)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from redfl import Client, FederatedNode, remote
from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.runtime.host import Host
from redfl.runtime.protocol import Handlers, Request, Runner


class Counted:
    """A message body that counts how often this process pickled it."""

    pickles = 0

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        Counted.pickles += 1
        return (Counted, (self.value,))


DIRECT_TARGET = "leaf-2"


class Hub(FederatedNode):
    """Broadcasts one message to every neighbour, then one to a single neighbour."""

    def train(self) -> dict[str, int]:
        before = Counted.pickles
        self.send("broadcast", Counted(7))
        after_broadcast = Counted.pickles
        self.send("direct", Counted(8), to=DIRECT_TARGET)
        after_direct = Counted.pickles
        self.update_version(
            broadcast=after_broadcast - before, direct=after_direct - after_broadcast
        )
        acks = [self.receive("ack", timeout=60) for _ in self.neighbours]
        return {"acks": len(acks)}


class Leaf(FederatedNode):
    """Receives the broadcast (and the direct message if it is the target), acks."""

    def train(self) -> list[int]:
        got = [self.receive("broadcast", timeout=60).body.value]  # type: ignore[union-attr]
        if self.node_id == DIRECT_TARGET:
            got.append(self.receive("direct", timeout=60).body.value)  # type: ignore[union-attr]
        self.send("ack", self.node_id, to="hub")
        return got


class Trespasser(FederatedNode):
    """``a`` sends to ``c``, a node it has no edge to; the others do nothing."""

    def train(self) -> None:
        if self.node_id == "a":
            self.send("hello", None, to="c")


class Crasher(FederatedNode):
    """``a`` raises; the others wait forever for a message that never comes."""

    def train(self) -> None:
        if self.node_id == "a":
            raise RuntimeError("boom in a")
        self.receive("never", timeout=None)


@remote(num_cpus=0.5, max_concurrency=4)
class Dedicated(FederatedNode):
    """A node with an actor of its own; publishes where it ran."""

    def train(self) -> int:
        import os

        self.update_version(pid=os.getpid())
        return os.getpid()


class Plain(FederatedNode):
    """Reports its process id."""

    def train(self) -> int:
        import os

        return os.getpid()


class Flaky(Client):
    """Client ``client-1`` raises, ``client-2`` returns NaN; the rest add their index."""

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        if self.node_id == "client-1":
            raise ValueError("disk on fire")
        if self.node_id == "client-2":
            return {"w": np.full(2, np.nan, np.float32)}, 1, {}
        return {"w": parameters["w"] + self.context.index}, 1, {"loss": 0.5}


# -- decentralised schemas (tests/test_decentralized_ray.py) --------------------------------

from redfl.nodes.decentralized import DSGDNode, GossipNode  # noqa: E402

MUTE_NODE = "node-1"
EXPLODING_NODE = "node-2"
EXPLODING_ROUND = 3


class MuteGossip(GossipNode):
    """Gossip, except that ``node-1`` never sends: its neighbours wait for it."""

    def broadcast(self, header: str, body: Any) -> None:
        if self.node_id != MUTE_NODE:
            super().broadcast(header, body)


class ExplodingDSGD(DSGDNode):
    """DSGD on a constant model; ``node-2`` raises in round 3, the others would go on."""

    def initial_parameters(self) -> Parameters:
        return {"w": np.full(3, float(self.context.index))}

    def local_step(self, parameters: Parameters, rnd: int) -> tuple[Parameters, dict[str, Any]]:
        if self.node_id == EXPLODING_NODE and rnd == EXPLODING_ROUND:
            raise FloatingPointError(f"gradient exploded on {self.node_id} in round {rnd}")
        return {"w": parameters["w"] * 1.0}, {"loss": float(rnd)}


class Counting(Runner):
    """A made-up programming model: installed on a worker by its first request."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.calls = 0

    def register(self, handlers: Handlers) -> None:
        handlers.add(CountCall, self.count)

    def count(self, request: CountCall) -> tuple[int, int, int]:
        self.calls += 1
        return self.host.index, self.calls, os.getpid()

    def stats(self) -> dict[str, float]:
        return {"counting_calls": self.calls}


@dataclass(frozen=True)
class CountCall(Request[tuple[int, int, int]]):
    """-> (worker index, calls so far on that worker, worker pid)."""

    runner = Counting
