"""Relay trees as data: counts, names, parents, helpers, validation (no Ray)."""

from __future__ import annotations

import itertools
import pickle
from collections import Counter

import pytest

from redfl.topology import (
    CLI_RANGES,
    RelayTree,
    Site,
    TreeError,
    TreeRangeError,
    check_shape,
    relay_tree,
    tree_counts,
)
from redfl.topology.tree import MAX_BUILT_SITES

SHAPES = [
    (d, w, c, lcp_only)
    for d, w, c in itertools.product(range(1, 6), range(1, 6), range(1, 5))
    for lcp_only in (False, True)
]


def formula(depth: int, width: int, clients: int, lcp_only: bool) -> dict[str, int]:
    """The issue's counts, written the obvious (slow) way."""
    relays = sum(width**k for k in range(1, depth + 1))
    leaf = width**depth
    aggregators = 0 if lcp_only else relays
    return {
        "relays_leaf": leaf,
        "relays_nonleaf": relays - leaf,
        "relays_total": relays,
        "clients_leaf": clients * leaf,
        "clients_nonleaf": aggregators,
        "clients_total": aggregators + clients * leaf,
        "total_sites": relays + aggregators + clients * leaf + 1,
    }


# -- counts -----------------------------------------------------------------------------------


def test_counts_of_the_seed_example() -> None:
    assert tree_counts(2, 2, 3).as_dict() == {
        "relays_leaf": 4,
        "relays_nonleaf": 2,
        "relays_total": 6,
        "clients_leaf": 12,
        "clients_nonleaf": 6,
        "clients_total": 18,
        "total_sites": 25,
    }


@pytest.mark.parametrize(("depth", "width", "clients", "lcp_only"), SHAPES)
def test_counts_match_the_formula_and_the_built_tree(
    depth: int, width: int, clients: int, lcp_only: bool
) -> None:
    counts = tree_counts(depth, width, clients, lcp_only)
    assert counts.as_dict() == formula(depth, width, clients, lcp_only)
    tree = relay_tree(depth, width, clients, lcp_only)
    assert tree.counts() == counts
    assert len(tree.sites) == counts.total_sites
    kinds = Counter(s.kind for s in tree.sites)
    assert kinds["relay"] == counts.relays_total
    assert kinds["aggregator"] == counts.clients_nonleaf
    assert kinds["lcp"] == counts.clients_leaf
    assert kinds["server"] == 1


@pytest.mark.parametrize(
    ("depth", "width", "clients"), [(5, 9, 9), (40, 9, 9), (200, 7, 3), (1000, 1, 2)]
)
def test_counts_are_exact_for_huge_trees(depth: int, width: int, clients: int) -> None:
    for lcp_only in (False, True):
        assert tree_counts(depth, width, clients, lcp_only).as_dict() == formula(
            depth, width, clients, lcp_only
        )
    assert tree_counts(40, 9, 9).relays_leaf == 9**40  # integers, no float rounding


def test_largest_cli_tree_counts() -> None:
    counts = tree_counts(5, 9, 9)
    assert (counts.relays_total, counts.relays_leaf) == (66429, 59049)
    assert counts.total_sites == 66429 * 2 + 9 * 59049 + 1


# -- names, parents, tiers, ports ---------------------------------------------------------------


def test_names_parents_and_relays_of_the_seed_example() -> None:
    tree = relay_tree(2, 2, 3)
    relays = [s.name for s in tree.of_kind("relay")]
    assert relays == ["relay-1", "relay-2", "relay-1-1", "relay-1-2", "relay-2-1", "relay-2-2"]
    aggs = [s.name for s in tree.of_kind("aggregator")]
    assert aggs == ["agg-1", "agg-2", "agg-1-1", "agg-1-2", "agg-2-1", "agg-2-2"]
    assert [s.name for s in tree.lcps][:4] == ["lcp-1-1-1", "lcp-1-1-2", "lcp-1-1-3", "lcp-1-2-1"]
    assert tree.site("relay-1").parent == "server"
    assert tree.site("relay-1-2").parent == "relay-1"
    assert tree.site("agg-1").parent == "server"
    assert tree.site("agg-1-2") == Site("agg-1-2", "aggregator", "agg-1", 2, 9009, "relay-1-2")
    assert tree.site("lcp-1-2-3") == Site("lcp-1-2-3", "lcp", "agg-1-2", 3, 9019, "relay-1-2")


@pytest.mark.parametrize(("depth", "width", "clients"), [(1, 2, 2), (3, 3, 2), (2, 4, 5)])
def test_structure_for_any_shape(depth: int, width: int, clients: int) -> None:
    tree = relay_tree(depth, width, clients)
    for k in range(1, depth + 1):
        assert sum(1 for s in tree.of_kind("relay") if s.tier == k) == width**k
    for site in tree.of_kind("relay"):
        assert len(tree.children(site.name, ["relay"])) == (width if site.tier < depth else 0)
    for agg in tree.of_kind("aggregator"):
        relay = tree.site(agg.relay or "")
        assert agg.name == "agg-" + relay.name.removeprefix("relay-")
        expected = (
            "server" if relay.parent == "server" else "agg-" + str(relay.parent).split("-", 1)[1]
        )
        assert agg.parent == expected
        assert agg.tier == relay.tier
    for lcp in tree.lcps:
        assert lcp.parent == "agg-" + (lcp.relay or "").removeprefix("relay-")
        assert lcp.tier == depth + 1
        assert tree.children(lcp.relay or "", ["relay"]) == ()  # a leaf relay
    ports = [s.port for s in tree.sites]
    assert ports == list(range(9001, 9001 + len(tree.sites)))


def test_lcp_only_reports_to_the_server_through_the_leaf_relay() -> None:
    tree = relay_tree(2, 3, 2, lcp_only=True)
    assert tree.of_kind("aggregator") == ()
    assert len(tree.lcps) == 18
    assert all(s.parent == "server" and s.tier == 1 for s in tree.lcps)
    assert tree.site("lcp-3-1-2").relay == "relay-3-1"
    assert tree.relay_path("lcp-3-1-2") == ("relay-3-1", "relay-3")
    assert tree.lcps_under("relay-3") == tuple(f"lcp-3-{i}-{j}" for i in (1, 2, 3) for j in (1, 2))
    assert len(tree.children("server", ["lcp"])) == 18
    assert tree.aggregation_order() == (*(s.name for s in tree.lcps), "server")


def test_base_port_and_port_room() -> None:
    assert relay_tree(1, 2, 2, base_port=20000).site("server").port == 20000
    with pytest.raises(TreeError, match=r"base_port 65530: the 9 sites need ports 65530\.\.65538"):
        relay_tree(1, 2, 2, base_port=65530)
    assert relay_tree(1, 2, 2, base_port=65527).sites[-1].port == 65535


# -- helpers the runner needs ---------------------------------------------------------------------


def test_children_paths_subtrees() -> None:
    tree = relay_tree(2, 2, 3)
    assert [s.name for s in tree.children("server")] == ["relay-1", "agg-1", "relay-2", "agg-2"]
    assert [s.name for s in tree.children("server", ["aggregator"])] == ["agg-1", "agg-2"]
    assert [s.name for s in tree.children("agg-2-1")] == ["lcp-2-1-1", "lcp-2-1-2", "lcp-2-1-3"]
    assert tree.children("lcp-2-1-1") == ()
    assert tree.path_to_root("lcp-2-1-3") == ("lcp-2-1-3", "agg-2-1", "agg-2", "server")
    assert tree.path_to_root("relay-2-1") == ("relay-2-1", "relay-2", "server")
    assert tree.path_to_root("server") == ("server",)
    assert tree.relay_path("agg-2-1") == ("relay-2-1", "relay-2")
    assert tree.relay_path("server") == ()
    assert tree.subtree("agg-2") == (
        "agg-2",
        "agg-2-1",
        "agg-2-2",
        *(f"lcp-2-{i}-{j}" for i in (1, 2) for j in (1, 2, 3)),
    )
    assert tree.lcps_under("agg-1-2") == ("lcp-1-2-1", "lcp-1-2-2", "lcp-1-2-3")
    assert tree.lcps_under("relay-1-2") == tree.lcps_under("agg-1-2")
    assert tree.lcps_under("server") == tuple(s.name for s in tree.lcps)
    assert tree.lcps_under("lcp-1-1-2") == ("lcp-1-1-2",)
    assert "agg-1" in tree and "agg-9" not in tree


@pytest.mark.parametrize(("depth", "width", "clients", "lcp_only"), SHAPES[::7])
def test_aggregation_order_is_bottom_up_and_complete(
    depth: int, width: int, clients: int, lcp_only: bool
) -> None:
    tree = relay_tree(depth, width, clients, lcp_only)
    order = tree.aggregation_order()
    assert order == relay_tree(depth, width, clients, lcp_only).aggregation_order()
    assert order[-1] == "server"
    assert {tree.site(n).kind for n in order} <= {"lcp", "aggregator", "server"}
    assert len(order) == len(tree.sites) - tree.counts().relays_total
    position = {name: i for i, name in enumerate(order)}
    for name in order[:-1]:
        assert position[name] < position[tree.site(name).parent or ""]


def test_unknown_site_is_named() -> None:
    tree = relay_tree(1, 2, 2)
    with pytest.raises(TreeError, match=r"no site 'agg-7' in the tree \(9 sites\)"):
        tree.children("agg-7")
    with pytest.raises(TreeError, match="no site 'x'"):
        tree.lcps_under("x")


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((0, 2, 2), "depth 0 is out of range 1..5"),
        ((6, 2, 2), "depth 6 is out of range 1..5"),
        ((2, 1, 2), "width 1 is out of range 2..9"),
        ((2, 12, 2), "width 12 is out of range 2..9"),
        ((2, 2, 1), "clients 1 is out of range 2..9"),
        ((2, 2, 10), "clients 10 is out of range 2..9"),
    ],
)
def test_cli_ranges_name_the_parameter_value_and_range(
    shape: tuple[int, int, int], message: str
) -> None:
    with pytest.raises(TreeRangeError) as caught:
        check_shape(*shape, CLI_RANGES)
    assert str(caught.value) == message
    assert caught.value.parameter == message.split()[0]


def test_cli_range_bounds_are_inclusive() -> None:
    for shape in [(1, 2, 2), (5, 9, 9)]:
        check_shape(*shape, CLI_RANGES)


def test_data_functions_accept_wider_ranges_but_not_zero() -> None:
    assert len(relay_tree(1, 1, 1).sites) == 4
    with pytest.raises(TreeRangeError, match=r"^width 0 is out of range 1 or more$"):
        relay_tree(2, 0, 2)
    with pytest.raises(TreeRangeError, match=r"^clients -1 is out of range 1 or more$"):
        tree_counts(2, 2, -1)
    with pytest.raises(TreeError, match=r"depth must be an integer, got 2\.0"):
        tree_counts(2.0, 2, 2)  # type: ignore[arg-type]


def test_refuses_to_build_over_the_limit() -> None:
    total = tree_counts(5, 9, 9).total_sites
    assert total < MAX_BUILT_SITES  # the largest CLI tree still builds ...
    huge = tree_counts(9, 10, 1, lcp_only=True).total_sites
    assert huge == 2_111_111_111  # ... while counting has no limit
    with pytest.raises(TreeError, match=f"the tree has {huge} sites, over the 1000000 that"):
        relay_tree(9, 10, 1, lcp_only=True)


def test_tree_invariants_are_checked_on_construction() -> None:
    good = relay_tree(1, 2, 2).sites
    cases = [
        ((*good, Site("lcp-x", "lcp", "relay-1", 2, 9100)), "a lcp cannot report to a relay"),
        ((*good, Site("agg-1", "aggregator", "server", 1, 9100)), "names must be non-empty"),
        ((*good, Site("lcp-y", "lcp", "agg-1", 2, 9001)), "port 9001 is not free"),
        ((*good, Site("lcp-z", "lcp", "nobody", 2, 9100)), "parent 'nobody' is not an earlier"),
        ((*good, Site("lcp-w", "lcp", "agg-1", 5, 9100)), "tier 5, expected 2"),
        (good[1:], "the server must be the first site"),
        ((*good, Site("x", "robot", "server", 1, 9100)), "kind 'robot' is not one of"),  # type: ignore[arg-type]
    ]
    for sites, message in cases:
        with pytest.raises(TreeError, match=message):
            RelayTree(1, 2, 2, False, sites)


def test_a_tree_pickles_with_its_indexes() -> None:
    """The runner ships the tree to workers."""
    tree = relay_tree(2, 3, 2)
    tree.lcps_under("agg-1")  # fills the cached index
    copy = pickle.loads(pickle.dumps(tree))
    assert copy == tree
    assert copy.children("agg-2") == tree.children("agg-2")
    assert copy.lcps_under("relay-3") == tuple(f"lcp-3-{i}-{j}" for i in (1, 2, 3) for j in (1, 2))
    assert hash(copy) == hash(tree)
