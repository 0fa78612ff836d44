"""Topology builders, validation and mixing weights: pure logic, no Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from redfl.algorithms.gossip import mix
from redfl.algorithms.mixing import metropolis_hastings_matrix, slem, uniform_row
from redfl.runtime.topology_manager import NotNeighbourError, TopologyManager
from redfl.topology import TopologyError, check_topology, custom, k_connect, mesh, ring, star
from redfl.topology.graph import Topology


def undirected_pairs(topology: Topology) -> set[frozenset[str]]:
    return {frozenset((a, b)) for a in topology.nodes for b in topology.neighbours(a)}


def test_builders_take_a_count_or_ids() -> None:
    assert ring(3).nodes == ["node-0", "node-1", "node-2"]
    assert ring(["x", "y", "z"]).neighbours("x") == {"y", "z"}
    hub = star(4)
    assert hub.neighbours("node-0") == {"node-1", "node-2", "node-3"}
    assert hub.neighbours("node-2") == {"node-0"}
    full = mesh(5)
    assert all(len(full.neighbours(n)) == 4 for n in full.nodes)
    one_way = ring(4, directed=True)
    assert one_way.neighbours("node-3") == {"node-0"} and one_way.directed
    assert not ring(4).directed


@pytest.mark.parametrize("bad", [0, []])
def test_empty_topology_is_refused(bad: int | list[str]) -> None:
    with pytest.raises(TopologyError, match="at least 1 node"):
        ring(bad)


def test_repeated_ids_are_named() -> None:
    with pytest.raises(TopologyError, match=r"repeated: \['b'\]"):
        mesh(["a", "b", "b"])


@pytest.mark.parametrize(("n", "k"), [(10, 3), (10, 4), (32, 4), (1000, 4), (7, 6), (2, 1)])
def test_k_connect_is_regular_connected_simple_and_seeded(n: int, k: int) -> None:
    graph = k_connect(n, k, seed=3)
    assert len(graph.nodes) == n
    assert all(len(graph.neighbours(i)) == k for i in graph.nodes)
    assert all(i not in graph.neighbours(i) for i in graph.nodes)
    assert not graph.directed
    assert nx.is_connected(nx.Graph([tuple(p) for p in undirected_pairs(graph)]))
    assert undirected_pairs(k_connect(n, k, seed=3)) == undirected_pairs(graph)


def test_k_connect_seed_changes_the_graph() -> None:
    assert undirected_pairs(k_connect(32, 4, seed=0)) != undirected_pairs(k_connect(32, 4, seed=1))


@pytest.mark.parametrize(
    ("n", "k", "reason"),
    [
        (5, 3, "n\\*k = 15 must be even"),
        (5, 5, "k must be in \\[1, 4\\]"),
        (5, 0, "k must be in \\[1, 4\\]"),
        (6, 1, "a 1-regular graph on 6 nodes is disconnected"),
    ],
)
def test_impossible_k_connect_is_a_clear_error(n: int, k: int, reason: str) -> None:
    with pytest.raises(TopologyError, match=rf"k_connect\({n}, {k}\) is impossible: {reason}"):
        k_connect(n, k)


def test_custom_from_a_numpy_matrix_with_weights() -> None:
    a = np.array([[0, 2.0, 0], [2.0, 0, 0.5], [0, 0.5, 0]])
    graph = custom(a, nodes=["a", "b", "c"])
    assert graph.neighbours("b") == {"a", "c"}
    assert graph.weights[("b", "c")] == 0.5 and graph.weights[("a", "b")] == 2.0
    assert not graph.directed


def test_custom_asymmetric_matrix_is_directed() -> None:
    a = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    graph = custom(a)
    assert graph.directed
    assert graph.neighbours("node-0") == {"node-1"}
    assert graph.weights == {}


def test_custom_from_csv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("a,b,c,d\n0,1,0,1\n1,0,1,0\n0,1,0,1\n1,0,1,0\n", encoding="utf-8")
    graph = custom(path)
    assert graph.nodes == ["a", "b", "c", "d"]
    assert graph.neighbours("a") == {"b", "d"}
    assert graph.neighbours("c") == {"b", "d"}


def test_shipped_example_csv_is_a_valid_topology() -> None:
    graph = custom(Path(__file__).resolve().parents[1] / "examples" / "topology.csv")
    assert len(graph.nodes) >= 6 and not graph.directed


def test_custom_from_edge_list_directed_and_weighted() -> None:
    graph = custom([("a", "b", 0.5), ("b", "c", 0.5), ("c", "a", 0.25)], directed=True)
    assert graph.nodes == ["a", "b", "c"]
    assert graph.neighbours("a") == {"b"} and graph.allows("c", "a")
    assert not graph.allows("b", "a")
    assert graph.weights[("c", "a")] == 0.25


def test_custom_from_networkx_graph() -> None:
    g = nx.cycle_graph(5)
    g.add_edge(0, 2, weight=3.0)
    graph = custom(g)
    assert graph.nodes == ["0", "1", "2", "3", "4"]
    assert graph.neighbours("0") == {"1", "2", "4"}
    assert graph.weights[("2", "0")] == 3.0
    assert graph.weights[("0", "1")] == 1.0
    d = nx.DiGraph([(0, 1), (1, 0)])
    assert custom(d).neighbours("0") == {"1"}


def test_custom_names_unknown_ids_and_self_loops() -> None:
    with pytest.raises(TopologyError, match=r"unknown node ids \['x', 'y'\]"):
        custom([("a", "x"), ("y", "b")], nodes=["a", "b"])
    with pytest.raises(TopologyError, match=r"self-loops .* on nodes \['b', 'c'\]"):
        custom([("a", "b"), ("b", "b"), ("c", "c")])
    with pytest.raises(TopologyError, match=r"self-loops .* on nodes \['node-1'\]"):
        custom(np.array([[0, 1], [1, 1]]))


def test_custom_rejects_bad_matrices(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="square"):
        custom(np.ones((2, 3)))
    with pytest.raises(TopologyError, match=">= 0"):
        custom(np.array([[0, -1], [-1, 0]]))
    with pytest.raises(TopologyError, match="2 node ids for a 3x3"):
        custom(np.zeros((3, 3)), nodes=["a", "b"])
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1\n1,zz\n", encoding="utf-8")
    with pytest.raises(TopologyError, match="not a numeric matrix"):
        custom(bad)
    with pytest.raises(TopologyError, match="cannot read topology file"):
        custom(tmp_path / "missing.csv")


def test_disconnected_graph_names_the_cut_off_nodes_unless_allowed() -> None:
    edges = [("a", "b"), ("b", "c"), ("d", "e")]
    with pytest.raises(TopologyError, match=r"2 components.*\['d', 'e'\].*cut off from 'a'"):
        custom(edges)
    graph = custom(edges, allow_disconnected=True)
    assert graph.neighbours("d") == {"e"}


def test_not_strongly_connected_names_the_nodes() -> None:
    one_way = Topology.from_edges(["a", "b", "c"], [("a", "b"), ("b", "c")], directed=True)
    check_topology(one_way)  # weakly connected is enough by default
    with pytest.raises(TopologyError, match=r"not strongly connected: nodes \['b', 'c'\] cannot"):
        check_topology(one_way, strongly_connected=True)
    back = Topology.from_edges(["a", "b", "c"], [("b", "a"), ("c", "a")], directed=True)
    with pytest.raises(TopologyError, match=r"nodes \['b', 'c'\] cannot be reached from 'a'"):
        check_topology(back, strongly_connected=True)
    check_topology(ring(5, directed=True), strongly_connected=True)


def test_manager_refuses_unknown_ids_by_name() -> None:
    manager = TopologyManager(ring(3), {"node-0": 0, "node-1": 0, "node-2": 1})
    with pytest.raises(NotNeighbourError, match=r"\['ghost'\]: unknown node id"):
        manager.check_send("node-0", ["node-1", "ghost"])
    assert manager.senders("node-0") == {"node-1", "node-2"}
    directed = TopologyManager(ring(3, directed=True), {"node-0": 0, "node-1": 0, "node-2": 1})
    assert directed.senders("node-0") == {"node-2"}


# -- mixing -------------------------------------------------------------------------------


def test_metropolis_hastings_matrix_matches_the_formula_on_a_path() -> None:
    path = custom([("a", "b"), ("b", "c")])  # degrees 1, 2, 1
    w = metropolis_hastings_matrix(path)
    expected = np.array([[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]])
    np.testing.assert_allclose(w, expected)


def test_slem_of_the_ring_is_the_known_cosine() -> None:
    n = 16  # MH on a ring: 1/3 + 2/3 cos(2 pi k / n); the largest modulus below 1 is k = 1
    assert slem(metropolis_hastings_matrix(ring(n))) == pytest.approx(
        1 / 3 + 2 / 3 * np.cos(2 * np.pi / n)
    )


def test_metropolis_hastings_refuses_a_directed_graph() -> None:
    with pytest.raises(TopologyError, match=r"undirected.*one-way edges: \['node-0->node-1'"):
        metropolis_hastings_matrix(ring(3, directed=True))


def test_mix_is_order_independent_and_checks_neighbours() -> None:
    own = {"x": np.array([1.0, 2.0])}
    got = {"b": {"x": np.array([3.0, 0.0])}, "c": {"x": np.array([0.0, 6.0])}}
    weights = uniform_row("a", ["c", "b"])
    np.testing.assert_allclose(mix("a", own, got, weights)["x"], [4 / 3, 8 / 3])
    with pytest.raises(ValueError, match=r"mixes values from \['b'\] but has weights for"):
        mix("a", own, {"b": got["b"]}, weights)


def test_k_connect_is_the_same_in_another_process_whatever_its_hash_seed() -> None:
    code = (
        "from redfl.topology import k_connect; t = k_connect(40, 5, seed=2); "
        "print(sorted((a, b) for a in t.nodes for b in t.neighbours(a) if a < b))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for hash_seed in (1, 2, 3)
    }
    assert len(outputs) == 1
