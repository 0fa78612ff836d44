"""Hierarchical aggregation over a relay tree: what an LCP folds, and which rules may run there.

Each LCP folds its clients' updates into one sample-weighted partial sum
(:class:`~redfl.core.arrays.WeightedSum`, float64); each aggregator merges its children's
partial sums, and the server merges its own. Folding follows
:meth:`~redfl.topology.tree.RelayTree.aggregation_order` (children before parents), an LCP's
clients in assignment order and a site's children in site order, so the result does not
depend on when anything finishes. Because a weighted sum is associative, the server's sum
divided by its weight is FedAvg over all clients: it equals the flat star's within float64
rounding (order of additions only).

Tier-local robust aggregation (``leaf_strategy``): an LCP may instead apply a robust rule
(coordinate-wise median, trimmed mean, Krum, Multi-Krum, Bulyan from
:mod:`redfl.algorithms.robust`) to its own clients' updates. Its robust result goes up as one
update weighted by the LCP's total examples, and from there on the tree folds weighted sums.

Why robust rules run at the leaves only. They do not compose across tiers:

- Coordinate-wise median: the median of medians is not the median. With groups
  ``[0, 9, 9]``, ``[0, 9, 9]`` and ``[0, 0, 0]`` the group medians are 9, 9 and 0, whose
  median is 9, while the median of all nine values is 0 (five of them are 0). Its breakdown
  point shrinks too: an attacker needs only a majority inside a majority of groups, which can
  be ~25 % of clients with two tiers instead of 50 %. Trimmed means behave the same way.
- Krum scores each candidate by its distances to its ``n - f - 2`` nearest *other
  candidates*; a parent that only sees its children's picks has lost the candidates those
  distances need (and the ``n >= 2f + 3`` condition applies per group, with ``f`` per group).

So each LCP applies the rule to the updates it alone holds, which is exact for that group,
and the tiers above fold sample-weighted sums, which compose exactly. The guarantee is per
LCP: a leaf is protected while its attackers stay within its rule's ``f`` (or below half of
its clients for the median).
"""

from __future__ import annotations

from collections.abc import Sequence

from redfl.algorithms.registry import STRATEGIES
from redfl.algorithms.strategy import ClientUpdate, ParameterError, Strategy
from redfl.core.arrays import Parameters, WeightedSum

LEAF_STRATEGIES = ("fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")
"""Registered strategies that may run at the leaves (robust, stateless across rounds)."""


def make_leaf_strategy(name: str, **params: object) -> Strategy:
    """The registered robust strategy ``name`` for use as a ``leaf_strategy``.

    Raises
    ------
    ParameterError
        Naming ``leaf_strategy`` for a name outside :data:`LEAF_STRATEGIES`, or the bad
        parameter.
    """
    if name not in LEAF_STRATEGIES:
        raise ParameterError(
            "leaf_strategy", f"{name!r} cannot run at the leaves; choose one of {LEAF_STRATEGIES}"
        )
    return STRATEGIES[name].build(**params)


def leaf_sum(
    lcp: str,
    updates: Sequence[ClientUpdate],
    leaf_strategy: Strategy | None = None,
    current: Parameters | None = None,
    rnd: int = 0,
) -> WeightedSum:
    """One LCP's partial sum of its clients' ``updates`` (in the given order).

    Without ``leaf_strategy``: ``sum(n_i * params_i)`` with weight ``sum(n_i)``. With one:
    the strategy's aggregate of the updates (``aggregate_updates(rnd, current, updates)``)
    times the LCP's total examples. ``count`` is the number of client updates either way.
    An LCP with no updates gives an empty sum (weight 0, count 0).

    Raises
    ------
    ParameterError
        If the leaf strategy refuses the round (e.g. Krum with fewer than ``2f + 3``
        updates), naming the LCP.
    """
    partial = WeightedSum()
    if not updates:
        return partial
    if leaf_strategy is None:
        for update in updates:
            partial.add(update.parameters, float(update.num_examples))
        return partial
    if current is None:
        raise ValueError("a leaf_strategy needs the current global parameters (current=)")
    try:
        robust = leaf_strategy.aggregate_updates(rnd, current, updates)
    except ParameterError as error:
        raise ParameterError(error.parameter, f"at LCP {lcp!r}: {error.detail}") from None
    partial.add(robust, float(sum(u.num_examples for u in updates)))
    partial.count = len(updates)
    return partial
