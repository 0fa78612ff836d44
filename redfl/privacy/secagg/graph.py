"""Who shares with whom: the communication graph of SecAgg+, and how large to make it.

Bell, Bonawitz, Gascón, Lepoint, Raykova, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020: instead of every pair of clients (SecAgg, Bonawitz
et al., CCS 2017), each client agrees masks and shares its secrets with ``k`` neighbours
only, ``k = O(log n)``. The graph here is the paper's Harary graph with a random
permutation: the clients sit on a ring in an order drawn from the round's public seed, and
each one is joined to the ``k / 2`` nearest on either side. ``k = n - 1`` is the complete
graph, i.e. SecAgg.

:func:`choose_neighbourhood` picks ``k`` and the threshold ``t`` from ``n`` and two
assumptions: at most a fraction ``dropout`` of the clients drop during a round, and at
most a fraction ``corrupted`` of them collude with the server. Seen from one client, its
neighbours are a uniformly random ``k``-subset of the others, so the number of dropped or
colluding neighbours is hypergeometric, and the smallest even ``k`` is chosen for which
some ``t`` meets, with a union bound over the ``n`` clients,

- the round fails (some client keeps fewer than ``t`` neighbours) with probability at
  most ``2^-failure_bits``;
- some client has ``t`` or more colluding neighbours (who with the server could rebuild
  its secrets) with probability at most ``2^-security_bits``;
- the honest survivors stay connected (else the server would learn the sums of the
  separate groups; the ring breaks only where ``k / 2`` consecutive clients are gone, at
  two places) with probability at least ``1 - 2^-security_bits``;

and the largest such ``t`` (the one most resistant to collusion) is taken. Defaults:
10% dropouts, 5% colluders, failure ``2^-20`` (a failed round is retried), leak
``2^-40``. That gives ``(k, t)`` = (4, 2) for 20 clients, (10, 5) for 50, (16, 7) for 100,
(36, 19) for 1,000, (42, 22) for 10,000 and (48, 24) for a million: logarithmic in ``n``.
For small ``n`` the counts are exact (20 clients: at most 2 drop and 1 colludes, so
``t = 2`` of ``k = 4`` always works). With very few clients no ``k`` below ``n - 1``
qualifies; the complete graph is then used, with the largest threshold that tolerates
the dropouts, or a majority if none does.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from redfl.privacy.secagg.prg import expand

Graph = Mapping[int, frozenset[int]]
"""Each client's neighbours (the relation is symmetric, no client is its own neighbour)."""


def check_neighbours(clients: int, neighbours: int) -> None:
    """Raise ``ValueError`` unless ``neighbours`` is a valid degree for ``clients`` clients:
    an even number below ``clients - 1``, or ``clients - 1`` (the complete graph)."""
    if clients < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {clients}")
    if neighbours == clients - 1:
        return
    if not 2 <= neighbours < clients - 1 or neighbours % 2:
        raise ValueError(
            f"neighbours must be an even number in [2, {clients - 2}] or {clients - 1} (the "
            f"complete graph) for {clients} clients, got {neighbours}"
        )


def harary_graph(clients: Sequence[int], neighbours: int, seed: bytes) -> dict[int, frozenset[int]]:
    """The ``neighbours``-regular graph of ``clients`` for the public ``seed``.

    The clients are ordered on a ring by the keystream of ``seed`` (the same seed always
    gives the same graph, on any machine), and each is joined to the ``neighbours / 2``
    nearest on either side; ``neighbours = len(clients) - 1`` joins everyone.

    Examples
    --------
    >>> graph = harary_graph(range(10), 4, bytes(32))
    >>> sorted(len(ns) for ns in graph.values()) == [4] * 10
    True
    >>> all(a in graph[b] for a in graph for b in graph[a])
    True
    """
    ring = _ring(clients, neighbours, seed)
    return {client: _around(ring, p, neighbours) for p, client in enumerate(ring)}


def neighbours_of(
    clients: Sequence[int], neighbours: int, seed: bytes, client: int
) -> frozenset[int]:
    """One client's neighbours in :func:`harary_graph` (without building the whole graph)."""
    ring = _ring(clients, neighbours, seed)
    return _around(ring, ring.index(client), neighbours)


def _ring(clients: Sequence[int], neighbours: int, seed: bytes) -> list[int]:
    """The clients in ring order (sorted ids for the complete graph, which has no order)."""
    ids = sorted(clients)
    if len(set(ids)) != len(ids):
        raise ValueError("client ids must be distinct")
    check_neighbours(len(ids), neighbours)
    if neighbours == len(ids) - 1:
        return ids
    order = np.argsort(expand(seed, len(ids), np.uint64), kind="stable")
    return [ids[int(i)] for i in order]


def _around(ring: list[int], position: int, neighbours: int) -> frozenset[int]:
    """The ``neighbours`` clients nearest to ``position`` on the ring, half on each side."""
    n = len(ring)
    if neighbours == n - 1:
        return frozenset(ring[:position] + ring[position + 1 :])
    half = neighbours // 2
    return frozenset(ring[(position + d) % n] for d in range(-half, half + 1) if d)


def connected(nodes: Collection[int], graph: Graph) -> bool:
    """Whether ``nodes`` form one connected group using only edges among themselves."""
    remaining = set(nodes)
    if not remaining:
        return True
    frontier = [remaining.pop()]
    while frontier:
        node = frontier.pop()
        reached = graph[node] & remaining
        remaining -= reached
        frontier.extend(reached)
    return not remaining


def choose_neighbourhood(
    clients: int,
    *,
    dropout: float = 0.1,
    corrupted: float = 0.05,
    failure_bits: float = 20.0,
    security_bits: float = 40.0,
) -> tuple[int, int]:
    """``(neighbours, threshold)`` for ``clients`` clients (see the module docstring).

    Parameters
    ----------
    clients:
        n >= 2.
    dropout:
        The largest fraction of clients expected to drop in a round, in [0, 1).
    corrupted:
        The largest fraction of clients assumed to collude with the server, in [0, 1).
    failure_bits, security_bits:
        The round fails with probability at most ``2^-failure_bits``; a client's
        secrets or a partial sum leak with probability at most ``2^-security_bits``.

    Examples
    --------
    >>> choose_neighbourhood(100)
    (16, 7)
    >>> choose_neighbourhood(5)  # few clients: the complete graph
    (4, 3)
    """
    if clients < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {clients}")
    if not 0 <= dropout < 1 or not 0 <= corrupted < 1:
        raise ValueError(f"dropout and corrupted must be in [0, 1), got {dropout} and {corrupted}")
    dropped = math.ceil(dropout * clients)
    colluding = math.ceil(corrupted * clients)
    removed = min(clients, dropped + colluding)
    others = clients - 1
    for k in range(2, others, 2):
        dropped_pmf = _hypergeometric(others, dropped, k)
        colluding_pmf = _hypergeometric(others, colluding, k)
        gaps = clients * clients / 2 * _all_chosen(clients, removed, k)
        if gaps > 2.0**-security_bits:
            continue
        for t in range(k, 0, -1):
            fails = clients * sum(dropped_pmf[k - t + 1 :])
            leaks = clients * sum(colluding_pmf[t:])
            if fails <= 2.0**-failure_bits and leaks <= 2.0**-security_bits:
                return k, t
    if others - dropped > colluding:
        return others, max(1, others - dropped)
    return others, others // 2 + 1


def _hypergeometric(population: int, marked: int, draws: int) -> list[float]:
    """P(i marked among ``draws`` taken from ``population``), for i = 0..draws."""
    total = math.comb(population, draws)
    return [
        math.comb(marked, i) * math.comb(population - marked, draws - i) / total
        for i in range(draws + 1)
    ]


def _all_chosen(population: int, marked: int, count: int) -> float:
    """P(``count`` given items of ``population`` are all among ``marked`` random ones)."""
    if count > marked:
        return 0.0
    return math.perm(marked, count) / math.perm(population, count)
