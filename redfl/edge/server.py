"""The edge server: the global model of one FedBuff job, its versions and device selection.

LCPs reach it over HTTP (``POST /sync``, see :mod:`redfl.edge.wire`); partial sums go from
each LCP straight to the server (the tree's intermediate aggregators are not a hop: a sum of
sums is the same sum, and an extra hop would only add latency). ``GET /status`` reports the
version, the counters and the evaluation history; with ``?ids=true`` it lists every folded
task id (the end-to-end test checks that nothing acknowledged is lost or counted twice).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI

from redfl.edge.fastpath import serve_routes
from redfl.edge.fedbuff import FedBuff, PartialSum
from redfl.edge.jobs import JobSpec, evaluate, initial_parameters
from redfl.edge.protocol import decode_arrays, encode_arrays
from redfl.edge.routes import Answer, Public, Route, ok
from redfl.edge.selection import Selector
from redfl.edge.timing import Samples, summary
from redfl.edge.wire import SyncReply, SyncRequest, VerdictMsg

__all__ = ["EdgeServer", "server_app"]


class EdgeServer:
    """State of one job: FedBuff, the selector, history and counters.

    Parameters
    ----------
    spec : JobSpec
        The job.
    clock : Callable[[], float], default time.monotonic
        Time source of the selector (device timeouts) and of the history.
    """

    def __init__(self, spec: JobSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self.job_id = f"{spec.name}-{uuid.uuid4().hex[:8]}"
        self.fedbuff = FedBuff(spec.fedbuff(), initial_parameters(spec))
        self.selector = Selector(spec.selection(), clock)
        self.started = clock()
        self.history: list[dict[str, float]] = [self._record()]
        self.last: dict[str, tuple[str, int, list[VerdictMsg]]] = {}  # lcp -> boot, seq, verdicts
        self.syncs = 0
        self.sync_seconds: Samples = deque(maxlen=100_000)  # time in sync(), per request
        self._encoded = (0, encode_arrays(self.fedbuff.parameters))

    def _record(self) -> dict[str, float]:
        """The current version's evaluation, with the time since the start."""
        metrics = evaluate(self.spec, self.fedbuff.parameters)
        return {"version": self.fedbuff.version, "time": self.clock() - self.started, **metrics}

    def parameters_text(self) -> str:
        """The current parameters, encoded once per version."""
        if self._encoded[0] != self.fedbuff.version:
            self._encoded = (self.fedbuff.version, encode_arrays(self.fedbuff.parameters))
        return self._encoded[1]

    def sync(self, request: SyncRequest) -> SyncReply:
        """Take an LCP's candidates and partial sums; return the job's state and verdicts."""
        start = time.perf_counter()
        try:
            return self._sync(request)
        finally:
            self.sync_seconds.append(time.perf_counter() - start)

    def _sync(self, request: SyncRequest) -> SyncReply:
        self.syncs += 1
        previous = self.last.get(request.lcp)
        if previous is not None and previous[:2] == (request.boot, request.seq):
            verdicts = previous[2]  # a repeated request: the same verdicts, nothing re-folded
        else:
            verdicts = [self._fold(p.base_version, p.sums, p.weight, p.task_ids, p.devices)
                        for p in request.partials]  # fmt: skip
            self.last[request.lcp] = (request.boot, request.seq, verdicts)
        for device in request.offered:
            self.selector.offer(device, request.lcp)
        if not self.fedbuff.done:
            self.selector.tick()
        fb, sel = self.fedbuff, self.selector
        changed = request.selection_epoch != sel.epoch
        return SyncReply(
            job_id=self.job_id,
            job_name=self.spec.name,
            version=fb.version,
            done=fb.done,
            parameters="" if request.known_version == fb.version else self.parameters_text(),
            selection_epoch=sel.epoch,
            selected=list(sel.selected) if changed else None,  # any order: LCPs keep a set
            verdicts=verdicts,
            config=self.spec.device_config(),
        )

    def _fold(
        self, base: int, sums: str, weight: float, task_ids: list[str], devices: list[str]
    ) -> VerdictMsg:
        """Submit one partial sum to FedBuff and free its devices' slots."""
        for device in devices:
            self.selector.reported(device)
        try:
            arrays = decode_arrays(sums, dtype=np.float64)
        except ValueError as exc:
            self.fedbuff.rejected["invalid"] += len(task_ids)
            return VerdictMsg(accepted=False, reason=f"invalid: {exc}")
        verdict = self.fedbuff.submit(PartialSum(base, arrays, weight, tuple(task_ids)))
        if verdict.new_version:
            self.history.append(self._record())
        return VerdictMsg(accepted=verdict.accepted, reason=verdict.reason)

    def status(self, ids: bool = False) -> dict[str, Any]:
        """Version, counters and history (and the folded task ids when ``ids``)."""
        fb = self.fedbuff
        out: dict[str, Any] = {
            "job_id": self.job_id,
            "job_name": self.spec.name,
            "version": fb.version,
            "done": fb.done,
            "accepted": fb.accepted,
            "accepted_unique": len(fb.accepted_ids),
            "rejected": dict(fb.rejected),
            "evicted": self.selector.evicted,
            "selected": len(self.selector.selected),
            "syncs": self.syncs,
            "sync": summary(self.sync_seconds),
            "history": self.history,
        }
        if ids:
            out["task_ids"] = sorted(fb.accepted_ids)
        return out


def server_app(spec: JobSpec) -> FastAPI:
    """The server's ASGI app: ``POST /sync``, ``GET /status``, ``GET /health``."""
    server = EdgeServer(spec)
    app = FastAPI(title="redfl edge server", docs_url=None, redoc_url=None)
    app.state.server = server

    # handled on the event loop, one at a time, no locks needed; on the fast path (the body
    # parsed and the reply written by pydantic straight from and to bytes), since FastAPI's
    # per-request machinery costs more than the sync itself. A malformed body gets 400.
    async def sync(request: SyncRequest, caller: str, body: bytes) -> Answer:
        return ok(server.sync(request))

    serve_routes(app, [Route("/sync", SyncRequest, SyncReply, sync, Public())])

    @app.get("/status")
    async def status(ids: bool = False) -> dict[str, Any]:
        return server.status(ids)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "OK"}

    return app
