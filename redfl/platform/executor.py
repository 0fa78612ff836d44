"""The run queue of the server: queued runs become Ray jobs, at most
``max_concurrent_runs`` at a time, and runs whose job died are marked failed.

The executor is a background task of the app (``redfl serve``). It holds no run state of its
own: the store says which runs wait and which are in flight, so a restarted server carries
on where a killed one stopped. On start-up, and every ``reconcile_seconds`` after, it asks
the job server about each run in flight; a run whose job ended without ending the run (a
crash, a killed process, a lost Ray head) is marked failed with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from redfl.platform.models import FINAL_STATUSES
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
        self._client: JobClient | None = None

    def client(self, start: bool) -> JobClient | None:
        """The job client: of ``--ray-address``, else of the embedded head (started when
        ``start``; ``None`` when it is not running and not to be started)."""
        if self.settings.ray_address not in (None, "local"):
            assert self.settings.ray_address is not None
            if self._client is None:
                self._client = JobClient(job_server_url(self.settings.ray_address))
            return self._client
        data = self.settings.data_dir
        head = ensure_head(data, self.settings.ray_num_cpus) if start else read_head(data)
        if head is None:
            self._client = None
        elif self._client is None or self._client.url != head.job_server:
            self._client = JobClient(head.job_server, auth_token(data))
        return self._client

    def _end(self, run_id: str, reason: str) -> bool:
        """Mark the run failed with ``reason`` unless it has ended; whether it was marked."""
        with self.sessions() as session:
            store = Store(session)
            if store.require_run(run_id).status in FINAL_STATUSES:
                return False
            try:
                store.end_run(run_id, "failed", reason)
            except Conflict:  # ended meanwhile by someone else
                return False
        LOG.warning("run failed", extra={"event": "run_reconciled", "run_id": run_id})
        return True

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
        for run_id, run_dir in runs:
            try:
                client = self.client(start=True)
                assert client is not None
                job_id = client.submit(
                    job_id_of(run_id), entrypoint(run_id, run_dir, data_dir), env
                )
            except JobError as error:
                self._end(run_id, f"could not start its Ray job: {error}")
                continue
            with self.sessions() as session:
                Store(session).set_job_id(run_id, job_id)
            LOG.info("run submitted", extra={"event": "run_submitted", "run_id": run_id})
        return len(runs)

    async def serve(self) -> None:
        """Reconcile, then dispatch every ``interval`` and reconcile every
        ``reconcile_seconds``, until cancelled."""
        last = time.monotonic()
        await asyncio.to_thread(self.reconcile)
        while True:
            try:
                await asyncio.to_thread(self.dispatch)
                if time.monotonic() - last >= self.reconcile_seconds:
                    last = time.monotonic()
                    await asyncio.to_thread(self.reconcile)
            except Exception:  # a database or Ray hiccup must not end the queue
                LOG.exception("executor error", extra={"event": "executor_error"})
            await asyncio.sleep(self.interval)
