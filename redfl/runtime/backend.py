"""What every runtime provides: start workers from a plan, send them requests, stop them.

Requests and replies are typed (:mod:`redfl.runtime.protocol`): ``call(worker, request)``
returns a :class:`Pending` of the request's reply type, ``gather`` and ``wait_any`` turn
them into :class:`Outcome` s of that type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redfl.runtime.protocol import Outcome, Pending, R, Request, Runner
from redfl.runtime.resources import Bundle
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.virtual import VirtualNode

CALL_ALL_TIMEOUT_S = 60.0
"""How long :meth:`Backend.call_all` waits for the workers' replies."""


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


class Backend(ABC):
    """A runtime: ``local`` (in-process) or ``ray``."""

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
    def gather(
        self,
        pending: Sequence[Pending[R]],
        on_done: Callable[[int], None] | None = None,
        fail_fast: bool = False,
        timeout: float | None = None,
    ) -> list[Outcome[R]]:
        """Wait for the pending calls, in order; ``on_done(i)`` as each finishes.

        With ``fail_fast``, return at the first error; with ``timeout`` (seconds), return
        when it has passed. Calls still running then get an :class:`Unfinished` error.
        """

    @abstractmethod
    def wait_any(self, pending: Sequence[Pending[R]]) -> tuple[int, Outcome[R]]:
        """Wait until one of ``pending`` finishes; return its position and outcome."""

    def wait_next(
        self, pending: Sequence[Pending[R]], timeout: float | None
    ) -> tuple[int, Outcome[R]] | None:
        """Like :meth:`wait_any`, but ``None`` once ``timeout`` seconds have passed."""
        return self.wait_any(pending)

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
