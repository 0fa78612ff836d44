"""Decentralised schemas on real Ray: gossip convergence rate, DSGD learning, failures, stop."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import numpy as np
import pytest
from ray_nodes import EXPLODING_NODE, EXPLODING_ROUND, MUTE_NODE, ExplodingDSGD, MuteGossip
from waiting import wait_until

from redfl import (
    FederationError,
    GossipNode,
    KConnectFederation,
    MeshFederation,
    ResourcesConfig,
    RingFederation,
)
from redfl.data.digits import load_digits_arrays, train_test_split
from redfl.examples.digits_decentralized import DigitsDSGDNode
from redfl.schemas.decentralized import DecentralizedFederation

TWO_WORKERS = ResourcesConfig(num_workers=2, worker={"CPU": 0.5})
ROUNDS = 60
BURN_IN = 10
DEADLINE_S = 60.0


def mh_matrix_by_hand(fed: DecentralizedFederation) -> np.ndarray:
    """Metropolis-Hastings weights from the graph, written out here (not redfl's code)."""
    assert fed.topology is not None
    ids = fed.topology.nodes
    n = len(ids)
    adjacency = np.zeros((n, n))
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            adjacency[i, j] = fed.topology.allows(a, b)
    assert (adjacency == adjacency.T).all()
    degree = adjacency.sum(axis=1)
    w = np.where(adjacency > 0, 1.0 / (1.0 + np.maximum.outer(degree, degree)), 0.0)
    w[np.diag_indices(n)] = 1.0 - w.sum(axis=1)
    return w


def trajectories(fed: DecentralizedFederation) -> np.ndarray:
    """nodes x (rounds + 1) x size: every node's vector, initial first."""
    return np.array([fed.pull_version(n.node_id)[1]["trajectory"] for n in fed.nodes])


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: RingFederation(GossipNode, 16, **kw),
        lambda **kw: MeshFederation(GossipNode, 16, **kw),
        lambda **kw: KConnectFederation(GossipNode, 32, 4, topology_seed=5, **kw),
    ],
    ids=["ring16", "mesh16", "kconnect32x4"],
)
def test_gossip_contracts_at_the_slem_rate_and_keeps_the_sum(ray_session, make):
    fed = make(options={"size": 6, "record": True}, resources=TWO_WORKERS, seed=11)
    try:
        result = fed.train(ROUNDS)
        x = trajectories(fed)
    finally:
        fed.stop()
    assert len(result.history) == ROUNDS
    initial_sum = x[:, 0].sum(axis=0)
    mean = initial_sum / len(x)
    # The sum of all nodes' vectors is preserved every round (float64).
    drift = np.abs(x.sum(axis=0) - initial_sum).max()
    assert drift <= 1e-9, drift
    deviation = np.linalg.norm(x - mean[None, None, :], axis=(0, 2))
    slem = np.sort(np.abs(np.linalg.eigvals(mh_matrix_by_hand(fed))))[-2]
    if slem < 1e-9:  # mesh: W = J/n, exact averaging in a single round
        assert deviation[1] <= 1e-12 * deviation[0]
    else:
        rate = (deviation[ROUNDS] / deviation[BURN_IN]) ** (1 / (ROUNDS - BURN_IN))
        assert abs(rate - slem) <= 0.1 * slem, (rate, slem)
    # Every node converges to the exact mean of the initial vectors.
    final_error = np.abs(x[:, -1] - mean).max()
    assert final_error <= max(2.0, 4 * np.abs(x[:, 0] - mean).max()) * slem**ROUNDS + 1e-12
    # The federation's model is the mean of the nodes' final vectors.
    np.testing.assert_allclose(result.parameters["x"], x[:, -1].mean(axis=0), atol=1e-12)


@pytest.mark.parametrize("schema", [RingFederation, MeshFederation], ids=["ring10", "mesh10"])
def test_dsgd_learns_digits_on_ring_and_mesh(ray_session, schema):
    options = {
        "partition": "dirichlet",
        "alpha": 0.5,
        "min_size": 5,
        "test_fraction": 0.2,
        "lr": 0.3,
        "epochs": 5,
        "batch_size": 8,
    }
    fed = schema(DigitsDSGDNode, 10, options=options, resources=TWO_WORKERS)
    try:
        result = fed.train(30)
        models = [fed.pull_version(n.node_id)[1]["parameters"] for n in fed.nodes]
    finally:
        fed.stop()
    x, y = load_digits_arrays()
    _, _, x_test, y_test = train_test_split(x, y, 0.2, 0)
    accuracies = [
        float(np.mean(np.argmax(x_test @ m["weight"] + m["bias"], axis=1) == y_test))
        for m in models
    ]
    assert np.mean(accuracies) >= 0.88, accuracies
    assert result.history[-1].accuracy == pytest.approx(np.mean(accuracies), abs=1e-6)
    assert [r.round for r in result.history] == list(range(1, 31))


def test_a_failing_node_stops_the_federation_with_its_id_and_traceback(ray_session):
    fed = RingFederation(ExplodingDSGD, 6, resources=TWO_WORKERS)
    started = time.monotonic()
    try:
        with pytest.raises(FederationError) as info:
            fed.train(10)
    finally:
        fed.stop()
    message = str(info.value)
    assert f"node {EXPLODING_NODE!r} failed" in message
    assert "Traceback" in message and "FloatingPointError" in message
    assert f"gradient exploded on {EXPLODING_NODE} in round {EXPLODING_ROUND}" in message
    assert time.monotonic() - started < DEADLINE_S


def test_receive_timeout_names_the_node_and_the_header(ray_session):
    fed = RingFederation(MuteGossip, 4, options={"timeout": 0.5}, resources=TWO_WORKERS)
    try:
        with pytest.raises(FederationError) as info:
            fed.train(3)
    finally:
        fed.stop()
    message = str(info.value)
    assert "TimeoutError" in message
    # The mute node's neighbours wait for its degree; node-3, two hops away, for round 1.
    waited = re.search(r"node '(node-\d)' got no '([\w/]+)' message within 0\.5 s", message)
    assert waited is not None, message
    assert waited.groups() in {("node-0", "degree"), ("node-2", "degree"), ("node-3", "gossip/1")}
    assert f"node {waited.group(1)!r} failed" in message
    assert waited.group(1) != MUTE_NODE


def test_stop_wakes_nodes_blocked_in_receive_and_frees_the_workers(ray_session):
    fed = RingFederation(MuteGossip, 4, options={"timeout": 3600.0}, resources=TWO_WORKERS)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fed.train(3)
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert wait_until(
        lambda: fed.started and sum(s.get("built", 0) for s in fed.worker_stats()) == 4,
        DEADLINE_S,
    )
    stopper = threading.Thread(target=fed.stop, daemon=True)
    stopper.start()
    stopper.join(DEADLINE_S)
    thread.join(DEADLINE_S)
    assert not stopper.is_alive(), "stop() did not return"
    assert not thread.is_alive(), "train() hung after stop()"
    assert isinstance(box.get("error"), FederationError), box
    assert "FederationStopped" in str(box["error"])
    assert not fed.started
