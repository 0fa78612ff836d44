"""The tree runner: a worker folds whole subtrees of a hierarchy into one partial sum each.

Aggregators and LCPs are nodes hosted by a worker, not processes. A :class:`FoldSubtrees`
request carries the round's global parameters (put once, one call per worker) and the
subtrees (*units*) this worker folds, each as a :class:`UnitPlan`: its LCPs with their
sampled clients and its aggregators with their children, children first. The worker takes
the units in turn; for each it

1. fits every LCP's sampled clients with the star batch runner (one ``FitSegments`` handled
   in-process, one segment per LCP: the same per-client ``try``, update checks and update
   policy as the star, and the same probe of the running client for ``client_timeout``);
2. folds each LCP into one sample-weighted float64 partial sum
   (:class:`~redfl.core.arrays.WeightedSum`), or applies the ``leaf_strategy`` to that
   LCP's own updates (:func:`~redfl.algorithms.hierarchy.leaf_sum`), or, with secure
   aggregation, sums them with a whole SecAgg+ round among the LCP's clients
   (:func:`~redfl.privacy.secagg.table.secure_sum`: the LCP, hence every site above it,
   learns only its clients' sum);
3. folds the unit's aggregators' children in site order, and returns the unit's sum.

While it runs, :class:`ReleaseUnits` may take the units not yet started (work stealing
between subtrees, :mod:`redfl.runtime.dispatch`); an idle worker then folds them as guests.
A unit's sum depends only on its clients, so who folds it never changes the result. The
host's ``piece`` names the unit being folded and since when, so a probe finds a subtree
past its timeout (:class:`~redfl.runtime.watch.Watch`).

An LCP or aggregator that fails (its leaf strategy refuses the round, say) is a value: the
site is listed in :attr:`UnitResult.failed` with its reason and contributes nothing; the
rest of the unit folds on. Client failures come back as in the star.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from redfl.algorithms.hierarchy import leaf_sum
from redfl.algorithms.strategy import ClientUpdate, Strategy
from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.instructions import Instructions
from redfl.privacy.secagg import SecureAggregationConfig
from redfl.privacy.secagg.table import secure_sum
from redfl.runtime.protocol import Handlers, NodeHost, Request, Runner
from redfl.runtime.replies import FitBatch
from redfl.runtime.star_runner import FitSegments, OfRound, describe
from redfl.runtime.virtual import VirtualNode
from redfl.runtime.work_queue import WorkQueue


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
class TreeBatch(FitBatch):
    """A worker's reply: the clients' folded metrics, successes, failures and policy
    counters (as a :class:`~redfl.runtime.replies.FitBatch`; ``total`` is unused) and one
    :class:`UnitResult` per unit it ran, in request order."""

    units: list[UnitResult] = field(default_factory=list)


class TreeRunner(Runner):
    """Folds the subtrees of a hierarchy that live on (or are handed to) this worker."""

    def __init__(self, host: NodeHost) -> None:
        super().__init__(host)
        self._queue = WorkQueue()  # the running fold's units
        self._folded = 0
        self._guest_units = 0

    def register(self, handlers: Handlers) -> None:
        """Answer :class:`FoldSubtrees` and :class:`ReleaseUnits`."""
        handlers.add(FoldSubtrees, self.fold)
        handlers.add(ReleaseUnits, self.release)

    def stats(self) -> dict[str, float]:
        """How many units this worker folded, and how many of them for another worker."""
        return {"tree_units": self._folded, "guest_units": self._guest_units}

    def fold(self, request: FoldSubtrees) -> TreeBatch:
        """Fit and fold the units in turn (see the module docstring)."""
        self.host.add_guests(request.guests)
        batch = TreeBatch(total=None)
        for index in self._queue.run(len(request.units)):
            self.host.piece = (index, time.monotonic())  # probed for the subtree timeout
            try:
                batch.units.append(self._unit(request.units[index], request, batch))
            finally:
                self.host.piece = None
            self._folded += 1
            self._guest_units += 1 if request.guests else 0
        return batch

    def release(self, request: ReleaseUnits) -> list[int]:
        """Give up the latter half (rounded up) of the running fold's unstarted units."""
        return self._queue.release()

    def _unit(self, unit: UnitPlan, request: FoldSubtrees, batch: TreeBatch) -> UnitResult:
        """Fit one unit's LCPs, fold them and the unit's aggregators; add the clients'
        results to ``batch``."""
        fold = request.leaf_strategy is None and request.secure is None
        fit = FitSegments(
            request.parameters,
            [list(clients) for _, clients in unit.lcps],
            request.instructions,
            fold,
            request.policy,
            separate=True,
        )
        fitted = self.host.handle(fit)
        batch.absorb(fitted)
        batch.failures.extend(fitted.failures)
        sums: dict[str, WeightedSum] = {}
        arrived: dict[str, int] = {}
        failed: dict[str, str] = {}
        done = set(fitted.succeeded)
        if fold:
            for (lcp, clients), total in zip(unit.lcps, fitted.segment_totals, strict=True):
                sums[lcp] = total
                arrived[lcp] = sum(1 for c in clients if c in done)
        else:
            by_client = {u.node_id: u for u in fitted.updates}
            for lcp, clients in unit.lcps:
                mine = [by_client[c] for c in clients if c in by_client]
                self._leaf(lcp, mine, request, sums, arrived, failed)
        return self._fold_unit(unit, sums, arrived, failed)

    @staticmethod
    def _secure_leaf(updates: Sequence[ClientUpdate], request: FoldSubtrees) -> WeightedSum:
        """One LCP's sum of its clients' updates by a secure round among them."""
        if request.secure is None:
            raise ValueError("no [secure_aggregation] settings")
        equal = request.policy is not None and request.policy.equal_weights
        inputs = {
            i: (u.parameters, 1.0 if equal else float(u.num_examples))
            for i, u in enumerate(updates)
        }
        if len(inputs) < 2:
            raise ValueError(
                f"secure aggregation needs at least 2 clients' updates under an LCP, got "
                f"{len(inputs)} (a sum of one is that client's update)"
            )
        return secure_sum(request.secure, request.parameters, inputs, request.round)

    def _leaf(
        self,
        lcp: str,
        updates: Sequence[ClientUpdate],
        request: FoldSubtrees,
        sums: dict[str, WeightedSum],
        arrived: dict[str, int],
        failed: dict[str, str],
    ) -> None:
        """Apply the leaf strategy (or a secure round) to one LCP's updates; a refusal
        fails the LCP only."""
        try:
            if request.secure is not None:
                sums[lcp] = self._secure_leaf(updates, request)
            else:
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
class FoldSubtrees(OfRound, Request[TreeBatch]):
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
    guests:
        The clients of units another worker hosts, folded here for it (built here).
    secure:
        Secure aggregation settings: each LCP sums its clients by a secure round.
    """

    runner = TreeRunner

    parameters: Parameters
    units: Sequence[UnitPlan]
    instructions: Instructions
    policy: UpdatePolicy | None = None
    leaf_strategy: Strategy | None = None
    guests: Sequence[VirtualNode] = ()
    secure: SecureAggregationConfig | None = None


@dataclass(frozen=True)
class ReleaseUnits(Request[list[int]]):
    """Ask a busy worker for the tail of its unstarted units (-> their indices)."""

    runner = TreeRunner
