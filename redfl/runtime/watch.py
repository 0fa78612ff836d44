"""``Watch``: how the driver watches a round's calls: client and subtree timeouts, the
round's deadline and lost workers.

While it waits for fit replies, the driver probes the busy workers every
:data:`POLL_S` seconds (a :class:`~redfl.runtime.host.Probe`, answered on another of the
actor's threads while the fit runs): a client running longer than ``client_timeout``
becomes a failure ``timeout after X s`` and its worker is replaced, since a running
synchronous call cannot be interrupted; so does a piece of a batch (a hierarchy's subtree)
folding longer than ``piece_timeout``. Every wait of the round has a deadline: the round's
own (``round_timeout``), the probes' and the control calls' (:data:`CONTROL_TIMEOUT_S`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from redfl.core.result import Failure
from redfl.runtime.backend import Backend
from redfl.runtime.host import Probe
from redfl.runtime.protocol import Pending, Unfinished
from redfl.runtime.replies import FitBatch, WorkerProbe
from redfl.runtime.supervisor import PROBE_TIMEOUT_S, Supervisor

POLL_S = 0.25
"""How often busy workers are probed for clients past their timeout."""
CONTROL_TIMEOUT_S = 5.0
"""Deadline of a control call (a release of segments for work stealing)."""

S = TypeVar("S")


@dataclass
class Job(Generic[S]):
    """A fit call in flight: whose segments (``indices``; ``None``: the worker's own call)."""

    share: S
    indices: list[int] | None
    pending: Pending[FitBatch]


@dataclass
class Watch:
    """The round's fault handling (all optional: no timeouts, no restarts).

    Attributes
    ----------
    supervisor:
        Re-creates lost workers and counts the losses (``None``: a lost worker's clients
        fail, as any failed call's do).
    client_timeout:
        Seconds a client may run before it fails and its worker is replaced.
    round_timeout:
        Seconds the whole round may take; past it, unfinished clients fail.
    round:
        The round watched (for failures and restart reasons).
    reruns:
        How many times, within the round, a segment lost with its worker (a process that
        died) is run again on a free or re-created worker; past that it is given up, a
        failure with the cause. ``None``: as often as the supervisor re-creates workers
        (the star); a hierarchy re-runs a lost subtree once, so that a subtree whose client
        kills its process costs two workers, not the run.
    piece_timeout:
        Seconds a piece of a batch (a subtree) may fold before it is given up (``timeout
        after X s``) and its worker replaced; the worker's other unfinished pieces run
        again elsewhere. ``None``: no limit.
    """

    supervisor: Supervisor | None = None
    client_timeout: float | None = None
    round_timeout: float | None = None
    round: int = 0
    reruns: int | None = None
    piece_timeout: float | None = None
    started: float = field(default_factory=time.monotonic)
    control_s: float = CONTROL_TIMEOUT_S
    silent: dict[int, float] = field(default_factory=dict)
    """Since when each busy worker has not answered probes."""

    def left(self) -> float | None:
        """Seconds until the round's deadline (``None``: no deadline)."""
        if self.round_timeout is None:
            return None
        return max(0.0, self.started + self.round_timeout - time.monotonic())

    def overdue(self) -> bool:
        """Whether the round is past its deadline."""
        left = self.left()
        return left is not None and left <= 0.0

    def ready(self, worker: int) -> bool:
        """Whether ``worker`` can take a call now."""
        return self.supervisor is None or self.supervisor.ready(worker)

    def _timeouts(self) -> list[float]:
        """The client and piece timeouts that are set (probing needs a supervisor)."""
        if self.supervisor is None:
            return []
        return [t for t in (self.client_timeout, self.piece_timeout) if t is not None]

    def wait_time(self, orphans: list[Any]) -> float | None:
        """How long the next wait for a reply may block (``None``: until one arrives)."""
        times: list[float] = []
        if self._timeouts():
            times.append(min(POLL_S, min(self._timeouts()) / 4))
        if self.supervisor is not None and (orphans or self.supervisor.restarting):
            times.append(POLL_S)
        left = self.left()
        if left is not None:
            times.append(left)
        return min(times) if times else None

    def idle(self) -> None:
        """Nothing runs; orphaned segments wait for a worker to come back."""
        if self.supervisor is None:
            raise RuntimeError("segments wait for a worker, but no supervisor restarts any")
        left = self.left()
        self.supervisor.settle(POLL_S if left is None else min(POLL_S, left))

    def drain(self) -> None:
        """Report completed restarts; raise if a worker is gone for good."""
        if self.supervisor is not None:
            self.supervisor.drain()

    def replace(self, worker: int, reason: str, pid: int | None = None) -> None:
        """Replace ``worker`` (a call of it cannot be interrupted)."""
        if self.supervisor is not None:
            self.supervisor.replace(worker, reason, pid)

    def overrun(self, backend: Backend, running: dict[int, Job[Any]]) -> list[Job[Any]]:
        """Probe the busy workers; end the calls of those whose client or piece is past its
        timeout (or that have not answered probes for longer than that). Returns the ended
        calls, removed from ``running``; a piece past its timeout is in its share's
        ``given_up``."""
        timeouts = self._timeouts()
        if not timeouts or not running:
            return []
        runners = list(running)
        probes = backend.gather(
            [backend.call(w, Probe()) for w in runners], timeout=PROBE_TIMEOUT_S
        )
        ended: list[Job[Any]] = []
        now = time.monotonic()
        for worker, probe in zip(runners, probes, strict=True):
            if isinstance(probe.error, Unfinished):  # stuck (holding the GIL?) or just slow
                silent = now - self.silent.setdefault(worker, now - PROBE_TIMEOUT_S)
                if silent > min(timeouts) + PROBE_TIMEOUT_S:
                    ended.append(running.pop(worker))
                    self.replace(worker, f"round {self.round}: silent for {silent:.0f} s")
                continue
            self.silent.pop(worker, None)
            reply = probe.value
            if reply is None:
                continue  # a lost worker shows in its fit reply
            job = running[worker]
            if self._client_overran(reply):
                assert reply.node_id is not None and self.client_timeout is not None
                reason = f"timeout after {self.client_timeout:g} s"
                job.share.skipped.add(reply.node_id)
                job.share.failures.append(Failure(reply.node_id, self.round, "fit", reason))
                what = f"client {reply.node_id} {reason}"
            elif self._piece_overran(reply):
                assert reply.piece is not None and self.piece_timeout is not None
                reason = f"timeout after {self.piece_timeout:g} s"
                index = reply.piece if job.indices is None else job.indices[reply.piece]
                job.share.given_up[index] = reason
                what = f"piece {index} of worker {job.share.worker}'s share {reason}"
            else:
                continue
            ended.append(running.pop(worker))
            self.replace(worker, f"round {self.round}: {what}", reply.pid)
        return ended

    def _client_overran(self, reply: WorkerProbe) -> bool:
        timeout = self.client_timeout
        return timeout is not None and reply.node_id is not None and reply.elapsed > timeout

    def _piece_overran(self, reply: WorkerProbe) -> bool:
        timeout = self.piece_timeout
        return timeout is not None and reply.piece is not None and reply.piece_elapsed > timeout
