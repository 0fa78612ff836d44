"""Where a hierarchy's subtrees run: units (whole subtrees) on workers, the rest on the driver.

A *unit* is a subtree folded entirely by one worker, which returns one partial sum for it.
:func:`choose_units` cuts the tree at the shallowest tier that has at least as many folding
sites as there are workers (the top tier whenever ``width >= workers``), so only one partial
sum per unit crosses workers and the root's traffic grows with its children, not with
clients. A *pinned* site is a unit of its own, on a worker of its own that asks for the
custom resource :func:`~redfl.topology.tree_shape.site_resource` (a machine joined with
``start_site.sh SITE ADDRESS`` offers it). The sites above the units (the server and any
aggregator whose subtree spans several units) are folded by the driver, children first, in
site order, so the sum is the tree's :func:`~redfl.algorithms.hierarchy.fold_tree` whatever
the cut.

Units that are not pinned go to the shared workers round-robin, in site order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redfl.runtime.tree_runner import UnitPlan
from redfl.topology.assign import Assignment
from redfl.topology.tree import RelayTree, SiteKind
from redfl.topology.tree_shape import TreeError

FOLDING: tuple[SiteKind, ...] = ("aggregator", "lcp")
"""The kinds below the server that fold partial sums."""


@dataclass(frozen=True)
class Layout:
    """The units of a tree, who folds them and what the driver folds above them.

    Attributes
    ----------
    units:
        Unit roots, in site order.
    worker:
        Unit root -> worker index (pinned units after the shared workers).
    pinned:
        Pinned unit roots, in the order of their extra workers.
    driver_sites:
        The folding sites above the units, children first (the server last).
    """

    units: tuple[str, ...]
    worker: Mapping[str, int]
    pinned: tuple[str, ...]
    driver_sites: tuple[str, ...]


def choose_units(tree: RelayTree, workers: int, pinned: Sequence[str] = ()) -> list[str]:
    """The unit roots for ``workers`` shared workers, pinned sites included (site order).

    Raises
    ------
    TreeError
        If a pinned site is not an aggregator or LCP of the tree, or lies inside another
        pinned site's subtree.
    """
    pins = set(pinned)
    for name in pinned:
        if name not in tree or tree.site(name).kind not in FOLDING:
            raise TreeError(f"pin: {name!r} is not an aggregator or LCP of the tree")
        above = set(tree.path_to_root(name)[1:]) & pins
        if above:
            raise TreeError(f"pin: {name!r} lies inside the pinned subtree of {sorted(above)[0]!r}")
    counts: dict[int, int] = {}
    for site in tree.sites:
        if site.kind in FOLDING:
            counts[site.tier] = counts.get(site.tier, 0) + 1
    deepest = max(counts)
    cut = min((t for t, n in counts.items() if n >= workers), default=deepest)
    pinned_below = {a for p in pins for a in tree.path_to_root(p)[1:]}
    units: list[str] = []

    def visit(name: str) -> None:
        site = tree.site(name)
        if name in pins or site.kind == "lcp" or (site.tier >= cut and name not in pinned_below):
            units.append(name)
            return
        for child in tree.children(name, FOLDING):
            visit(child.name)

    for top in tree.children("server", FOLDING):
        visit(top.name)
    return units


def make_layout(tree: RelayTree, workers: int, pinned: Sequence[str] = ()) -> Layout:
    """Choose the units and give each a worker (see the module docstring)."""
    units = choose_units(tree, workers, pinned)
    pins = tuple(u for u in units if u in set(pinned))
    shared = [u for u in units if u not in set(pins)]
    worker = {u: i % max(1, workers) for i, u in enumerate(shared)}
    worker.update({u: workers + i for i, u in enumerate(pins)})
    inside = {s for u in units for s in tree.subtree(u)}
    driver = tuple(s for s in tree.aggregation_order() if s not in inside)
    return Layout(tuple(units), worker, pins, driver)


def unit_plan(
    tree: RelayTree, root: str, assignment: Assignment, sampled: frozenset[str]
) -> UnitPlan:
    """The :class:`UnitPlan` of the subtree of ``root``, with this round's ``sampled`` clients."""
    inside = set(tree.subtree(root))
    lcps = tuple(
        (lcp, tuple(c for c in assignment.get(lcp, ()) if c in sampled))
        for lcp in tree.lcps_under(root)
    )
    aggregators = tuple(
        (name, tuple(c.name for c in tree.children(name, FOLDING)))
        for name in tree.aggregation_order()
        if name in inside and tree.site(name).kind == "aggregator"
    )
    return UnitPlan(root, lcps, aggregators)


def clients_of_unit(tree: RelayTree, root: str, assignment: Assignment) -> list[str]:
    """Every client (sampled or not) below ``root``, LCP by LCP in site order."""
    return [c for lcp in tree.lcps_under(root) for c in assignment.get(lcp, ())]
