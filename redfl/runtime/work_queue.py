"""``WorkQueue``: the pieces of a running batch (segments, subtrees) a worker takes in turn,
and the tail of them it gives up for work stealing (:mod:`redfl.runtime.dispatch`).

The batch takes pieces on the thread that runs it while a release arrives on another
(actors answer several calls at once), so both go through one lock.

Examples
--------
>>> queue = WorkQueue()
>>> queue.start(4)
>>> queue.take()  # piece 0 runs; 1, 2, 3 have not started
0
>>> queue.release(), queue.release(), queue.release()
([2, 3], [1], [])
>>> queue.take() is None
True

A runner's batch loop is ``for index in queue.run(count)``: the pieces it still holds, in
order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator


class WorkQueue:
    """Indices ``0 .. count - 1`` of a batch, taken in order; a release lowers the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._end = 0

    def start(self, count: int) -> None:
        """Begin a batch of ``count`` pieces."""
        with self._lock:
            self._next, self._end = 0, count

    def run(self, count: int) -> Iterator[int]:
        """Begin a batch of ``count`` pieces and yield each piece to run, in order, until
        the batch is done or the rest was released.

        Examples
        --------
        >>> queue = WorkQueue()
        >>> taken = []
        >>> for index in queue.run(5):
        ...     taken.append(index)
        ...     released = queue.release() if index == 0 else []
        >>> taken
        [0, 1, 2]
        """
        self.start(count)
        while (index := self.take()) is not None:
            yield index

    def take(self) -> int | None:
        """The next piece to run, or ``None`` when the batch is done (or given away)."""
        with self._lock:
            if self._next >= self._end:
                return None
            self._next += 1
            return self._next - 1

    def release(self) -> list[int]:
        """Give up the latter half (rounded up) of the pieces not yet started."""
        with self._lock:
            end = self._end
            self._end = end - (end - self._next + 1) // 2
            return list(range(self._end, end))
