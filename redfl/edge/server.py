"""The edge server: the global model of one FedBuff job, its versions and device selection.

LCPs reach it over mutually authenticated TLS (``POST /sync``, see :mod:`redfl.edge.wire`),
directly or through the relays above them (a relay passes a sync on unchanged: a sum of sums
is the same sum). ``/sync`` is answered only for a provisioned component of the server's
tree: the client certificate must be an LCP of the tree, or a relay whose parent is the
server, checked against the tree's register (a revoked one is refused at its next request),
and the ``lcp`` a sync names must be its caller or below the calling relay (403 otherwise).
A partial sum whose weight exceeds ``max_samples_per_update`` per folded update is refused.
``GET /status`` (an operator's credential) reports the version, the counters and the
evaluation history; with ``?ids=true`` it lists every folded task id (the end-to-end test
checks that nothing acknowledged is lost or counted twice). ``GET /health`` answers any
member of the tree.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI

from redfl.edge.errors import error_body
from redfl.edge.fastpath import serve_routes
from redfl.edge.fedbuff import FedBuff, PartialSum
from redfl.edge.jobs import JobSpec, evaluate, initial_parameters
from redfl.edge.protocol import Status, decode_arrays, encode_arrays
from redfl.edge.provision import Member
from redfl.edge.routes import Answer, Operator, PeerCertificate, Route, guard, ok
from redfl.edge.selection import Selector
from redfl.edge.timing import Samples, summary
from redfl.edge.wire import SyncReply, SyncRequest, VerdictMsg, speaks_for
from redfl.topology.tree import RelayTree
from redfl.trust import KINDS

__all__ = ["MAX_SYNC_BYTES", "EdgeServer", "server_app"]


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
            limits=self.spec.limits(),
        )

    def _fold(
        self, base: int, sums: str, weight: float, task_ids: list[str], devices: list[str]
    ) -> VerdictMsg:
        """Submit one partial sum to FedBuff and free its devices' slots."""
        for device in devices:
            self.selector.reported(device)
        cap = self.spec.max_samples_per_update * len(task_ids)
        if weight > cap:
            self.fedbuff.rejected["over the cap"] += len(task_ids)
            reason = f"over the cap: weight {weight:g} for {len(task_ids)} updates (at most {cap})"
            return VerdictMsg(accepted=False, reason=reason)
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


MAX_SYNC_BYTES = 512 * 1024 * 1024
"""The largest ``/sync`` body: a sync carries a partial sum (float64, base64) per version."""


def server_app(spec: JobSpec, tree: RelayTree, member: Member) -> FastAPI:
    """The server's ASGI app: ``POST /sync``, ``GET /status``, ``GET /health``.

    Parameters
    ----------
    spec : JobSpec
        The job.
    tree : RelayTree
        The tree whose LCPs (and top relays) may sync.
    member : Member
        The server's credential and the verifier of its callers.
    """
    server = EdgeServer(spec)
    app = FastAPI(title="redfl edge server", docs_url=None, redoc_url=None)
    app.state.server = server
    callers = PeerCertificate(
        member.peers,
        {
            "lcp": frozenset(s.name for s in tree.lcps),
            "relay": frozenset(s.name for s in tree.children("server", ["relay"])),
        },
    )

    # handled on the event loop, one at a time, no locks needed; on the fast path (the body
    # parsed and the reply written by pydantic straight from and to bytes), since FastAPI's
    # per-request machinery costs more than the sync itself. A malformed body gets 400.
    async def sync(request: SyncRequest, caller: str, body: bytes) -> Answer:
        refusal = speaks_for(tree, caller, request.lcp)
        if refusal:
            return 403, error_body(Status.ERROR, refusal)
        return ok(server.sync(request))

    forbidden = {403: "The caller may not sync for the LCP the body names"}
    route = Route("/sync", SyncRequest, SyncReply, sync, callers, forbidden, MAX_SYNC_BYTES)
    serve_routes(app, [route])
    operator = guard(app, Operator(member.peers))
    anyone = guard(app, PeerCertificate(member.peers, dict.fromkeys(KINDS)))

    @app.get("/status", dependencies=[operator])
    async def status(ids: bool = False) -> dict[str, Any]:
        return server.status(ids)

    @app.get("/health", dependencies=[anyone])
    async def health() -> dict[str, str]:
        return {"status": "OK"}

    return app
