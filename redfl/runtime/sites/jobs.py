"""A job: one task for one site, and the reply the driver waits for.

The driver's ``backend.call(site, FitSegments(...))`` becomes a :class:`FitJob` (an
``EvaluateClients`` an :class:`EvaluateJob`): the task's frame, made once, and a future.
Whatever happens to the job, the future gets the reply a worker would have given: the
site's answer checked and folded exactly as a worker checks and folds a client's
(:func:`~redfl.runtime.star_runner.check_fit`, :func:`~redfl.runtime.star_runner.record_fit`,
:func:`~redfl.runtime.star_runner.fold_segments`), or a failure of the site's client with
the reason (it failed, sent a malformed or oversized reply, left, was abandoned). So a
site's failure is recorded like any client's and the round goes on.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, cast

from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.core.result import Failure
from redfl.runtime.replies import EvaluateBatch, FitBatch
from redfl.runtime.sites.wire import (
    Broadcast,
    EvaluateReply,
    FitReply,
    Task,
    WireError,
    read_reply,
    task_frame,
)
from redfl.runtime.star_runner import (
    Accepted,
    FitSegments,
    check_fit,
    describe,
    evaluation_report,
    fold_segments,
    record_fit,
)

EVALUATE_REPLY_BYTES = 1 << 20
"""The largest evaluate reply a site may send."""
FIT_SLACK_BYTES = 1 << 20
"""A fit reply may be twice the global parameters' size plus this."""

B = TypeVar("B")


class Job(Generic[B]):
    """One task for a site and the future of its reply.

    Parameters
    ----------
    job_id:
        Unique in the run; the site answers under it.
    worker:
        The site's index.
    node_id:
        The site's client.
    rnd:
        The round.
    chunks:
        The task's frame, made once.
    limit:
        The most bytes the site's reply may have.
    """

    kind: str

    def __init__(
        self, job_id: str, worker: int, node_id: str, rnd: int, chunks: list[bytes], limit: int
    ) -> None:
        self.id = job_id
        self.worker = worker
        self.node_id = node_id
        self.round = rnd
        self.chunks = chunks
        self.limit = limit
        self.queued = time.monotonic()
        """When the job was queued for its site (the roster's clock)."""
        self.future: Future[B] = Future()
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        """Whether the reply is settled."""
        return self.future.done()

    def answer(self, body: bytes) -> bool:
        """Settle the job with the site's reply frame ``body``; ``False`` if the frame was
        malformed (then the site's client fails with the reason)."""
        try:
            batch = self._read(body)
        except WireError as error:
            self.fail(f"the site sent a malformed reply: {error}")
            return False
        self._settle(batch)
        return True

    def check(self, reply: Any, expected: type) -> None:
        """Refuse a reply of another type or job.

        Raises
        ------
        WireError
            If ``reply`` is not an ``expected`` answering this job.
        """
        job = getattr(reply, "job", None)
        if job != self.id or not isinstance(reply, expected):
            raise WireError(
                f"a {type(reply).__name__} for job {job!r} does not answer the "
                f"{self.kind} job {self.id!r}"
            )

    def fail(self, reason: str) -> None:
        """Settle the job as a failure of the site's client (``reason``); nothing if it is
        settled already."""
        self._settle(self._failed(reason))

    def succeeded(self) -> bool:
        """Whether the settled reply holds the client's success."""
        result: Any = self.future.result() if self.done else None
        return result is not None and not result.failures

    def _settle(self, batch: B) -> None:
        with self._lock:
            if not self.future.done():
                self.future.set_result(batch)

    def _read(self, body: bytes) -> B:
        """The reply to settle with, read from the site's frame ``body``.

        Raises
        ------
        WireError
            If the frame is malformed or does not answer this job.
        """
        raise NotImplementedError

    def _failed(self, reason: str) -> B:
        raise NotImplementedError


class FitJob(Job[FitBatch]):
    """A fit task: the site's update is checked against ``reference`` under ``policy`` on
    the server, as a worker checks a client's, and folded as ``request`` asks."""

    kind = "fit"

    def __init__(
        self,
        job_id: str,
        worker: int,
        request: FitSegments,
        shared: Broadcast,
        instructions: Instructions,
        node_id: str,
    ) -> None:
        task = Task("fit", job_id, node_id, instructions, shared.parameters)
        size = sum(array.nbytes for array in shared.parameters.values())
        chunks = task_frame(task, shared)
        limit = 2 * size + FIT_SLACK_BYTES
        super().__init__(job_id, worker, node_id, instructions.round, chunks, limit)
        self.request = request
        self.reference: Parameters = shared.parameters
        self.policy = request.policy or UpdatePolicy()

    def _read(self, body: bytes) -> FitBatch:
        reply = read_reply(body)
        self.check(reply, FitReply)
        return self._batch(cast(FitReply, reply))

    def _batch(self, reply: FitReply) -> FitBatch:
        checked: Accepted | str
        if not reply.ok:
            checked = reply.reason or "(no reason)"
        else:
            try:
                fitted = (reply.parameters, reply.num_examples, reply.metrics)
                checked = check_fit(fitted, self.reference, self.policy)
            except Exception as error:  # as on a worker: a bad update is the client's failure
                checked = describe(error)
        return self._fold(checked)

    def _failed(self, reason: str) -> FitBatch:
        return self._fold(reason)

    def _fold(self, checked: Accepted | str) -> FitBatch:
        def run(node_ids: Any, part: FitBatch) -> None:
            for node_id in node_ids:
                record_fit(part, node_id, self.round, checked)

        return fold_segments(self.request, range(len(self.request.segments)), run)


class EvaluateJob(Job[EvaluateBatch]):
    """An evaluate task: the site's loss, examples and metrics become its report."""

    kind = "evaluate"

    def __init__(
        self, job_id: str, worker: int, shared: Broadcast, instructions: Instructions, node_id: str
    ) -> None:
        task = Task("evaluate", job_id, node_id, instructions, shared.parameters)
        chunks = task_frame(task, shared)
        super().__init__(job_id, worker, node_id, instructions.round, chunks, EVALUATE_REPLY_BYTES)

    def _read(self, body: bytes) -> EvaluateBatch:
        reply = read_reply(body)
        self.check(reply, EvaluateReply)
        return self._batch(cast(EvaluateReply, reply))

    def _batch(self, reply: EvaluateReply) -> EvaluateBatch:
        if not reply.ok:
            return self._failed(reply.reason or "(no reason)")
        try:
            report = evaluation_report(
                self.node_id, (reply.loss, reply.num_examples, reply.metrics)
            )
        except Exception as error:  # a NaN loss, as on a worker
            return self._failed(describe(error))
        return EvaluateBatch(reports=[report])

    def _failed(self, reason: str) -> EvaluateBatch:
        return EvaluateBatch(failures=[Failure(self.node_id, self.round, "evaluate", reason)])
