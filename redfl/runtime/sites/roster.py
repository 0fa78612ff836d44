"""The roster: which sites are connected, their sessions, the jobs each holds, and leases.

Pure state behind one lock, shared by the driver's thread (queueing jobs, abandoning them,
probing) and the server's event loop (joins, polls, replies); no I/O, so it is tested
without a network.

A site *joins* and gets a *session* (a token its later requests carry with its
certificate). It then keeps a long *poll* open for work, also while its client runs, so its
session lives as long as it polls: a session whose poll connection closed (the process died,
the network went; seen during a poll or between two) ends :data:`CLOSED_GRACE_S` seconds
later unless the site polls again, and one that stopped polling (a frozen process)
:data:`IDLE_GRACE_S` seconds after its last poll ended. A session that ends fails the jobs
it held (the site's client fails, the round goes on) and the site may join again.

Who may replace a connected site's session: the credential proves the name, but a second
process holding the same credential (a site started twice) must not take over a site that
is alive. So a join for a name whose session is *live* (a poll open, or its last poll ended
normally within :data:`IDLE_GRACE_S` seconds) is refused; once that session's connection
closed or its lease ran out, a join replaces it at once (a restarted site rejoins without
waiting for the lease).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redfl.core.events import Event, SiteJoined, SiteLeft, SiteRound
from redfl.core.roles import Role
from redfl.runtime.sites.jobs import Job
from redfl.runtime.sites.wire import Welcome

POLL_SECONDS = 15.0
"""How long the server holds a poll before answering "no work"."""
CLOSED_GRACE_S = 2.0
"""How long a session whose poll connection closed waits for the site to poll again."""
IDLE_GRACE_S = 5.0
"""How long a session lives after its last poll ended without a new one."""


class SiteBusy(Exception):
    """A join for a site whose session is alive; the message says since when."""


class RunOver(Exception):
    """The run has ended: no more joins or work."""


@dataclass(frozen=True)
class RunInfo:
    """What every site learns of the run when it joins."""

    run: str
    seed: int
    num_nodes: int
    poll_seconds: float = POLL_SECONDS


@dataclass(eq=False)
class Slot:
    """A site of the ``expected`` list: its client's place and its counters."""

    index: int
    name: str
    roles: tuple[Role, ...]
    session: Session | None = None
    rounds: int = 0
    failures: int = 0
    address: str = ""
    seen: float | None = None
    """When the site was last heard from (Unix seconds)."""
    left: str | None = None


@dataclass(eq=False)
class Session:
    """One connection of a site, from its join to its end."""

    number: int
    token: str
    slot: Slot
    address: str
    seen: float
    jobs: dict[str, Job[Any]] = field(default_factory=dict)
    polls: int = 0
    closed: bool = False
    ended: str | None = None


@dataclass(frozen=True)
class SiteState:
    """A site's state: as the server sees it now (:meth:`Roster.states`), or as a run
    folder's events tell it (:func:`redfl.run.site_states.site_states`).

    Attributes
    ----------
    name:
        The site's name (its client's node id).
    connected:
        Whether it has a session.
    address:
        Where its last session came from (``""``: it never joined).
    last_seen:
        When it was last heard from, in Unix seconds (``None``: never).
    rounds:
        Rounds it took part in (fit results accepted).
    failures:
        Failures of its client (fit or evaluate, its absence included).
    left:
        Why its last session ended (``None`` while connected, or if it never joined).
    """

    name: str
    connected: bool = False
    address: str = ""
    last_seen: float | None = None
    rounds: int = 0
    failures: int = 0
    left: str | None = None


class Roster:
    """The sites of a run and their sessions.

    Parameters
    ----------
    sites:
        ``(name, roles)`` of each expected site, in order (site ``i`` is worker ``i``).
    info:
        What sites learn of the run when they join.
    wake:
        Called (under the roster's lock, from any thread; it must not block) when a
        session got work or ended, or the run ended: its poll should look again.
    clock:
        Monotonic seconds.
    """

    def __init__(
        self,
        sites: Sequence[tuple[str, tuple[Role, ...]]],
        info: RunInfo,
        wake: Callable[[Session], None] = lambda session: None,
        clock: Callable[[], float] = time.monotonic,
        closed_grace: float = CLOSED_GRACE_S,
        idle_grace: float = IDLE_GRACE_S,
    ) -> None:
        self.info = info
        self.slots = [Slot(i, name, tuple(roles)) for i, (name, roles) in enumerate(sites)]
        self._by_name = {slot.name: slot for slot in self.slots}
        self._wake = wake
        self._clock = clock
        self._closed_grace = closed_grace
        self._idle_grace = idle_grace
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._sessions = 0
        self.finished = False

    # -- joining -------------------------------------------------------------------------
    def join(self, name: str, address: str) -> tuple[Session, Welcome]:
        """Open a session for site ``name`` (ending a gone one of the same site).

        Raises
        ------
        SiteBusy
            If the site's current session is alive.
        RunOver
            If the run has ended.
        KeyError
            If no site has that name.
        """
        with self._lock:
            if self.finished:
                raise RunOver("the run has ended")
            slot = self._by_name[name]
            now = self._clock()
            old = slot.session
            if old is not None and self._live(old, now):
                raise SiteBusy(
                    f"site {name!r} is connected already (from {old.address}, heard from "
                    f"{now - old.seen:.1f} s ago); another connection may replace it only "
                    "once that one is gone"
                )
            if old is not None:
                self._end(old, "replaced by a new connection of the same site")
            self._sessions += 1
            token = secrets.token_urlsafe(24)
            session = Session(self._sessions, token, slot, address, now)
            slot.session, slot.address, slot.left = session, address, None
            slot.seen = time.time()
            self._events.append(SiteJoined(name, address))
            info = self.info
            welcome = Welcome(
                token,
                info.run,
                info.seed,
                slot.index,
                info.num_nodes,
                slot.name,
                slot.roles,
                info.poll_seconds,
            )
            return session, welcome

    def find(self, name: str, token: str) -> Session | None:
        """Site ``name``'s session if ``token`` is its token."""
        with self._lock:
            slot = self._by_name.get(name)
            session = None if slot is None else slot.session
            if session is None or not hmac.compare_digest(session.token, token):
                return None
            return session

    def missing(self) -> list[str]:
        """The sites without a session, in order."""
        with self._lock:
            return [slot.name for slot in self.slots if slot.session is None]

    # -- work ----------------------------------------------------------------------------
    def submit(self, job: Job[Any]) -> None:
        """Queue ``job`` for its site, or fail it at once if the site is not connected."""
        with self._lock:
            slot = self.slots[job.worker]
            session = slot.session
            if session is None or self.finished:
                job.fail(f"site {slot.name!r} is not connected")
                self._account(slot, job)
                return
            job.queued = self._clock()
            session.jobs[job.id] = job
            self._wake(session)

    def next_job(self, session: Session, have: set[str]) -> Job[Any] | None:
        """The oldest job of ``session`` its site does not have yet."""
        with self._lock:
            if session.ended is not None:
                return None
            for job in session.jobs.values():
                if job.id not in have:
                    return job
            return None

    def peek(self, session: Session, job_id: str) -> Job[Any] | None:
        """Job ``job_id`` of ``session`` if it still waits for its reply."""
        with self._lock:
            return session.jobs.get(job_id)

    def take(self, session: Session, job_id: str) -> Job[Any] | None:
        """Take job ``job_id`` off ``session`` to settle it (``None``: not held any more)."""
        with self._lock:
            self._touch(session)
            return session.jobs.pop(job_id, None)

    def settled(self, session: Session, job: Job[Any]) -> None:
        """Count a job the server settled (its site's reply arrived)."""
        with self._lock:
            self._account(session.slot, job)

    def refuse(self, session: Session, job: Job[Any], reason: str) -> None:
        """Settle a job taken off ``session`` as its client's failure and count it."""
        job.fail(reason)
        self.settled(session, job)

    def abandon(self, worker: int, reason: str) -> None:
        """Give up every job of site ``worker`` (their late replies are refused)."""
        with self._lock:
            slot = self.slots[worker]
            session = slot.session
            if session is None:
                return
            for job in list(session.jobs.values()):
                job.fail(f"abandoned by the server: {reason}")
                self._account(slot, job)
            session.jobs.clear()

    def probe(self, worker: int) -> tuple[int, str | None, float]:
        """Site ``worker``'s session number (0: none), the client of its oldest job and
        how long ago that job was queued."""
        with self._lock:
            session = self.slots[worker].session
            if session is None:
                return 0, None, 0.0
            for job in session.jobs.values():
                return session.number, job.node_id, self._clock() - job.queued
            return session.number, None, 0.0

    # -- polls and leases ----------------------------------------------------------------
    def poll_begin(self, session: Session) -> None:
        """A poll of ``session`` is open."""
        with self._lock:
            session.polls += 1
            session.closed = False
            self._touch(session)

    def poll_end(self, session: Session, closed: bool) -> None:
        """A poll of ``session`` ended (``closed``: its connection closed first)."""
        with self._lock:
            session.polls -= 1
            session.closed = closed
            self._touch(session)

    def connection_closed(self, session: Session) -> None:
        """The connection of ``session``'s last poll closed: with no poll open, the site
        is gone unless it polls again within :data:`CLOSED_GRACE_S` (and another
        connection of the site may replace it at once)."""
        with self._lock:
            if session.polls == 0 and session.ended is None:
                session.closed = True

    def expire(self) -> None:
        """End the sessions whose site is gone (connection closed, or no poll)."""
        with self._lock:
            now = self._clock()
            for slot in self.slots:
                session = slot.session
                if session is None or session.polls > 0:
                    continue
                if session.closed and now - session.seen > self._closed_grace:
                    self._end(session, "its connection closed")
                elif now - session.seen > self._idle_grace:
                    self._end(session, f"no poll for {self._idle_grace:g} s")

    def _live(self, session: Session, now: float) -> bool:
        return session.polls > 0 or (not session.closed and now - session.seen <= self._idle_grace)

    # -- the end of the run --------------------------------------------------------------
    def finish(self) -> None:
        """The run has ended: polls answer so from now on."""
        with self._lock:
            self.finished = True
            for slot in self.slots:
                if slot.session is not None:
                    self._wake(slot.session)

    def polling(self) -> int:
        """How many sessions have a poll open."""
        with self._lock:
            return sum(1 for s in self.slots if s.session is not None and s.session.polls > 0)

    def end_all(self, reason: str) -> None:
        """End every session (``reason``)."""
        with self._lock:
            for slot in self.slots:
                if slot.session is not None:
                    self._end(slot.session, reason)

    # -- reports -------------------------------------------------------------------------
    def events(self) -> list[Event]:
        """The sites' events since the last call."""
        with self._lock:
            events, self._events = self._events, []
            return events

    def states(self) -> list[SiteState]:
        """Every site's state now, in order."""
        with self._lock:
            return [
                SiteState(
                    slot.name,
                    slot.session is not None,
                    slot.address,
                    slot.seen,
                    slot.rounds,
                    slot.failures,
                    slot.left,
                )
                for slot in self.slots
            ]

    # -- under the lock ------------------------------------------------------------------
    def _touch(self, session: Session) -> None:
        session.seen = self._clock()
        session.slot.seen = time.time()

    def _end(self, session: Session, reason: str) -> None:
        slot = session.slot
        session.ended = reason
        if slot.session is session:
            slot.session, slot.left = None, reason
        for job in list(session.jobs.values()):
            job.fail(f"site {slot.name!r} left: {reason}")
            self._account(slot, job)
        session.jobs.clear()
        self._events.append(SiteLeft(slot.name, reason))
        self._wake(session)

    def _account(self, slot: Slot, job: Job[Any]) -> None:
        if not job.succeeded():
            slot.failures += 1
        elif job.kind in ("fit", "secure_fit"):
            slot.rounds += 1
            self._events.append(SiteRound(slot.name, job.round))
