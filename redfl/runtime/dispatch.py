"""Run a round's clients on their workers, an idle worker taking a slow one's pending clients.

Each worker gets one call per round with its clients cut into a few *segments* (in sampling
order). A worker folds each segment into its own partial sum, then folds the segment sums
in order into the worker's sum. When a worker is idle while another still runs, the driver
asks the busy one to *release* half of the segments it has not started (from its tail) and
hands them to the idle one, which returns one sum per segment. The driver then folds the
busy worker's prefix with the released segments' sums in segment order: exactly the sum the
busy worker would have made alone. So stealing changes who runs a client, never the result,
and the common case costs one call per worker.

Faults (:class:`Watch`) reuse the same fold. A worker lost mid-call (its process died or its
machine was lost) or ended by the driver (one of its clients, or the subtree it folds, ran
past its timeout, found by probing the worker while waiting) leaves its call's segments
*orphaned*: they are re-run, one sum per segment, by the first idle worker (or, when clients
may not move, by the re-created worker), and fold exactly as the lost call would have. A
round that starts while a worker is still being re-created treats its whole share so. A
client past its timeout becomes a failure and is left out of the re-run, as a client that
raised would be; a segment past its own timeout, or lost with its worker more often than the
watch re-runs it (``Watch.reruns``), is *given up*: a failure with its cause, never re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redfl.core.result import Failure
from redfl.runtime.backend import Backend
from redfl.runtime.protocol import Outcome, Pending
from redfl.runtime.replies import FitBatch
from redfl.runtime.watch import Job, Watch

SEGMENTS_PER_WORKER = 4
"""Segments per worker and round: the unit of work stealing."""


def segments_of(node_ids: Sequence[str], count: int = SEGMENTS_PER_WORKER) -> list[list[str]]:
    """Cut ``node_ids`` (in order) into up to ``count`` near-equal, non-empty segments.

    Examples
    --------
    >>> segments_of(list("abcdefg"), 3)
    [['a', 'b', 'c'], ['d', 'e'], ['f', 'g']]
    """
    count = max(1, min(count, len(node_ids)))
    size, extra = divmod(len(node_ids), count)
    segments, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        segments.append(list(node_ids[start:end]))
        start = end
    return segments


@dataclass
class WorkerRound:
    """One worker's share of a round: its segments, its own reply and what others ran.

    ``skipped`` clients (past their timeout) are left out of re-runs; ``failures`` holds
    the failures the driver recorded for them. ``given_up`` maps the segments that will not
    run to the reason: unfinished at the round's deadline, past their own timeout, or lost
    with their worker more often than the watch re-runs them (the caller records them: a
    failure per client in the star, per subtree in a hierarchy). A share that is not
    ``movable`` (a pinned subtree) runs only on its own worker, and that worker runs no other
    share.
    """

    worker: int
    segments: list[list[str]]
    home: Outcome[FitBatch] | None = None
    released: list[int] = field(default_factory=list)
    stolen: list[tuple[list[int], Outcome[FitBatch]]] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)
    given_up: dict[int, str] = field(default_factory=dict)
    movable: bool = True

    def segment(self, index: int) -> list[str]:
        """Segment ``index`` without its skipped clients."""
        return [node_id for node_id in self.segments[index] if node_id not in self.skipped]

    def unreleased(self) -> list[int]:
        """The indices of the segments the worker's own call runs."""
        return [i for i in range(len(self.segments)) if i not in self.released]

    def size(self, indices: Sequence[int]) -> int:
        """How many clients the segments ``indices`` hold."""
        return sum(len(self.segments[i]) for i in indices)


@dataclass(frozen=True)
class Calls:
    """How the dispatcher reaches workers (pending replies from ``Backend.call``)."""

    home: Callable[[WorkerRound], Pending[FitBatch]]
    """Start a worker's own call for the round."""
    guest: Callable[[int, WorkerRound, list[int]], Pending[FitBatch]]
    """Start, on an idle worker, the given segments of another worker's round."""
    release: Callable[[int], Pending[list[int]]]
    """Ask a busy worker to give up the tail of its unstarted segments (-> their indices)."""


def run_round(
    backend: Backend,
    shares: Sequence[WorkerRound],
    calls: Calls,
    on_done: Callable[[int], None] | None = None,
    steal: bool = True,
    watch: Watch | None = None,
) -> None:
    """Run every share to the end, filling ``home`` and ``stolen`` of each.

    ``on_done(n)`` reports ``n`` more clients finished. A worker whose call failed is not
    asked to release anything; its share's outcome carries the error. With ``watch``,
    lost workers are re-created and their segments re-run, clients past the timeout
    fail, and the round ends by its deadline.

    Raises
    ------
    FederationError
        If a worker is lost more often than the watch's supervisor allows.
    """
    watch = watch or Watch()
    closed = {s.worker for s in shares if not s.movable}
    running: dict[int, Job[WorkerRound]] = {}
    drained: set[int] = set()
    orphans: list[tuple[WorkerRound, list[int]]] = []
    for share in shares:
        if watch.ready(share.worker):
            running[share.worker] = Job(share, None, calls.home(share))
        else:  # being re-created: others run its share meanwhile (or it, once back)
            share.released.extend(range(len(share.segments)))
            drained.add(share.worker)
            orphans.append((share, list(range(len(share.segments)))))

    lost: dict[tuple[int, int], int] = {}  # (share's worker, segment) -> times lost

    def orphan(job: Job[WorkerRound], died: str | None = None) -> None:
        """Queue the job's unfinished segments for a re-run (``died``: its worker died)."""
        share = job.share
        indices = job.indices if job.indices is not None else share.unreleased()
        if job.indices is None:
            share.released.extend(indices)
            drained.add(share.worker)
        for index in indices if died is not None else ():
            times = lost[share.worker, index] = lost.get((share.worker, index), 0) + 1
            if watch.reruns is not None and times > watch.reruns:
                share.given_up[index] = f"lost with its worker {times} times: {died}"
        rerun = [i for i in indices if i not in share.given_up]
        if rerun:
            orphans.append((share, rerun))

    def settle(runner: int, outcome: Outcome[FitBatch]) -> None:
        """Take in ``runner``'s finished call; an idle runner may steal segments."""
        job = running.pop(runner)
        share = job.share
        reason = backend.lost(outcome.error) if outcome.error is not None else None
        if reason is not None and watch.supervisor is not None:
            watch.supervisor.lost(runner, f"round {watch.round}: {reason}")
            orphan(job, f"round {watch.round}: {reason}")
            return
        if job.indices is None:
            share.home = outcome
            drained.add(share.worker)
            size = share.size(share.unreleased())
        else:
            share.stolen.append((job.indices, outcome))
            size = share.size(job.indices)
        if on_done is not None:
            on_done(size)
        if not steal or outcome.error is not None or orphans or runner in closed:
            return
        for victim in sorted(
            (s for s in shares if s.home is None and s.worker not in drained and s.movable),
            key=lambda s: -len(s.segments),
        ):
            if victim.worker not in running or running[victim.worker].indices is not None:
                drained.add(victim.worker)
                continue
            released = backend.gather([calls.release(victim.worker)], timeout=watch.control_s)
            indices = released[0].value if released[0].value is not None else []
            if not indices:
                drained.add(victim.worker)
                continue
            victim.released.extend(indices)
            running[runner] = Job(victim, indices, calls.guest(runner, victim, indices))
            break

    while running or orphans:
        _adopt(backend, running, orphans, calls, steal, watch, closed)
        if watch.overdue():
            _give_up(running, orphans, watch)
            return
        if not running:
            watch.idle()
            continue
        runners = list(running)
        done = backend.finished([running[r].pending for r in runners], watch.wait_time(orphans))
        watch.drain()
        if not done:
            for job in watch.overrun(backend, running):
                orphan(job)
            continue
        for position, outcome in done:  # every call found finished, in worker order
            settle(runners[position], outcome)


def _adopt(
    backend: Backend,
    running: dict[int, Job[WorkerRound]],
    orphans: list[tuple[WorkerRound, list[int]]],
    calls: Calls,
    steal: bool,
    watch: Watch,
    closed: set[int],
) -> None:
    """Hand orphaned segments to idle workers (any open worker, or only their own if not
    ``steal`` or not movable), in the order they were orphaned."""
    for share, indices in list(orphans):
        idle = [
            w
            for w in range(backend.num_workers)
            if w not in running
            and watch.ready(w)
            and ((steal and share.movable and w not in closed) or w == share.worker)
        ]
        if not idle:
            continue
        runner = idle[0]
        running[runner] = Job(share, indices, calls.guest(runner, share, indices))
        orphans.remove((share, indices))


def _give_up(
    running: dict[int, Job[WorkerRound]],
    orphans: list[tuple[WorkerRound, list[int]]],
    watch: Watch,
) -> None:
    """The round is past its deadline: every unfinished segment is given up, busy workers
    are replaced (their calls cannot be interrupted)."""
    reason = f"round timeout after {watch.round_timeout:g} s"
    left = [(job.share, job.indices) for job in running.values()]
    for worker in list(running):
        watch.replace(worker, f"round {watch.round}: {reason}")
    for share, indices in [*left, *orphans]:
        if indices is None:
            indices = share.unreleased()
            share.released.extend(indices)
        share.given_up.update((i, reason) for i in indices if i not in share.given_up)
    running.clear()
    orphans.clear()
