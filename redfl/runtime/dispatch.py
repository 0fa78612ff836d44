"""Run a round's clients as chunks on the workers, an idle worker taking a slow one's chunks.

A round's sampled clients are cut into chunks: each worker's clients, in sampling order,
split into a few chunks. Each worker gets at most ``depth`` chunks in flight; when a worker
finishes and has nothing left of its own, it takes the last pending chunk of the worker with
the most chunks waiting (work stealing). Results come back indexed by chunk, never by
arrival or by who ran it, so folding them in chunk order keeps runs bit-for-bit
reproducible whoever ran each chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redfl.runtime.backend import Backend, Outcome

CHUNKS_PER_WORKER = 4
"""Chunks per worker and round: more gives finer stealing, fewer gives fewer calls."""

IN_FLIGHT = 2
"""Chunks a worker has queued at once, so it never waits for the driver between chunks."""


@dataclass(frozen=True)
class Chunk:
    """Clients of one worker (``home``) run in one call; ``stealable`` if any worker may."""

    home: int
    node_ids: list[str]
    stealable: bool = True


def make_chunks(
    groups: Sequence[tuple[int, list[str]]],
    per_worker: int = CHUNKS_PER_WORKER,
    stealable: Callable[[int], bool] = lambda worker: True,
) -> list[Chunk]:
    """Cut each worker's clients (in order) into up to ``per_worker`` near-equal chunks."""
    chunks = []
    for worker, ids in groups:
        count = max(1, min(per_worker, len(ids)))
        size, extra = divmod(len(ids), count)
        start = 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            chunks.append(Chunk(worker, ids[start:end], stealable(worker)))
            start = end
    return chunks


Submit = Callable[[int, Chunk], Any]
"""``submit(worker, chunk)`` starts ``chunk`` on ``worker`` and returns a pending handle."""


def run_chunks(
    backend: Backend,
    chunks: Sequence[Chunk],
    submit: Submit,
    on_done: Callable[[int], None] | None = None,
    steal: bool = True,
    depth: int = IN_FLIGHT,
) -> list[Outcome]:
    """Run every chunk; return their outcomes in chunk order.

    ``on_done(i)`` is called as chunk ``i`` finishes. Only stealable chunks move, and only to
    a worker that is home to stealable chunks itself.
    """
    queues: dict[int, deque[int]] = {}
    for i, chunk in enumerate(chunks):
        queues.setdefault(chunk.home, deque()).append(i)
    thieves = {c.home for c in chunks if c.stealable}
    outcomes: list[Outcome | None] = [None] * len(chunks)
    handles: list[Any] = []
    running: list[tuple[int, int]] = []  # (chunk, worker), parallel to handles

    def start(worker: int, i: int) -> None:
        handles.append(submit(worker, chunks[i]))
        running.append((i, worker))

    def next_for(worker: int) -> int | None:
        own = queues.get(worker)
        if own:
            return own.popleft()
        if not steal or worker not in thieves:
            return None
        victims = [q for q in queues.values() if len(q) > 0 and chunks[q[-1]].stealable]
        if not victims:
            return None
        return max(victims, key=len).pop()

    for worker in sorted(queues):
        for _ in range(min(depth, len(queues[worker]))):
            start(worker, queues[worker].popleft())
    while handles:
        position, outcome = backend.wait_any(handles)
        handles.pop(position)
        i, worker = running.pop(position)
        outcomes[i] = outcome
        if on_done is not None:
            on_done(i)
        follow = next_for(worker)
        if follow is not None:
            start(worker, follow)
    return [o if o is not None else Outcome(None, RuntimeError("not run")) for o in outcomes]
