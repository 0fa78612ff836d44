"""The run queue and the run lifecycle as the executor, the jobs and the live stream see it.

Every status change of a run is also appended to its event stream as a ``status`` event
(``{"status": ..., "error": ..., "time": ...}``), so a late WebSocket subscriber replays
status changes too. A run that ends without its executor saying so (cancelled while
queued, its job dead) gets the closing event the run API would have written.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from redfl.platform.models import FINAL_STATUSES, Event, Run
from redfl.platform.store.errors import Conflict
from redfl.platform.store.runs import RunStore

CLOSING_EVENTS = frozenset({"run_finished", "run_failed", "run_cancelled", "run_stopped"})
"""The event types that end a run's stream of round events."""


class QueueStore(RunStore):
    """Queue and lifecycle part of :class:`~redfl.platform.store.Store`."""

    session: Session

    def record_status(self, run_id: str, status: str, error: str | None = None) -> int:
        """Move the run to ``status`` (see :meth:`set_status`) and append the ``status``
        event; its ``seq``."""
        self.set_status(run_id, status, error)
        body: dict[str, Any] = {"status": status, "time": round(time.time(), 6)}
        if error is not None:
            body["error"] = error
        return self.append_event(run_id, "status", body)

    def end_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """End a run its executor cannot end: the closing event (with the rounds stored so
        far), then the final status. A run already final is a :class:`Conflict`."""
        current = self.require_run(run_id).status
        if current in FINAL_STATUSES:
            raise Conflict(f"run {run_id!r}: cannot go from {current!r} to {status!r}")
        done = len(self.round_metrics(run_id))
        stamp = {"time": round(time.time(), 6), "rounds": done}
        if status == "failed":
            self.append_event(run_id, "run_failed", {**stamp, "error": error or "failed"})
        elif status == "cancelled":
            self.append_event(run_id, "run_cancelled", stamp)
        elif status == "stopped":
            self.append_event(run_id, "run_stopped", {**stamp, "reason": error or "stopped"})
        else:
            raise Conflict(
                f"run {run_id!r}: end_run takes 'failed', 'cancelled' or 'stopped', not {status!r}"
            )
        self.record_status(run_id, status, error)

    def cancel_queued(self, run_id: str) -> Run:
        """Cancel a run: a queued one ends at once (closing and status events); a running one
        is marked for its job, which stops at the next round boundary."""
        run = self.require_run(run_id)
        if run.status == "queued":
            run.cancel_requested = True  # committed with the status
            self.end_run(run_id, "cancelled")
            return self.require_run(run_id)
        return self.request_cancel(run_id)

    def stop_run(self, run_id: str, reason: str) -> Run:
        """Stop a run now: a queued one is cancelled at once (nothing ran); a running one is
        marked for its job, which ends it mid-round (see :meth:`request_stop`)."""
        if self.require_run(run_id).status == "queued":
            return self.cancel_queued(run_id)
        return self.request_stop(run_id, reason)

    def in_flight(self) -> list[Run]:
        """Runs handed to a job that have not ended: running, or queued with a job id."""
        query = select(Run).where(
            (Run.status == "running") | ((Run.status == "queued") & Run.job_id.is_not(None))
        )
        return list(self.session.scalars(query.order_by(Run.created_at)))

    def waiting(self, limit: int) -> list[Run]:
        """The oldest ``limit`` queued runs not yet handed to a job."""
        query = select(Run).where(Run.status == "queued", Run.job_id.is_(None))
        return list(self.session.scalars(query.order_by(Run.created_at, Run.id).limit(limit)))

    def cancel_requested(self, run_id: str) -> bool:
        """Whether someone asked to cancel the run (read fresh from the database)."""
        query = select(Run.cancel_requested).where(Run.id == run_id)
        return bool(self.session.execute(query.execution_options(populate_existing=True)).scalar())

    def last_event_id(self) -> int:
        """The highest event row id of all runs (0 with none)."""
        return int(self.session.scalar(select(func.max(Event.id))) or 0)

    def events_since(self, after_id: int, types: tuple[str, ...]) -> list[Event]:
        """Events of every run with row id above ``after_id`` and a type in ``types``."""
        query = select(Event).where(Event.id > after_id, Event.type.in_(types))
        return list(self.session.scalars(query.order_by(Event.id).limit(10_000)))
