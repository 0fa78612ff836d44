"""An LCP (leaf client process): the device-facing end of an edge job.

Each LCP is a small HTTP service (FastAPI under uvicorn, one process), reached from the
routing proxy over a kept-alive HTTP connection. We chose processes over Ray actors: an LCP
then costs ~60 MB instead of a Ray worker plus Ray's own daemons, the proxy needs no Ray
driver in its event loop, one LCP can fail (and be restarted) on its own, and an HTTP hop on
the loopback costs about as much as an actor call made from an asyncio server.

Results use a group commit: a device's update is folded into the LCP's per-version buffer,
and the reply waits until the partial sum that holds it has been accepted (or refused) by the
server. One background loop syncs with the server; while one sync is in flight the next
results gather, so the batch grows with the load and the latency stays one server round trip.
An acknowledged update is therefore never lost when an LCP dies, and a retried result gets
the same verdict without being folded again (idempotent by task id).

Before it folds an update the LCP applies the job's limits (:class:`redfl.edge.wire.Limits`):
the update's weight is at most ``max_samples_per_update`` samples, and with ``clip_norm`` the
update is scaled down to that L2 norm (over all its arrays, in float64), so one device can
neither outweigh the others by claiming more samples nor by sending a huge update. The sync
loop reaches the server (or the relay above the LCP) over mutually authenticated TLS with
the LCP's own credential, and checks that it reached the server or a relay of the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
import uuid
from collections import deque

import httpx
import numpy as np

from redfl.edge.errors import InvalidRequest
from redfl.edge.fedbuff import LcpBuffer
from redfl.edge.forward import ForwardError, LcpConnections, Poster
from redfl.edge.protocol import (
    JobReply,
    ResultReply,
    ResultRequest,
    SelectionReply,
    Status,
    TaskReply,
    decode_arrays,
    encode_arrays,
)
from redfl.edge.provision import Member
from redfl.edge.timing import Samples
from redfl.edge.wire import PartialMsg, SyncReply, SyncRequest

__all__ = ["LcpService"]

_KEEP_VERSIONS = 8


class LcpService:
    """An LCP's state and its sync loop with the server.

    Parameters
    ----------
    name : str
        LCP name (as in ``lcp_map.json``).
    server_url : str
        Base URL of the edge server, or of the relay the LCP syncs through.
    member : Member | None, default None
        The LCP's credential (TLS to ``server_url``); needed unless :meth:`run` gets a
        client.
    sync_interval : float, default 0.05
        Seconds candidates gather before a sync (a result triggers one at once).
    max_idle : float, default 0.4
        Longest wait between syncs while nothing changes.
    retry_wait : float, default 0.5
        ``retry_wait`` told to devices that are not selected or must retry.
    result_timeout : float, default 10.0
        Seconds a result waits for the server's verdict before the device is told to retry.
    """

    def __init__(
        self,
        name: str,
        server_url: str,
        member: Member | None = None,
        sync_interval: float = 0.05,
        max_idle: float = 0.4,
        retry_wait: float = 0.5,
        result_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.server_url = server_url
        self.member = member
        self.sync_interval = sync_interval
        self.max_idle = max_idle
        self.retry_wait = retry_wait
        self.result_timeout = result_timeout
        self.boot = uuid.uuid4().hex[:8]
        self.seq = 0
        self.job: SyncReply | None = None
        self.params: dict[int, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.selected: set[str] = set()
        self.tasks: dict[str, tuple[str, int]] = {}  # task id -> device, base version
        self.current: dict[str, str] = {}  # device -> its outstanding task id
        self.buffer = LcpBuffer()
        self.pending: dict[str, asyncio.Future[ResultReply]] = {}
        self.verdicts: dict[str, ResultReply] = {}
        self.offered: set[str] = set()
        self.wake = asyncio.Event()  # something to sync: a candidate or a result
        self.urgent = asyncio.Event()  # a result waits for its verdict
        self._ids = itertools.count()
        self.folded_at: dict[str, float] = {}
        self.timings: dict[str, Samples] = {
            "sync": deque(maxlen=100_000),  # one /sync exchange with the server
            "verdict": deque(maxlen=100_000),  # a result's fold -> the server's verdict
            "queued": deque(maxlen=100_000),  # a result's fold -> the sync that carries it
        }
        self.synced_results = 0
        self.capped = 0  # updates whose num_samples was over max_samples_per_update
        self.clipped = 0  # updates scaled down to clip_norm

    def job_reply(self, job_name: str) -> JobReply:
        """``/job``: the job id when the name matches the running job."""
        if self.job is None:
            return JobReply(status=Status.RETRY, retry_wait=self.retry_wait, reason="not synced")
        if job_name != self.job.job_name:
            return JobReply(status=Status.NO_JOB, reason=f"no job named {job_name!r}")
        return JobReply(status=Status.OK, job_id=self.job.job_id)

    def task(self, device: str, job_id: str) -> TaskReply:
        """``/task``: a task for a selected device, else NO_TASK (it becomes a candidate)."""
        job = self.job
        if job is None or job.version not in self.params:
            return TaskReply(status=Status.RETRY, retry_wait=self.retry_wait, reason="not synced")
        if job_id != job.job_id:
            return TaskReply(status=Status.NO_JOB, reason=f"no job with id {job_id!r}")
        if job.done:  # with the final model, when this LCP has it
            final = self.params.get(job.version, "")
            return TaskReply(status=Status.DONE, model_version=job.version, parameters=final)
        if device not in self.selected:
            self.offered.add(device)
            self.wake.set()
            return TaskReply(status=Status.NO_TASK, retry_wait=self.retry_wait)
        task_id = self.current.get(device)
        if task_id is None or self.tasks[task_id][1] not in self.params:
            task_id = f"{self.name}.{self.boot}.{next(self._ids)}"
            self.tasks[task_id] = (device, job.version)
            self.current[device] = task_id
        version = self.tasks[task_id][1]  # a repeated ask gets the same task
        return TaskReply(
            status=Status.OK,
            task_id=task_id,
            model_version=version,
            parameters=self.params[version],
            config=job.config,
        )

    async def result(self, device: str, request: ResultRequest) -> ResultReply:
        """``/result``: fold the update and answer once the server has ruled on it."""
        job = self.job
        if job is None:
            return ResultReply(status=Status.RETRY, reason="not synced")
        owner = self.tasks.get(request.task_id)
        if request.job_id != job.job_id or owner is None or owner[0] != device:
            reason = (
                f"not issued: task {request.task_id!r} was not issued to this device by {self.name}"
            )
            return ResultReply(status=Status.ERROR, reason=reason)
        task_id = request.task_id
        if task_id in self.verdicts:
            return self.verdicts[task_id]
        future = self.pending.get(task_id)
        if future is None:
            future = self._fold(task_id, owner[1], request)
            self.selected.discard(device)
            self.current.pop(device, None)
            self.wake.set()
            self.urgent.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.result_timeout)
        except TimeoutError:
            return ResultReply(status=Status.RETRY, reason="not confirmed yet: send it again")

    def _fold(
        self, task_id: str, version: int, request: ResultRequest
    ) -> asyncio.Future[ResultReply]:
        """Check and buffer one update; return the future of its verdict."""
        try:
            delta = decode_arrays(request.parameters)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        shapes = {k: v.shape for k, v in delta.items()}
        if shapes != self.shapes:
            raise InvalidRequest(
                f"parameters must have the model's arrays {self.shapes}, got {shapes}"
            )
        assert self.job is not None
        limits = self.job.limits
        samples = min(request.num_samples, limits.max_samples_per_update)
        self.capped += samples < request.num_samples
        if limits.clip_norm is not None:
            norm = math.sqrt(
                sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values())
            )
            if norm > limits.clip_norm:
                scale = limits.clip_norm / norm
                delta = {k: v.astype(np.float64) * scale for k, v in delta.items()}
                self.clipped += 1
        self.buffer.add(task_id, version, delta, float(samples))
        future: asyncio.Future[ResultReply] = asyncio.get_running_loop().create_future()
        self.pending[task_id] = future
        self.folded_at[task_id] = time.perf_counter()
        return future

    def selection(self) -> SelectionReply:
        """``/selection``: the selected devices as of the last sync."""
        job = self.job
        if job is None:
            return SelectionReply(status=Status.RETRY, reason="not synced")
        return SelectionReply(
            status=Status.OK,
            selected=sorted(self.selected),
            model_version=job.version,
            done=job.done,
        )

    def _request(self) -> tuple[SyncRequest, list[tuple[str, ...]]]:
        """Drain the buffer and the candidates into the next sync request."""
        partials = self.buffer.drain()
        now = time.perf_counter()
        self.timings["queued"].extend(now - self.folded_at.get(t, now) for p in partials
                                      for t in p.task_ids)  # fmt: skip
        msgs = [
            PartialMsg(
                base_version=p.base_version,
                sums=encode_arrays(p.sums, np.float64),
                weight=p.weight,
                task_ids=list(p.task_ids),
                devices=[self.tasks[t][0] for t in p.task_ids],
            )
            for p in partials
        ]
        offered, self.offered = sorted(self.offered), set()
        known = self.job.version if self.job is not None and self.job.version in self.params else -1
        request = SyncRequest(
            lcp=self.name,
            boot=self.boot,
            seq=self.seq,
            known_version=known,
            selection_epoch=-1 if self.job is None else self.job.selection_epoch,
            offered=offered,
            partials=msgs,
        )
        self.seq += 1
        return request, [p.task_ids for p in partials]

    def apply(self, reply: SyncReply, groups: list[tuple[str, ...]]) -> None:
        """Resolve the results of a sync and take the job's new state."""
        now = time.perf_counter()
        for task_ids, verdict in zip(groups, reply.verdicts, strict=True):
            answer = ResultReply(
                status=Status.OK if verdict.accepted else Status.ERROR, reason=verdict.reason
            )
            self.synced_results += len(task_ids)
            for task_id in task_ids:
                self.timings["verdict"].append(now - self.folded_at.pop(task_id, now))
                self.verdicts[task_id] = answer
                future = self.pending.pop(task_id, None)
                if future is not None and not future.done():
                    future.set_result(answer)
        if reply.parameters:
            self.params[reply.version] = reply.parameters
            self.shapes = {k: v.shape for k, v in decode_arrays(reply.parameters).items()}
            for old in sorted(self.params)[:-_KEEP_VERSIONS]:
                del self.params[old]
        if reply.selected is not None:
            waiting = {self.tasks[t][0] for t in self.pending}
            self.selected = set(reply.selected) - waiting
        elif self.job is not None:
            reply = reply.model_copy(update={"selection_epoch": self.job.selection_epoch})
        self.job = reply.model_copy(update={"parameters": "", "verdicts": [], "selected": None})

    def _upstream(self) -> LcpConnections:
        """Kept-alive TLS connections to ``server_url`` with the LCP's credential, checked to
        reach the tree's server or one of its relays."""
        if self.member is None:
            raise ValueError(f"LCP {self.name} needs its credential to reach {self.server_url}")
        url = httpx.URL(self.server_url)
        return LcpConnections(
            url.host,
            url.port or 443,
            timeout=30.0,
            ssl=self.member.client_tls(),
            expect=self.member.peers.acceptor({"server": ("server",), "relay": None}),
        )

    async def run(self, client: Poster | None = None) -> None:
        """Sync with the server for ever: at once while results wait for their verdict;
        candidates gather for ``sync_interval`` (a result cuts that short), so a result rarely
        waits behind a sync that carries only candidates; when nothing waits, after
        ``sync_interval`` doubling up to ``max_idle`` while nothing changes, or at the first
        candidate or result.

        ``client`` defaults to kept-alive connections to ``server_url``
        (:class:`redfl.edge.forward.LcpConnections`, much cheaper per call than httpx).
        """
        poster: Poster = client or self._upstream()
        headers = {"content-type": "application/json"}
        idle = self.sync_interval
        while True:
            request, groups = self._request()
            body = request.model_dump_json().encode()
            while True:
                start = time.perf_counter()
                try:
                    status, content = await poster.post("/sync", body, headers)
                    if status == 200:
                        reply = SyncReply.model_validate_json(content)
                        self.timings["sync"].append(time.perf_counter() - start)
                        break
                except (ForwardError, ValueError):
                    pass
                await asyncio.sleep(self.sync_interval)
            quiet = not groups and not request.offered and reply.selected is None
            quiet = quiet and self.job is not None and reply.version == self.job.version
            self.apply(reply, groups)
            idle = min(idle * 2, self.max_idle) if quiet else self.sync_interval
            if self.pending:
                continue
            self.wake.clear()
            self.urgent.clear()
            with contextlib.suppress(TimeoutError):
                if self.offered:
                    await asyncio.wait_for(self.urgent.wait(), self.sync_interval)
                else:
                    await asyncio.wait_for(self.wake.wait(), idle)
