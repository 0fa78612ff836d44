"""Subtree timeouts and work stealing between subtrees, on real Ray.

A client past ``client_timeout`` fails alone (its worker is replaced, the rest of its
subtree is folded again without it), so the round ends with exactly the parameters of a run
in which that client raised; a subtree unfinished at ``round_timeout`` is one recorded
failure naming its sites, and the round goes on while coverage holds; an idle worker folds
a busy one's unstarted subtrees, and the result does not change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hier_nodes import Stalling

from redfl import FedAvg, HierarchicalFederation, ResourcesConfig
from redfl.core.arrays import Parameters
from redfl.runtime.host import Host
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.tree_runner import ReleaseUnits, TreeRunner
from redfl.topology import relay_tree

INITIAL: Parameters = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}
TWO = ResourcesConfig(num_workers=2, worker={"CPU": 0.5})


def stalling(runtime: str, width: int = 2, **options: Any) -> HierarchicalFederation:
    """16 clients under ``relay_tree(1, width, ...)``: agg-1's subtree holds client-0 ..
    client-(16 / width - 1) and is folded by worker 0; fault settings pass through."""
    timeouts = {k: options.pop(k) for k in ("client_timeout", "round_timeout") if k in options}
    return HierarchicalFederation(
        Stalling, 16, initial_parameters=INITIAL, tree=relay_tree(1, width, 2),
        clients_per_lcp=16 // (2 * width), options=options,
        strategy=FedAvg(fraction_evaluate=0.0), resources=TWO, seed=7,
        runtime=runtime, **timeouts,
    )  # fmt: skip


def test_a_client_past_client_timeout_fails_alone_and_the_result_is_exact(ray_session) -> None:
    with stalling("ray", culprit="client-1", hang=60.0, client_timeout=2.0) as fed:
        got = fed.train(3)
        assert fed.layout.worker == {"agg-1": 0, "agg-2": 1}
        assert "client-1" in fed.assignment["lcp-1-1"]
        restarts = [h.restarts for h in fed.health()]
    assert restarts == [1, 0]  # the hung client's worker was replaced
    [failure] = got.failures
    assert (failure.node_id, failure.round, failure.reason) == ("client-1", 2, "timeout after 2 s")
    assert [r.succeeded for r in got.history] == [16, 15, 16]
    assert got.history[1].metrics["clients/agg-1"] == 7  # the rest of its subtree arrived
    assert got.history[1].seconds < 30  # not the 60 s the client hangs
    # the same bits as a run in which client-1 raised in round 2 (the local runtime)
    oracle = stalling("local", culprit="client-1", hang=0.0).train(3)
    assert [(f.node_id, f.round) for f in oracle.failures] == [("client-1", 2)]
    assert got.parameters_equal(oracle)


def test_a_subtree_unfinished_at_round_timeout_is_a_recorded_failure(ray_session) -> None:
    with stalling("ray", culprit="client-1", hang=60.0, round_timeout=4.0) as fed:
        got = fed.train(3)
    assert [r.succeeded for r in got.history] == [16, 8, 16]  # the round went on
    [failure] = got.failures
    assert (failure.node_id, failure.round) == ("agg-1", 2)
    assert failure.reason == (
        "subtree agg-1 failed: round timeout after 4 s; sites: agg-1, lcp-1-1, lcp-1-2; "
        "8 sampled clients lost"
    )
    assert got.history[1].metrics["coverage"] == 0.5
    assert got.history[1].metrics["clients/agg-2"] == 8
    assert 4.0 <= got.history[1].seconds < 4.0 + 15  # ended by its deadline


def test_an_idle_worker_folds_a_busy_workers_subtrees_and_the_bits_stay(ray_session) -> None:
    slow = tuple(f"client-{i}" for i in range(4))  # agg-1's clients: 4 x 0.4 s a round
    with stalling("ray", width=4, slow=slow, pause=0.4) as fed:
        got = fed.train(2)
        stats = fed.worker_stats()
        assert fed.layout.worker == {"agg-1": 0, "agg-2": 1, "agg-3": 0, "agg-4": 1}
    assert stats[0]["guest_units"] == 0  # the slow worker took nothing
    assert stats[1]["guest_units"] >= 1  # the fast one folded agg-3 for it
    assert sum(s["tree_units"] for s in stats) == 2 * 4
    assert [r.succeeded for r in got.history] == [16, 16]
    oracle = stalling("local", width=4).train(2)  # slowness changes nothing but who folds
    assert got.parameters_equal(oracle)


def test_release_gives_up_the_unstarted_tail_of_the_units() -> None:
    host = Host(0, "f", 0, 0, [], TopologyManager(None, {}))
    runner = host.install(TreeRunner)
    assert isinstance(runner, TreeRunner)
    runner._queue.start(4)
    assert runner._queue.take() == 0  # unit 0 is being folded; 1, 2, 3 not started
    assert host.handle(ReleaseUnits()) == [2, 3]
    assert host.handle(ReleaseUnits()) == [1]
    assert host.handle(ReleaseUnits()) == []
