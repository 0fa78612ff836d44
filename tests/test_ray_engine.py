"""The engine on real Ray: lazy build, named actors, delivery, resources, stop."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest
import ray_nodes
from ray_nodes import CountCall, Crasher, Dedicated, Flaky, Hub, Leaf, Plain, Trespasser
from waiting import wait_until

from redfl import (
    FedAvg,
    FederationError,
    GraphFederation,
    ResourceError,
    ResourcesConfig,
    StarFederation,
    Topology,
    virtual_nodes,
)
from redfl.runtime.host import Stats
from redfl.schemas.base import Federation
from redfl.topology import builders

TWO_WORKERS = ResourcesConfig(num_workers=2, worker={"CPU": 0.5})


def actor_exists(ray: Any, name: str) -> bool:
    try:
        ray.get_actor(name)
    except ValueError:
        return False
    return True


def group_state(ray: Any, federation: Federation) -> str | None:
    name = f"{federation.federation_id}/group"
    states = [g["state"] for g in ray.util.placement_group_table().values() if g["name"] == name]
    return states[-1] if states else None


def plus_star(**kwargs: Any) -> StarFederation:
    return StarFederation(
        Flaky,
        kwargs.pop("num_clients", 6),
        initial_parameters={"w": np.zeros(2, np.float32)},
        strategy=kwargs.pop("strategy", FedAvg(min_fit_clients=2)),
        resources=kwargs.pop("resources", TWO_WORKERS),
        **kwargs,
    )


def test_nothing_starts_before_train_and_workers_are_named_after(ray_session):
    fed = plus_star(client_ids=[f"client-{i}" for i in range(6)], num_clients=6)
    try:
        assert not fed.started
        assert not actor_exists(ray_session, f"{fed.federation_id}::worker-0")
        assert group_state(ray_session, fed) is None
        fed.train(1)
        assert actor_exists(ray_session, f"{fed.federation_id}::worker-0")
        assert actor_exists(ray_session, f"{fed.federation_id}::worker-1")
        assert group_state(ray_session, fed) == "CREATED"
    finally:
        fed.stop()


def test_failing_clients_are_recorded_and_the_round_goes_on(ray_session):
    fed = plus_star(num_clients=6)
    try:
        result = fed.train(2)
    finally:
        fed.stop()
    assert [r.failed for r in result.history] == [2, 2]
    reasons = {(f.node_id, f.round): f.reason for f in result.failures}
    assert "disk on fire" in reasons[("client-1", 1)]
    assert "NaN" in reasons[("client-2", 2)]
    # Successful clients 0, 3, 4, 5 add their index each round, one example each.
    assert result.parameters is not None
    np.testing.assert_allclose(result.parameters["w"], 2 * np.mean([0, 3, 4, 5]))


def test_too_few_successes_stop_the_run_naming_the_round(ray_session):
    fed = plus_star(num_clients=3, strategy=FedAvg(min_fit_clients=2))
    try:
        with pytest.raises(FederationError, match=r"round 1: 1 of 3 clients succeeded"):
            fed.train(1)
    finally:
        fed.stop()


def test_clients_go_to_workers_in_batches_with_sticky_placement(ray_session):
    fed = plus_star(num_clients=10, client_ids=None)
    try:
        fed.train(3)
        stats = fed.worker_stats()
    finally:
        fed.stop()
    assert [s["hosted"] for s in stats] == [5, 5]
    # Each hosted client is built at most once on its worker, and kept across rounds (an
    # idle worker may have run some for it).
    assert all(s["built"] <= 5 for s in stats)
    # One call per worker per round, plus any an idle worker made for a busy one.
    assert sum(s["batches"] - s["guest_batches"] for s in stats) == 3 * 2


def test_send_to_a_non_neighbour_is_refused(ray_session):
    ids = ["a", "b", "c"]
    fed = GraphFederation(
        virtual_nodes(Trespasser, ids),
        Topology.from_edges(ids, [("a", "b")]),
        resources=TWO_WORKERS,
    )
    try:
        with pytest.raises(FederationError, match=r"(?s)'a'.*NotNeighbourError.*cannot send to"):
            fed.train()
    finally:
        fed.stop()


def test_a_broadcast_is_serialised_once_and_same_worker_sends_not_at_all(ray_session):
    leaves = ["leaf-1", "leaf-2", "leaf-3"]
    nodes = virtual_nodes(Hub, ["hub"]) + virtual_nodes(Leaf, leaves, start=1)
    fed = GraphFederation(nodes, builders.star(["hub", *leaves]), resources=TWO_WORKERS)
    try:
        result = fed.train()
        assert fed.worker_of("hub") == fed.worker_of(ray_nodes.DIRECT_TARGET)
        assert fed.worker_of("leaf-1") != fed.worker_of("hub")
        _, counts = fed.pull_version("hub")
    finally:
        fed.stop()
    assert counts == {"broadcast": 1, "direct": 0}
    assert result.outputs["hub"] == {"acks": 3}
    assert result.outputs["leaf-2"] == [7, 8]
    assert result.outputs["leaf-1"] == [7]


def test_a_crashing_node_stops_the_federation_instead_of_hanging(ray_session):
    ids = ["a", "b", "c"]
    fed = GraphFederation(virtual_nodes(Crasher, ids), builders.ring(ids), resources=TWO_WORKERS)
    started = time.monotonic()
    try:
        with pytest.raises(FederationError, match=r"(?s)node 'a' failed.*boom in a"):
            fed.train()
    finally:
        fed.stop()
    assert time.monotonic() - started < 60


def test_dedicated_nodes_get_named_actors_of_their_own(ray_session):
    nodes = virtual_nodes(Dedicated, ["solo"]) + virtual_nodes(Plain, ["p1", "p2"], start=1)
    fed = GraphFederation(nodes, builders.mesh(["solo", "p1", "p2"]), resources=TWO_WORKERS)
    try:
        assert not actor_exists(ray_session, f"{fed.federation_id}/solo")
        outputs = fed.train().outputs
        handle = ray_session.get_actor(f"{fed.federation_id}/solo")
        assert ray_session.get(handle.handle.remote(Stats()))["hosted"] == 1
        version, state = fed.pull_version("solo")
    finally:
        fed.stop()
    assert version == 1 and state["pid"] == outputs["solo"]
    assert outputs["solo"] not in (outputs["p1"], outputs["p2"])


def test_requests_beyond_the_cluster_fail_before_anything_starts(ray_session):
    fed = plus_star(resources=ResourcesConfig(num_workers=2, worker={"CPU": 1, "GPU": 0.5}))
    with pytest.raises(
        ResourceError, match=r"asked \{CPU: 2, GPU: 1\}.*available \{CPU: \S+, GPU: 0\}"
    ):
        fed.train(1)
    assert not fed.started
    assert group_state(ray_session, fed) is None
    assert not actor_exists(ray_session, f"{fed.federation_id}::worker-0")


def test_two_federations_share_the_cluster_and_stop_frees_everything(ray_session):
    total_cpu = ray_session.cluster_resources()["CPU"]
    first, second = plus_star(num_clients=4), plus_star(num_clients=4)
    try:
        first.train(1)
        second.train(1)  # same client ids, same actor suffixes: no clash
        names = [f"{f.federation_id}::worker-{i}" for f in (first, second) for i in range(2)]
        assert all(actor_exists(ray_session, n) for n in names)
        a, b = first.train(1), second.train(1)
        assert a.parameters_equal(b)
    finally:
        first.stop()
    assert wait_until(lambda: not any(actor_exists(ray_session, n) for n in names[:2]))
    assert all(actor_exists(ray_session, n) for n in names[2:])
    second.stop()
    second.stop()  # idempotent
    assert wait_until(lambda: not any(actor_exists(ray_session, n) for n in names))
    assert group_state(ray_session, first) == "REMOVED"
    assert group_state(ray_session, second) == "REMOVED"
    assert wait_until(lambda: ray_session.available_resources().get("CPU") == total_cpu)


def test_a_new_runner_reaches_ray_workers_through_its_request_alone(ray_session):
    with plus_star() as fed:
        fed.train(1)
        backend = fed._start()
        first = [o.result() for o in backend.call_all(CountCall())]
        second = [o.result() for o in backend.call_all(CountCall())]
        stats = fed.worker_stats()
    assert [(index, calls) for index, calls, _ in first] == [(0, 1), (1, 1)]
    assert [(index, calls) for index, calls, _ in second] == [(0, 2), (1, 2)]
    pids = {pid for _, _, pid in first}
    assert len(pids) == 2 and os.getpid() not in pids  # answered in the worker processes
    assert [s["counting_calls"] for s in stats] == [2, 2]
    assert all(s["batches"] >= 1 for s in stats)  # the star runner is still there
