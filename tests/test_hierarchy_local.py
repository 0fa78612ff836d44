"""HierarchicalFederation on the local runtime: equal to the flat star, events and records,
failures as values, coverage, placement of subtrees, leaf-level robust aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from hier_nodes import Failing, Noisy

from redfl import Callback, HierarchicalFederation, StarFederation
from redfl.algorithms import FedAdam, FedAvg, FedAvgM, Krum, Strategy
from redfl.attacks import Attacked, SignFlip, choose_attackers
from redfl.core.arrays import Parameters
from redfl.core.events import ClientsProgress, Event, FailureRecorded, RoundFinished, RoundStarted
from redfl.core.result import FederationError
from redfl.examples.digits import DigitsClient, DigitsOptions, central_evaluation
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping
from redfl.runtime.resources import ResourcesConfig
from redfl.schemas.hierarchical import choose_units, make_layout
from redfl.topology import TreeError, relay_tree
from redfl.topology.tree import RelayTree

INITIAL: Parameters = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float64)}


def random_case(seed: int) -> tuple[RelayTree, list[str], object, int, float]:
    """A random tree, client ids, assignment (count, map or even), workers and fraction."""
    rng = np.random.default_rng(seed)
    tree = relay_tree(
        int(rng.integers(1, 4)),
        int(rng.integers(1, 4)),
        int(rng.integers(1, 4)),
        lcp_only=bool(rng.integers(0, 2)),
    )
    lcps = [s.name for s in tree.lcps]
    kind = int(rng.integers(0, 3))
    assignment: object
    if kind == 0:
        per = int(rng.integers(1, 4))
        ids, assignment = [f"c{i}" for i in range(per * len(lcps))], per
    else:
        ids = [f"c{i}" for i in range(int(rng.integers(3, 40)))]
        picks = rng.integers(0, len(lcps), size=len(ids))  # some LCPs stay empty
        assignment = (
            {c: lcps[int(p)] for c, p in zip(ids, picks, strict=True)} if kind == 1 else None
        )
    return tree, ids, assignment, int(rng.integers(1, 5)), float(rng.uniform(0.3, 1.0))


def pair(
    seed: int, strategy: Strategy, other: Strategy
) -> tuple[HierarchicalFederation, StarFederation]:
    tree, ids, assignment, workers, fraction = random_case(seed)
    strategy.fraction_fit = other.fraction_fit = fraction
    strategy.min_fit_clients = other.min_fit_clients = 1
    common = dict(
        initial_parameters=INITIAL,
        client_ids=ids,
        seed=seed,
        runtime="local",
        resources=ResourcesConfig(num_workers=workers),
    )
    hier = HierarchicalFederation(
        Noisy,
        len(ids),
        tree=tree,
        clients_per_lcp=assignment,  # type: ignore[arg-type]
        strategy=strategy,
        min_coverage=1.0,
        **common,  # type: ignore[arg-type]
    )
    star = StarFederation(Noisy, len(ids), strategy=other, **common)  # type: ignore[arg-type]
    return hier, star


def max_gap(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


@pytest.mark.parametrize("seed", range(16))
def test_fedavg_over_random_trees_equals_the_flat_star(seed: int) -> None:
    hier, star = pair(seed, FedAvg(), FedAvg())
    got, want = hier.train(3), star.train(3)
    assert got.parameters is not None and want.parameters is not None
    assert max_gap(got.parameters, want.parameters) <= 1e-6
    assert [r.sampled for r in got.history] == [r.sampled for r in want.history]
    assert [r.succeeded for r in got.history] == [r.succeeded for r in want.history]
    assert got.history[-1].train_loss == pytest.approx(want.history[-1].train_loss, abs=1e-9)
    assert got.history[-1].metrics["coverage"] == 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: FedAdam(eta=0.05),
        lambda: FedAvgM(server_momentum=0.9),
        lambda: DPFixedClipping(FedAvg(), noise_multiplier=0.5, clipping_norm=2.0, side="client"),
        lambda: DPFixedClipping(FedAvg(), noise_multiplier=0.5, clipping_norm=2.0, side="server"),
        lambda: DPAdaptiveClipping(
            FedAvg(), initial_clipping_norm=3.5, noise_multiplier=0.5, side="server"
        ),
    ],
    ids=["fedadam", "fedavgm", "dp-client-clip", "dp-server-clip", "dp-adaptive-server-clip"],
)
def test_server_strategies_apply_at_the_root_as_in_the_star(make) -> None:
    # Server-side DP: the star's server clips every update; in the tree the LCPs do (the
    # root never sees one), and the root adds the same noise: the same model and epsilon.
    mine, theirs = make(), make()
    hier, star = pair(3, mine, theirs)
    got, want = hier.train(3), star.train(3)
    assert got.parameters is not None and want.parameters is not None
    assert max_gap(got.parameters, want.parameters) <= 1e-6
    for key in ("epsilon", "clipping_norm", "unclipped_fraction"):
        assert got.history[-1].metrics.get(key) == want.history[-1].metrics.get(key), key
    if isinstance(mine, DPFixedClipping):
        assert got.history[-1].metrics["epsilon"] > 0
        assert isinstance(hier.strategy, DPFixedClipping) and hier.strategy.side == "client"
        assert mine.side == theirs.side  # the caller's wrapper is left as it was


class Recorder(Callback):
    def __init__(self, stop_at: int = 0) -> None:
        self.events: list[Event] = []
        self.stop_at = stop_at

    def on_event(self, event: Event) -> bool:
        self.events.append(event)
        return isinstance(event, RoundFinished) and event.record.round == self.stop_at


def test_events_records_and_early_stop() -> None:
    recorder = Recorder(stop_at=2)
    fed = HierarchicalFederation(
        Noisy,
        24,
        initial_parameters=INITIAL,
        tree=relay_tree(2, 2, 3),
        clients_per_lcp=2,
        callbacks=[recorder],
        runtime="local",
    )
    result = fed.train(5)
    assert [r.round for r in result.history] == [1, 2] == [r.round for r in fed.history]
    kinds = [type(e).__name__ for e in recorder.events]
    assert kinds[0] == "RoundStarted" and kinds.count("RoundFinished") == 2
    assert all(
        isinstance(e, RoundStarted | ClientsProgress | RoundFinished) for e in recorder.events
    )
    progress = [e for e in recorder.events if isinstance(e, ClientsProgress)]
    assert progress[-1].done == progress[-1].sampled == 24
    metrics = result.history[-1].metrics
    assert metrics["clients/agg-1"] == 12 and metrics["clients/agg-2-1"] == 6
    assert metrics["coverage"] == 1.0 and metrics["root_bytes"] > 0
    assert fed.parameters["w"].dtype == np.float32


def test_a_failing_client_is_recorded_as_in_the_star() -> None:
    recorder = Recorder()
    fed = HierarchicalFederation(
        Failing,
        12,
        initial_parameters=INITIAL,
        tree=relay_tree(1, 2, 2),
        options={"bad": ("client-4",)},
        callbacks=[recorder],
        runtime="local",
    )
    record = fed.train(1).history[0]
    assert (record.sampled, record.succeeded, record.failed) == (12, 11, 1)
    failure = fed.train(1).failures[0]
    assert failure.node_id == "client-4" and "client-4 is broken" in failure.reason
    assert any(isinstance(e, FailureRecorded) for e in recorder.events)
    assert record.metrics["clients/agg-1"] == 5 and record.metrics["clients/agg-2"] == 6


def krum_tree(min_coverage: float) -> HierarchicalFederation:
    """Four LCPs of 5 clients and one of 2: leaf Krum(f=1) needs 5, so that LCP fails."""
    tree = relay_tree(1, 5, 1)
    ids = [f"client-{i}" for i in range(22)]
    lcps = [s.name for s in tree.lcps]
    mapping = {c: lcps[min(i // 5, 4)] for i, c in enumerate(ids)}
    return HierarchicalFederation(
        Noisy,
        22,
        initial_parameters=INITIAL,
        tree=tree,
        clients_per_lcp=mapping,
        leaf_strategy=Krum(f=1),
        min_coverage=min_coverage,
        runtime="local",
        resources=ResourcesConfig(num_workers=2),
    )


def test_a_failing_lcp_fails_its_subtree_and_the_round_goes_on() -> None:
    fed = krum_tree(min_coverage=0.5)
    result = fed.train(2)
    assert len(result.history) == 2
    lost = [f for f in result.failures if f.round == 1]
    assert [f.node_id for f in lost] == ["lcp-5-1"]
    assert "subtree lcp-5-1 failed: ParameterError" in lost[0].reason
    assert "sites: lcp-5-1; 2 sampled clients lost" in lost[0].reason
    record = result.history[0]
    assert (record.succeeded, record.failed) == (20, 1)
    assert record.metrics["coverage"] == pytest.approx(20 / 22)
    assert record.metrics["clients/agg-5"] == 0 and record.metrics["clients/agg-1"] == 5


def test_coverage_below_the_minimum_fails_the_run_naming_the_subtree() -> None:
    fed = krum_tree(min_coverage=0.95)
    with pytest.raises(
        FederationError, match=r"coverage 0\.909 .*below min_coverage 0\.95.*lcp-5-1"
    ):
        fed.train(1)


def test_refuses_a_root_strategy_that_needs_single_updates() -> None:
    with pytest.raises(ValueError, match="Krum needs every client's update"):
        HierarchicalFederation(
            Noisy,
            8,
            initial_parameters=INITIAL,
            tree=relay_tree(1, 2, 2),
            strategy=Krum(f=1),
            runtime="local",
        )
    with pytest.raises(TreeError, match="per_lcp 3 x 4 LCPs = 12 clients, but 8"):
        HierarchicalFederation(
            Noisy,
            8,
            initial_parameters=INITIAL,
            tree=relay_tree(1, 2, 2),
            clients_per_lcp=3,
            runtime="local",
        )


def test_units_are_whole_subtrees_cut_where_there_are_enough_for_the_workers() -> None:
    tree = relay_tree(2, 4, 4)
    assert choose_units(tree, 2) == ["agg-1", "agg-2", "agg-3", "agg-4"]
    assert len(choose_units(tree, 5)) == 16 and choose_units(tree, 5)[0] == "agg-1-1"
    assert len(choose_units(tree, 17)) == 64
    layout = make_layout(tree, 2, pinned=["agg-2-3"])
    assert layout.pinned == ("agg-2-3",) and layout.worker["agg-2-3"] == 2
    assert "agg-2" not in layout.units and "agg-2-4" in layout.units
    assert layout.driver_sites == ("agg-2", "server")
    with pytest.raises(TreeError, match="'relay-1' is not an aggregator or LCP"):
        choose_units(tree, 2, ["relay-1"])
    with pytest.raises(TreeError, match="inside the pinned subtree of 'agg-1'"):
        choose_units(tree, 2, ["agg-1", "agg-1-2"])


def test_a_subtree_lives_on_one_worker_and_a_pin_gets_its_own() -> None:
    fed = HierarchicalFederation(
        Noisy,
        64,
        initial_parameters=INITIAL,
        tree=relay_tree(2, 2, 2),
        clients_per_lcp=8,
        pin=["agg-2-2"],
        runtime="local",
        resources=ResourcesConfig(num_workers=2),
    )
    fed.train(2)
    by_lcp = {lcp: {fed.worker_of(c) for c in ids} for lcp, ids in fed.assignment.items()}
    assert by_lcp["lcp-1-1-1"] == by_lcp["lcp-1-2-2"] == {0}
    assert by_lcp["lcp-2-1-1"] == {1} and by_lcp["lcp-2-2-1"] == by_lcp["lcp-2-2-2"] == {2}
    pinned = fed.worker_stats()[2]  # its one unit each round, never another worker's
    assert (pinned["tree_units"], pinned["guest_units"]) == (2, 0)


OPTIONS = DigitsOptions(partition="iid", test_fraction=0.2, tile=4)


def attacked_tree_accuracy(leaf: Strategy | None, rounds: int = 15) -> float:
    """60 digits clients under 6 LCPs; 2 sign-flip attackers (20 %) under every LCP."""
    tree = relay_tree(1, 2, 3)
    ids = [f"client-{i}" for i in range(60)]
    bad = frozenset(
        a for j in range(6) for a in choose_attackers(ids[10 * j : 10 * j + 10], 0.2, j)
    )
    assert len(bad) == 12
    fed = HierarchicalFederation(
        Attacked(DigitsClient, SignFlip(10.0), bad),
        60,
        initial_parameters=DigitsClient.initial_parameters(OPTIONS),
        tree=tree,
        clients_per_lcp=10,
        leaf_strategy=leaf,
        options=OPTIONS.model_dump(),
        evaluate_fn=central_evaluation(OPTIONS),
        runtime="local",
    )
    accuracy = fed.train(rounds).history[-1].accuracy
    assert accuracy is not None
    return accuracy


def test_leaf_krum_resists_sign_flip_that_breaks_hierarchical_fedavg() -> None:
    assert attacked_tree_accuracy(None) < 0.5
    assert attacked_tree_accuracy(Krum(f=2)) >= 0.85


def test_the_same_bits_whatever_the_number_of_workers() -> None:
    """Units change with the workers (cut at tier 1, 2 or the LCPs); the fold order does not."""
    results = []
    for workers in (1, 3, 9):
        fed = HierarchicalFederation(
            Noisy,
            54,
            initial_parameters=INITIAL,
            tree=relay_tree(2, 3, 2),
            clients_per_lcp=3,
            strategy=FedAvg(fraction_fit=0.6),
            seed=4,
            runtime="local",
            resources=ResourcesConfig(num_workers=workers),
        )
        results.append(fed.train(2))
        assert len(set(fed.layout.worker.values())) == workers
    assert all(r.parameters_equal(results[0]) for r in results[1:])
