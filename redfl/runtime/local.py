"""The ``local`` runtime: workers are plain objects in this process.

Requests are answered synchronously in the caller's thread, so a debugger steps straight
into client code; only ``blocking`` requests (message-driven ``train()`` loops, which wait
on each other) run in threads. It is the oracle: the same federation gives the same
parameters here and on Ray.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

import numpy as np

from redfl.runtime.backend import Backend, Plan
from redfl.runtime.host import Close, Connect, Host, StopNodes
from redfl.runtime.protocol import Outcome, Pending, R, Request


class LocalBackend(Backend):
    """Runs every worker in-process."""

    def __init__(self) -> None:
        self._workers: list[Host] = []
        self._threads: list[threading.Thread] = []

    def available_resources(self) -> Mapping[str, float]:
        """This machine's CPUs (nothing is reserved in-process)."""
        return {"CPU": float(os.cpu_count() or 1)}

    def machine_resources(self) -> list[Mapping[str, float]]:
        """One machine: this one."""
        return [self.available_resources()]

    def start(self, plan: Plan) -> None:
        """Create the workers and connect them to each other."""
        self._workers = [Host(*plan.host_arguments(i)) for i in range(len(plan.workers))]
        self.call_all(Connect(tuple(self._workers)))

    @property
    def num_workers(self) -> int:
        """How many in-process workers exist."""
        return len(self._workers)

    def put(self, value: Any) -> Any:
        """A read-only copy, as Ray's zero-copy arrays are: clients cannot alter the model."""
        if isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
            frozen = {k: v.copy() for k, v in value.items()}
            for array in frozen.values():
                array.flags.writeable = False
            return frozen
        return copy.deepcopy(value)

    def call(self, worker: int, request: Request[R]) -> Pending[R]:
        """Answer now (a ``blocking`` request in a thread of its own)."""
        future: Future[R] = Future()
        host = self._workers[worker]

        def run() -> None:
            try:
                future.set_result(host.handle(request))
            except KeyboardInterrupt:  # the process is interrupted: not the call's outcome
                raise
            except BaseException as error:
                future.set_exception(error)

        if request.blocking:
            name = f"redfl-{worker}-{type(request).__name__}"
            thread = threading.Thread(target=run, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        else:
            run()
        return Pending(future)

    def finished(
        self, pending: Sequence[Pending[R]], timeout: float | None
    ) -> list[tuple[int, Outcome[R]]]:
        """Every finished future (most requests are answered at ``call``), waiting up to
        ``timeout`` seconds for the first."""
        return finished_futures(pending, timeout)

    def stop(self) -> None:
        """Wake blocked nodes, join their threads, drop the workers."""
        for host in self._workers:
            host.handle(StopNodes())
            host.handle(Close())
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        self._workers = []


def finished_futures(
    pending: Sequence[Pending[R]], timeout: float | None
) -> list[tuple[int, Outcome[R]]]:
    """The positions and outcomes of the finished calls among ``pending`` (whose handles
    are :class:`~concurrent.futures.Future` s), waiting up to ``timeout`` seconds for the
    first (``None``: no limit)."""
    futures: list[Future[R]] = [p.handle for p in pending]
    wait(futures, timeout, FIRST_COMPLETED)
    return [(i, outcome(future)) for i, future in enumerate(futures) if future.done()]


def outcome(future: Future[R]) -> Outcome[R]:
    """The outcome of a finished future: its result, or the error it holds."""
    error = future.exception()
    return Outcome(None, error) if error else Outcome(future.result())
