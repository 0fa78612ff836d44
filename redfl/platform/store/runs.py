"""Runs and what they produce: per-round metrics, failures and the event stream."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from redfl.platform.models import (
    FINAL_STATUSES,
    RUN_STATUSES,
    Event,
    Failure,
    Project,
    RoundMetric,
    Run,
    User,
    utcnow,
)
from redfl.platform.store.errors import Conflict, NotFound, commit_or_conflict, require_row

TRANSITIONS = {
    "queued": {"running", "failed", "cancelled"},
    "running": {"succeeded", "failed", "cancelled"},
}
"""The allowed status changes; final statuses have none."""

_SUMMARIES = (
    select(
        Run.id,
        Run.name,
        Project.name,
        User.name,
        Run.status,
        Run.cancel_requested,
        Run.rounds,
        Run.created_at,
        Run.started_at,
        Run.finished_at,
        Run.error,
    )
    .outerjoin(Project, Run.project_id == Project.id)
    .outerjoin(User, Run.owner_id == User.id)
    .order_by(Run.created_at.desc(), Run.id)
)
SUMMARY_FIELDS = (
    "id",
    "name",
    "project",
    "owner",
    "status",
    "cancel_requested",
    "rounds",
    "created_at",
    "started_at",
    "finished_at",
    "error",
)
"""The keys of :meth:`RunStore.run_summaries`' rows, in the order of its query's columns."""
_RUN_ID = select(Run.id).where(Run.id == bindparam("run_id"))
_RECORDS = (
    select(RoundMetric.record)
    .where(RoundMetric.run_id == bindparam("run_id"))
    .order_by(RoundMetric.round)
)
_RUN_RECORDS = (
    select(Run.id, RoundMetric.record)
    .outerjoin(RoundMetric, RoundMetric.run_id == Run.id)
    .where(Run.id == bindparam("run_id"))
    .order_by(RoundMetric.round)
)


def new_run_id() -> str:
    """A fresh run id: 32 hexadecimal digits."""
    return uuid.uuid4().hex


class RunStore:
    """The run part of :class:`~redfl.platform.store.Store` (needs ``self.session``)."""

    session: Session

    def create_run(
        self,
        *,
        run_id: str,
        name: str,
        owner_id: int | None,
        project_id: int | None,
        config_text: str,
        config_format: str,
        rounds: int,
        run_dir: str,
    ) -> Run:
        """Add a run with status ``queued``."""
        run = Run(
            id=run_id,
            name=name,
            owner_id=owner_id,
            project_id=project_id,
            config_text=config_text,
            config_format=config_format,
            rounds=rounds,
            status="queued",
            cancel_requested=False,
            run_dir=run_dir,
        )
        self.session.add(run)
        self.session.commit()
        self.session.refresh(run)
        return run

    def get_run(self, run_id: str) -> Run | None:
        """The run with ``run_id``, or ``None``."""
        return self.session.get(Run, run_id)

    def require_run(self, run_id: str) -> Run:
        """The run with ``run_id``; a :class:`NotFound` if there is none."""
        return require_row(self.session, Run, run_id, f"run {run_id!r}")

    def check_run(self, run_id: str) -> None:
        """Nothing if run ``run_id`` exists; a :class:`NotFound` if not (reads its id only)."""
        if self.session.connection().scalar(_RUN_ID, {"run_id": run_id}) is None:
            raise NotFound(f"run {run_id!r} does not exist")

    def run_summaries(
        self,
        status: str | None = None,
        project_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Runs, newest first (ties by id), optionally of one status or project, as rows of
        the list view: ``id``, ``name``, ``project`` and ``owner`` (names), ``status``,
        ``cancel_requested``, ``rounds``, ``created_at``, ``started_at``, ``finished_at``,
        ``error``.

        One query of those columns on the session's connection (no config text, no ORM
        objects).
        """
        query = _SUMMARIES
        if status is not None:
            query = query.where(Run.status == status)
        if project_id is not None:
            query = query.where(Run.project_id == project_id)
        rows = self.session.connection().execute(query.limit(limit).offset(offset))
        return [dict(zip(SUMMARY_FIELDS, row, strict=True)) for row in rows]

    def runs_by_status(self) -> dict[str, int]:
        """How many runs have each status (every status present, 0 included)."""
        counts = dict.fromkeys(RUN_STATUSES, 0)
        rows = self.session.execute(select(Run.status, func.count()).group_by(Run.status))
        for status, count in rows:
            counts[status] = int(count)
        return counts

    def set_status(self, run_id: str, status: str, error: str | None = None) -> Run:
        """Move a run to ``status`` (start and finish times follow); a forbidden change is
        a :class:`Conflict`."""
        run = self.require_run(run_id)
        if status not in TRANSITIONS.get(run.status, set()):
            raise Conflict(f"run {run_id!r}: cannot go from {run.status!r} to {status!r}")
        run.status = status
        now = utcnow()
        if status == "running":
            run.started_at = now
        if status in FINAL_STATUSES:
            run.finished_at = now
        if error is not None:
            run.error = error
        self.session.commit()
        return run

    def set_job_id(self, run_id: str, job_id: str) -> Run:
        """Record the id of the job that executes the run."""
        run = self.require_run(run_id)
        run.job_id = job_id
        self.session.commit()
        return run

    def request_cancel(self, run_id: str) -> Run:
        """Cancel a queued run at once; mark a running one to be cancelled by its executor.

        A finished run is a :class:`Conflict`.
        """
        run = self.require_run(run_id)
        if run.status in FINAL_STATUSES:
            raise Conflict(f"run {run_id!r} is already {run.status}")
        run.cancel_requested = True
        if run.status == "queued":
            run.status = "cancelled"
            run.finished_at = utcnow()
        self.session.commit()
        return run

    def add_round_metric(self, run_id: str, rnd: int, record: dict[str, Any]) -> None:
        """Store the record of round ``rnd``; a second record of one round is a
        :class:`Conflict`."""
        self.session.add(RoundMetric(run_id=run_id, round=rnd, record=record))
        commit_or_conflict(self.session, f"run {run_id!r} already has round {rnd}")

    def round_metrics(self, run_id: str) -> list[dict[str, Any]]:
        """The run's round records, by round."""
        return list(self.session.connection().scalars(_RECORDS, {"run_id": run_id}))

    def require_round_metrics(self, run_id: str) -> list[dict[str, Any]]:
        """:meth:`round_metrics` in one query with the run's existence: a :class:`NotFound`
        if there is no such run."""
        rows = self.session.connection().execute(_RUN_RECORDS, {"run_id": run_id}).all()
        if not rows:
            raise NotFound(f"run {run_id!r} does not exist")
        return [record for _, record in rows if record is not None]

    def add_failure(self, run_id: str, rnd: int, node: str, phase: str, reason: str) -> None:
        """Store one client failure."""
        self.session.add(Failure(run_id=run_id, round=rnd, node=node, phase=phase, reason=reason))
        self.session.commit()

    def failures(self, run_id: str) -> list[Failure]:
        """The run's failures, in the order they were stored."""
        query = select(Failure).where(Failure.run_id == run_id).order_by(Failure.id)
        return list(self.session.scalars(query))

    def append_event(self, run_id: str, type_: str, data: dict[str, Any]) -> int:
        """Append an event to the run's stream; its ``seq`` (0, 1, 2, ...).

        Two writers racing for one ``seq`` cannot both win: the loser retries with the next.
        """
        for _ in range(10):
            last = self.session.scalar(select(func.max(Event.seq)).where(Event.run_id == run_id))
            seq = 0 if last is None else int(last) + 1
            self.session.add(Event(run_id=run_id, seq=seq, type=type_, data=data))
            try:
                self.session.commit()
            except IntegrityError:
                self.session.rollback()
                continue
            return seq
        raise Conflict(f"run {run_id!r}: could not append an event (too many writers)")

    def events(self, run_id: str, after: int = -1) -> list[Event]:
        """The run's events with ``seq > after``, in order (the replay of a late subscriber)."""
        query = select(Event).where(Event.run_id == run_id, Event.seq > after)
        return list(self.session.scalars(query.order_by(Event.seq)))
