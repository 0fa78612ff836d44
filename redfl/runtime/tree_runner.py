"""The tree runner: a worker folds whole subtrees of a hierarchy into one partial sum each.

Aggregators and LCPs are nodes hosted by a worker, not processes. A :class:`FoldSubtrees`
request carries the round's global parameters (put once, one call per worker) and the
subtrees (*units*) this worker folds, each as a :class:`UnitPlan`: its LCPs with their
sampled clients and its aggregators with their children, children first. The worker

1. fits every LCP's sampled clients with the star batch runner (one ``FitSegments`` handled
   in-process, one segment per LCP: the same per-client ``try``, update checks and update
   policy as the star);
2. folds each LCP into one sample-weighted float64 partial sum
   (:class:`~redfl.core.arrays.WeightedSum`), or applies the ``leaf_strategy`` to that
   LCP's own updates (:func:`~redfl.algorithms.hierarchy.leaf_sum`);
3. folds each aggregator's children in site order, and returns one partial sum per unit.

An LCP or aggregator that fails (its leaf strategy refuses the round, say) is a value: the
site is listed in :attr:`UnitResult.failed` with its reason and contributes nothing; the
rest of the unit folds on. Client failures come back as in the star.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redfl.algorithms.hierarchy import leaf_sum
from redfl.algorithms.strategy import ClientUpdate, Strategy
from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.instructions import Instructions
from redfl.runtime.protocol import Handlers, Request, Runner
from redfl.runtime.replies import FitBatch
from redfl.runtime.star_runner import FitSegments, describe

if TYPE_CHECKING:
    from redfl.runtime.host import Host


@dataclass(frozen=True)
class UnitPlan:
    """One subtree a worker folds in a round.

    Attributes
    ----------
    root:
        The subtree's top site (an aggregator or an LCP).
    lcps:
        ``(lcp, sampled client ids)`` for every LCP of the subtree, in site order; the
        clients in assignment (sampling) order.
    aggregators:
        ``(aggregator, children)`` for every aggregator of the subtree, children before
        parents; each one's children (aggregators or LCPs) in site order.
    """

    root: str
    lcps: tuple[tuple[str, tuple[str, ...]], ...]
    aggregators: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass
class UnitResult:
    """A folded subtree: its partial sum and what arrived where.

    Attributes
    ----------
    root:
        The subtree's top site.
    total:
        The subtree's sample-weighted partial sum (float64).
    arrived:
        Site -> clients whose update is in that site's sum (every folding site of the unit).
    failed:
        ``(site, reason)`` of the LCPs and aggregators that failed; their subtrees add
        nothing.
    """

    root: str
    total: WeightedSum
    arrived: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class TreeBatch:
    """A worker's reply: one :class:`UnitResult` per unit (request order) and the clients'
    folded metrics, successes, failures and policy counters (``fitted.total`` is unused)."""

    units: list[UnitResult]
    fitted: FitBatch


class TreeRunner(Runner):
    """Folds the subtrees of a hierarchy that live on this worker."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._folds = 0

    def register(self, handlers: Handlers) -> None:
        """Answer :class:`FoldSubtrees`."""
        handlers.add(FoldSubtrees, self.fold)

    def stats(self) -> dict[str, float]:
        """How many subtree folds this worker ran."""
        return {"tree_folds": self._folds}

    def fold(self, request: FoldSubtrees) -> TreeBatch:
        """Fit every LCP's clients, then fold each unit bottom-up (see the module docstring)."""
        self._folds += 1
        lcps = [(lcp, clients) for unit in request.units for lcp, clients in unit.lcps]
        fold = request.leaf_strategy is None
        fit = FitSegments(
            request.parameters,
            [list(clients) for _, clients in lcps],
            request.instructions,
            fold,
            request.policy,
            separate=True,
        )
        fitted = self.host.handle(fit)
        sums: dict[str, WeightedSum] = {}
        arrived: dict[str, int] = {}
        failed: dict[str, str] = {}
        done = set(fitted.succeeded)
        if fold:
            for (lcp, clients), total in zip(lcps, fitted.segment_totals, strict=True):
                sums[lcp] = total
                arrived[lcp] = sum(1 for c in clients if c in done)
        else:
            by_client = {u.node_id: u for u in fitted.updates}
            for lcp, clients in lcps:
                mine = [by_client[c] for c in clients if c in by_client]
                self._leaf(lcp, mine, request, sums, arrived, failed)
            fitted.updates = []
        units = [self._fold_unit(unit, sums, arrived, failed) for unit in request.units]
        fitted.segment_totals = []
        return TreeBatch(units, fitted)

    def _leaf(
        self,
        lcp: str,
        updates: Sequence[ClientUpdate],
        request: FoldSubtrees,
        sums: dict[str, WeightedSum],
        arrived: dict[str, int],
        failed: dict[str, str],
    ) -> None:
        """Apply the leaf strategy to one LCP's updates; a refusal fails the LCP only."""
        try:
            sums[lcp] = leaf_sum(
                lcp, updates, request.leaf_strategy, request.parameters, request.round
            )
            arrived[lcp] = len(updates)
        except Exception as error:  # an LCP that fails is a value, not a crash
            sums[lcp], arrived[lcp] = WeightedSum(), 0
            failed[lcp] = describe(error)

    @staticmethod
    def _fold_unit(
        unit: UnitPlan,
        sums: dict[str, WeightedSum],
        arrived: dict[str, int],
        failed: dict[str, str],
    ) -> UnitResult:
        """Fold a unit's aggregators, children first, in site order."""
        for aggregator, children in unit.aggregators:
            try:
                total = WeightedSum()
                for child in children:
                    total.merge(sums[child])
                sums[aggregator] = total
                arrived[aggregator] = sum(arrived[c] for c in children)
            except Exception as error:  # a failing aggregator loses its subtree only
                sums[aggregator], arrived[aggregator] = WeightedSum(), 0
                failed[aggregator] = describe(error)
        names = [lcp for lcp, _ in unit.lcps] + [a for a, _ in unit.aggregators]
        return UnitResult(
            unit.root,
            sums[unit.root],
            {name: arrived[name] for name in names},
            [(name, failed[name]) for name in names if name in failed],
        )


@dataclass(frozen=True)
class FoldSubtrees(Request[TreeBatch]):
    """Fit and fold this worker's subtrees of a round.

    Attributes
    ----------
    parameters:
        The round's global parameters (put once by the driver).
    units:
        The subtrees to fold, each returned as one :class:`UnitResult`.
    instructions:
        The round's instructions (round number included).
    policy:
        Per-client config, update checks and clipping (from the root strategy).
    leaf_strategy:
        A robust rule each LCP applies to its own clients' updates; ``None``: a plain
        sample-weighted sum.
    """

    runner = TreeRunner

    parameters: Parameters
    units: Sequence[UnitPlan]
    instructions: Instructions
    policy: UpdatePolicy | None = None
    leaf_strategy: Strategy | None = None

    @property
    def round(self) -> int:
        """The round being fitted."""
        return self.instructions.round
