"""The driver's side of a hierarchical round: fold the workers' subtree sums, record failures.

:func:`fold_shares` takes each worker's share of the round after the dispatcher ran it
(:mod:`redfl.schemas.hierarchy_dispatch`): the :class:`~redfl.runtime.tree_runner.TreeBatch`
of every call (the worker's own and those that folded its units as guests) or the call's
error. A unit whose call failed (its worker died) or that was unfinished at the round's
deadline, and every failed LCP or aggregator inside a unit, is one recorded failure of its
subtree; the sites above the units are folded in site order, children first
(:attr:`~redfl.schemas.hierarchy_layout.Layout.driver_sites`). :func:`check_round` stops the
run when too few updates arrived.
"""

from __future__ import annotations

from collections.abc import Sequence

from redfl.core.arrays import WeightedSum
from redfl.core.result import Failure, FederationError
from redfl.runtime.dispatch import WorkerRound
from redfl.runtime.protocol import Outcome
from redfl.runtime.replies import FitBatch
from redfl.runtime.tree_runner import TreeBatch, UnitResult
from redfl.schemas.hierarchy_dispatch import Plans
from redfl.schemas.hierarchy_layout import FOLDING, Layout
from redfl.topology.assign import Assignment
from redfl.topology.tree import RelayTree


def unit_outcomes(share: WorkerRound) -> dict[int, UnitResult | str]:
    """Each of the share's units -> its result, or the cause of its failure."""
    calls: list[tuple[list[int], Outcome[FitBatch], str]] = []
    if share.home is not None:
        calls.append((share.unreleased(), share.home, f"worker {share.worker}"))
    calls.extend((indices, outcome, "a guest worker") for indices, outcome in share.stolen)
    got: dict[int, UnitResult | str] = dict(share.timed_out)
    for indices, outcome, who in calls:
        if outcome.error is not None:
            text = (str(outcome.error).strip().splitlines() or ["(no message)"])[0]
            cause = f"{who} failed: {type(outcome.error).__name__}: {text}"
            got.update((i, cause) for i in indices)
            continue
        batch = outcome.result()
        assert isinstance(batch, TreeBatch)
        got.update(zip(indices, batch.units, strict=True))
    return got


def fold_shares(
    tree: RelayTree,
    layout: Layout,
    assignment: Assignment,
    rnd: int,
    shares: Sequence[WorkerRound],
    plans: Plans,
    chosen: frozenset[str],
) -> tuple[WeightedSum, FitBatch, list[Failure], dict[str, float]]:
    """Fold a round's shares: (the server's sum, the clients' folded results, failures,
    metrics).

    The metrics are ``clients/<aggregator>`` (clients whose update is in that aggregator's
    sum), ``coverage`` (the fraction of ``chosen`` whose update reached the server) and
    ``root_bytes`` (the bytes of the partial sums the driver received). ``fitted.succeeded``
    keeps only the clients whose update reached the server.
    """
    sums: dict[str, WeightedSum] = {}
    arrived: dict[str, int] = {}
    fitted = FitBatch(total=None)
    failures: list[Failure] = []
    lost: list[tuple[str, str]] = []
    received = 0
    for share in shares:
        failures.extend(share.failures)
        for outcome in (share.home, *(o for _, o in share.stolen)):
            if outcome is not None and outcome.value is not None:
                failures.extend(outcome.value.failures)
                fitted.absorb(outcome.value)
        got = unit_outcomes(share)
        for index, plan in enumerate(plans[share.worker]):
            unit = got.get(index, "no reply")
            if isinstance(unit, str):
                sums[plan.root] = WeightedSum()
                lost.append((plan.root, unit))
                continue
            sums[unit.root] = unit.total
            arrived.update(unit.arrived)
            lost.extend(unit.failed)
            received += sum(a.nbytes for a in unit.total.sums.values())
    gone: set[str] = set()
    for site, cause in lost:
        failures.append(subtree_failure(tree, assignment, rnd, site, cause, chosen))
        gone.update(c for lcp in tree.lcps_under(site) for c in assignment[lcp])
    fitted.succeeded = [c for c in fitted.succeeded if c not in gone]
    for site in layout.driver_sites:
        total = WeightedSum()
        children = [c.name for c in tree.children(site, FOLDING)]
        for child in children:
            total.merge(sums[child])
        sums[site] = total
        arrived[site] = sum(arrived.get(c, 0) for c in children)
    extra = {f"clients/{s.name}": float(arrived.get(s.name, 0)) for s in tree.of_kind("aggregator")}
    extra["coverage"] = len(fitted.succeeded) / max(1, len(chosen))
    extra["root_bytes"] = float(received)
    return sums["server"], fitted, failures, extra


def subtree_failure(
    tree: RelayTree,
    assignment: Assignment,
    rnd: int,
    site: str,
    cause: str,
    chosen: frozenset[str],
) -> Failure:
    """The recorded failure of ``site``'s subtree: its cause, its sites, the clients lost."""
    sites = tree.subtree(site)
    lost = sum(1 for lcp in tree.lcps_under(site) for c in assignment[lcp] if c in chosen)
    reason = f"subtree {site} failed: {cause}; sites: {', '.join(sites)}; "
    return Failure(site, rnd, "fit", reason + f"{lost} sampled clients lost")


def check_round(
    tree: RelayTree,
    rnd: int,
    sampled: int,
    arrived: int,
    failures: list[Failure],
    min_coverage: float,
    min_fit_clients: int,
) -> None:
    """Stop the run when too few updates arrived: coverage below ``min_coverage``, then
    fewer than ``min_fit_clients``.

    Raises
    ------
    FederationError
        Naming the round, the coverage and the failed subtrees (else the failed clients).
    """
    coverage = arrived / max(1, sampled)
    subtrees = [f for f in failures if f.node_id in tree]
    reasons = "; ".join(f"{f.node_id}: {f.reason}" for f in (subtrees or failures)[:5])
    if coverage < min_coverage:
        raise FederationError(
            f"round {rnd}: coverage {coverage:.3f} ({arrived} of {sampled} sampled clients' "
            f"updates arrived) is below min_coverage {min_coverage:g}; failed: {reasons}",
            failures,
        )
    if arrived < min_fit_clients:
        raise FederationError(
            f"round {rnd}: {arrived} of {sampled} clients' updates arrived, fewer than "
            f"min_fit_clients={min_fit_clients}; failures: {reasons}",
            failures,
        )
