"""What every runtime provides: start workers from a plan, send them requests, stop them.

Requests and replies are typed (:mod:`redfl.runtime.protocol`): ``call(worker, request)``
returns a :class:`Pending` of the request's reply type, ``gather``, ``wait_next`` and
``wait_any`` turn them into :class:`Outcome` s of that type. Every way of waiting
(deadlines, ``fail_fast``, ``on_done``, :class:`Unfinished` calls) is written once, here,
over one primitive each runtime provides: :meth:`Backend.finished`, the calls of a list
that have finished (waiting up to a timeout for the first).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redfl.core.events import Event
from redfl.runtime.host import DEFAULT_RUNNERS
from redfl.runtime.protocol import Outcome, Pending, R, Request, Runner, Unfinished
from redfl.runtime.resources import Bundle, ResourcesConfig
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.virtual import VirtualNode

CALL_ALL_TIMEOUT_S = 60.0
"""How long :meth:`Backend.call_all` waits for the workers' replies."""

HostArguments = tuple[
    int, str, int, int, list[VirtualNode], TopologyManager, int, tuple[type[Runner], ...]
]
"""A host's constructor arguments: index, federation id, seed, number of nodes, its nodes,
the topology manager, the client-state memory and the runners it installs up front."""


@dataclass
class WorkerSpec:
    """One worker to start: its name, bundle, actor options and the nodes it hosts."""

    name: str
    bundle: Bundle
    nodes: list[VirtualNode]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """Everything a runtime needs to start a federation's workers."""

    federation_id: str
    seed: int
    num_nodes: int
    workers: list[WorkerSpec]
    manager: TopologyManager
    placement_strategy: str = "PACK"
    state_memory_bytes: int = 256 * 2**20
    runners: tuple[type[Runner], ...] = ()
    """Runner classes every worker installs up front, beyond the host's defaults."""
    max_restarts: int = 0
    """How many times the runtime re-creates a worker that died (Ray's ``max_restarts``)."""

    def host_arguments(self, worker: int) -> HostArguments:
        """The arguments of worker ``worker``'s :class:`~redfl.runtime.host.Host`, in order
        (the host's default runners, then the plan's)."""
        return (
            worker,
            self.federation_id,
            self.seed,
            self.num_nodes,
            self.workers[worker].nodes,
            self.manager,
            self.state_memory_bytes,
            DEFAULT_RUNNERS + self.runners,
        )


class Backend(ABC):
    """A runtime: ``local`` (in-process), ``ray`` or ``sites``."""

    def plan_resources(self, asked: ResourcesConfig) -> ResourcesConfig:
        """The resources a federation's plan is made with: ``asked`` (the ``[resources]``
        table), unless the runtime's workers are given (one per site)."""
        return asked

    def wait_for_workers(self, notify: Callable[[Event], None]) -> None:
        """Return once the started workers can take calls (the ``sites`` runtime waits
        for its sites to join), passing the runtime's events to ``notify`` meanwhile."""
        return None

    def events(self) -> list[Event]:
        """What happened in the runtime since the last call (sites joining, leaving), for
        the federation's callbacks; read on the driver's thread."""
        return []

    @abstractmethod
    def available_resources(self) -> Mapping[str, float]:
        """The free resources of the whole cluster."""

    @abstractmethod
    def machine_resources(self) -> list[Mapping[str, float]]:
        """The total resources of each machine of the cluster."""

    @abstractmethod
    def start(self, plan: Plan) -> None:
        """Reserve resources and start the plan's workers (fails before starting any)."""

    @abstractmethod
    def put(self, value: Any) -> Any:
        """Serialise ``value`` once; the result can be passed to many calls."""

    @abstractmethod
    def call(self, worker: int, request: Request[R]) -> Pending[R]:
        """Send ``request`` to worker ``worker``; returns its pending reply."""

    @abstractmethod
    def finished(
        self, pending: Sequence[Pending[R]], timeout: float | None
    ) -> list[tuple[int, Outcome[R]]]:
        """Wait until one of ``pending`` finishes or ``timeout`` seconds pass (``None``: no
        limit; ``0``: do not wait); the positions and outcomes of finished calls, in order
        of position (at least one, unless the time passed; a runtime may report only the
        first of several)."""

    def gather(
        self,
        pending: Sequence[Pending[R]],
        on_done: Callable[[int], None] | None = None,
        fail_fast: bool = False,
        timeout: float | None = None,
    ) -> list[Outcome[R]]:
        """Wait for the pending calls; ``on_done(i)`` as each finishes.

        With ``fail_fast``, return at the first error (the calls found finished with it
        keep their outcomes); with ``timeout`` (seconds), return when it has passed. Calls
        still running then get an :class:`Unfinished` error.
        """
        outcomes: list[Outcome[R] | None] = [None] * len(pending)
        waiting = list(range(len(pending)))
        deadline = None if timeout is None else time.monotonic() + timeout
        failed = False
        while waiting and not failed:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = self.finished([pending[i] for i in waiting], left)
            if not done:
                break
            for position, outcome in done:
                i = waiting[position]
                outcomes[i] = outcome
                if on_done is not None:
                    on_done(i)
                failed = failed or (fail_fast and outcome.error is not None)
            waiting = [i for i in waiting if outcomes[i] is None]
        late = "still running" if timeout is None else f"no reply within {timeout:g} s"
        return [o if o is not None else Outcome(None, Unfinished(late)) for o in outcomes]

    def wait_any(self, pending: Sequence[Pending[R]]) -> tuple[int, Outcome[R]]:
        """Wait until one of ``pending`` finishes; return its position and outcome.

        Raises
        ------
        ValueError
            If ``pending`` is empty (nothing could finish).
        """
        if not pending:
            raise ValueError("wait_any needs at least one pending call")
        return self.finished(pending, None)[0]

    def wait_next(
        self, pending: Sequence[Pending[R]], timeout: float | None
    ) -> tuple[int, Outcome[R]] | None:
        """Like :meth:`wait_any`, but ``None`` once ``timeout`` seconds have passed."""
        done = self.finished(pending, timeout)
        return done[0] if done else None

    def kill(self, worker: int) -> None:
        """End worker ``worker``'s process; the runtime re-creates it (if it restarts
        workers), with its nodes and in its bundle.

        Raises
        ------
        RuntimeError
            In a runtime that cannot end a worker (the in-process one).
        """
        raise RuntimeError(f"the {type(self).__name__} cannot replace worker {worker}")

    def reconnect(self, worker: int) -> Pending[int]:
        """Give a re-created worker the handles of every worker again (its peers)."""
        raise RuntimeError(f"the {type(self).__name__} cannot reconnect worker {worker}")

    def lost(self, error: BaseException) -> str | None:
        """Why a call failed because its worker was lost (died, killed, its machine gone);
        ``None`` for any other error."""
        return None

    @abstractmethod
    def stop(self) -> None:
        """Stop every worker and release every reservation."""

    def worker_nodes(self) -> list[str]:
        """The machine each worker runs on (a Ray node id; ``"local"`` in-process)."""
        return ["local"] * self.num_workers

    def call_all(
        self, request: Request[R], timeout: float = CALL_ALL_TIMEOUT_S
    ) -> list[Outcome[R]]:
        """Send ``request`` to every worker and wait for every reply (at most ``timeout`` s;
        a worker that has not answered by then gets an :class:`Unfinished` error)."""
        pending = [self.call(i, request) for i in range(self.num_workers)]
        return self.gather(pending, timeout=timeout)

    @property
    @abstractmethod
    def num_workers(self) -> int:
        """How many workers are running."""
