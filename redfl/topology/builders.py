"""Topology builders: star, ring, mesh, k-connect (random regular) and custom graphs. No Ray.

Every builder takes a node count (ids ``node-0``, ``node-1``, ...) or a list of ids.
``custom`` reads an adjacency matrix (numpy array or CSV file), an edge list, or a
networkx graph (networkx is optional: the graph is read through its public methods).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from redfl.topology.graph import Topology
from redfl.topology.validate import TopologyError, check_topology, components, shown

Nodes = int | Sequence[str]
"""A node count or the node ids themselves."""

_SWAP_ATTEMPTS = 20
"""How many seeded tries ``k_connect`` makes to get a connected random regular graph."""


def node_ids(nodes: Nodes) -> list[str]:
    """The ids a builder uses: ``node-0`` ... for a count, else the ids given (unique)."""
    if isinstance(nodes, int):
        if nodes < 1:
            raise TopologyError(f"a topology needs at least 1 node, got {nodes}")
        return [f"node-{i}" for i in range(nodes)]
    ids = [str(n) for n in nodes]
    if not ids:
        raise TopologyError("a topology needs at least 1 node, got an empty list")
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if repeated:
        raise TopologyError(f"node ids must be unique; repeated: {shown(repeated)}")
    return ids


def star(nodes: Nodes) -> Topology:
    """The first node (the hub) linked both ways to every other node."""
    ids = node_ids(nodes)
    return Topology.from_edges(ids, ((ids[0], leaf) for leaf in ids[1:]))


def ring(nodes: Nodes, *, directed: bool = False) -> Topology:
    """Each node linked to the next (and back, unless ``directed``), the last to the first."""
    ids = node_ids(nodes)
    n = len(ids)
    pairs = [(ids[i], ids[(i + 1) % n]) for i in range(n)] if n > 1 else []
    return Topology.from_edges(ids, pairs, directed=directed)


def mesh(nodes: Nodes) -> Topology:
    """The complete graph: every node linked to every other."""
    ids = node_ids(nodes)
    return Topology.from_edges(ids, ((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]))


def k_connect(nodes: Nodes, k: int, *, seed: int = 0) -> Topology:
    """A connected random ``k``-regular undirected graph (every node has ``k`` neighbours).

    Built from a shuffled circulant graph by seeded degree-preserving edge swaps; the same
    (nodes, k, seed) always gives the same graph.

    Raises
    ------
    TopologyError
        If no connected simple ``k``-regular graph on ``n`` nodes exists: ``k`` must be
        in ``[1, n-1]``, ``n*k`` even, and ``k >= 2`` unless ``n == 2``.

    Examples
    --------
    >>> t = k_connect(8, 3, seed=1)
    >>> sorted(len(t.neighbours(n)) for n in t.nodes)
    [3, 3, 3, 3, 3, 3, 3, 3]
    >>> k_connect(5, 3)
    Traceback (most recent call last):
    ...
    redfl.topology.validate.TopologyError: k_connect(5, 3) is impossible: n*k = 15 must be even
    """
    ids = node_ids(nodes)
    n = len(ids)
    if not 1 <= k <= n - 1:
        raise TopologyError(f"k_connect({n}, {k}) is impossible: k must be in [1, {n - 1}]")
    if n * k % 2:
        raise TopologyError(f"k_connect({n}, {k}) is impossible: n*k = {n * k} must be even")
    if k == 1 and n > 2:
        raise TopologyError(
            f"k_connect({n}, 1) is impossible: a 1-regular graph on {n} nodes is disconnected"
        )
    rng = np.random.default_rng([seed, n, k])
    for _ in range(_SWAP_ATTEMPTS):
        order = [ids[i] for i in rng.permutation(n)]
        edges = _circulant(order, k)
        if k >= 3:  # a 2-regular connected graph is a cycle: the shuffled ring is already one
            _swap_edges(edges, rng, swaps=10 * n * k)
        pairs = sorted((a, b) for a, b in (sorted(e) for e in edges))
        topology = Topology.from_edges(ids, pairs)
        if len(components(topology)) == 1:
            return topology
    raise TopologyError(f"k_connect({n}, {k}): no connected graph after {_SWAP_ATTEMPTS} tries")


def _circulant(order: Sequence[str], k: int) -> set[frozenset[str]]:
    """Each node linked to the ``k // 2`` next ones (and its opposite when ``k`` is odd)."""
    n = len(order)
    offsets = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
    return {frozenset((order[i], order[(i + d) % n])) for i in range(n) for d in offsets}


def _swap_edges(edges: set[frozenset[str]], rng: np.random.Generator, swaps: int) -> None:
    """Random double-edge swaps ``(a-b, c-d) -> (a-d, c-b)`` that keep the graph simple."""
    pool = sorted(tuple(sorted(e)) for e in edges)  # sorted: independent of hash seeds
    picks = rng.integers(0, len(pool), size=(swaps, 2))
    flips = rng.integers(0, 2, size=swaps)
    for (i, j), flip in zip(picks, flips, strict=True):
        (a, b), (c, d) = pool[i], pool[j]
        if flip:
            c, d = d, c
        new1, new2 = frozenset((a, d)), frozenset((c, b))
        if len({a, b, c, d}) < 4 or new1 in edges or new2 in edges:
            continue
        edges.difference_update((frozenset((a, b)), frozenset((c, d))))
        edges.update((new1, new2))
        pool[i], pool[j] = (a, d), (c, b)


def custom(
    source: Any,
    *,
    nodes: Sequence[str] | None = None,
    directed: bool | None = None,
    allow_disconnected: bool = False,
) -> Topology:
    """A user-defined graph.

    Parameters
    ----------
    source:
        An adjacency matrix (numpy array, or the path of a CSV file, optionally with a
        header row of node ids): entry ``[i, j]`` non-zero means ``i`` may send to ``j``,
        and values other than 0/1 are edge weights. Or an edge list of ``(source, target)``
        or ``(source, target, weight)``. Or a networkx graph (its ``weight`` attributes).
    nodes:
        Node ids (default: the CSV header, the networkx nodes, the ids of an edge list in
        order of appearance, else ``node-0`` ...).
    directed:
        For an edge list: one-way edges (default ``False``). A matrix or networkx graph
        says itself whether it is directed (an asymmetric matrix is).
    allow_disconnected:
        Accept a graph in several pieces.

    Raises
    ------
    TopologyError
        Naming unknown ids, self-loops, a bad matrix, or the nodes cut off.
    """
    if hasattr(source, "is_directed") and hasattr(source, "edges"):
        ids = node_ids([str(n) for n in source.nodes] if nodes is None else nodes)
        triples = [(str(a), str(b), w) for a, b, w in source.edges(data="weight")]
        both = not source.is_directed()
        weighted = any(w is not None for _, _, w in triples)
        triples = [(a, b, 1.0 if w is None else w) for a, b, w in triples]
        topology = _from_triples(ids, triples, both, weighted)
    elif isinstance(source, str | Path | np.ndarray):
        header, matrix = _read_matrix(source) if isinstance(source, str | Path) else (None, source)
        topology = _from_matrix(matrix, nodes if nodes is not None else header)
    else:
        topology = _from_edge_list(source, nodes, directed=bool(directed))
    return check_topology(topology, allow_disconnected=allow_disconnected)


def _read_matrix(path: str | Path) -> tuple[list[str] | None, np.ndarray]:
    try:
        with Path(path).open(newline="", encoding="utf-8") as stream:
            rows = [row for row in csv.reader(stream) if row and any(c.strip() for c in row)]
    except OSError as error:
        raise TopologyError(f"cannot read topology file {path}: {error}") from None
    header = None
    if rows and not _numeric(rows[0][0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    try:
        return header, np.array([[float(c) for c in row] for row in rows])
    except ValueError as error:
        raise TopologyError(f"topology file {path}: not a numeric matrix ({error})") from None


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _from_matrix(matrix: np.ndarray, nodes: Sequence[str] | None) -> Topology:
    a = np.asarray(matrix, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise TopologyError(f"an adjacency matrix must be square and non-empty, got {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise TopologyError("adjacency matrix entries must be finite and >= 0")
    n = a.shape[0]
    ids = node_ids(n if nodes is None else nodes)
    if len(ids) != n:
        raise TopologyError(f"{len(ids)} node ids for a {n}x{n} adjacency matrix")
    loops = [ids[i] for i in range(n) if a[i, i] != 0]
    if loops:
        raise TopologyError(f"self-loops are not allowed; on nodes {shown(loops)}")
    weighted = bool(((a != 0) & (a != 1)).any())
    rows, cols = np.nonzero(a)
    triples = [(ids[i], ids[j], float(a[i, j])) for i, j in zip(rows, cols, strict=True)]
    return _from_triples(ids, triples, False, weighted)


def _from_edge_list(
    edges: Iterable[Sequence[Any]], nodes: Sequence[str] | None, *, directed: bool
) -> Topology:
    triples = []
    for edge in edges:
        if len(edge) not in (2, 3):
            raise TopologyError(f"an edge is (source, target[, weight]), got {edge!r}")
        weight = float(edge[2]) if len(edge) == 3 else 1.0
        triples.append((str(edge[0]), str(edge[1]), weight))
    if nodes is None:
        seen: dict[str, None] = {}
        for a, b, _ in triples:
            seen.setdefault(a)
            seen.setdefault(b)
        ids = node_ids(list(seen))
    else:
        ids = node_ids(nodes)
    weighted = any(w != 1.0 for _, _, w in triples)
    return _from_triples(ids, triples, not directed, weighted)


def _from_triples(
    ids: list[str], triples: list[tuple[str, str, float]], both: bool, weighted: bool
) -> Topology:
    known = set(ids)
    unknown = sorted({x for a, b, _ in triples for x in (a, b) if x not in known})
    if unknown:
        raise TopologyError(f"edges name unknown node ids {shown(unknown)}")
    loops = sorted({a for a, b, _ in triples if a == b})
    if loops:
        raise TopologyError(f"self-loops are not allowed; on nodes {shown(loops)}")
    bad = [f"{a}->{b}" for a, b, w in triples if not (np.isfinite(w) and w > 0)]
    if bad:
        raise TopologyError(f"edge weights must be finite and > 0; bad edges {shown(bad)}")
    topology = Topology()
    for node_id in ids:
        topology.add_node(node_id)
    for a, b, w in triples:
        topology.add_edge(a, b, directed=not both, weight=w if weighted else None)
    return topology
