"""What LCPs and aggregating relays share: the loop that syncs upstream, and their view of a job.

A :class:`Sender` syncs with its upstream (the server, or the relay above it) for ever, one
request at a time, each carrying a sequence number: a request that fails is sent again
unchanged (same number) until it is answered, so the receiver can tell a repeat from a new
one. It syncs at once while something waits for a verdict; candidates gather for
``sync_interval`` (a verdict to wait for cuts that short); when nothing waits it syncs after
``sync_interval``, doubling up to ``max_idle`` while nothing changes, or at the first
candidate or result.

:class:`JobView` is what a sender knows of one job from its syncs: the job's description
(:class:`redfl.edge.wire.JobInfo`), its version and status, and the parameters of its last
few versions (their base64 text, as it came).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from typing import Any

from redfl.edge.forward import ForwardError, Poster
from redfl.edge.protocol import decode_arrays
from redfl.edge.timing import Samples
from redfl.edge.wire import JobInfo, JobState, JobStatus, JobSync, SyncReply, SyncRequest

__all__ = ["KEEP_VERSIONS", "JobView", "Sender"]

KEEP_VERSIONS = 8
"""Parameters kept per job: the last this many versions (tasks in flight train from them)."""


class JobView:
    """A sender's view of one job.

    Parameters
    ----------
    info : JobInfo
        The job's description, as the server sent it.
    """

    def __init__(self, info: JobInfo) -> None:
        self.info = info
        self.version = 0
        self.status: JobStatus = "running"
        self.reason = ""
        self.params: dict[int, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    @property
    def running(self) -> bool:
        """Whether the job still takes updates."""
        return self.status == "running"

    def known_version(self) -> int:
        """The version whose parameters this view holds, or -1 (ask for them)."""
        return self.version if self.version in self.params else -1

    def take(self, state: JobState) -> bool:
        """Take the job's new state; True if its version or status changed."""
        changed = (state.version, state.status) != (self.version, self.status)
        self.version, self.status, self.reason = state.version, state.status, state.reason
        if state.parameters:
            self.params[state.version] = state.parameters
            self.shapes = {k: v.shape for k, v in decode_arrays(state.parameters).items()}
            for old in sorted(self.params)[:-KEEP_VERSIONS]:
                del self.params[old]
        return changed


class Sender(ABC):
    """A component that syncs upstream in a loop (an LCP, an aggregating relay).

    Parameters
    ----------
    name : str
        The sender's site name (the ``sender`` of its requests).
    sync_interval : float
        Seconds candidates gather before a sync, and between retries of a failed one.
    max_idle : float
        Longest wait between syncs while nothing changes.
    """

    def __init__(self, name: str, sync_interval: float, max_idle: float) -> None:
        self.name = name
        self.sync_interval = sync_interval
        self.max_idle = max_idle
        self.boot = uuid.uuid4().hex[:8]
        self.seq = 0
        self.server_boot = ""
        self.synced = False
        self.wake = asyncio.Event()  # something to sync: a candidate or a result
        self.urgent = asyncio.Event()  # something waits for its verdict
        self.exchanges: Samples = deque(maxlen=100_000)  # one /sync exchange upstream

    @abstractmethod
    def parts(self) -> tuple[dict[str, JobSync], Any]:
        """Drain what to report into each job's part; also return what :meth:`apply` needs
        to hand the verdicts back."""

    @abstractmethod
    def apply(self, reply: SyncReply, context: Any) -> bool:
        """Take the reply (verdicts, job states); True if anything changed."""

    @abstractmethod
    def waiting(self) -> bool:
        """Whether something waits for a verdict (sync again at once)."""

    @abstractmethod
    def gathering(self) -> bool:
        """Whether candidates wait to be sent (sync within ``sync_interval``)."""

    def request(self) -> tuple[SyncRequest, Any]:
        """The next request (a new sequence number) and its context."""
        jobs, context = self.parts()
        request = SyncRequest(
            sender=self.name, boot=self.boot, seq=self.seq, server_boot=self.server_boot, jobs=jobs
        )
        self.seq += 1
        return request, context

    async def run(self, poster: Poster) -> None:
        """Sync with ``poster``'s upstream for ever (see the module docstring)."""
        headers = {"content-type": "application/json"}
        idle = self.sync_interval
        while True:
            request, context = self.request()
            body = request.model_dump_json().encode()
            while True:
                start = time.perf_counter()
                try:
                    status, content = await poster.post("/sync", body, headers)
                    if status == 200:
                        reply = SyncReply.model_validate_json(content)
                        self.exchanges.append(time.perf_counter() - start)
                        break
                except (ForwardError, ValueError):
                    pass
                await asyncio.sleep(self.sync_interval)
            self.server_boot = reply.server_boot
            changed = self.apply(reply, context)
            self.synced = True
            quiet = not changed and not any(
                p.partials or p.offered or p.failures for p in request.jobs.values()
            )
            idle = min(idle * 2, self.max_idle) if quiet else self.sync_interval
            if self.waiting():
                continue
            self.wake.clear()
            self.urgent.clear()
            with contextlib.suppress(TimeoutError):
                if self.gathering():
                    await asyncio.wait_for(self.urgent.wait(), self.sync_interval)
                else:
                    await asyncio.wait_for(self.wake.wait(), idle)
