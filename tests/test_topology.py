"""Tests for topology graphs and the TopologyManager's send checks and routing."""

from __future__ import annotations

import pytest

from redfl.runtime.topology_manager import NotNeighbourError, TopologyManager
from redfl.topology import builders
from redfl.topology.graph import Topology

NODES = ["a", "b", "c", "d", "e"]


def test_ring_links_each_node_to_previous_and_next() -> None:
    ring = builders.ring(NODES)
    n = len(NODES)
    for i, node in enumerate(NODES):
        assert ring.neighbours(node) == {NODES[(i - 1) % n], NODES[(i + 1) % n]}
    assert ring.nodes == NODES


def test_directed_ring_only_links_to_next() -> None:
    ring = builders.ring(NODES, directed=True)
    n = len(NODES)
    for i, node in enumerate(NODES):
        assert ring.neighbours(node) == {NODES[(i + 1) % n]}
        assert ring.allows(node, NODES[(i + 1) % n])
        assert not ring.allows(NODES[(i + 1) % n], node)


def test_small_rings() -> None:
    assert builders.ring(["solo"]).neighbours("solo") == set()
    pair = builders.ring(["x", "y"])
    assert pair.neighbours("x") == {"y"}
    assert pair.neighbours("y") == {"x"}


def test_mesh_links_every_pair() -> None:
    mesh = builders.mesh(NODES)
    for node in NODES:
        assert mesh.neighbours(node) == set(NODES) - {node}


def test_star_links_center_and_leaves_only() -> None:
    star = builders.star(["hub", "l1", "l2", "l3"])
    assert star.neighbours("hub") == {"l1", "l2", "l3"}
    for leaf in ("l1", "l2", "l3"):
        assert star.neighbours(leaf) == {"hub"}
    assert not star.allows("l1", "l2")


def test_from_edges_undirected_and_directed() -> None:
    edges = [("a", "b"), ("b", "c")]
    both = Topology.from_edges(["a", "b", "c", "d"], edges)
    assert both.neighbours("a") == {"b"}
    assert both.neighbours("b") == {"a", "c"}
    assert both.neighbours("c") == {"b"}
    assert both.neighbours("d") == set()
    one_way = Topology.from_edges(["a", "b", "c"], edges, directed=True)
    assert one_way.neighbours("a") == {"b"}
    assert one_way.neighbours("b") == {"c"}
    assert one_way.neighbours("c") == set()


def test_self_loop_is_refused_naming_the_node() -> None:
    with pytest.raises(ValueError, match="self-loop on 'b'"):
        Topology.from_edges(["a", "b"], [("b", "b")])


@pytest.mark.parametrize("edge", [("a", "zz"), ("zz", "a")])
def test_edge_to_unknown_node_is_refused_naming_it(edge: tuple[str, str]) -> None:
    with pytest.raises(KeyError, match="unknown node 'zz'"):
        Topology.from_edges(["a", "b"], [edge])


def test_neighbours_of_unknown_node_is_an_error() -> None:
    with pytest.raises(KeyError, match="unknown node 'zz'"):
        builders.ring(NODES).neighbours("zz")
    assert not builders.ring(NODES).allows("zz", "a")


def test_add_node_twice_is_a_no_op() -> None:
    topology = Topology.from_edges(["a", "b"], [("a", "b")])
    topology.add_node("a")
    assert topology.nodes == ["a", "b"]
    assert topology.neighbours("a") == {"b"}


# -- TopologyManager ------------------------------------------------------------------------


def manager() -> TopologyManager:
    placement = {"a": 0, "b": 1, "c": 0, "d": 2, "e": 1}
    return TopologyManager(builders.ring(NODES), placement)


def test_check_send_to_neighbours_passes() -> None:
    manager().check_send("a", ["b", "e"])


def test_check_send_to_non_neighbour_names_sender_and_bad_recipients() -> None:
    with pytest.raises(NotNeighbourError) as info:
        manager().check_send("a", ["b", "c", "d"])
    message = str(info.value)
    assert "node 'a'" in message
    assert "cannot send to ['c', 'd']" in message
    assert isinstance(info.value, ValueError)


def test_check_send_without_recipient_is_an_error() -> None:
    with pytest.raises(ValueError, match="no recipient") as info:
        manager().check_send("a", [])
    assert "'a'" in str(info.value)


def test_no_topology_allows_no_message() -> None:
    silent = TopologyManager(None, {"a": 0, "b": 0})
    assert silent.neighbours("a") == set()
    with pytest.raises(NotNeighbourError, match="cannot send to \\['b'\\]"):
        silent.check_send("a", ["b"])


def test_route_groups_recipients_by_worker_in_order() -> None:
    groups = manager().route(["e", "a", "b", "d", "c"])
    assert groups == {1: ["e", "b"], 0: ["a", "c"], 2: ["d"]}
    assert list(groups) == [1, 0, 2]


def test_worker_of() -> None:
    assert manager().worker_of("d") == 2
    with pytest.raises(KeyError):
        manager().worker_of("zz")
