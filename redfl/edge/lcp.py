"""The LCP service: task hand-out, update folding, and the sync with the server.

LCPs are separate processes (``redfl edge lcp``), each a uvicorn server: the routing proxy
reaches them over HTTP/1.1 keep-alive connections, and each LCP syncs with the edge server
in a background task. They stay up across jobs: every job the server holds reaches every LCP
at its next sync, and a device asks for a job by name (``/job``) and then for its tasks by the
job's id. Processes rather than Ray actors: a proxy that forwards thousands of requests a
second must not block on a Ray driver in its event loop, one LCP can fail (and be restarted)
on its own, and an HTTP hop on the loopback costs about as much as an actor call made from
an asyncio server.

Results use a group commit: a device's update is folded into the LCP's per-version buffer,
and the reply waits until the partial sum that holds it has been accepted (or refused) by the
server. One background loop syncs upstream (:class:`redfl.edge.syncing.Sender`); while one
sync is in flight the next results gather, so the batch grows with the load and the latency
stays one server round trip. An acknowledged update is therefore never lost when an LCP
dies, and a retried result gets the same verdict without being folded again (idempotent by
task id). A device whose training failed reports the error instead of an update: its slot is
freed and the failure recorded with the job.

Before it folds an update the LCP applies the job's limits (:class:`redfl.edge.wire.Limits`):
the update's weight is at most ``max_samples_per_update`` samples, and with ``clip_norm`` the
update is scaled down to that L2 norm (over all its arrays, in float64), so one device can
neither outweigh the others by claiming more samples nor by sending a huge update. The sync
loop reaches the server (or the relay above the LCP) over mutually authenticated TLS with
the LCP's own credential, and checks that it reached the server or a relay of the tree.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from typing import Any

import httpx
import numpy as np

from redfl.edge.errors import InvalidRequest
from redfl.edge.fedbuff import LcpBuffer
from redfl.edge.forward import LcpConnections, Poster
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
from redfl.edge.syncing import JobView, Sender
from redfl.edge.timing import Samples
from redfl.edge.wire import FailureMsg, JobInfo, JobSync, PartialMsg, SyncReply

__all__ = ["LcpJob", "LcpService"]


class LcpJob(JobView):
    """An LCP's side of one job: its selected devices, the tasks it issued, the buffer."""

    def __init__(self, info: JobInfo) -> None:
        super().__init__(info)
        self.selected: set[str] = set()
        self.epoch = -1  # of this LCP's selection at the server
        self.tasks: dict[str, tuple[str, int]] = {}  # task id -> device, base version
        self.current: dict[str, str] = {}  # device -> its outstanding task id
        self.buffer = LcpBuffer()
        self.offered: set[str] = set()
        self.failures: list[FailureMsg] = []
        self.verdicts: dict[str, ResultReply] = {}


class LcpService(Sender):
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
        super().__init__(name, sync_interval, max_idle)
        self.server_url = server_url
        self.member = member
        self.retry_wait = retry_wait
        self.result_timeout = result_timeout
        self.jobs: dict[str, LcpJob] = {}
        self.pending: dict[str, asyncio.Future[ResultReply]] = {}  # task id -> its verdict
        self._ids = itertools.count()
        self.folded_at: dict[str, float] = {}
        self.timings: dict[str, Samples] = {
            "sync": self.exchanges,  # one /sync exchange with the server
            "verdict": deque(maxlen=100_000),  # a result's fold -> the server's verdict
            "queued": deque(maxlen=100_000),  # a result's fold -> the sync that carries it
        }
        self.synced_results = 0
        self.capped = 0  # updates whose num_samples was over max_samples_per_update
        self.clipped = 0  # updates scaled down to clip_norm
        self.failed = 0  # tasks whose device reported a failure

    # -- device routes -----------------------------------------------------------------

    def job_reply(self, job_name: str) -> JobReply:
        """``/job``: the running job of that name (else the last one that ended)."""
        if not self.synced:
            return JobReply(status=Status.RETRY, retry_wait=self.retry_wait, reason="not synced")
        named = [job for job in self.jobs.values() if job.info.name == job_name]
        running = [job for job in named if job.running]
        if not named:
            reason = f"no job named {job_name!r} now"
            return JobReply(status=Status.NO_JOB, reason=reason, retry_wait=self.retry_wait)
        info = (running or named)[-1].info
        return JobReply(
            status=Status.OK,
            job_id=info.job_id,
            client=info.client,
            options=info.options,
            seed=info.seed,
        )

    def task(self, device: str, job_id: str) -> TaskReply:
        """``/task``: a task for a selected device, else NO_TASK (it becomes a candidate)."""
        job = self.jobs.get(job_id)
        if job is None:
            if not self.synced:
                return TaskReply(status=Status.RETRY, retry_wait=self.retry_wait)
            return TaskReply(status=Status.NO_JOB, reason=f"no job with id {job_id!r}")
        if not job.running:  # with the final model, when this LCP has it
            final = job.params.get(job.version, "")
            return TaskReply(
                status=Status.DONE, model_version=job.version, parameters=final, reason=job.reason
            )
        if job.version not in job.params:
            return TaskReply(status=Status.RETRY, retry_wait=self.retry_wait, reason="not synced")
        if device not in job.selected:
            job.offered.add(device)
            self.wake.set()
            return TaskReply(status=Status.NO_TASK, retry_wait=self.retry_wait)
        task_id = job.current.get(device)
        if task_id is None or job.tasks[task_id][1] not in job.params:
            task_id = f"{self.name}.{self.boot}.{next(self._ids)}"
            job.tasks[task_id] = (device, job.version)
            job.current[device] = task_id
        version = job.tasks[task_id][1]  # a repeated ask gets the same task
        return TaskReply(
            status=Status.OK,
            task_id=task_id,
            model_version=version,
            parameters=job.params[version],
            config=job.info.config,
        )

    async def result(self, device: str, request: ResultRequest) -> ResultReply:
        """``/result``: fold the update and answer once the server has ruled on it (a
        failure report is answered at once)."""
        job = self.jobs.get(request.job_id)
        if job is None:
            if not self.synced:
                return ResultReply(status=Status.RETRY, reason="not synced")
            return ResultReply(status=Status.ERROR, reason=f"no job with id {request.job_id!r}")
        task_id = request.task_id
        owner = job.tasks.get(task_id)
        if owner is None or owner[0] != device:
            reason = f"not issued: task {task_id!r} was not issued to this device by {self.name}"
            return ResultReply(status=Status.ERROR, reason=reason)
        if task_id in job.verdicts:
            return job.verdicts[task_id]
        if request.error:
            return self._failed(job, device, task_id, owner[1], request.error)
        future = self.pending.get(task_id)
        if future is None:
            future = self._fold(job, task_id, owner[1], request)
            job.selected.discard(device)
            job.current.pop(device, None)
            self.wake.set()
            self.urgent.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.result_timeout)
        except TimeoutError:
            return ResultReply(status=Status.RETRY, reason="not confirmed yet: send it again")

    def _failed(
        self, job: LcpJob, device: str, task_id: str, version: int, why: str
    ) -> ResultReply:
        """Note a failed task: its slot is freed, the failure goes up with the next sync."""
        job.failures.append(
            FailureMsg(task_id=task_id, device=device, base_version=version, reason=why)
        )
        job.selected.discard(device)
        job.current.pop(device, None)
        self.failed += 1
        answer = ResultReply(status=Status.OK, reason="failure recorded")
        job.verdicts[task_id] = answer
        self.wake.set()
        return answer

    def _fold(
        self, job: LcpJob, task_id: str, version: int, request: ResultRequest
    ) -> asyncio.Future[ResultReply]:
        """Check and buffer one update; return the future of its verdict."""
        try:
            delta = decode_arrays(request.parameters)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        shapes = {k: v.shape for k, v in delta.items()}
        if shapes != job.shapes:
            raise InvalidRequest(
                f"parameters must have the model's arrays {job.shapes}, got {shapes}"
            )
        limits = job.info.limits
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
        job.buffer.add(task_id, version, delta, float(samples))
        future: asyncio.Future[ResultReply] = asyncio.get_running_loop().create_future()
        self.pending[task_id] = future
        self.folded_at[task_id] = time.perf_counter()
        return future

    def selection(self, job_id: str) -> SelectionReply:
        """``/selection``: the devices this LCP holds selected, as of the last sync."""
        job = self.jobs.get(job_id)
        if job is None:
            return SelectionReply(status=Status.RETRY, reason="not synced")
        return SelectionReply(
            status=Status.OK,
            selected=sorted(job.selected),
            model_version=job.version,
            done=not job.running,
        )

    # -- the sync ----------------------------------------------------------------------

    def waiting(self) -> bool:
        """Whether results wait for their verdict."""
        return bool(self.pending)

    def gathering(self) -> bool:
        """Whether candidates wait to be offered."""
        return any(job.offered for job in self.jobs.values())

    def parts(self) -> tuple[dict[str, JobSync], Any]:
        """Drain every job's buffer, candidates and failures into its part."""
        now = time.perf_counter()
        parts: dict[str, JobSync] = {}
        groups: dict[str, list[tuple[str, ...]]] = {}
        for job_id, job in self.jobs.items():
            partials = job.buffer.drain()
            self.timings["queued"].extend(
                now - self.folded_at.get(t, now) for p in partials for t in p.task_ids
            )
            msgs = [
                PartialMsg(
                    base_version=p.base_version,
                    sums=encode_arrays(p.sums, np.float64),
                    weight=p.weight,
                    task_ids=list(p.task_ids),
                    devices=[job.tasks[t][0] for t in p.task_ids],
                )
                for p in partials
            ]
            offered = {self.name: sorted(job.offered)} if job.offered else {}
            parts[job_id] = JobSync(
                known_version=job.known_version(),
                selection_epochs={self.name: job.epoch},
                offered=offered,
                partials=msgs,
                failures=job.failures,
            )
            job.offered, job.failures = set(), []
            groups[job_id] = [p.task_ids for p in partials]
        return parts, groups

    def apply(self, reply: SyncReply, context: Any) -> bool:
        """Resolve the results of a sync and take each job's new state."""
        groups: dict[str, list[tuple[str, ...]]] = context
        now = time.perf_counter()
        changed = False
        seen = set()
        for state in reply.jobs:
            seen.add(state.job_id)
            job = self.jobs.get(state.job_id)
            if job is None:
                if state.info is None:
                    continue  # a job this LCP forgot (it restarted): it comes back whole
                job = self.jobs[state.job_id] = LcpJob(state.info)
                changed = True
            for task_ids, verdict in zip(groups.get(state.job_id, []), state.verdicts, strict=True):
                status = Status.OK if verdict.accepted else Status.ERROR
                answer = ResultReply(status=status, reason=verdict.reason)
                self.synced_results += len(task_ids)
                for task_id in task_ids:
                    self.timings["verdict"].append(now - self.folded_at.pop(task_id, now))
                    self._resolve(job, task_id, answer)
            changed = job.take(state) or changed
            if self.name in state.selected:
                waiting = {job.tasks[t][0] for t in self.pending if t in job.tasks}
                job.selected = set(state.selected[self.name]) - waiting
                job.epoch = state.selection_epochs[self.name]
                changed = True
        for gone in set(self.jobs) - seen:  # the server no longer holds it
            job = self.jobs.pop(gone)
            answer = ResultReply(status=Status.ERROR, reason="the job is gone")
            for task_id in [t for t in self.pending if t in job.tasks]:
                self._resolve(job, task_id, answer)
            changed = True
        return changed

    def _resolve(self, job: LcpJob, task_id: str, answer: ResultReply) -> None:
        job.verdicts[task_id] = answer
        future = self.pending.pop(task_id, None)
        if future is not None and not future.done():
            future.set_result(answer)

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

    async def run(self, poster: Poster | None = None) -> None:
        """Sync upstream for ever (:meth:`redfl.edge.syncing.Sender.run`); ``poster``
        defaults to kept-alive connections to ``server_url``
        (:class:`redfl.edge.forward.LcpConnections`, much cheaper per call than httpx)."""
        await super().run(poster or self._upstream())
