"""``GraphFederation``: message-driven nodes on any graph (custom, ring, mesh, ...).

Every ``train``-role node runs its ``train()`` loop where it lives, sending to and
receiving from its neighbours. A node that raises stops the federation with its id and
traceback; nodes blocked on ``receive`` are woken and the run ends, never hangs.
"""

from __future__ import annotations

import time
from typing import Any

from redfl.core.events import FailureRecorded, RoundFinished, RoundStarted
from redfl.core.result import FederationError, FederationResult, RoundRecord
from redfl.runtime.backend import Backend
from redfl.runtime.host import Stats, StopNodes
from redfl.schemas.base import Federation
from redfl.schemas.callbacks import emit
from redfl.schemas.rollback import run_nodes

STOP_GRACE_S = 10.0
"""How long ``stop()`` lets woken nodes finish before the workers are killed."""


class GraphFederation(Federation):
    """Message-driven federation over ``topology``.

    Examples
    --------
    >>> from redfl import FederatedNode, GraphFederation, virtual_nodes
    >>> from redfl.topology import mesh
    >>> class Hello(FederatedNode):
    ...     def train(self):
    ...         self.send("hi", self.node_id)
    ...         return self.receive("hi", timeout=10).body
    >>> ids = ["a", "b"]
    >>> fed = GraphFederation(virtual_nodes(Hello, ids), mesh(ids), runtime="local")
    >>> fed.train().outputs
    {'a': 'b', 'b': 'a'}
    >>> fed.stop()
    """

    def train(self, rounds: int = 1) -> FederationResult:
        """Run ``rounds`` rounds: in each, every ``train``-role node's ``train()`` runs once,
        all at once, talking to its neighbours. Return the last round's outputs.

        Each round is one round of the event stream: callbacks get :class:`RoundStarted`,
        a :class:`FailureRecorded` for a node that failed, and :class:`RoundFinished`.

        Raises
        ------
        FederationError
            Naming the first node that failed, with its traceback (the others are woken
            and stopped first), or the workers lost.
        """
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if self.topology is None:
            raise ValueError("a GraphFederation needs a topology")
        backend = self._start()
        ids = [n.node_id for n in self.nodes if "train" in n.roles]
        outputs: dict[str, Any] = {}
        for _ in range(rounds):
            rnd = self.round + 1
            emit(self.callbacks, RoundStarted(rnd, len(ids)))
            started = time.perf_counter()
            try:
                outputs, lost = run_nodes(backend, ids, self.worker_of, lambda _: {}, rnd)
            except FederationError as error:
                for failure in error.failures:
                    emit(self.callbacks, FailureRecorded(failure))
                raise
            if lost:
                causes = "; ".join(f"worker {w}: {why}" for w, why in sorted(lost.items()))
                raise FederationError(f"round {rnd}: workers lost: {causes}")
            record = RoundRecord(rnd, len(ids), len(ids), 0, time.perf_counter() - started)
            self.round = rnd
            self._history.append(record)
            if emit(self.callbacks, RoundFinished(record)):
                break
        return FederationResult(self.history, outputs=outputs)

    def stop(self) -> None:
        """Wake every node blocked in ``receive`` (it ends with ``FederationStopped``),
        then stop the workers. Safe to call twice."""
        if self._backend is not None:
            self._backend.call_all(StopNodes())
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and self._running_nodes(self._backend) > 0:
                time.sleep(0.02)
        super().stop()

    @staticmethod
    def _running_nodes(backend: Backend) -> int:
        """How many ``train()`` calls are still running on the workers."""
        replies = [o.value for o in backend.call_all(Stats())]
        return sum(int(r.get("running", 0)) for r in replies if r is not None)
