"""The star batch runner: a worker fits and evaluates its clients in batches.

A :class:`FitSegments` request carries a round's global parameters, the worker's clients
cut into segments and the round's :class:`~redfl.core.instructions.Instructions`. The
runner fits the segments in turn, folding each segment's updates into a partial sum when
the strategy is a weighted sum. While it runs, :class:`ReleaseSegments` may take the
segments not yet started (work stealing, :mod:`redfl.runtime.dispatch`); an idle worker
then runs them for it as *guests*. :class:`EvaluateClients` evaluates a list of clients.

A failing client is a value (a :class:`~redfl.core.result.Failure` in the reply), never a
crash of the worker: everything a client does, its instructions included, happens inside
the per-client ``try``.

What the runner does with a client's answer is written once, as functions a runtime whose
clients run elsewhere (sites, :mod:`redfl.runtime.sites`) calls on the answers it receives:
:func:`check_fit` (shape, finiteness, examples, the update policy), :func:`record_fit` (a
failure or a folded update), :func:`fold_segments` (segment sums in segment order) and
:func:`evaluation_report`. The same calls in the same order give the same bits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from redfl.algorithms.strategy import ClientUpdate, EvaluateReport
from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters, WeightedSum, check_update
from redfl.core.instructions import Instructions
from redfl.core.result import Failure
from redfl.nodes.client import Client
from redfl.runtime.protocol import Handlers, NodeHost, Request, Runner
from redfl.runtime.replies import EvaluateBatch, FitBatch
from redfl.runtime.virtual import VirtualNode
from redfl.runtime.work_queue import WorkQueue


class StarRunner(Runner):
    """Fits and evaluates clients in batches; gives up unstarted segments on request."""

    def __init__(self, host: NodeHost) -> None:
        super().__init__(host)
        self._queue = WorkQueue()  # the running fit's segments
        self._batches = 0
        self._busy = 0.0
        self._guests = 0
        self._guest_batches = 0

    def register(self, handlers: Handlers) -> None:
        """Answer :class:`FitSegments`, :class:`ReleaseSegments`, :class:`EvaluateClients`."""
        handlers.add(FitSegments, self.fit)
        handlers.add(ReleaseSegments, self.release)
        handlers.add(EvaluateClients, self.evaluate)

    def stats(self) -> dict[str, float]:
        """Batch calls, seconds busy fitting, guest fits and guest batches."""
        return {
            "batches": self._batches,
            "busy_seconds": self._busy,
            "guest_fits": self._guests,
            "guest_batches": self._guest_batches,
        }

    def fit(self, request: FitSegments) -> FitBatch:
        """Fit each segment's clients in turn; fold successful updates if ``fold``.

        With ``fold``, each segment is summed on its own and the segment sums are folded
        in order into ``total``, or, with ``separate``, returned one per segment in
        ``segment_totals``; ``segments_run`` says how many segments ran.
        """
        self._batches += 1
        started = time.perf_counter()
        self.host.add_guests(request.guests)
        self._guests += len(request.guests)
        self._guest_batches += 1 if request.guests else 0
        batch = fold_segments(
            request,
            self._queue.run(len(request.segments)),
            lambda node_ids, part: self._fit_clients(request, node_ids, part),
        )
        self._busy += time.perf_counter() - started
        return batch

    def release(self, request: ReleaseSegments) -> list[int]:
        """Give up the latter half (rounded up) of the running fit's unstarted segments."""
        return self._queue.release()

    def _fit_clients(self, request: FitSegments, node_ids: Sequence[str], batch: FitBatch) -> None:
        """Fit each client of ``node_ids`` in turn, recording each result in ``batch``."""
        parameters = request.parameters
        policy = request.policy or UpdatePolicy()
        for node_id in node_ids:
            self.host.running = (node_id, time.monotonic())
            try:
                client = self._client(node_id)
                if client.stateful:
                    client.state = self.host.states.get(node_id)
                fitted = client.fit(parameters, client_instructions(request, node_id))
                checked = check_fit(fitted, parameters, policy)
                if isinstance(checked, Accepted) and client.stateful:
                    self.host.states.put(node_id, client.state)
            except Exception as error:  # a failing client is a value, not a crash
                checked = describe(error)
            finally:
                self.host.running = None
                self._detach_state(node_id)
            record_fit(batch, node_id, request.round, checked)

    def evaluate(self, request: EvaluateClients) -> EvaluateBatch:
        """Evaluate ``parameters`` on each client in turn."""
        self._batches += 1
        batch = EvaluateBatch()
        for node_id in request.node_ids:
            self.host.running = (node_id, time.monotonic())
            try:
                client = self._client(node_id)
                if client.stateful:
                    client.state = self.host.states.get(node_id)
                evaluated = client.evaluate(request.parameters, request.instructions)
                report = evaluation_report(node_id, evaluated)
            except Exception as error:
                reason = describe(error)
                batch.failures.append(Failure(node_id, request.round, "evaluate", reason))
                continue
            finally:
                self.host.running = None
                self._detach_state(node_id)
            batch.reports.append(report)
        return batch

    def _client(self, node_id: str) -> Client:
        node = self.host.node(node_id)
        if not isinstance(node, Client):
            raise TypeError(f"node {node_id!r} is a {type(node).__name__}, not a Client")
        return node

    def _detach_state(self, node_id: str) -> None:
        """Drop a stateful client's reference to its state: the store alone holds it."""
        node = self.host.built(node_id)
        if isinstance(node, Client) and node.stateful:
            node.state = {}


class OfRound:
    """A request about one round (a mixin): its ``round`` comes from its ``instructions``."""

    instructions: Instructions

    @property
    def round(self) -> int:
        """The round being fitted or evaluated."""
        return self.instructions.round


@dataclass(frozen=True)
class FitSegments(OfRound, Request[FitBatch]):
    """Fit a round's clients, segment by segment, from the global ``parameters``.

    Attributes
    ----------
    segments:
        Lists of client ids, run in order (the unit of work stealing).
    instructions:
        The round's instructions (its round number included); a client's own entries
        from ``policy`` are merged over them.
    fold:
        Fold successful updates into partial sums (weighted-sum strategies).
    policy:
        Per-client config, update checks and clipping (from the strategy).
    guests:
        Clients hosted by another worker that this one runs for it (built here).
    separate:
        Return one sum per segment (``segment_totals``) instead of one in total.
    """

    runner: ClassVar[type[Runner] | None] = StarRunner  # a subclass may name its own

    parameters: Parameters
    segments: Sequence[Sequence[str]]
    instructions: Instructions
    fold: bool
    policy: UpdatePolicy | None = None
    guests: Sequence[VirtualNode] = ()
    separate: bool = False


@dataclass(frozen=True)
class ReleaseSegments(Request[list[int]]):
    """Ask a busy worker for the tail of its unstarted segments (-> their indices)."""

    runner = StarRunner


@dataclass(frozen=True)
class EvaluateClients(OfRound, Request[EvaluateBatch]):
    """Evaluate ``parameters`` on each of ``node_ids`` with the round's instructions."""

    runner = StarRunner

    parameters: Parameters
    node_ids: Sequence[str]
    instructions: Instructions


def describe(error: BaseException) -> str:
    """``TypeName: message`` of a client's error (the reason of its failure)."""
    text = str(error) or "(no message)"
    return f"{type(error).__name__}: {text}"


@dataclass(frozen=True)
class Accepted:
    """A client's fit that passed every check, as the batch folds it.

    Attributes
    ----------
    parameters:
        The update (clipped, when the policy clips).
    weight:
        Its weight in the sum (its examples, or 1 with equal weights).
    num_examples:
        The examples the client reported.
    metrics:
        The client's metrics, as floats.
    stats:
        The policy's counters for this update (e.g. ``unclipped``).
    """

    parameters: Parameters
    weight: float
    num_examples: int
    metrics: dict[str, float]
    stats: dict[str, float]


def client_instructions(request: FitSegments, node_id: str) -> Instructions:
    """The instructions client ``node_id`` gets: the round's, with its own policy entries
    merged over them."""
    own = (request.policy or UpdatePolicy()).per_client.get(node_id)
    return request.instructions.merged(own) if own else request.instructions


def check_fit(fitted: Any, reference: Parameters, policy: UpdatePolicy) -> Accepted | str:
    """Check a client's ``(parameters, num_examples, metrics)`` against the global
    ``reference`` and apply ``policy``: the update to fold, or why it fails.

    Raises
    ------
    Exception
        Whatever unpacking ``fitted`` or converting its metrics raises (the caller turns it
        into the client's failure with :func:`describe`).
    """
    new, num_examples, metrics = fitted
    reason = check_update(new, reference)
    if reason is None and (not isinstance(num_examples, int | np.integer) or num_examples < 1):
        reason = f"num_examples must be a positive int, got {num_examples!r}"
    count, report = int(num_examples), {k: float(v) for k, v in metrics.items()}
    if reason is None:
        new, weight, stats, reason = policy.apply(new, reference, count)
    if reason is not None:
        return reason
    return Accepted(new, weight, count, report, stats)


def record_fit(batch: FitBatch, node_id: str, rnd: int, checked: Accepted | str) -> None:
    """Record client ``node_id``'s fit in ``batch``: a failure (``checked`` is its reason)
    or a success (folded into ``total``, else kept in ``updates``)."""
    if isinstance(checked, str):
        batch.failures.append(Failure(node_id, rnd, "fit", checked))
        return
    for name, value in checked.stats.items():
        batch.stats[name] = batch.stats.get(name, 0.0) + value
    if batch.total is not None:
        batch.total.add(checked.parameters, checked.weight)
    else:
        batch.updates.append(
            ClientUpdate(node_id, checked.parameters, checked.num_examples, checked.metrics)
        )
    batch.succeeded.append(node_id)
    batch.add_metrics(checked.metrics, checked.num_examples)


def fold_segments(
    request: FitSegments,
    indices: Iterable[int],
    run_segment: Callable[[Sequence[str], FitBatch], None],
) -> FitBatch:
    """The reply to ``request`` for the segments ``indices`` (in order):
    ``run_segment(node_ids, part)`` records each segment's clients in a part of its own,
    whose sum is folded into ``total`` (or kept apart, with ``separate``)."""
    batch = FitBatch(total=WeightedSum() if request.fold else None)
    for index in indices:
        part = FitBatch(total=WeightedSum() if request.fold else None)
        run_segment(request.segments[index], part)
        batch.absorb(part)
        batch.failures.extend(part.failures)
        batch.updates.extend(part.updates)
        if part.total is not None and batch.total is not None:
            if request.separate:
                batch.segment_totals.append(part.total)
            else:
                batch.total.merge(part.total)
        batch.segments_run += 1
    return batch


def evaluation_report(node_id: str, evaluated: Any) -> EvaluateReport:
    """Client ``node_id``'s ``(loss, num_examples, metrics)`` as a report.

    Raises
    ------
    ValueError
        If the loss is NaN (the client's failure).
    Exception
        Whatever unpacking or converting ``evaluated`` raises.
    """
    loss, num_examples, metrics = evaluated
    loss = float(loss)
    if loss != loss:  # NaN
        raise ValueError("evaluation loss is NaN")
    return (node_id, loss, int(num_examples), {k: float(v) for k, v in metrics.items()})
