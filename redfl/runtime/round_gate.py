"""``RoundGate``: where a worker's message-driven nodes ask before starting a round.

Decentralised nodes run their rounds without a global barrier, so "stop at the next round
boundary" needs agreement: the driver *freezes* every worker's gate (no node starts a new
round), reads the highest round any node has started, ``M``, and sets every gate's limit
to ``M``: every node then finishes round ``M`` (its neighbours may start it too) and
starts no later one. A limit without ``stop`` pauses nodes at the boundary instead (a
checkpoint reads their models there), until the limit is raised.

Examples
--------
>>> gate = RoundGate()
>>> gate.enter(1), gate.enter(2)
(True, True)
>>> gate.freeze()
2
>>> gate.set_limit(2, stop=True)
>>> gate.enter(2), gate.enter(3)
(True, False)
"""

from __future__ import annotations

import threading


class RoundGate:
    """Admits nodes into rounds up to a limit; frozen, it admits none until released."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._limit: int | None = None
        self._stop = False
        self._frozen = False
        self._started = 0

    def enter(self, rnd: int) -> bool:
        """Whether a node may start round ``rnd``; waits while frozen or paused below it."""
        with self._condition:
            while self._frozen or self._paused_before(rnd):
                self._condition.wait()
            if self._stop and self._limit is not None and rnd > self._limit:
                return False
            self._started = max(self._started, rnd)
            return True

    def _paused_before(self, rnd: int) -> bool:
        return not self._stop and self._limit is not None and rnd > self._limit

    def freeze(self) -> int:
        """Admit no node into a new round; return the highest round started so far."""
        with self._condition:
            self._frozen = True
            return self._started

    def set_limit(self, rnd: int | None, stop: bool) -> None:
        """Admit rounds up to ``rnd`` (``None``: all); past it, ``stop`` ends the node's
        loop, else it waits for a higher limit. Unfreezes."""
        with self._condition:
            self._limit, self._stop, self._frozen = rnd, stop, False
            self._condition.notify_all()

    def close(self) -> None:
        """Let every waiting node go and end its loop (the federation is stopping)."""
        self.set_limit(0, stop=True)
