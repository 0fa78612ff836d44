"""The run queue of the server: queued runs become Ray jobs, at most
``max_concurrent_runs`` at a time, and runs whose job died are marked failed.

The executor is a background task of the app (``redfl serve``). It holds no run state of its
own: the store says which runs wait and which are in flight, so a restarted server carries
on where a killed one stopped. On start-up, and every ``reconcile_seconds`` after, it asks
the job server about each run in flight; a run whose job ended without ending the run (a
crash, a killed process, a lost Ray head) is marked failed with the reason.

Several servers may share one database (replicas): only the one holding the ``executor``
lease (:meth:`~redfl.platform.store.Store.hold_lease`, renewed every loop, taken over by
another server when it lapses) dispatches and reconciles, and a run is claimed by one
conditional write before its job is submitted, so no run executes twice.

It also enforces stops: a run asked to stop (``POST /api/runs/{id}/stop``) or past the
operator's ``max_run_seconds`` is stopped by its own job within a second; a job that has
not ended it ``stop_grace_seconds`` later is stopped through Ray and the run marked
``stopped``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import socket
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from redfl.platform.models import FINAL_STATUSES, utcnow
from redfl.platform.settings import Settings
from redfl.platform.store import Conflict, Store
from redfl.runtime.jobs import (
    FINAL_JOB_STATUSES,
    JobClient,
    JobError,
    auth_token,
    ensure_head,
    job_server_url,
    read_head,
)

LOG = logging.getLogger("redfl.platform")
DATABASE_URL_ENV = "REDFL_DATABASE_URL"
"""How the job gets a ``--database-url`` (not on its command line, which Ray shows)."""
LEASE = "executor"
LEASE_SECONDS = 15.0
"""How long the executor lease lasts unless renewed: a server that died is replaced by
another within this."""
RENEW_SECONDS = 5.0
"""How often the holder renews the lease (a write); in between it knows it holds it."""


def job_id_of(run_id: str) -> str:
    """The Ray job id (submission id) of a run."""
    return f"redfl-{run_id}"


def entrypoint(run_id: str, run_dir: str, data_dir: Path) -> str:
    """The job's shell command: this interpreter, in the run folder (a folder without
    package-named folders in it), running :mod:`redfl.platform.job`."""
    command = [sys.executable, "-m", "redfl.platform.job", run_id, "--data", str(data_dir)]
    return f"cd {shlex.quote(run_dir)} && exec {shlex.join(command)}"


class Executor:
    """Dispatches queued runs to Ray jobs and reconciles the runs in flight."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        interval: float = 0.5,
        reconcile_seconds: float = 5.0,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.interval = interval
        self.reconcile_seconds = reconcile_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._client: JobClient | None = None
        self._stop_seen: dict[str, float] = {}
        self._renewed = -RENEW_SECONDS

    def lead(self) -> bool:
        """Take or renew the executor lease (at most every ``RENEW_SECONDS`` while held);
        whether this server executes runs now."""
        if time.monotonic() - self._renewed < RENEW_SECONDS:
            return True
        with self.sessions() as session:
            held = Store(session).hold_lease(LEASE, self.holder, LEASE_SECONDS)
        self._renewed = time.monotonic() if held else -RENEW_SECONDS
        return held

    def release(self) -> None:
        """Give the lease up (a server that stops lets another take over at once)."""
        self._renewed = -RENEW_SECONDS
        with self.sessions() as session:
            Store(session).release_lease(LEASE, self.holder)

    def client(self, start: bool) -> JobClient | None:
        """The job client: of ``--ray-address``, else of the embedded head (started when
        ``start``; ``None`` when it is not running and not to be started)."""
        if self.settings.ray_address not in (None, "local"):
            assert self.settings.ray_address is not None
            if self._client is None:
                self._client = JobClient(job_server_url(self.settings.ray_address))
            return self._client
        data = self.settings.data_dir
        head = (
            ensure_head(data, self.settings.ray_num_cpus, nice=self.settings.ray_nice)
            if start
            else read_head(data)
        )
        if head is None:
            self._client = None
        elif self._client is None or self._client.url != head.job_server:
            self._client = JobClient(head.job_server, auth_token(data))
        return self._client

    def _end(self, run_id: str, reason: str) -> bool:
        """End the run (failed with ``reason``; stopped, with its stop's reason, when it was
        asked to stop) unless it has ended; whether it was ended here."""
        with self.sessions() as session:
            store = Store(session)
            run = store.require_run(run_id)
            if run.status in FINAL_STATUSES:
                return False
            status, why = (
                ("stopped", run.error or reason) if run.stop_requested else ("failed", reason)
            )
            try:
                store.end_run(run_id, status, why)
            except Conflict:  # ended meanwhile by someone else
                return False
        LOG.warning(f"run {status}", extra={"event": "run_reconciled", "run_id": run_id})
        return True

    def enforce_stops(self) -> int:
        """Ask runs past ``max_run_seconds`` to stop; stop through Ray the jobs that have
        not ended their stopped run within ``stop_grace_seconds``; how many jobs were
        stopped so."""
        limit = self.settings.max_run_seconds
        now = time.monotonic()
        with self.sessions() as session:
            store = Store(session)
            runs = [(r.id, r.job_id, r.started_at, r.stop_requested) for r in store.in_flight()]
            for run_id, _, started, asked in runs:
                if limit is None or started is None or asked:
                    continue
                if utcnow() - started > timedelta(seconds=limit):
                    reason = f"stopped: the wall-clock limit of {limit} s was reached"
                    store.request_stop(run_id, reason)
        stopped = 0
        for run_id, job_id, _, asked in runs:
            if not asked:
                continue
            seen = self._stop_seen.setdefault(run_id, now)
            if now - seen < self.settings.stop_grace_seconds or job_id is None:
                continue
            try:
                client = self.client(start=False)
                if client is not None:
                    client.stop(job_id)
            except JobError:
                pass
            stopped += self._end(run_id, "its Ray job was stopped")
        live = {run_id for run_id, *_ in runs}
        self._stop_seen = {k: v for k, v in self._stop_seen.items() if k in live}
        return stopped

    def reconcile(self) -> int:
        """Mark failed every run in flight whose job has ended or is unknown; how many."""
        with self.sessions() as session:
            runs = [(r.id, r.job_id) for r in Store(session).in_flight()]
        if not runs:
            return 0
        try:
            client = self.client(start=False)
        except JobError as error:
            client, gone = None, str(error)
        else:
            gone = "the embedded Ray head is not running"
        ended = 0
        for run_id, job_id in runs:
            if client is None or job_id is None:
                reason = f"its Ray job is gone: {gone if client is None else 'no job id'}"
            else:
                try:
                    status = client.status(job_id)
                except JobError:  # the job server does not answer now: ask again later
                    continue
                if status not in (*FINAL_JOB_STATUSES, "UNKNOWN"):
                    continue
                detail = client.message(job_id) if status != "UNKNOWN" else "unknown to Ray"
                reason = f"its Ray job {job_id} ended ({status}) without ending the run: {detail}"
            ended += self._end(run_id, reason)  # a run its job ended meanwhile is left alone
        return ended

    def dispatch(self) -> int:
        """Submit the oldest queued runs while fewer than ``max_concurrent_runs`` are in
        flight; how many were submitted."""
        with self.sessions() as session:
            store = Store(session)
            free = self.settings.max_concurrent_runs - len(store.in_flight())
            runs = [(r.id, r.run_dir) for r in store.waiting(free)] if free > 0 else []
        env = {"RAY_USAGE_STATS_ENABLED": "0"}
        if self.settings.database_url is not None:
            env[DATABASE_URL_ENV] = self.settings.database_url
        data_dir = self.settings.data_dir.resolve()
        submitted = 0
        for run_id, run_dir in runs:
            job_id = job_id_of(run_id)
            with self.sessions() as session:
                if not Store(session).claim_run(run_id, job_id):
                    continue  # claimed by another server, or cancelled meanwhile
            try:
                client = self.client(start=True)
                assert client is not None
                client.submit(job_id, entrypoint(run_id, run_dir, data_dir), env)
            except JobError as error:
                self._end(run_id, f"could not start its Ray job: {error}")
                continue
            submitted += 1
            LOG.info("run submitted", extra={"event": "run_submitted", "run_id": run_id})
        return submitted

    def start_head(self) -> None:
        """Start the embedded Ray head now (not at the first run), if it is the one used."""
        if self.settings.ray_address in (None, "local"):
            self.client(start=True)

    def step(self, reconcile: bool) -> bool:
        """One turn of the loop, if this server holds the lease: enforce stops, dispatch,
        and reconcile when asked; whether it held the lease."""
        if not self.lead():
            return False
        self.enforce_stops()
        self.dispatch()
        if reconcile:
            self.reconcile()
        return True

    async def serve(self, start_head: bool = True) -> None:
        """Until cancelled: while this server holds the lease, reconcile, then dispatch
        every ``interval`` and reconcile every ``reconcile_seconds`` (the embedded head
        started first, with ``start_head``); otherwise wait for the lease."""
        last = -self.reconcile_seconds
        headed = not start_head
        try:
            while True:
                try:
                    due = time.monotonic() - last >= self.reconcile_seconds
                    if await asyncio.to_thread(self.step, due) and due:
                        last = time.monotonic()
                    if not headed and await asyncio.to_thread(self.lead):
                        headed = True
                        await asyncio.to_thread(self.start_head)
                except Exception:  # a database or Ray hiccup must not end the queue
                    LOG.exception("executor error", extra={"event": "executor_error"})
                await asyncio.sleep(self.interval)
        finally:
            await asyncio.to_thread(self.release)
