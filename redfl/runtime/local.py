"""The ``local`` runtime: workers are plain objects in this process.

Calls run synchronously in the caller's thread, so a debugger steps straight into client
code; only message-driven ``train()`` loops run in threads, since they block on each
other. It is the oracle: the same federation gives the same parameters here and on Ray.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, wait
from typing import Any

import numpy as np

from redfl.runtime.backend import Backend, Outcome, Plan, Unfinished
from redfl.runtime.worker import Worker


class LocalBackend(Backend):
    """Runs every worker in-process."""

    def __init__(self) -> None:
        self._workers: list[Worker] = []
        self._threads: list[threading.Thread] = []

    def available_resources(self) -> Mapping[str, float]:
        """This machine's CPUs (nothing is reserved in-process)."""
        return {"CPU": float(os.cpu_count() or 1)}

    def machine_resources(self) -> list[Mapping[str, float]]:
        """One machine: this one."""
        return [self.available_resources()]

    def start(self, plan: Plan) -> None:
        """Create the workers and connect them to each other."""
        self._workers = [
            Worker(
                i,
                plan.federation_id,
                plan.seed,
                plan.num_nodes,
                spec.nodes,
                plan.manager,
                plan.state_memory_bytes,
            )
            for i, spec in enumerate(plan.workers)
        ]
        for worker in self._workers:
            worker.connect(self._workers)

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

    def submit(self, worker: int, method: str, *args: Any) -> Future[Any]:
        """Run now (``run_node`` in a thread of its own)."""
        future: Future[Any] = Future()
        target = getattr(self._workers[worker], method)

        def run() -> None:
            try:
                future.set_result(target(*args))
            except BaseException as error:
                future.set_exception(error)

        if method == "run_node":
            thread = threading.Thread(target=run, name=f"redfl-{args[0]}", daemon=True)
            self._threads.append(thread)
            thread.start()
        else:
            run()
        return future

    def gather(
        self,
        pending: Sequence[Any],
        on_done: Callable[[int], None] | None = None,
        fail_fast: bool = False,
    ) -> list[Outcome]:
        """Wait for the futures (all of them, or up to the first error)."""
        if fail_fast:
            wait(pending, return_when=FIRST_EXCEPTION)
        outcomes = []
        for i, future in enumerate(pending):
            if fail_fast and not future.done():
                outcomes.append(Outcome(None, Unfinished("still running")))
                continue
            error = future.exception()
            outcomes.append(Outcome(None, error) if error else Outcome(future.result()))
            if on_done is not None:
                on_done(i)
        return outcomes

    def wait_any(self, pending: Sequence[Any]) -> tuple[int, Outcome]:
        """The first finished future (calls run at submit, so one always is)."""
        wait(pending, return_when=FIRST_COMPLETED)
        for i, future in enumerate(pending):
            if future.done():
                error = future.exception()
                return i, Outcome(None, error) if error else Outcome(future.result())
        raise RuntimeError("no call finished")  # unreachable: wait returned

    def stop(self) -> None:
        """Wake blocked nodes, join their threads, drop the workers."""
        for worker in self._workers:
            worker.stop_nodes()
            worker.close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        self._workers = []
