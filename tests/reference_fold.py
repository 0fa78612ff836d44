"""A reference fold of a relay tree, written plainly, that the tests hold the library to.

Each LCP folds its clients' updates with :func:`~redfl.algorithms.hierarchy.leaf_sum`, each
aggregator merges its children's partial sums in site order, the server last
(:meth:`~redfl.topology.tree.RelayTree.aggregation_order`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redfl.algorithms.hierarchy import leaf_sum
from redfl.algorithms.strategy import ClientUpdate, Strategy
from redfl.core.arrays import Parameters, WeightedSum
from redfl.topology.tree import RelayTree


class HierarchyError(ValueError):
    """Updates, assignment and tree do not fit together; the message names the client/LCP."""


def fold_tree(
    tree: RelayTree,
    assignment: Mapping[str, Sequence[str]],
    updates: Sequence[ClientUpdate],
    leaf_strategy: Strategy | None = None,
    current: Parameters | None = None,
    rnd: int = 0,
) -> dict[str, WeightedSum]:
    """Fold the clients' ``updates`` up the tree: one partial sum per folding site.

    Parameters
    ----------
    tree:
        The relay tree.
    assignment:
        LCP name -> its client ids (see :func:`~redfl.topology.assign.assign_clients`);
        LCPs missing from it have no clients.
    updates:
        The updates that arrived (any subset of the assigned clients, each at most once).
    leaf_strategy, current, rnd:
        Optional robust rule applied at every LCP (see :func:`leaf_sum`).

    Returns
    -------
    dict
        Site name -> its partial sum, in :meth:`RelayTree.aggregation_order` (the server
        last); ``result["server"].mean(like)`` is the round's FedAvg aggregate.

    Raises
    ------
    HierarchyError
        For an LCP of the assignment that is not in the tree, a client assigned twice, an
        update from a client no LCP holds, or two updates from one client.
    """
    by_client = _index_updates(tree, assignment, updates)
    sums: dict[str, WeightedSum] = {}
    for name in tree.aggregation_order():
        site = tree.site(name)
        if site.kind == "lcp":
            mine = [by_client[c] for c in assignment.get(name, ()) if c in by_client]
            sums[name] = leaf_sum(name, mine, leaf_strategy, current, rnd)
            continue
        total = WeightedSum()
        for child in tree.children(name, ["aggregator", "lcp"]):
            total.merge(sums[child.name])
        sums[name] = total
    return sums


def _index_updates(
    tree: RelayTree, assignment: Mapping[str, Sequence[str]], updates: Sequence[ClientUpdate]
) -> dict[str, ClientUpdate]:
    holder: dict[str, str] = {}
    for lcp, members in assignment.items():
        if lcp not in tree or tree.site(lcp).kind != "lcp":
            raise HierarchyError(f"assignment names {lcp!r}, which is not an LCP of the tree")
        for client in members:
            if client in holder:
                raise HierarchyError(
                    f"client {client!r} is assigned to both {holder[client]!r} and {lcp!r}"
                )
            holder[client] = lcp
    by_client: dict[str, ClientUpdate] = {}
    for update in updates:
        if update.node_id not in holder:
            raise HierarchyError(f"update from client {update.node_id!r}, which no LCP holds")
        if update.node_id in by_client:
            raise HierarchyError(f"two updates from client {update.node_id!r}")
        by_client[update.node_id] = update
    return by_client


def hierarchical_mean(
    tree: RelayTree,
    assignment: Mapping[str, Sequence[str]],
    updates: Sequence[ClientUpdate],
    like: Parameters,
    leaf_strategy: Strategy | None = None,
    rnd: int = 0,
) -> Parameters:
    """The server's weighted mean after :func:`fold_tree`, cast to the dtypes of ``like``
    (``like`` is also the leaf strategy's ``current``)."""
    sums = fold_tree(tree, assignment, updates, leaf_strategy, like, rnd)
    return sums["server"].mean(like)


def flat_sum(updates: Sequence[ClientUpdate]) -> WeightedSum:
    """The star's reference: every update folded in the given (sampling) order."""
    total = WeightedSum()
    for update in updates:
        total.add(update.parameters, float(update.num_examples))
    return total
