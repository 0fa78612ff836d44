"""Work stealing: an idle worker runs a slow worker's pending clients; results do not change."""

from __future__ import annotations

import numpy as np
from scale_nodes import SIZE, Drift, SlowEven

from redfl import FedAvg, ResourcesConfig, StarFederation
from redfl.runtime.dispatch import segments_of
from redfl.runtime.host import Host
from redfl.runtime.star_runner import ReleaseSegments, StarRunner
from redfl.runtime.topology_manager import TopologyManager
from redfl.schemas.base import virtual_nodes

TWO_WORKERS = ResourcesConfig(num_workers=2, worker={"CPU": 0.5})


def federation(runtime: str) -> StarFederation:
    # Placement is round-robin: worker 0 hosts the even (slow) clients, worker 1 the odd.
    return StarFederation(
        SlowEven,
        16,
        initial_parameters={"w": np.zeros(SIZE, np.float32)},
        strategy=FedAvg(),
        resources=TWO_WORKERS,
        runtime=runtime,
        seed=3,
    )


def test_an_idle_worker_takes_the_slow_workers_clients_and_results_stay_bit_identical(
    ray_session,
):
    with federation("ray") as fed:
        on_ray = fed.train(2)
        stats = fed.worker_stats()
    with federation("local") as fed:
        local = fed.train(2)
    assert stats[0]["guest_fits"] == 0  # the slow worker took nothing
    assert stats[1]["guest_fits"] > 0  # the fast one ran some of the slow one's clients
    assert stats[1]["guests_built"] > 0
    assert on_ray.parameters is not None and local.parameters is not None
    # The local runtime runs every chunk on its home worker: the oracle without stealing.
    assert np.array_equal(on_ray.parameters["w"], local.parameters["w"])
    assert [r.succeeded for r in on_ray.history] == [16, 16]


def test_segments_split_a_workers_clients_in_order():
    assert segments_of(list("abcdefg"), 3) == [["a", "b", "c"], ["d", "e"], ["f", "g"]]
    assert segments_of(["x"], 4) == [["x"]]


def test_release_gives_up_the_unstarted_tail_and_the_fit_stops_before_it():
    host = Host(0, "f", 0, 4, virtual_nodes(Drift, ["a", "b", "c", "d"]), TopologyManager(None, {}))
    runner = host.install(StarRunner)
    assert isinstance(runner, StarRunner)
    runner._queue.start(4)
    assert runner._queue.take() == 0  # segment 0 is running; 1, 2, 3 not started
    assert host.handle(ReleaseSegments()) == [2, 3]
    assert host.handle(ReleaseSegments()) == [1]
    assert host.handle(ReleaseSegments()) == []
