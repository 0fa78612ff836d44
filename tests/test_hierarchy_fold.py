"""The pure hierarchical folding reference: equal to flat FedAvg on random trees, deterministic,
and leaf-level robust rules against sign-flip attackers (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from reference_fold import HierarchyError, flat_sum, fold_tree, hierarchical_mean

from redfl.algorithms import ClientUpdate, FedMedian, Krum, ParameterError, make_strategy
from redfl.algorithms.hierarchy import leaf_sum, make_leaf_strategy
from redfl.attacks import SignFlip
from redfl.core.arrays import Parameters
from redfl.topology import Assignment, RelayTree, assign_clients, relay_tree


def random_update(rng: np.random.Generator, node_id: str, dtype: type) -> ClientUpdate:
    parameters: Parameters = {
        "w": rng.normal(0, 3, size=(4, 3)).astype(dtype),
        "b": rng.normal(0, 3, size=3).astype(dtype),
    }
    return ClientUpdate(node_id, parameters, int(rng.integers(1, 500)), {})


def random_case(
    seed: int,
) -> tuple[RelayTree, Assignment, list[ClientUpdate], Parameters]:
    """A random tree, a random client -> LCP assignment, and the updates of a random sample."""
    rng = np.random.default_rng(seed)
    tree = relay_tree(
        int(rng.integers(1, 5)),
        int(rng.integers(1, 5)),
        int(rng.integers(1, 5)),
        lcp_only=bool(rng.integers(0, 2)),
    )
    lcps = [s.name for s in tree.lcps]
    clients = [f"client-{i}" for i in range(int(rng.integers(1, 4 * len(lcps) + 2)))]
    how = int(rng.integers(0, 3))
    if how == 0:
        assignment = assign_clients(clients, lcps)
    elif how == 1:
        per = int(rng.integers(1, 4))
        clients = [f"client-{i}" for i in range(per * len(lcps))]
        assignment = assign_clients(clients, lcps, per)
    else:
        picks = rng.integers(0, len(lcps), size=len(clients))
        mapping = {c: lcps[p] for c, p in zip(clients, picks, strict=True)}
        assignment = assign_clients(clients, lcps, mapping)
    dtype = np.float32 if rng.integers(0, 2) else np.float64
    sampled = [c for c in clients if rng.random() < 0.8] or clients[:1]  # sampling order
    updates = [random_update(rng, c, dtype) for c in sampled]
    return tree, assignment, updates, dict(updates[0].parameters)


@pytest.mark.parametrize("seed", range(80))
def test_hierarchical_fedavg_equals_flat_fedavg(seed: int) -> None:
    tree, assignment, updates, like = random_case(seed)
    sums = fold_tree(tree, assignment, updates)
    flat = flat_sum(updates)
    root = sums["server"]
    assert root.weight == flat.weight == sum(u.num_examples for u in updates)
    assert root.count == flat.count == len(updates)
    for name in like:  # float64 means: equal within 1e-6
        difference = root.sums[name] / root.weight - flat.sums[name] / flat.weight
        assert np.max(np.abs(difference)) <= 1e-6
    hierarchical = hierarchical_mean(tree, assignment, updates, like)
    flat_mean = flat.mean(like)
    for name in like:  # cast to the parameters' dtype (float32: within one rounding)
        assert hierarchical[name].dtype == like[name].dtype
        assert np.allclose(hierarchical[name], flat_mean[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(0, 80, 9))
def test_every_partial_sum_covers_its_subtree(seed: int) -> None:
    tree, assignment, updates, _ = random_case(seed)
    sums = fold_tree(tree, assignment, updates)
    assert list(sums) == list(tree.aggregation_order())
    examples = {u.node_id: u.num_examples for u in updates}
    for name, partial in sums.items():
        below = [c for lcp in tree.lcps_under(name) for c in assignment[lcp] if c in examples]
        assert partial.count == len(below)
        assert partial.weight == sum(examples[c] for c in below)


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadam", "fedyogi"])
def test_server_side_strategies_apply_at_the_root(name: str) -> None:
    """Three rounds of a server-side strategy on the tree's root sum and on the flat sum."""
    tree, assignment, _, like = random_case(5)
    on_tree, on_flat = make_strategy(name), make_strategy(name)
    tree_params = flat_params = {k: np.zeros_like(v) for k, v in like.items()}
    rng = np.random.default_rng(7)
    clients = [c for members in assignment.values() for c in members]
    for rnd in (1, 2, 3):
        updates = [random_update(rng, c, np.float64) for c in clients]
        root = fold_tree(tree, assignment, updates)["server"]
        tree_params = on_tree.aggregate(rnd, tree_params, root)
        flat_params = on_flat.aggregate(rnd, flat_params, flat_sum(updates))
    for key in like:
        assert np.max(np.abs(tree_params[key] - flat_params[key])) <= 1e-6
        assert np.max(np.abs(tree_params[key])) > 0.01  # the strategy moved the model


def test_folding_does_not_depend_on_arrival_order() -> None:
    tree, assignment, updates, like = random_case(3)
    first = hierarchical_mean(tree, assignment, updates, like)
    shuffled = [updates[i] for i in np.random.default_rng(1).permutation(len(updates))]
    second = hierarchical_mean(tree, assignment, shuffled, like)
    for name in like:
        assert np.array_equal(first[name], second[name])  # bit-identical


def test_empty_lcps_fold_nothing() -> None:
    tree = relay_tree(2, 2, 2)
    lcps = [s.name for s in tree.lcps]
    assignment = assign_clients(["a", "b"], lcps, {"a": lcps[0], "b": lcps[-1]})
    rng = np.random.default_rng(0)
    updates = [random_update(rng, "a", np.float64), random_update(rng, "b", np.float64)]
    sums = fold_tree(tree, assignment, updates)
    assert sums[lcps[1]].count == 0 and sums[lcps[1]].weight == 0
    assert sums["agg-1-2"].count == 0
    assert sums["agg-1"].count == 1 and sums["server"].count == 2
    no_updates = fold_tree(tree, assignment, [])
    with pytest.raises(ValueError, match="total weight is 0"):
        no_updates["server"].mean(updates[0].parameters)


def test_inconsistent_inputs_are_named() -> None:
    tree = relay_tree(1, 2, 2)
    assignment = {"lcp-1-1": ("a",), "lcp-2-2": ("b",)}
    update = random_update(np.random.default_rng(0), "a", np.float64)
    with pytest.raises(HierarchyError, match="update from client 'z', which no LCP holds"):
        fold_tree(tree, assignment, [ClientUpdate("z", update.parameters, 1, {})])
    with pytest.raises(HierarchyError, match="two updates from client 'a'"):
        fold_tree(tree, assignment, [update, update])
    with pytest.raises(HierarchyError, match="names 'agg-1', which is not an LCP of the tree"):
        fold_tree(tree, {"agg-1": ("a",)}, [update])
    with pytest.raises(HierarchyError, match="'a' is assigned to both 'lcp-1-1' and 'lcp-1-2'"):
        fold_tree(tree, {"lcp-1-1": ("a",), "lcp-1-2": ("a",)}, [update])
    with pytest.raises(ValueError, match="needs the current global parameters"):
        fold_tree(tree, assignment, [update], leaf_strategy=FedMedian())


def test_median_of_medians_is_not_the_median() -> None:
    """The module docstring's example, checked."""
    groups = np.array([[0, 9, 9], [0, 9, 9], [0, 0, 0]], dtype=float)
    assert np.median(np.median(groups, axis=1)) == 9
    assert np.median(groups) == 0


# -- leaf-level robust aggregation ---------------------------------------------------------------

DIM = 20
HONEST = np.linspace(0.5, 1.5, DIM)  # the true update direction (global parameters are 0)


def attacked_round(
    per_lcp: int, seed: int
) -> tuple[RelayTree, Assignment, list[ClientUpdate], Parameters, np.ndarray]:
    """A depth-2, width-2 tree of 12 LCPs with ``per_lcp`` clients each; one client in five
    sends a sign flip (scale 10), spread so that each LCP has ``per_lcp // 5`` attackers."""
    rng = np.random.default_rng(seed)
    tree = relay_tree(2, 2, 3)
    lcps = [s.name for s in tree.lcps]
    clients = [f"c{i}" for i in range(per_lcp * len(lcps))]
    assignment = assign_clients(clients, lcps, per_lcp)
    attackers = {members[0] for members in assignment.values()}
    assert len(attackers) / len(clients) == 0.2
    global_: Parameters = {"w": np.zeros(DIM)}
    flip = SignFlip(scale=10.0)
    updates, honest = [], []
    for client in clients:
        trained = {"w": HONEST + rng.normal(0, 0.05, DIM)}
        examples = int(rng.integers(20, 60))
        if client in attackers:
            trained = flip.corrupt(global_, trained, rng)
        else:
            honest.append((trained["w"], examples))
        updates.append(ClientUpdate(client, trained, examples, {}))
    honest_mean = np.sum([w * n for w, n in honest], axis=0) / sum(n for _, n in honest)
    return tree, assignment, updates, global_, honest_mean


def test_leaf_krum_resists_sign_flip_attackers_that_pull_fedavg_away() -> None:
    tree, assignment, updates, global_, honest_mean = attacked_round(per_lcp=5, seed=0)
    scale = float(np.linalg.norm(honest_mean))
    plain = hierarchical_mean(tree, assignment, updates, global_)["w"]
    krum = hierarchical_mean(tree, assignment, updates, global_, leaf_strategy=Krum(f=1))["w"]
    assert np.linalg.norm(plain - honest_mean) > 2 * scale  # ~ -1.2 x the honest update
    assert float(plain @ honest_mean) < 0  # pulled to the opposite direction
    assert np.linalg.norm(krum - honest_mean) < 0.05 * scale
    # The weighted sum above the leaves is exact: each LCP's weight is all its examples.
    sums = fold_tree(tree, assignment, updates, Krum(f=1), global_)
    assert sums["server"].weight == sum(u.num_examples for u in updates)
    assert sums["server"].count == len(updates)


def test_leaf_median_and_trimmed_mean_resist_too() -> None:
    tree, assignment, updates, global_, honest_mean = attacked_round(per_lcp=5, seed=1)
    scale = float(np.linalg.norm(honest_mean))
    for name, params in [("fedmedian", {}), ("fedtrimmedavg", {"beta": 0.2}), ("multikrum", {})]:
        leaf = make_leaf_strategy(name, **params)
        robust = hierarchical_mean(tree, assignment, updates, global_, leaf_strategy=leaf)["w"]
        assert np.linalg.norm(robust - honest_mean) < 0.1 * scale, name


def test_leaf_krum_needs_enough_clients_per_lcp_and_names_the_lcp() -> None:
    tree, assignment, updates, global_, _ = attacked_round(per_lcp=5, seed=2)
    with pytest.raises(ParameterError, match=r"f: at LCP 'lcp-1-1-1': Krum needs 2f \+ 3 = 7"):
        fold_tree(tree, assignment, updates, Krum(f=2), global_)


def test_leaf_sum_alone() -> None:
    rng = np.random.default_rng(0)
    updates = [random_update(rng, f"c{i}", np.float64) for i in range(5)]
    plain = leaf_sum("lcp-x", updates)
    assert plain.count == 5 and plain.weight == sum(u.num_examples for u in updates)
    like = dict(updates[0].parameters)
    robust = leaf_sum("lcp-x", updates, FedMedian(), like)
    median = np.median(np.stack([u.parameters["b"] for u in updates]), axis=0)
    assert np.allclose(robust.sums["b"] / robust.weight, median)
    assert robust.count == 5
    assert leaf_sum("lcp-x", []).count == 0


def test_make_leaf_strategy_refuses_non_robust_rules() -> None:
    assert isinstance(make_leaf_strategy("krum", f=2), Krum)
    with pytest.raises(ParameterError, match="leaf_strategy: 'fedadam' cannot run at the leaves"):
        make_leaf_strategy("fedadam")
    with pytest.raises(ParameterError, match="beta: must be in"):
        make_leaf_strategy("fedtrimmedavg", beta=0.7)
