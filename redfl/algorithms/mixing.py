"""Mixing weights for decentralised averaging: pure numpy, no Ray.

Metropolis-Hastings weights (Xiao & Boyd, "Fast linear iterations for distributed
averaging", 2004; Boyd et al., "Randomized gossip algorithms", 2006): on an undirected
graph, ``w_ij = 1 / (1 + max(d_i, d_j))`` for each neighbour ``j`` and
``w_ii = 1 - sum_j w_ij``. The matrix is symmetric and doubly stochastic, so repeated
mixing keeps the sum of the nodes' values and converges to their exact mean, at a rate
set by the second-largest eigenvalue modulus (SLEM) of the matrix.

On a directed graph, ``uniform_row`` gives each node equal weight for itself and each
in-neighbour: row stochastic, so a strongly connected graph reaches consensus (not
necessarily on the plain mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from redfl.topology.graph import Topology
from redfl.topology.validate import check_undirected


def metropolis_hastings_row(
    node_id: str, degree: int, neighbour_degrees: Mapping[str, int]
) -> dict[str, float]:
    """Node ``node_id``'s row of the Metropolis-Hastings matrix, its own weight included.

    Examples
    --------
    >>> metropolis_hastings_row("a", 2, {"b": 2, "c": 3})
    {'b': 0.3333333333333333, 'c': 0.25, 'a': 0.41666666666666674}
    """
    row = {j: 1.0 / (1.0 + max(degree, d)) for j, d in sorted(neighbour_degrees.items())}
    row[node_id] = 1.0 - sum(row.values())
    return row


def uniform_row(node_id: str, senders: Sequence[str]) -> dict[str, float]:
    """Equal weight for ``node_id`` and each node that sends to it (row stochastic)."""
    weight = 1.0 / (1 + len(senders))
    row = dict.fromkeys(sorted(senders), weight)
    row[node_id] = weight
    return row


def weights_row(node_id: str, weights_into: Mapping[str, float]) -> dict[str, float]:
    """Mix with the topology's edge weights: ``w_ij`` from each sender, the rest kept.

    Raises
    ------
    ValueError
        If the graph has no weights, or the incoming weights add up to more than 1.

    Examples
    --------
    >>> weights_row("a", {"b": 0.25, "c": 0.5})
    {'b': 0.25, 'c': 0.5, 'a': 0.25}
    """
    if not weights_into:
        raise ValueError(f"node {node_id!r}: mixing 'weights' needs a topology with edge weights")
    row = {j: float(w) for j, w in sorted(weights_into.items())}
    total = sum(row.values())
    if total > 1.0 + 1e-12:
        raise ValueError(
            f"node {node_id!r}: its incoming edge weights add up to {total:g} > 1; mixing "
            f"'weights' needs them to sum to at most 1"
        )
    row[node_id] = 1.0 - total
    return row


def metropolis_hastings_matrix(topology: Topology) -> np.ndarray:
    """The full Metropolis-Hastings matrix, rows and columns in ``topology.nodes`` order.

    Raises
    ------
    TopologyError
        If the topology is directed.
    """
    check_undirected(topology, "Metropolis-Hastings mixing")
    index = {node_id: i for i, node_id in enumerate(topology.nodes)}
    matrix = np.zeros((len(index), len(index)))
    for node_id, i in index.items():
        nbrs = topology.neighbours(node_id)
        degrees = {j: len(topology.neighbours(j)) for j in nbrs}
        for j, w in metropolis_hastings_row(node_id, len(nbrs), degrees).items():
            matrix[i, index[j]] = w
    return matrix


def slem(matrix: np.ndarray) -> float:
    """The second-largest eigenvalue modulus of a stochastic matrix."""
    moduli = np.sort(np.abs(np.linalg.eigvals(matrix)))[::-1]
    return float(moduli[1]) if len(moduli) > 1 else 0.0
