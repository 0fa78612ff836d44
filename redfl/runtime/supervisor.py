"""``Supervisor``: worker restarts, their limit, and each worker's health.

A worker that dies (its process killed, out of memory, its machine lost) or that the driver
ends itself (a client past ``client_timeout``, a round past ``round_timeout``: a running
synchronous call cannot be interrupted) is re-created by the runtime: on Ray, the actor's
``max_restarts`` re-creates it in its placement-group bundle (on a surviving machine when
its own is gone), with the same nodes, which are rebuilt lazily on first use. The
supervisor counts the losses, waits on a thread of its own for the new process (a probe
answered by a process id other than the lost one), sends it the peers again
(:class:`~redfl.runtime.host.Connect`) and reports a
:class:`~redfl.core.events.WorkerRestarted` through ``notify``, on the driver's thread
(:meth:`Supervisor.drain`). A worker lost more than ``max_restarts`` times fails the run
with a :class:`~redfl.core.result.FederationError` naming the worker and every cause.

A runtime that cannot re-create its workers (``recreates=False``: a site is another
organisation's process, which reconnects by itself when it can) still has its workers
ended (a site's work abandoned when a client runs past its timeout) and their losses
counted, but nothing waits for them and no loss fails the run: a call to a worker that is
away fails at once and the round goes on without it. The supervisor also passes the
runtime's own events (:meth:`~redfl.runtime.backend.Backend.events`: sites joining and
leaving) to ``notify``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redfl.core.events import Event, WorkerRestarted
from redfl.core.result import FederationError
from redfl.runtime.backend import Backend
from redfl.runtime.host import Probe, Stats
from redfl.runtime.protocol import Pending
from redfl.runtime.replies import WorkerProbe

RESTART_TIMEOUT_S = 60.0
"""How long a worker may take to come back before the run fails."""
PROBE_TIMEOUT_S = 2.0
"""How long a probe of a worker may take (health, restarts)."""
PROBE_EVERY_S = 0.1
"""How often a worker being re-created is probed."""


@dataclass(frozen=True)
class WorkerHealth:
    """One worker's health.

    Attributes
    ----------
    worker:
        The worker's index.
    state:
        ``"alive"`` (answers), ``"restarting"`` (being re-created) or ``"dead"`` (lost past
        ``max_worker_restarts``, or not answering).
    nodes:
        How many nodes it hosts.
    busy_seconds:
        Seconds its current process has spent fitting clients.
    restarts:
        How many times it was re-created.
    causes:
        Why it was lost, one entry per loss.
    """

    worker: int
    state: str
    nodes: int
    busy_seconds: float
    restarts: int
    causes: tuple[str, ...] = ()


class Supervisor:
    """Counts worker losses, waits for restarts, reports them and the workers' health.

    Parameters
    ----------
    backend:
        The runtime whose workers are watched.
    nodes:
        How many nodes each worker hosts.
    max_restarts:
        How many times each worker may be re-created.
    notify:
        Receives each :class:`WorkerRestarted` and the runtime's events, on the thread that
        calls :meth:`drain`.
    recreates:
        Whether the runtime re-creates lost workers (then the supervisor waits for them);
        ``False``: lost workers come back by themselves, nothing waits for them.
    """

    def __init__(
        self,
        backend: Backend,
        nodes: Sequence[int],
        max_restarts: int,
        notify: Callable[[Event], None] | None = None,
        recreates: bool = True,
    ) -> None:
        self.backend = backend
        self.max_restarts = max_restarts
        self.notify = notify
        self.recreates = recreates
        self._nodes = list(nodes)
        self._causes: list[list[str]] = [[] for _ in nodes]
        self._restarted = [0 for _ in nodes]
        self._pids: list[int | None] = [None for _ in nodes]
        self._restarting: dict[int, threading.Thread] = {}
        self._dead: dict[int, str] = {}
        self._done: list[WorkerRestarted] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    # -- losses --------------------------------------------------------------------------
    def lost(self, worker: int, reason: str) -> None:
        """Worker ``worker`` died (``reason``): count it and wait for its new process.

        Raises
        ------
        FederationError
            If the worker was lost more than ``max_restarts`` times.
        """
        self._begin(worker, reason, self._pids[worker], killed=False)

    def replace(self, worker: int, reason: str, pid: int | None = None) -> None:
        """End worker ``worker`` (process ``pid``, if known) and wait for its new process.

        Raises
        ------
        FederationError
            If the worker was lost more than ``max_restarts`` times.
        """
        if pid is None:
            probe = self.backend.gather([self.backend.call(worker, Probe())], timeout=1.0)[0]
            pid = probe.value.pid if probe.value is not None else None
        self._begin(worker, reason, pid, killed=True)
        self.backend.kill(worker)

    def learn(self) -> None:
        """Note each worker's process id (a loss is then confirmed by a new one)."""
        pending = [self.backend.call(w, Probe()) for w in range(len(self._nodes))]
        for worker, probe in enumerate(self.backend.gather(pending, timeout=PROBE_TIMEOUT_S)):
            self._pids[worker] = probe.value.pid if probe.value is not None else None

    def _begin(self, worker: int, reason: str, pid: int | None, killed: bool) -> None:
        with self._lock:
            if worker in self._restarting:  # already being re-created: one loss
                return
            self._causes[worker].append(reason)
            if not self.recreates:  # it comes back by itself, if it can: nothing to wait for
                return
            if len(self._causes[worker]) > self.max_restarts:
                self._dead[worker] = reason
            else:
                thread = threading.Thread(
                    target=self._restart,
                    args=(worker, reason, pid, killed, time.perf_counter()),
                    name=f"redfl-restart-{worker}",
                    daemon=True,
                )
                self._restarting[worker] = thread
                thread.start()
        self.check()

    def _restart(
        self, worker: int, reason: str, pid: int | None, killed: bool, started: float
    ) -> None:
        """Wait for a process other than ``pid`` to answer, then give it its peers.

        A call can fail as if its worker were lost while the process lives on (a stale
        connection just after a restart): when ``pid`` itself answers and the driver did
        not kill it, the loss is withdrawn (not counted, not reported).

        A call to a worker whose process is gone fails only after about a second (the
        transport's reconnect), so a new probe goes out every :data:`PROBE_EVERY_S`
        seconds and the first answer of the new process ends the wait.
        """
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        error = f"not back within {RESTART_TIMEOUT_S:g} s"
        probes: list[Pending[WorkerProbe]] = []
        while time.monotonic() < deadline and not self._stopped.is_set():
            probes.append(self.backend.call(worker, Probe()))
            got = self.backend.wait_next(probes, PROBE_EVERY_S)
            if got is None:
                continue
            probes.pop(got[0])
            probe = got[1]
            if probe.value is not None and probe.value.pid == pid and not killed:
                with self._lock:
                    self._causes[worker].pop()
                    del self._restarting[worker]
                return
            if probe.value is not None and probe.value.pid != pid:
                connect = self.backend.gather(
                    [self.backend.reconnect(worker)], timeout=PROBE_TIMEOUT_S
                )[0]
                if connect.error is None:
                    seconds = time.perf_counter() - started
                    with self._lock:
                        self._done.append(WorkerRestarted(worker, reason, round(seconds, 3)))
                        self._restarted[worker] += 1
                        self._pids[worker] = probe.value.pid
                        del self._restarting[worker]
                    return
            if probe.error is not None and self.backend.lost(probe.error) is None:
                error = f"{type(probe.error).__name__}: {probe.error}"
        with self._lock:
            self._dead[worker] = f"{reason}; then {error}"
            del self._restarting[worker]

    # -- the driver's view ---------------------------------------------------------------
    def ready(self, worker: int) -> bool:
        """Whether ``worker`` can take calls (not being re-created, not dead)."""
        with self._lock:
            return worker not in self._restarting and worker not in self._dead

    @property
    def restarting(self) -> bool:
        """Whether a worker is being re-created now."""
        with self._lock:
            return bool(self._restarting)

    def restarts(self, worker: int) -> int:
        """How many times ``worker`` was re-created so far."""
        with self._lock:
            return self._restarted[worker]

    def check(self) -> None:
        """Raise if a worker is gone for good.

        Raises
        ------
        FederationError
            Naming the worker, its losses and their causes.
        """
        with self._lock:
            if not self._dead:
                return
            worker = min(self._dead)
            causes = list(self._causes[worker])
        raise FederationError(
            f"worker {worker} was lost {len(causes)} time(s), more than max_worker_restarts="
            f"{self.max_restarts} allows (or did not come back): " + "; ".join(causes)
        )

    def drain(self) -> None:
        """Pass the restarts completed since the last call to ``notify``; then :meth:`check`."""
        self.drain_quietly()
        self.check()

    def settle(self, timeout: float = RESTART_TIMEOUT_S) -> None:
        """Wait until no worker is being re-created (at most ``timeout`` s), then drain."""
        deadline = time.monotonic() + timeout
        while self.restarting and time.monotonic() < deadline:
            time.sleep(0.01)
        self.drain()

    def health(self) -> list[WorkerHealth]:
        """Each worker's state, node count, busy seconds and restarts."""
        self.drain_quietly()
        pending = [self.backend.call(w, Stats()) for w in range(len(self._nodes))]
        replies = self.backend.gather(pending, timeout=PROBE_TIMEOUT_S)
        report = []
        with self._lock:
            for worker, outcome in enumerate(replies):
                state = (
                    "dead"
                    if worker in self._dead
                    else "restarting"
                    if worker in self._restarting
                    else "alive"
                    if outcome.value is not None
                    else "dead"
                )
                stats = outcome.value or {}
                report.append(
                    WorkerHealth(
                        worker,
                        state,
                        self._nodes[worker],
                        float(stats.get("busy_seconds", 0.0)),
                        self._restarted[worker],
                        tuple(self._causes[worker]),
                    )
                )
        return report

    def drain_quietly(self) -> None:
        """Pass completed restarts and the runtime's events to ``notify`` without raising
        for dead workers."""
        with self._lock:
            done: list[Event] = [*self._done]
            self._done = []
        done.extend(self.backend.events())
        for event in done:
            if self.notify is not None:
                self.notify(event)

    def stop(self) -> None:
        """Let restart threads end (the federation is stopping)."""
        self._stopped.set()
