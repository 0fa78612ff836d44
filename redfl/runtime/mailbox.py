"""Per-node message queues inside one worker; ``take`` selects by header."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable

from redfl.core.message import Message


class FederationStopped(RuntimeError):
    """Raised in a node blocked on ``receive`` when its federation is stopped."""


class Mailbox:
    """Queues of messages for the nodes of one worker.

    Messages not asked for stay queued in arrival order; ``take`` never drops them.
    """

    def __init__(self) -> None:
        self._queues: defaultdict[str, list[Message]] = defaultdict(list)
        self._cond = threading.Condition()
        self._stopped = False

    def put(self, message: Message, node_ids: Iterable[str]) -> None:
        """Queue ``message`` for each of ``node_ids``."""
        with self._cond:
            for node_id in node_ids:
                self._queues[node_id].append(message)
            self._cond.notify_all()

    def take(
        self, node_id: str, header: str | None, block: bool, timeout: float | None
    ) -> Message | None:
        """Remove and return the oldest message for ``node_id`` matching ``header``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                queue = self._queues[node_id]
                for i, message in enumerate(queue):
                    if header is None or message.header == header:
                        return queue.pop(i)
                if self._stopped:
                    raise FederationStopped(f"node {node_id!r}: federation stopped")
                if not block:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    wanted = "message" if header is None else f"{header!r} message"
                    raise TimeoutError(f"node {node_id!r} got no {wanted} within {timeout} s")
                self._cond.wait(remaining)

    def pending(self, node_id: str) -> int:
        """How many messages wait for ``node_id``."""
        with self._cond:
            return len(self._queues[node_id])

    def stop(self) -> None:
        """Wake every blocked ``take`` with :class:`FederationStopped`."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
