"""Gossip averaging math: one mixing step over named arrays. Pure numpy, no Ray.

A node holding ``x_i`` and its neighbours' ``x_j`` computes
``x_i <- sum_j w_ij x_j`` (its own weight ``w_ii`` included) with the weights of
:mod:`redfl.algorithms.mixing`. With Metropolis-Hastings weights on an undirected graph
the nodes converge to the exact mean of their initial values (Xiao & Boyd, 2004).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from redfl.core.arrays import Parameters


def mix(
    node_id: str,
    own: Mapping[str, np.ndarray],
    received: Mapping[str, Mapping[str, np.ndarray]],
    weights: Mapping[str, float],
) -> Parameters:
    """One mixing step: the ``weights``-weighted sum of ``own`` and ``received`` values.

    ``received`` maps each neighbour id to its arrays; ``weights`` holds a weight for
    ``node_id`` and for each of them. Terms are added in sorted id order, so the result
    does not depend on the order in which messages arrived.

    Raises
    ------
    ValueError
        If ``received`` and the weights disagree on who the neighbours are.

    Examples
    --------
    >>> import numpy as np
    >>> mix("a", {"x": np.array([3.0])}, {"b": {"x": np.array([0.0])}}, {"a": 0.5, "b": 0.5})
    {'x': array([1.5])}
    """
    expected = set(weights) - {node_id}
    if set(received) != expected:
        raise ValueError(
            f"node {node_id!r} mixes values from {sorted(received)} but has weights for "
            f"{sorted(expected)}"
        )
    values = {**received, node_id: own}
    out: Parameters = {}
    for name, array in own.items():
        total = np.zeros(np.shape(array), dtype=np.result_type(array, np.float64))
        for j in sorted(values):
            total += weights[j] * values[j][name]
        out[name] = total.astype(array.dtype, copy=False)
    return out


def distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """The Euclidean distance between two sets of named arrays."""
    return float(np.sqrt(sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a)))
