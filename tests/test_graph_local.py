"""Message-driven graph federations on the ``local`` runtime."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from redfl.core.message import Message
from redfl.core.result import FederationError, FederationResult
from redfl.nodes import FederatedNode
from redfl.runtime.mailbox import FederationStopped
from redfl.runtime.resources import ResourcesConfig
from redfl.schemas import GraphFederation, virtual_nodes
from redfl.topology import Topology, builders

IDS = ["n0", "n1", "n2", "n3", "n4"]
DEADLINE_S = 20.0


def graph(template: Any, topology: Topology, ids: list[str] = IDS, **kw: Any) -> GraphFederation:
    return GraphFederation(virtual_nodes(template, ids, **kw), topology, runtime="local")


def must_receive(node: FederatedNode, header: str | None = None) -> Message:
    message = node.receive(header, timeout=DEADLINE_S)
    assert message is not None
    return message


class Gossip(FederatedNode):
    """Sends its index to every neighbour and returns who it heard from, with what."""

    def train(self) -> Any:
        self.send("index", self.context.index)
        heard = [must_receive(self, "index") for _ in self.neighbours]
        return sorted((m.sender, m.body, m.recipients) for m in heard)


def test_ring_neighbours_exchange_messages_across_workers() -> None:
    fed = GraphFederation(
        virtual_nodes(Gossip, IDS),
        builders.ring(IDS),
        runtime="local",
        resources=ResourcesConfig(num_workers=2),
    )
    with fed:
        result = fed.train()
        assert {fed.worker_of(i) for i in IDS} == {0, 1}
    n = len(IDS)
    for i, node_id in enumerate(IDS):
        left, right = (i - 1) % n, (i + 1) % n
        expected = sorted(
            (IDS[j], j, tuple(sorted({IDS[(j - 1) % n], IDS[(j + 1) % n]}))) for j in (left, right)
        )
        assert result.outputs[node_id] == expected
    assert [(r.round, r.sampled, r.succeeded) for r in result.history] == [(1, n, n)]
    assert result.parameters is None


class Relay(FederatedNode):
    """Directed ring: pass a running sum around ``laps`` times; n0 starts and ends it."""

    def __init__(self, laps: int) -> None:
        self.laps = laps

    def train(self) -> Any:
        (successor,) = self.neighbours
        if self.context.index == 0:
            self.send("token", 0, to=successor)
        for lap in range(self.laps):
            token = must_receive(self, "token")
            value = token.body + self.context.index
            if self.context.index == 0 and lap == self.laps - 1:
                return value
            self.send("token", value, to=successor)
        return None


def test_token_goes_around_a_directed_ring() -> None:
    laps = 3
    fed = graph(Relay, builders.ring(IDS, directed=True), options={"laps": laps})
    with fed:
        outputs = fed.train().outputs
    # Every lap each node adds its index once; node 0 adds 0 for the final receive.
    assert outputs["n0"] == laps * sum(range(len(IDS)))
    assert all(outputs[i] is None for i in IDS[1:])


class HeaderOrder(FederatedNode):
    """n0 sends 'first' then 'second'; n1 takes 'second' first, then 'first'."""

    def train(self) -> Any:
        if self.node_id == "n0":
            self.send("first", 1, to="n1")
            self.send("second", 2, to="n1")
            return None
        second = must_receive(self, "second")
        first = must_receive(self, "first")
        leftover = self.receive(block=False)
        return (second.body, first.body, leftover)


def test_receive_by_header_keeps_other_messages() -> None:
    ids = ["n0", "n1"]
    fed = graph(HeaderOrder, builders.mesh(ids), ids)
    with fed:
        assert fed.train().outputs["n1"] == (2, 1, None)


class Trespasser(FederatedNode):
    def train(self) -> Any:
        if self.node_id == "n0":
            self.send("hello", "x", to="n2")  # n2 is not n0's neighbour on the ring
        return self.node_id


def test_send_to_non_neighbour_fails_the_federation() -> None:
    fed = graph(Trespasser, builders.ring(IDS))
    with fed, pytest.raises(FederationError) as info:
        fed.train()
    message = str(info.value)
    assert "node 'n0' failed" in message
    assert "NotNeighbourError" in message
    assert "cannot send to ['n2']" in message


class FailsWhileOtherWaits(FederatedNode):
    """n1 blocks forever on receive; n0 raises once n1 is known to be waiting."""

    waiting = threading.Event()
    woken = threading.Event()

    def train(self) -> Any:
        if self.node_id == "n1":
            FailsWhileOtherWaits.waiting.set()
            try:
                return self.receive("never", timeout=None)
            except FederationStopped:
                FailsWhileOtherWaits.woken.set()
                raise
        assert FailsWhileOtherWaits.waiting.wait(DEADLINE_S)
        raise ArithmeticError("model diverged at step 17")


def run_in_thread(fed: GraphFederation) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fed.train()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_failing_node_stops_a_node_blocked_in_receive() -> None:
    FailsWhileOtherWaits.waiting.clear()
    FailsWhileOtherWaits.woken.clear()
    ids = ["n0", "n1"]
    fed = graph(FailsWhileOtherWaits, builders.mesh(ids), ids)
    thread, box = run_in_thread(fed)
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), "train() hung although a node failed"
    error = box.get("error")
    assert isinstance(error, FederationError), box
    message = str(error)
    assert "node 'n0' failed" in message
    assert "ArithmeticError" in message
    assert "model diverged at step 17" in message
    # The blocked node is woken by the failure itself, before anyone calls stop().
    assert FailsWhileOtherWaits.woken.wait(DEADLINE_S), "the blocked node was never woken"
    stopper = threading.Thread(target=fed.stop, daemon=True)
    stopper.start()
    stopper.join(DEADLINE_S)
    assert not stopper.is_alive(), "stop() did not return"


class TimesOut(FederatedNode):
    def train(self) -> Any:
        return self.receive("nothing", timeout=0.05)


def test_receive_timeout_fails_the_federation_naming_the_node() -> None:
    ids = ["n0", "n1"]
    fed = graph(TimesOut, builders.mesh(ids), ids)
    with fed, pytest.raises(FederationError) as info:
        fed.train()
    message = str(info.value)
    assert "TimeoutError" in message
    assert "'nothing'" in message
    assert "node 'n0' failed" in message or "node 'n1' failed" in message


class Versioned(FederatedNode):
    """Publishes three versions and sends one message after each."""

    def train(self) -> Any:
        versions = []
        for step in range(3):
            versions.append(self.update_version(step=step, owner=self.node_id))
        assert self.version == versions[-1]
        self.send("done", self.version)
        message = must_receive(self, "done")
        return {"versions": versions, "peer_version": message.version, "body": message.body}


def test_update_version_and_pull_version_round_trip() -> None:
    ids = ["n0", "n1", "n2"]
    fed = graph(Versioned, builders.ring(ids, directed=True), ids)
    with fed:
        outputs = fed.train().outputs
        for node_id in ids:
            out = outputs[node_id]
            assert out["versions"] == [1, 2, 3]
            assert out["peer_version"] == 3  # messages carry the sender's version
            assert out["body"] == 3
            assert fed.pull_version(node_id) == (3, {"step": 2, "owner": node_id})


class Quiet(FederatedNode):
    def train(self) -> Any:
        return "ran"


def test_pull_version_of_a_node_that_never_published() -> None:
    fed = graph(Quiet, builders.mesh(IDS))
    with fed:
        assert fed.pull_version("n3") == (0, {})


def test_only_train_role_nodes_run() -> None:
    nodes = virtual_nodes(Quiet, ["t0", "t1"], roles="train") + virtual_nodes(
        Quiet, ["e0"], roles="eval", start=2
    )
    fed = GraphFederation(nodes, builders.mesh(["t0", "t1", "e0"]), runtime="local")
    with fed:
        result: FederationResult = fed.train()
    assert result.outputs == {"t0": "ran", "t1": "ran"}


def test_graph_federation_needs_a_topology() -> None:
    fed = GraphFederation(virtual_nodes(Quiet, IDS), None, runtime="local")
    with fed, pytest.raises(ValueError, match="topology"):
        fed.train()


def test_context_gives_index_and_size() -> None:
    class Who(FederatedNode):
        def train(self) -> Any:
            ctx = self.context
            return (ctx.index, ctx.num_nodes, ctx.federation_id, sorted(self.roles))

    fed = GraphFederation(
        virtual_nodes(Who, IDS, roles="train-eval"),
        builders.mesh(IDS),
        runtime="local",
        federation_id="fed-x",
    )
    with fed:
        outputs = fed.train().outputs
    for i, node_id in enumerate(IDS):
        assert outputs[node_id] == (i, len(IDS), "fed-x", ["eval", "train"])


def test_unbound_node_says_so() -> None:
    with pytest.raises(RuntimeError, match="not bound"):
        Quiet().send("x")
