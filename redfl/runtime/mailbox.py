"""Per-node message queues inside one worker; ``take`` selects by header."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from redfl.core.message import Message


class FederationStopped(RuntimeError):
    """Raised in a node blocked on ``receive`` when its federation is stopped."""


class Mailbox:
    """Queues of messages for the nodes of one worker.

    Messages not asked for stay queued in arrival order; ``take`` never drops them. Each
    node waits on a condition of its own (all share one lock), so a message wakes only
    its recipients, not every blocked node of the worker.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[Message]] = {}
        self._conds: dict[str, threading.Condition] = {}
        self._waiting = 0
        self._stopped = False

    def _cond(self, node_id: str) -> threading.Condition:
        cond = self._conds.get(node_id)
        if cond is None:
            cond = self._conds[node_id] = threading.Condition(self._lock)
        return cond

    def put(self, message: Message, node_ids: Iterable[str]) -> None:
        """Queue ``message`` for each of ``node_ids``."""
        with self._lock:
            for node_id in node_ids:
                self._queues.setdefault(node_id, []).append(message)
                self._cond(node_id).notify_all()

    def take(
        self, node_id: str, header: str | None, block: bool, timeout: float | None
    ) -> Message | None:
        """Remove and return the oldest message for ``node_id`` matching ``header``.

        Raises
        ------
        TimeoutError
            Naming the node and the header, when ``timeout`` seconds pass first.
        FederationStopped
            When the federation is stopped while (or before) waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            cond = self._cond(node_id)
            while True:
                queue = self._queues.setdefault(node_id, [])
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
                self._waiting += 1
                try:
                    cond.wait(remaining)
                finally:
                    self._waiting -= 1

    def pending(self, node_id: str) -> int:
        """How many messages wait for ``node_id``."""
        with self._lock:
            return len(self._queues.get(node_id, ()))

    def waiting(self) -> int:
        """How many ``take`` calls are blocked right now."""
        with self._lock:
            return self._waiting

    def stop(self) -> None:
        """Wake every blocked ``take`` with :class:`FederationStopped`."""
        with self._lock:
            self._stopped = True
            for cond in self._conds.values():
                cond.notify_all()
