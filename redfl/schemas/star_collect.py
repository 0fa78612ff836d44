"""Collect a star round's replies: fit replies folded in a fixed order, evaluation reports.

Fit replies fold in worker order, then segment order: a worker's own prefix sum first, then
the sums of the segments an idle worker ran for it, in segment order. That is the sum the
worker would have made alone, so work stealing never changes the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from redfl.algorithms.strategy import ClientUpdate, EvaluateReport
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.instructions import Instructions
from redfl.core.result import Failure
from redfl.runtime.backend import Backend
from redfl.runtime.dispatch import Calls, WorkerRound
from redfl.runtime.protocol import Outcome, Pending, Unfinished
from redfl.runtime.replies import FitBatch
from redfl.runtime.star_runner import EvaluateClients, FitSegments, ReleaseSegments
from redfl.runtime.supervisor import Supervisor
from redfl.runtime.virtual import VirtualNode


def fit_calls(backend: Backend, request: FitSegments, specs: Mapping[str, VirtualNode]) -> Calls:
    """How the dispatcher (:func:`~redfl.runtime.dispatch.run_round`) reaches the workers
    for a round's fit: each share's segments with ``request``'s parameters and instructions,
    guests (stolen or re-run segments) described by ``specs``."""

    def guest(worker: int, share: WorkerRound, indices: list[int]) -> Pending[FitBatch]:
        segments = [share.segment(i) for i in indices]
        guests = [specs[node_id] for segment in segments for node_id in segment]
        return backend.call(
            worker, replace(request, segments=segments, guests=guests, separate=True)
        )

    return Calls(
        home=lambda share: backend.call(share.worker, replace(request, segments=share.segments)),
        guest=guest,
        release=lambda worker: backend.call(worker, ReleaseSegments()),
    )


def collect(
    rnd: int, shares: list[WorkerRound]
) -> tuple[WeightedSum, list[ClientUpdate], FitBatch, list[Failure]]:
    """Fold the round's replies: (total, individual updates, folded metrics, failures).

    A worker whose call failed turns into one failure per client of the segments it ran.
    """
    total = WeightedSum()
    updates: list[ClientUpdate] = []
    fitted = FitBatch(total=None)
    failures: list[Failure] = []
    for share in shares:
        failures.extend(share.failures)
        for index, reason in share.given_up.items():
            failures.extend(Failure(n, rnd, "fit", reason) for n in share.segment(index))
        replies: list[tuple[list[list[str]], Outcome[FitBatch]]] = []
        if share.home is not None:
            kept = [s for i, s in enumerate(share.segments) if i not in share.released]
            replies.append((kept, share.home))
        stolen_sums: dict[int, WeightedSum] = {}
        for indices, outcome in share.stolen:
            replies.append(([share.segment(i) for i in indices], outcome))
            if outcome.value is not None:
                stolen_sums.update(zip(indices, outcome.value.segment_totals, strict=False))
        for segments, outcome in replies:
            if outcome.error is not None:
                error = outcome.error
                reason = f"worker {share.worker} failed: {type(error).__name__}: {error}"
                failures.extend(Failure(i, rnd, "fit", reason) for s in segments for i in s)
                continue
            batch = outcome.result()
            failures.extend(batch.failures)
            updates.extend(batch.updates)
            fitted.absorb(batch)
        worker_sum = WeightedSum()
        if share.home is not None and share.home.value is not None:
            home = share.home.value
            if home.total is not None:
                worker_sum.merge(home.total)
        for index in sorted(stolen_sums):
            worker_sum.merge(stolen_sums[index])
        total.merge(worker_sum)
    return total, updates, fitted, failures


def evaluate(
    backend: Backend,
    groups: Sequence[tuple[int, list[str]]],
    parameters: Any,
    instructions: Instructions,
    timeout: float | None = None,
    supervisor: Supervisor | None = None,
) -> tuple[list[EvaluateReport], list[Failure]]:
    """Evaluate ``parameters`` (as put by the backend) on each worker's group of clients.

    Returns the reports in worker order and the failures; a worker whose call failed, or
    had not answered after ``timeout`` seconds (it is then replaced), turns into one failure
    per client of its group. A lost worker is reported to ``supervisor``.
    """
    rnd = instructions.round
    calls = [backend.call(w, EvaluateClients(parameters, ids, instructions)) for w, ids in groups]
    reports: list[EvaluateReport] = []
    failures: list[Failure] = []
    outcomes = backend.gather(calls, timeout=timeout)
    for (worker, ids), outcome in zip(groups, outcomes, strict=True):
        if outcome.error is not None:
            reason = f"worker {worker} failed: {outcome.error}"
            lost = backend.lost(outcome.error)
            if isinstance(outcome.error, Unfinished):
                reason = f"evaluation timeout after {timeout:g} s"
                if supervisor is not None:
                    supervisor.replace(worker, f"round {rnd}: {reason}")
            elif lost is not None and supervisor is not None:
                reason = f"worker {worker} lost: {lost}"
                supervisor.lost(worker, f"round {rnd}: {lost}")
            failures.extend(Failure(i, rnd, "evaluate", reason) for i in ids)
            continue
        batch = outcome.result()
        failures.extend(batch.failures)
        reports.extend(batch.reports)
    return reports, failures


def evaluation(
    federated: Callable[[], tuple[float | None, dict[str, float]] | None],
    evaluate_fn: Callable[[Parameters], tuple[float, Mapping[str, float]]] | None,
    parameters: Parameters,
) -> tuple[float | None, float | None, dict[str, float]]:
    """A round's evaluation of the new parameters: (loss, accuracy, metrics).

    ``federated()`` runs the federated evaluation (``None`` when no client evaluates);
    the central evaluation ``evaluate_fn``, when there is one, gives the round's loss and
    accuracy.
    """
    metrics: dict[str, float] = {}
    loss, accuracy = None, None
    reply = federated()
    if reply is not None:
        loss, report = reply
        metrics.update({f"federated_{k}": v for k, v in report.items()})
        accuracy = report.get("accuracy")
        if loss is not None:
            metrics["federated_loss"] = loss
    if evaluate_fn is not None:
        central_loss, central = evaluate_fn(parameters)
        loss, accuracy = float(central_loss), central.get("accuracy")
        metrics["central_loss"] = loss
        metrics.update({f"central_{k}": float(v) for k, v in central.items()})
    return loss, None if accuracy is None else float(accuracy), metrics
