"""Runs and what they produce: per-round metrics, failures and the event stream."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Select,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
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
    name_key,
    run_tags,
    utcnow,
)
from redfl.platform.store.errors import Conflict, NotFound, commit_or_conflict, require_row

TRANSITIONS = {
    "queued": {"running", "failed", "cancelled", "stopped"},
    "running": {"succeeded", "failed", "cancelled", "stopped"},
}
"""The allowed status changes; final statuses have none."""


SelectT = TypeVar("SelectT", bound="Select[*tuple[Any, ...]]")


@dataclass(frozen=True)
class RunFilter:
    """Which runs a list shows: each field set narrows it (all of them together).

    ``text`` matches a part of the name (any case), the start of the id, or a whole tag.
    """

    status: str | None = None
    project_id: int | None = None
    owner: str | None = None
    text: str | None = None
    tag: str | None = None

    def apply(self, query: SelectT) -> SelectT:
        """``query`` narrowed to the runs this filter lets through."""
        if self.status is not None:
            query = query.where(Run.status == self.status)
        if self.project_id is not None:
            query = query.where(Run.project_id == self.project_id)
        if self.owner is not None:
            owner = select(User.id).where(User.name_key == name_key(self.owner))
            query = query.where(Run.owner_id.in_(owner.scalar_subquery()))
        if self.tag is not None:
            query = query.where(_tagged(self.tag))
        if self.text:
            pattern = _like_escape(self.text)
            query = query.where(
                or_(
                    Run.name.ilike(f"%{pattern}%", escape="\\"),
                    Run.id.like(f"{pattern.lower()}%", escape="\\"),
                    _tagged(self.text),
                )
            )
        return query


def _tagged(tag: str) -> Any:
    return exists().where(run_tags.c.run_id == Run.id, run_tags.c.tag == tag)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_SUMMARIES = (
    select(
        Run.id,
        Run.name,
        Project.name,
        User.name,
        Run.status,
        Run.cancel_requested,
        Run.stop_requested,
        Run.rounds,
        Run.rounds_done,
        Run.best_accuracy,
        Run.final_accuracy,
        Run.created_at,
        Run.started_at,
        Run.finished_at,
        Run.updated_at,
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
    "stop_requested",
    "rounds",
    "rounds_done",
    "best_accuracy",
    "final_accuracy",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "error",
)
"""The keys of :meth:`RunStore.run_summaries`' rows, in the order of its query's columns
(each row also gets ``tags``)."""
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
        tags: Sequence[str] = (),
    ) -> Run:
        """Add a run with status ``queued`` and its ``tags``."""
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
            stop_requested=False,
            rounds_done=0,
            run_dir=run_dir,
        )
        self.session.add(run)
        self.session.flush()
        self._insert_tags(run_id, tags)
        self.session.commit()
        self.session.refresh(run)
        return run

    def _insert_tags(self, run_id: str, tags: Iterable[str]) -> None:
        rows = [{"run_id": run_id, "tag": tag} for tag in dict.fromkeys(tags)]
        if rows:
            self.session.execute(insert(run_tags), rows)

    def tags(self, run_ids: Sequence[str]) -> dict[str, list[str]]:
        """The tags of each of ``run_ids`` (sorted; runs without any are absent)."""
        found: dict[str, list[str]] = {}
        if not run_ids:
            return found
        query = (
            select(run_tags.c.run_id, run_tags.c.tag)
            .where(run_tags.c.run_id.in_(run_ids))
            .order_by(run_tags.c.tag)
        )
        for run_id, tag in self.session.connection().execute(query):
            found.setdefault(run_id, []).append(tag)
        return found

    def set_tags(self, run_id: str, tags: Sequence[str]) -> list[str]:
        """Replace the run's tags; the new ones, sorted."""
        self.require_run(run_id).updated_at = utcnow()
        self.session.execute(delete(run_tags).where(run_tags.c.run_id == run_id))
        self._insert_tags(run_id, tags)
        self.session.commit()
        return sorted(set(tags))

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
        self, where: RunFilter | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Runs, newest first (ties by id), those ``where`` lets through, as rows of the
        list view: the keys of :data:`SUMMARY_FIELDS` (``project`` and ``owner`` by name)
        and ``tags``.

        One query of those columns on the session's connection (no config text, no ORM
        objects), and one for the tags of the page.
        """
        query = (where or RunFilter()).apply(_SUMMARIES)
        rows = self.session.connection().execute(query.limit(limit).offset(offset))
        return self._with_tags([dict(zip(SUMMARY_FIELDS, row, strict=True)) for row in rows])

    def run_summary(self, run_id: str) -> dict[str, Any]:
        """The list row of run ``run_id``; a :class:`NotFound` if there is none."""
        rows = self.session.connection().execute(_SUMMARIES.where(Run.id == run_id)).all()
        if not rows:
            raise NotFound(f"run {run_id!r} does not exist")
        return self._with_tags([dict(zip(SUMMARY_FIELDS, rows[0], strict=True))])[0]

    def _with_tags(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tags = self.tags([row["id"] for row in rows])
        for row in rows:
            row["tags"] = tags.get(row["id"], [])
        return rows

    def count_runs(self, where: RunFilter | None = None) -> int:
        """How many runs ``where`` lets through."""
        query = (where or RunFilter()).apply(select(func.count()).select_from(Run))
        return int(self.session.connection().scalar(query) or 0)

    def changed_summaries(self, since: datetime, limit: int = 500) -> list[dict[str, Any]]:
        """The list rows of runs changed at or after ``since``, oldest change first."""
        query = (
            _SUMMARIES.where(Run.updated_at >= since)
            .order_by(None)
            .order_by(Run.updated_at, Run.id)
            .limit(limit)
        )
        rows = self.session.connection().execute(query)
        return self._with_tags([dict(zip(SUMMARY_FIELDS, row, strict=True)) for row in rows])

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
        run.updated_at = now
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
        run.updated_at = utcnow()
        self.session.commit()
        return run

    def claim_run(self, run_id: str, job_id: str) -> bool:
        """Give the queued run ``run_id`` to the job ``job_id`` unless another already has
        it (one conditional update: of two servers claiming a run, one wins); whether this
        call did."""
        claimed = self.session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "queued", Run.job_id.is_(None))
            .values(job_id=job_id, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]

    def request_cancel(self, run_id: str) -> Run:
        """Cancel a queued run at once; mark a running one to be cancelled by its executor.

        A finished run is a :class:`Conflict`.
        """
        run = self.require_run(run_id)
        if run.status in FINAL_STATUSES:
            raise Conflict(f"run {run_id!r} is already {run.status}")
        run.cancel_requested = True
        run.updated_at = utcnow()
        if run.status == "queued":
            run.status = "cancelled"
            run.finished_at = run.updated_at
        self.session.commit()
        return run

    def request_stop(self, run_id: str, reason: str) -> Run:
        """Mark a running run to be stopped at once (its job ends it mid-round) for
        ``reason``; a finished run is a :class:`Conflict`."""
        run = self.require_run(run_id)
        if run.status in FINAL_STATUSES:
            raise Conflict(f"run {run_id!r} is already {run.status}")
        if not run.stop_requested:
            run.stop_requested = True
            run.error = reason
            run.updated_at = utcnow()
            self.session.commit()
        return run

    def stop_request(self, run_id: str) -> str | None:
        """The reason the run was asked to stop, or ``None`` (read fresh from the
        database)."""
        query = select(Run.stop_requested, Run.error).where(Run.id == run_id)
        row = self.session.execute(query.execution_options(populate_existing=True)).first()
        if row is None or not row[0]:
            return None
        return str(row[1] or "stopped")

    def add_round_metric(self, run_id: str, rnd: int, record: dict[str, Any]) -> None:
        """Store the record of round ``rnd`` and the run's figures of the list (rounds
        done, best and final accuracy), in one transaction; a second record of one round
        is a :class:`Conflict`."""
        self.session.add(RoundMetric(run_id=run_id, round=rnd, record=record))
        accuracy = record.get("accuracy")
        values: dict[str, Any] = {"rounds_done": rnd, "updated_at": utcnow()}
        values["final_accuracy"] = None if accuracy is None else float(accuracy)
        if accuracy is not None:
            higher = Run.best_accuracy.is_(None) | (Run.best_accuracy < float(accuracy))
            values["best_accuracy"] = case((higher, float(accuracy)), else_=Run.best_accuracy)
        statement = update(Run).where(Run.id == run_id).values(**values)
        try:
            self.session.flush()
        except IntegrityError:
            self.session.rollback()
            raise Conflict(f"run {run_id!r} already has round {rnd}") from None
        self.session.execute(statement.execution_options(synchronize_session=False))
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

    def failures(self, run_id: str, offset: int = 0, limit: int | None = None) -> list[Failure]:
        """The run's failures, in the order they were stored (``limit`` of them from
        ``offset``)."""
        query = select(Failure).where(Failure.run_id == run_id).order_by(Failure.id)
        return list(self.session.scalars(query.offset(offset).limit(limit)))

    def count_failures(self, run_id: str) -> int:
        """How many failures the run has stored."""
        query = select(func.count()).select_from(Failure).where(Failure.run_id == run_id)
        return int(self.session.scalar(query) or 0)

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

    def events(self, run_id: str, after: int = -1, limit: int | None = None) -> list[Event]:
        """The run's events with ``seq > after``, in order (the replay of a late subscriber),
        at most ``limit``."""
        query = select(Event).where(Event.run_id == run_id, Event.seq > after)
        return list(self.session.scalars(query.order_by(Event.seq).limit(limit)))
