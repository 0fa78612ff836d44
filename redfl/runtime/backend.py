"""What every runtime provides: start workers from a plan, call them, stop them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redfl.runtime.resources import Bundle
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.virtual import VirtualNode


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


@dataclass
class Outcome:
    """The value a worker call returned, or the error it raised."""

    value: Any = None
    error: BaseException | None = None


class Unfinished(RuntimeError):
    """A call that was still running when ``gather(fail_fast=True)`` returned."""


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
    def submit(self, worker: int, method: str, *args: Any) -> Any:
        """Call ``method`` on worker ``worker``; returns a pending handle."""

    @abstractmethod
    def gather(
        self,
        pending: Sequence[Any],
        on_done: Callable[[int], None] | None = None,
        fail_fast: bool = False,
    ) -> list[Outcome]:
        """Wait for the pending calls, in order; ``on_done(i)`` as each finishes.

        With ``fail_fast``, return at the first error; calls still running then get an
        :class:`Unfinished` error.
        """

    @abstractmethod
    def wait_any(self, pending: Sequence[Any]) -> tuple[int, Outcome]:
        """Wait until one of ``pending`` finishes; return its position and outcome."""

    @abstractmethod
    def stop(self) -> None:
        """Stop every worker and release every reservation."""

    def worker_nodes(self) -> list[str]:
        """The machine each worker runs on (a Ray node id; ``"local"`` in-process)."""
        return ["local"] * self.num_workers

    def call_all(self, method: str, *args: Any) -> list[Outcome]:
        """Call ``method`` on every worker and wait."""
        count = self.num_workers
        return self.gather([self.submit(i, method, *args) for i in range(count)])

    @property
    @abstractmethod
    def num_workers(self) -> int:
        """How many workers are running."""
