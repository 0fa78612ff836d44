"""Lost workers, subtree timeouts and work stealing between subtrees, on real Ray.

A worker SIGKILLed while it holds most of the top subtrees is re-created and its unfinished
subtrees are folded again within the round: the run ends with the undisturbed run's bits. A
client past ``client_timeout`` fails alone (its worker is replaced, the rest of its subtree
is folded again without it), so the round ends with exactly the parameters of a run in
which that client raised; a subtree past ``subtree_timeout`` fails as a whole, the same way,
with exactly the parameters of a run in which all its clients raised; a subtree unfinished
at ``round_timeout`` is one recorded failure naming its sites, and the round goes on while
coverage holds; an idle worker folds a busy one's unstarted subtrees, and the result does
not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hier_nodes import Failing, KillOnce, Noisy, Stalling

from redfl import FedAvg, HierarchicalFederation, ResourcesConfig
from redfl.core.arrays import Parameters
from redfl.core.events import Event, WorkerRestarted
from redfl.runtime.host import Host
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.tree_runner import ReleaseUnits, TreeRunner
from redfl.schemas.callbacks import Callback
from redfl.topology import relay_tree

INITIAL: Parameters = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}
TWO = ResourcesConfig(num_workers=2, worker={"CPU": 0.5})


def stalling(runtime: str, width: int = 2, **options: Any) -> HierarchicalFederation:
    """16 clients under ``relay_tree(1, width, ...)``: agg-1's subtree holds client-0 ..
    client-(16 / width - 1) and is folded by worker 0; fault settings pass through."""
    timeouts = {k: options.pop(k) for k in ("client_timeout", "round_timeout") if k in options}
    return HierarchicalFederation(
        Stalling,
        16,
        initial_parameters=INITIAL,
        tree=relay_tree(1, width, 2),
        clients_per_lcp=16 // (2 * width),
        options=options,
        strategy=FedAvg(fraction_evaluate=0.0),
        resources=TWO,
        seed=7,
        runtime=runtime,
        **timeouts,
    )


class Restarts(Callback):
    """Keeps the restart events."""

    def __init__(self) -> None:
        self.events: list[WorkerRestarted] = []

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, WorkerRestarted):
            self.events.append(event)
        return super().on_event(event)


def three_subtrees(client: Any, runtime: str = "ray", **settings: Any) -> HierarchicalFederation:
    """18 clients under ``relay_tree(1, 3, 2)`` on 2 workers: worker 0 folds agg-1 and agg-3
    (12 clients), worker 1 folds agg-2."""
    options = settings.pop("options", {})
    return HierarchicalFederation(
        client,
        18,
        initial_parameters=INITIAL,
        tree=relay_tree(1, 3, 2),
        clients_per_lcp=3,
        options=options,
        strategy=FedAvg(fraction_evaluate=0.0),
        resources=TWO,
        seed=11,
        runtime=runtime,
        **settings,
    )


def test_a_sigkilled_worker_holding_most_subtrees_is_rerun_bit_identical(
    ray_session: Any, tmp_path: Path
) -> None:
    undisturbed = three_subtrees(Noisy, runtime="local").train(4)
    restarts = Restarts()
    # client-13 is in agg-3's subtree, the second unit of worker 0: agg-1 is folded already
    options = {"marker": str(tmp_path / "killed"), "killer": "client-13", "kill_round": 2}
    with three_subtrees(KillOnce, options=options, callbacks=[restarts]) as fed:
        got = fed.train(4)
        assert fed.layout.worker == {"agg-1": 0, "agg-2": 1, "agg-3": 0}
        assert "client-13" in fed.assignment["lcp-3-1"]
        health = fed.health()
    assert (tmp_path / "killed").exists()  # the worker did die
    assert [e.worker for e in restarts.events] == [0]
    assert restarts.events[0].reason.startswith("round 2: its process died"), restarts.events
    assert [h.restarts for h in health] == [1, 0]
    assert got.failures == []
    assert [r.succeeded for r in got.history] == [18, 18, 18, 18]
    assert got.history[1].metrics["coverage"] == 1.0
    assert got.parameters_equal(undisturbed)  # bit for bit


def test_a_subtree_past_subtree_timeout_fails_alone_and_the_rest_is_exact(
    ray_session: Any,
) -> None:
    # agg-1's first client hangs in round 2: the subtree (worker 0's first unit) times out,
    # worker 0 is replaced and its other unit, agg-3, is folded elsewhere
    hang = {"culprit": "client-0", "when": 2, "hang": 60.0}
    with three_subtrees(Stalling, options=hang, subtree_timeout=2.0) as fed:
        got = fed.train(3)
        restarts = [h.restarts for h in fed.health()]
    assert restarts == [1, 0]
    [failure] = got.failures
    assert (failure.node_id, failure.round) == ("agg-1", 2)
    assert failure.reason == (
        "subtree agg-1 failed: timeout after 2 s; sites: agg-1, lcp-1-1, lcp-1-2; "
        "6 sampled clients lost"
    )
    assert [r.succeeded for r in got.history] == [18, 12, 18]
    assert got.history[1].metrics["clients/agg-3"] == 6  # re-run, not lost
    assert got.history[1].seconds < 30  # not the 60 s the client hangs
    # the same bits as a run in which agg-1's six clients all raised in round 2
    agg_1 = tuple(f"client-{i}" for i in range(6))
    oracle = three_subtrees(Failing, runtime="local", options={"bad": agg_1, "when": 2})
    expected = oracle.train(3)
    assert sorted(f.node_id for f in expected.failures) == sorted(agg_1)
    assert got.parameters_equal(expected)


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
