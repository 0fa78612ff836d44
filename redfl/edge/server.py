"""The edge server: the jobs of a standing deployment, their global models and selections.

The server holds several jobs at once (:class:`EdgeServer`); each is a run with its own
folder under the server's jobs folder (:mod:`redfl.edge.job`). LCPs and relays stay up across
jobs: every sync carries all the jobs its sender knows, and its reply all the jobs the
server holds (a new job reaches every LCP at their next sync; devices ask for a job by name).
The server's state survives it: started again on the same jobs folder, it takes back every job
that had not ended, from its last snapshot and journal, before it answers anyone.

Routes (every one authenticated):

* ``POST /sync`` (the fast path): a provisioned LCP of the server's tree, or a relay whose
  parent is the server, checked against the tree's register (a revoked one is refused at its
  next request); a sync must be the caller's own or, through a relay that passes syncs on,
  an LCP's below it (403 otherwise, :func:`redfl.edge.wire.speaks_for`), and a partial sum
  may hold only task ids of LCPs at or below its sender. A partial sum whose weight exceeds
  ``max_samples_per_update`` per folded update is refused.
* ``POST /jobs`` (submit), ``POST /jobs/abort``, ``GET /jobs``, ``GET /jobs/{id}`` (with
  ``?ids=true`` every folded task id: the tests check that nothing acknowledged is lost or
  counted twice) and ``GET /status``: an operator's credential (certificate or token).
* ``GET /health``: any member of the tree.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from redfl.core.config import ConfigError
from redfl.edge.errors import InvalidRequest, error_body
from redfl.edge.fastpath import serve_routes
from redfl.edge.job import EdgeJob, job_summary
from redfl.edge.jobs import JobSpec, build_job, check_arrays
from redfl.edge.protocol import MAX_PARAMETERS_CHARS, Name, Status, decode_arrays
from redfl.edge.provision import Member
from redfl.edge.routes import Answer, Operator, PeerCertificate, Route, guard, ok
from redfl.edge.state import StateError
from redfl.edge.timing import Samples, summary
from redfl.edge.wire import SyncReply, SyncRequest, VerdictMsg, speaks_for
from redfl.topology.tree import RelayTree
from redfl.trust import KINDS

__all__ = [
    "MAX_JOB_BYTES",
    "MAX_SYNC_BYTES",
    "AbortRequest",
    "EdgeServer",
    "JobConflict",
    "JobList",
    "JobSummary",
    "SubmitRequest",
    "server_app",
]

log = logging.getLogger(__name__)


class JobConflict(ValueError):
    """A job of that name is running already (answered with 409)."""


class SubmitRequest(BaseModel):
    """``POST /jobs``: a job, and its initial model when the job file named one (the base64
    text of a safetensors file of float arrays)."""

    model_config = ConfigDict(extra="forbid")

    job: JobSpec
    model: Annotated[str, Field(max_length=MAX_PARAMETERS_CHARS)] = ""


class AbortRequest(BaseModel):
    """``POST /jobs/abort``: end a running job now."""

    model_config = ConfigDict(extra="forbid")

    job_id: Name
    reason: Annotated[str, Field(max_length=500)] = ""


class JobSummary(BaseModel):
    """A job as ``GET /jobs`` lists it (and as ``summary.json`` holds it once it ended)."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    name: str
    client: str
    status: str
    error: str | None = None
    version: int
    rounds_planned: int
    accepted: int
    failures: int
    folder: str


class JobList(BaseModel):
    """``GET /jobs``: every job, the oldest first."""

    jobs: list[dict[str, Any]]


class EdgeServer:
    """The jobs of one server, and its syncs.

    Parameters
    ----------
    jobs_dir : Path
        Where the jobs' run folders go (created if missing); the jobs found there that had
        not ended are taken back.
    clock : Callable[[], float], default time.monotonic
        Time source of the selections (device timeouts) and of the jobs' time.
    allowed_prefixes : Sequence[str] | None, default None
        Modules a submitted job may import (None: any).
    fsync : bool, default False
        Sync each journal line to disk (survives the machine, not only the process).
    retain : float, default 600.0
        Seconds an ended job stays in the syncs (devices asking for it get ``DONE`` and its
        final model); it is listed for ever.
    snapshot_interval : float, default 2.0
        Seconds between a job's snapshots while only its buffer or selection changes.
    """

    def __init__(
        self,
        jobs_dir: Path,
        clock: Callable[[], float] = time.monotonic,
        allowed_prefixes: Sequence[str] | None = None,
        fsync: bool = False,
        retain: float = 600.0,
        snapshot_interval: float = 2.0,
    ) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.allowed_prefixes = allowed_prefixes
        self.fsync, self.retain, self.snapshot_interval = fsync, retain, snapshot_interval
        self.boot = uuid.uuid4().hex[:8]
        self.jobs: dict[str, EdgeJob] = {}  # live: running, or ended within `retain`
        self.ended: dict[str, dict[str, Any]] = {}  # summaries of the jobs that ended
        self.syncs = 0
        self.sync_seconds: Samples = deque(maxlen=100_000)  # time in sync(), per request
        self.resumed: list[str] = []
        self._load()

    def _load(self) -> None:
        """Take back the jobs of ``jobs_dir`` that had not ended; list the others."""
        folders = [f for f in self.jobs_dir.iterdir() if (f / "config.json").is_file()]
        for folder in sorted(folders, key=lambda f: f.stat().st_mtime):
            ended = job_summary(folder)
            if ended is not None:
                self.ended[folder.name] = ended
                continue
            try:
                job = EdgeJob.resume(
                    folder, self.clock, self.allowed_prefixes, self.fsync, self.snapshot_interval
                )
            except (StateError, ConfigError, OSError, ValueError) as exc:
                log.error("edge job %s cannot be taken back: %s", folder.name, exc)
                self.ended[folder.name] = {
                    "job_id": folder.name,
                    "name": folder.name,
                    "client": "",
                    "status": "failed",
                    "error": f"cannot be taken back: {exc}",
                    "version": 0,
                    "rounds_planned": 0,
                    "accepted": 0,
                    "failures": 0,
                    "folder": str(folder),
                }
                continue
            self.jobs[job.job_id] = job
            self.resumed.append(job.job_id)

    # -- operator's actions ------------------------------------------------------------

    def submit(self, spec: JobSpec, model: dict[str, Any] | None = None) -> EdgeJob:
        """Start a job.

        Raises
        ------
        JobConflict
            If a job of that name is running.
        ConfigError
            For a job that does not build (naming the field).
        """
        for job in self.jobs.values():
            if job.running and job.spec.name == spec.name:
                raise JobConflict(f"a job named {spec.name!r} is running: {job.job_id}")
        arrays = None if model is None else check_arrays(model, "model")
        built = build_job(spec, arrays, self.allowed_prefixes)
        job = EdgeJob.create(built, self.jobs_dir, self.clock, self.fsync, self.snapshot_interval)
        self.jobs[job.job_id] = job
        return job

    def abort(self, job_id: str, reason: str = "") -> dict[str, Any]:
        """End a running job now; its summary.

        Raises
        ------
        KeyError
            If the server holds no job of that id.
        """
        job = self.jobs.get(job_id)
        if job is None:
            if job_id in self.ended:
                return self.ended[job_id]
            raise KeyError(job_id)
        job.abort(reason)
        return job.summary()

    def by_name(self, name: str) -> EdgeJob | None:
        """The running job of that name, else the latest that ended (while it is retained)."""
        found = [job for job in self.jobs.values() if job.spec.name == name]
        running = [job for job in found if job.running]
        chosen = running or found
        return chosen[-1] if chosen else None

    def listing(self) -> list[dict[str, Any]]:
        """Every job's summary, ended ones first, in the order they came."""
        live = {job_id: job.summary() for job_id, job in self.jobs.items()}
        return [*(v for k, v in self.ended.items() if k not in live), *live.values()]

    def job_status(self, job_id: str, ids: bool = False) -> dict[str, Any]:
        """One job's status with its history (and folded ids).

        Raises
        ------
        KeyError
            If the server holds no job of that id.
        """
        job = self.jobs.get(job_id)
        if job is not None:
            return job.status_report(ids)
        return self.ended[job_id]

    def status(self) -> dict[str, Any]:
        """The server's boot, its syncs, and every job's summary."""
        return {
            "boot": self.boot,
            "syncs": self.syncs,
            "sync": summary(self.sync_seconds),
            "resumed": self.resumed,
            "jobs": self.listing(),
        }

    # -- syncs -------------------------------------------------------------------------

    def sync(self, request: SyncRequest, lcps: frozenset[str] | None = None) -> SyncReply:
        """Take a sender's report for every job it knows; return every job for it.

        ``lcps`` are the LCPs at or below the sender (default: the sender alone).
        """
        start = time.perf_counter()
        try:
            return self._sync(request, lcps if lcps is not None else frozenset({request.sender}))
        finally:
            self.sync_seconds.append(time.perf_counter() - start)

    def _sync(self, request: SyncRequest, lcps: frozenset[str]) -> SyncReply:
        self.syncs += 1
        verdicts: dict[str, list[VerdictMsg]] = {}
        for job_id, part in request.jobs.items():
            job = self.jobs.get(job_id)
            if job is not None:
                verdicts[job_id] = job.take(request.sender, request.boot, request.seq, part, lcps)
        now = self.clock()
        for job_id, job in list(self.jobs.items()):
            job.tick()
            if job.ended_at is not None and now - job.ended_at > self.retain:
                self.ended[job_id] = job.summary()
                job.close()
                del self.jobs[job_id]
        fresh = request.server_boot != self.boot
        ordered = sorted(lcps)
        states = [
            job.state_for(request.jobs.get(job_id), ordered, fresh, verdicts.get(job_id, []))
            for job_id, job in self.jobs.items()
        ]
        return SyncReply(server_boot=self.boot, jobs=states)

    def close(self) -> None:
        """Write what is pending (the server stops)."""
        for job in self.jobs.values():
            job.close()


MAX_SYNC_BYTES = 512 * 1024 * 1024
"""The largest ``/sync`` body: a sync carries a partial sum (float64, base64) per version."""
MAX_JOB_BYTES = MAX_PARAMETERS_CHARS + 1024 * 1024
"""The largest ``POST /jobs`` body: a job and its initial model."""


def _body(data: object, status: int = 200) -> Answer:
    return status, json.dumps(data).encode()


def server_app(server: EdgeServer, tree: RelayTree, member: Member) -> FastAPI:
    """The server's ASGI app (see the module docstring for its routes).

    Parameters
    ----------
    server : EdgeServer
        The jobs.
    tree : RelayTree
        The tree whose LCPs (and top relays) may sync.
    member : Member
        The server's credential and the verifier of its callers.
    """
    app = FastAPI(title="redfl edge server", docs_url=None, redoc_url=None)
    app.state.server = server
    callers = PeerCertificate(
        member.peers,
        {
            "lcp": frozenset(s.name for s in tree.lcps),
            "relay": frozenset(s.name for s in tree.children("server", ["relay"])),
        },
    )
    below: dict[str, frozenset[str]] = {}

    # handled on the event loop, one at a time, no locks needed; on the fast path (the body
    # parsed and the reply written by pydantic straight from and to bytes), since FastAPI's
    # per-request machinery costs more than the sync itself. A malformed body gets 400.
    async def sync(request: SyncRequest, caller: str, body: bytes) -> Answer:
        refusal = speaks_for(tree, caller, request.sender)
        if refusal:
            return 403, error_body(Status.ERROR, refusal)
        lcps = below.get(request.sender)
        if lcps is None:
            lcps = below[request.sender] = frozenset(tree.lcps_under(request.sender))
        return ok(server.sync(request, lcps))

    async def submit(request: SubmitRequest, caller: str, body: bytes) -> Answer:
        model = None
        if request.model:
            try:
                model = decode_arrays(request.model)
            except ValueError as exc:
                raise InvalidRequest(f"model: {exc}") from None
        try:
            job = server.submit(request.job, model)
        except JobConflict as exc:
            return 409, error_body(Status.ERROR, str(exc))
        except ConfigError as exc:
            raise InvalidRequest(str(exc)) from None
        log.info("edge job %s submitted by %s", job.job_id, caller)
        return _body(job.summary())

    async def abort(request: AbortRequest, caller: str, body: bytes) -> Answer:
        try:
            ended = server.abort(request.job_id, request.reason)
        except KeyError:
            return 404, error_body(Status.NO_JOB, f"no job with id {request.job_id!r}")
        log.info("edge job %s aborted by %s", request.job_id, caller)
        return _body(ended)

    operator_auth = Operator(member.peers)
    sync_meaning = {403: "The caller may not sync for the sender the body names"}
    serve_routes(
        app,
        [
            Route("/sync", SyncRequest, SyncReply, sync, callers, sync_meaning, MAX_SYNC_BYTES),
            Route(
                "/jobs",
                SubmitRequest,
                JobSummary,
                submit,
                operator_auth,
                {409: "A job of that name is running"},
                MAX_JOB_BYTES,
            ),
            Route(
                "/jobs/abort",
                AbortRequest,
                JobSummary,
                abort,
                operator_auth,
                {404: "No job of that id"},
            ),
        ],
    )
    operator = guard(app, operator_auth)
    anyone = guard(app, PeerCertificate(member.peers, dict.fromkeys(KINDS)))

    @app.get("/jobs", dependencies=[operator], response_model=JobList)
    async def jobs() -> dict[str, Any]:
        """Every job's summary."""
        return {"jobs": server.listing()}

    @app.get("/jobs/{job_id}", dependencies=[operator])
    async def job(job_id: str, ids: bool = False) -> dict[str, Any]:
        """One job: its summary and the history of its versions."""
        try:
            return server.job_status(job_id, ids)
        except KeyError:
            raise HTTPException(404, f"no job with id {job_id!r}") from None

    @app.get("/status", dependencies=[operator])
    async def status() -> dict[str, Any]:
        return server.status()

    @app.get("/health", dependencies=[anyone])
    async def health() -> dict[str, str]:
        return {"status": "OK", "boot": server.boot}

    return app
