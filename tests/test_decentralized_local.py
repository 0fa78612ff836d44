"""Decentralised schemas on the in-process runtime: algorithms, history, validation."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from redfl import (
    Callback,
    CustomFederation,
    DSGDNode,
    FederatedNode,
    FederationError,
    FederationResult,
    GossipNode,
    KConnectFederation,
    MeshFederation,
    ResourcesConfig,
    RingFederation,
    RingSequentialNode,
    RoundRecord,
    TopologyError,
)
from redfl.core.arrays import Parameters
from redfl.runtime.outbox import Outbox
from redfl.topology import custom

TWO = ResourcesConfig(num_workers=2)


class Digits(RingSequentialNode):
    """Each visit appends the node's index + 1 as a decimal digit: the value spells the path."""

    def initial_parameters(self) -> Parameters:
        return {"x": np.zeros(1)}

    def local_step(self, parameters: Parameters, rnd: int) -> tuple[Parameters, dict[str, Any]]:
        return {"x": parameters["x"] * 10 + self.context.index + 1}, {"loss": float(rnd)}

    def evaluate(self, parameters: Parameters, rnd: int) -> dict[str, Any]:
        return {"accuracy": float(parameters["x"][0])}


def spell(order: list[int]) -> float:
    value = 0
    for index in order:
        value = value * 10 + index + 1
    return float(value)


@pytest.mark.parametrize(
    ("start", "directed", "lap"),
    [
        (None, False, [0, 1, 2, 3, 4]),
        ("node-3", False, [3, 2, 1, 0, 4]),  # first neighbour in sorted order: node-2
        ("node-3", True, [3, 4, 0, 1, 2]),
    ],
)
def test_ring_sequential_visits_every_node_once_per_lap_from_any_start(
    start: str | None, directed: bool, lap: list[int]
) -> None:
    options = {} if start is None else {"start": start}
    fed = RingFederation(
        Digits, 5, directed=directed, options=options, runtime="local", resources=TWO
    )
    with fed:
        result = fed.train(2)
    assert [r.accuracy for r in result.history] == [spell(lap), spell(lap + lap)]
    assert result.parameters is not None
    assert result.parameters["x"][0] == spell(lap + lap)  # only the start node's model counts
    assert [r.train_loss for r in result.history] == [1.0, 2.0]


def test_ring_sequential_refuses_a_graph_that_is_not_a_ring() -> None:
    with pytest.raises(TopologyError, match=r"needs a ring.*nodes \['node-0', .*4 neighbour"):
        MeshFederation(Digits, 5, runtime="local")


class Shift(DSGDNode):
    """DSGD whose local step adds 1: the mixed models keep a known mean."""

    def initial_parameters(self) -> Parameters:
        return {"w": np.array([float(self.context.index) ** 2])}

    def local_step(self, parameters: Parameters, rnd: int) -> tuple[Parameters, dict[str, Any]]:
        return {"w": parameters["w"] + 1.0}, {"loss": float(self.context.index)}


def test_dsgd_mean_follows_the_local_steps_on_an_undirected_graph() -> None:
    n, rounds = 8, 100
    fed = KConnectFederation(Shift, n, 3, runtime="local", resources=TWO)
    with fed:
        result = fed.train(rounds)
        ws = [fed.pull_version(f"node-{i}")[1]["parameters"]["w"][0] for i in range(n)]
    expected_mean = np.mean([i**2 for i in range(n)]) + rounds
    assert np.mean(ws) == pytest.approx(expected_mean, abs=1e-9)
    assert max(ws) - min(ws) < 1e-6  # consensus
    assert result.parameters is not None
    assert result.parameters["w"][0] == pytest.approx(expected_mean, abs=1e-9)
    assert result.history[0].train_loss == pytest.approx(np.mean(range(n)))


def test_dsgd_reaches_consensus_on_a_directed_graph_with_uniform_weights() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a"), ("a", "c")]
    fed = CustomFederation(Shift, edges, directed=True, runtime="local", resources=TWO)
    with fed:
        fed.train(80)
        ws = [fed.pull_version(i)[1]["parameters"]["w"][0] for i in "abcd"]
    assert max(ws) - min(ws) < 1e-6


def test_dsgd_refuses_a_directed_graph_that_is_not_strongly_connected() -> None:
    with pytest.raises(TopologyError, match=r"not strongly connected: nodes \['c'\] cannot"):
        CustomFederation(Shift, [("a", "b"), ("b", "a"), ("b", "c")], directed=True)


def test_gossip_refuses_a_directed_graph_naming_one_way_edges() -> None:
    with pytest.raises(TopologyError, match=r"undirected.*one-way edges: \['node-0->node-1'"):
        RingFederation(GossipNode, 4, directed=True)


def test_custom_federation_from_a_csv_file_and_history_continues(tmp_path: Any) -> None:
    path = tmp_path / "g.csv"
    path.write_text("0,1,1\n1,0,0\n1,0,0\n", encoding="utf-8")
    fed = CustomFederation(GossipNode, path, options={"size": 3}, runtime="local")
    with fed:
        first = fed.train(2)
        second = fed.train(3)
    assert [r.round for r in second.history] == [1, 2, 3, 4, 5]
    assert len(first.history) == 2
    assert all(r.succeeded == 3 and r.failed == 0 for r in second.history)
    gaps = [r.metrics["neighbour_gap"] for r in second.history]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < gaps[0]


def test_disconnected_custom_graph_is_refused_unless_allowed() -> None:
    edges = [("a", "b"), ("c", "d")]
    with pytest.raises(TopologyError, match=r"\['c', 'd'\] are cut off from 'a'"):
        CustomFederation(GossipNode, edges)
    fed = CustomFederation(GossipNode, edges, allow_disconnected=True, runtime="local")
    with fed:
        result = fed.train(1)
        a, b = (fed.pull_version(i)[1]["parameters"]["x"] for i in "ab")
    np.testing.assert_allclose(a, b)  # a pair averages exactly in one round
    assert result.history[0].succeeded == 4


def test_template_must_be_a_round_based_node() -> None:
    with pytest.raises(TypeError, match="DecentralizedNode subclass"):
        RingFederation(FederatedNode, 3)


class Stranger(GossipNode):
    def begin(self) -> None:
        if self.node_id == "node-0":
            self.send("hello", 1, to="ghost")
        super().begin()


def test_send_to_an_unknown_id_fails_the_federation_naming_it() -> None:
    with (
        RingFederation(Stranger, 3, runtime="local") as fed,
        pytest.raises(FederationError) as info,
    ):
        fed.train(1)
    assert "node 'node-0' failed" in str(info.value)
    assert "cannot send to ['ghost']: unknown node id" in str(info.value)


def test_bad_node_options_are_refused() -> None:
    fed = RingFederation(GossipNode, 3, options={"size": 0}, runtime="local")
    with fed, pytest.raises(FederationError, match="size must be >= 1"):
        fed.train(1)


def test_outbox_batches_and_keeps_order_per_destination() -> None:
    delivered: dict[int, list[list[int]]] = {0: [], 1: []}
    gate = threading.Event()

    def deliver(worker: int, batch: list[Any]) -> None:
        gate.wait(10)
        delivered[worker].append(list(batch))

    outbox = Outbox(deliver)
    for i in range(50):
        outbox.post(i % 2, i)
    gate.set()
    assert outbox.flush(10)
    for worker in (0, 1):
        flat = [i for batch in delivered[worker] for i in batch]
        assert flat == list(range(worker, 50, 2))
        assert len(delivered[worker]) < 25  # messages queued during a delivery share a call


def test_outbox_reports_a_failed_delivery_on_the_next_post() -> None:
    def deliver(worker: int, batch: list[Any]) -> None:
        raise ConnectionError("worker 1 is gone")

    outbox = Outbox(deliver)
    outbox.post(1, "m")
    deadline = time.monotonic() + 10
    while outbox.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RuntimeError, match=r"earlier delivery failed.*worker 1 is gone"):
        outbox.post(1, "again")


def test_custom_topology_object_is_accepted_as_is() -> None:
    topology = custom(np.array([[0, 1], [1, 0]]), nodes=["p", "q"])
    fed = CustomFederation(GossipNode, topology, runtime="local")
    with fed:
        result = fed.train(1)
    assert result.parameters is not None
    assert set(result.outputs) == {"p", "q"}


def test_gossip_with_the_topologys_edge_weights_keeps_the_sum_and_averages() -> None:
    # A symmetric weighted 4-cycle plus a chord: rows of incoming weights sum below 1.
    edges = [("a", "b", 0.3), ("b", "c", 0.2), ("c", "d", 0.3), ("d", "a", 0.2), ("a", "c", 0.1)]
    fed = CustomFederation(
        GossipNode, edges, options={"size": 3, "mixing": "weights", "record": True}, runtime="local"
    )
    with fed:
        fed.train(200)
        x = np.array([fed.pull_version(i)[1]["trajectory"] for i in "abcd"])
    # The same step written out: W from the weights, W_ii = 1 - row sum.
    w = np.zeros((4, 4))
    for s, t, weight in edges:
        i, j = "abcd".index(s), "abcd".index(t)
        w[i, j] = w[j, i] = weight
    w[np.diag_indices(4)] = 1 - w.sum(axis=1)
    np.testing.assert_allclose(x[:, 1], w @ x[:, 0], atol=1e-12)
    np.testing.assert_allclose(x.sum(axis=0), np.repeat(x[:, 0].sum(0)[None], 201, 0), atol=1e-9)
    np.testing.assert_allclose(x[:, -1], np.repeat(x[:, 0].mean(0)[None], 4, 0), atol=1e-9)


def test_edge_weights_summing_above_one_are_refused_naming_the_node() -> None:
    edges = [("a", "b", 0.7), ("b", "c", 0.7), ("c", "a", 0.1)]
    fed = CustomFederation(GossipNode, edges, options={"mixing": "weights"}, runtime="local")
    with (
        fed,
        pytest.raises(FederationError, match=r"node 'b': its incoming edge weights add up to 1.4"),
    ):
        fed.train(1)


class WaitsForTheDriver(Shift):
    """In round 3 every node waits until the driver has seen round 2's record."""

    seen_round_two = threading.Event()

    def local_step(self, parameters: Parameters, rnd: int) -> tuple[Parameters, dict[str, Any]]:
        if rnd == 3 and not WaitsForTheDriver.seen_round_two.wait(20):
            raise RuntimeError("the driver never reported round 2 while the nodes ran")
        return super().local_step(parameters, rnd)


class Recorder(Callback):
    def __init__(self) -> None:
        self.records: list[RoundRecord] = []
        self.ended: FederationResult | None = None

    def on_round_end(self, record: RoundRecord) -> None:
        self.records.append(record)
        if record.round == 2:
            WaitsForTheDriver.seen_round_two.set()

    def on_train_end(self, result: FederationResult) -> None:
        self.ended = result


def test_callbacks_get_each_round_while_the_nodes_still_run() -> None:
    WaitsForTheDriver.seen_round_two.clear()
    recorder = Recorder()
    fed = RingFederation(WaitsForTheDriver, 4, callbacks=[recorder], runtime="local", resources=TWO)
    with fed:
        result = fed.train(4)
    assert [r.round for r in recorder.records] == [1, 2, 3, 4]
    assert recorder.ended is result
    assert all(r.succeeded == 4 and r.failed == 0 for r in recorder.records)
    assert recorder.records[0].train_loss == pytest.approx(np.mean(range(4)))
