"""Run a hierarchical round's subtrees on the workers: the star's dispatcher, unit by unit.

Each worker's *units* (the subtrees it folds, :mod:`redfl.schemas.hierarchy_layout`) are
the segments of its share of the round (:mod:`redfl.runtime.dispatch`), so the hierarchy
gets what the star has:

- **work stealing between subtrees**: an idle worker asks a busy one for the tail of its
  unstarted units (:class:`~redfl.runtime.tree_runner.ReleaseUnits`) and folds them as
  guests; a unit's sum depends only on its clients, so the result does not change;
- **client timeouts**: a client past ``client_timeout`` is found by probing its worker; it
  becomes a failure ``timeout after X s``, the worker is replaced (a running call cannot be
  interrupted) and its unfinished units are folded again without that client, by an idle
  worker or the re-created one;
- **the round's deadline**: units unfinished at ``round_timeout`` are ``timed_out`` (the
  caller records each as a failed subtree) and their workers are replaced.

A worker that *dies* is not re-run: its units become failed subtrees for the round (a
client that kills its process would kill every worker it were re-run on), and the worker
is re-created for the next round. A pinned subtree runs only on its own worker, which
folds nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from redfl.runtime.backend import Backend
from redfl.runtime.dispatch import Calls, WorkerRound, run_round
from redfl.runtime.protocol import Pending
from redfl.runtime.tree_runner import FoldSubtrees, ReleaseUnits, TreeBatch, UnitPlan
from redfl.runtime.virtual import VirtualNode
from redfl.runtime.watch import Watch

Plans = Mapping[int, Sequence[UnitPlan]]
"""Worker -> the units it folds this round, in site order."""


def shares_of(plans: Plans, pinned: frozenset[int] = frozenset()) -> list[WorkerRound]:
    """One share per worker with units: a segment per unit holding the unit's sampled
    clients (for sizes, progress and skips); the ``pinned`` workers' shares stay put."""
    return [
        WorkerRound(
            worker,
            [[c for _, clients in plan.lcps for c in clients] for plan in plans[worker]],
            movable=worker not in pinned,
        )
        for worker in sorted(plans)
    ]


def without(plan: UnitPlan, skipped: set[str]) -> UnitPlan:
    """``plan`` with the ``skipped`` clients (past their timeout) left out."""
    if not skipped:
        return plan
    lcps = tuple((lcp, tuple(c for c in clients if c not in skipped)) for lcp, clients in plan.lcps)
    return replace(plan, lcps=lcps)


def fold_round(
    backend: Backend,
    shares: Sequence[WorkerRound],
    plans: Plans,
    request: FoldSubtrees,
    specs: Mapping[str, VirtualNode],
    progress: Callable[[int], None],
    steal: bool,
    watch: Watch,
) -> None:
    """Fold every share's units with ``request``'s parameters and instructions, filling
    each share's ``home``, ``stolen`` and ``timed_out`` (see the module docstring)."""

    def guest(worker: int, share: WorkerRound, indices: list[int]) -> Pending[TreeBatch]:
        units = [without(plans[share.worker][i], share.skipped) for i in indices]
        guests = [specs[c] for unit in units for _, clients in unit.lcps for c in clients]
        return backend.call(worker, replace(request, units=units, guests=guests))

    calls = Calls(
        home=lambda share: backend.call(share.worker, replace(request, units=plans[share.worker])),
        guest=guest,
        release=lambda worker: backend.call(worker, ReleaseUnits()),
    )
    run_round(backend, shares, calls, progress, steal=steal, watch=watch)
