"""Run a round's clients on their workers, an idle worker taking a slow one's pending clients.

Each worker gets one call per round with its clients cut into a few *segments* (in sampling
order). A worker folds each segment into its own partial sum, then folds the segment sums
in order into the worker's sum. When a worker is idle while another still runs, the driver
asks the busy one to *release* half of the segments it has not started (from its tail) and
hands them to the idle one, which returns one sum per segment. The driver then folds the
busy worker's prefix with the released segments' sums in segment order: exactly the sum the
busy worker would have made alone. So stealing changes who runs a client, never the result,
and the common case costs one call per worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redfl.runtime.backend import Backend
from redfl.runtime.protocol import Outcome, Pending
from redfl.runtime.replies import FitBatch

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
    """One worker's share of a round: its segments, its own reply and what others ran."""

    worker: int
    segments: list[list[str]]
    home: Outcome[FitBatch] | None = None
    released: list[int] = field(default_factory=list)
    stolen: list[tuple[list[int], Outcome[FitBatch]]] = field(default_factory=list)


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
) -> None:
    """Run every share to the end, filling ``home`` and ``stolen`` of each.

    ``on_done(n)`` reports ``n`` more clients finished. A worker whose call failed is not
    asked to release anything; its share's outcome carries the error.
    """
    handles: list[Pending[FitBatch]] = []
    meta: list[tuple[WorkerRound, int, list[int] | None]] = []  # share, runner, segments
    busy: set[int] = set()
    for share in shares:
        handles.append(calls.home(share))
        meta.append((share, share.worker, None))
        busy.add(share.worker)
    drained: set[int] = set()
    while handles:
        position, outcome = backend.wait_any(handles)
        handles.pop(position)
        share, runner, taken = meta.pop(position)
        busy.discard(runner)
        if taken is None:
            share.home = outcome
            drained.add(share.worker)
            size = sum(len(s) for s in share.segments) - sum(
                len(share.segments[i]) for i in share.released
            )
        else:
            share.stolen.append((taken, outcome))
            size = sum(len(share.segments[i]) for i in taken)
        if on_done is not None:
            on_done(size)
        if not steal or outcome.error is not None:
            continue
        for victim in sorted(
            (s for s in shares if s.home is None and s.worker not in drained),
            key=lambda s: -len(s.segments),
        ):
            released = backend.gather([calls.release(victim.worker)])[0]
            indices = released.value if released.value is not None else []
            if not indices:
                drained.add(victim.worker)
                continue
            victim.released.extend(indices)
            handles.append(calls.guest(runner, victim, indices))
            meta.append((victim, runner, indices))
            busy.add(runner)
            break
