"""``Outbox``: messages to other workers, queued per destination and sent in batches.

One thread per destination worker drains its queue: while a batch is in flight the next
messages gather, so a round of a thousand nodes costs a handful of worker calls instead
of a thousand. Messages to one destination keep their order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Deliver = Callable[[int, list[Any]], None]
"""Send a batch of items to the worker of that index (blocking until delivered)."""


class Outbox:
    """Per-destination FIFO queues, each drained by a thread of its own."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._cond = threading.Condition()
        self._queues: dict[int, list[Any]] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._in_flight = 0
        self.error: BaseException | None = None

    def post(self, worker: int, item: Any) -> None:
        """Queue ``item`` for worker ``worker``.

        Raises
        ------
        RuntimeError
            If an earlier delivery failed (the destination worker died, say).
        """
        with self._cond:
            if self.error is not None:
                raise RuntimeError(f"an earlier delivery failed: {self.error!r}")
            self._queues.setdefault(worker, []).append(item)
            if worker not in self._threads:
                thread = threading.Thread(
                    target=self._drain, args=(worker,), name=f"redfl-outbox-{worker}", daemon=True
                )
                self._threads[worker] = thread
                thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued item is delivered; ``False`` if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._in_flight == 0 and not any(self._queues.values()), timeout
            )

    def _drain(self, worker: int) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queues[worker]))
                batch, self._queues[worker] = self._queues[worker], []
                self._in_flight += 1
            try:
                self._deliver(worker, batch)
            except BaseException as error:
                self.error = error
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()
