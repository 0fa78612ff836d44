"""``GraphFederation``: message-driven nodes on any graph (custom, ring, mesh, ...).

Every ``train``-role node runs its ``train()`` loop where it lives, sending to and
receiving from its neighbours. A node that raises stops the federation with its id and
traceback; nodes blocked on ``receive`` are woken and the run ends, never hangs.
"""

from __future__ import annotations

import time
from typing import Any

from redfl.core.events import FailureRecorded, RoundFinished, RoundStarted
from redfl.core.result import Failure, FederationError, FederationResult, RoundRecord
from redfl.runtime.backend import Backend
from redfl.runtime.host import Stats, StopNodes
from redfl.runtime.port_runner import RunNode
from redfl.runtime.protocol import Unfinished
from redfl.runtime.replies import NodeFailed
from redfl.schemas.base import Federation
from redfl.schemas.callbacks import emit

STOP_GRACE_S = 10.0
"""How long ``stop()`` lets woken nodes finish before the workers are killed."""


class GraphFederation(Federation):
    """Message-driven federation over ``topology``.

    Examples
    --------
    >>> from redfl import FederatedNode, GraphFederation, Topology, virtual_nodes
    >>> class Hello(FederatedNode):
    ...     def train(self):
    ...         self.send("hi", self.node_id)
    ...         return self.receive("hi", timeout=10).body
    >>> ids = ["a", "b"]
    >>> fed = GraphFederation(virtual_nodes(Hello, ids), Topology.mesh(ids), runtime="local")
    >>> fed.train().outputs
    {'a': 'b', 'b': 'a'}
    >>> fed.stop()
    """

    def train(self) -> FederationResult:
        """Run every ``train``-role node's ``train()``; return their outputs.

        The whole run is one round for the event stream: callbacks get
        :class:`RoundStarted`, a :class:`FailureRecorded` for a node that failed, and
        :class:`RoundFinished`.
        """
        count = sum(1 for n in self.nodes if "train" in n.roles)
        emit(self.callbacks, RoundStarted(1, count))
        started = time.perf_counter()
        outputs = self._run_nodes({})
        seconds = time.perf_counter() - started
        emit(self.callbacks, RoundFinished(RoundRecord(1, count, count, 0, seconds)))
        return FederationResult(outputs=outputs)

    def _run_nodes(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run ``train(**arguments)`` on every ``train``-role node at once; their outputs.

        Raises
        ------
        FederationError
            Naming the first node that failed, with its traceback; the others are woken
            and stopped first.
        """
        if self.topology is None:
            raise ValueError("a GraphFederation needs a topology")
        backend = self._start()
        ids = [n.node_id for n in self.nodes if "train" in n.roles]
        pending = [backend.call(self.worker_of(i), RunNode(i, arguments)) for i in ids]
        outcomes = backend.gather(pending, fail_fast=True)
        failed = [
            (node_id, o.error)
            for node_id, o in zip(ids, outcomes, strict=True)
            if o.error is not None and not isinstance(o.error, Unfinished)
        ]
        if failed:
            backend.call_all(StopNodes())
            node_id, error = _first_cause(failed)
            detail = error.trace if isinstance(error, NodeFailed) else repr(error)
            reason = detail.strip().splitlines()[-1] if detail.strip() else repr(error)
            failure = Failure(node_id, getattr(self, "round", 0) + 1, "train", reason)
            emit(self.callbacks, FailureRecorded(failure))
            raise FederationError(f"node {node_id!r} failed; federation stopped:\n{detail}")
        return {i: o.value for i, o in zip(ids, outcomes, strict=True)}

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


def _first_cause(failed: list[tuple[str, BaseException]]) -> tuple[str, BaseException]:
    """The failure to report: the first that is not a node woken by the stop."""
    for node_id, error in failed:
        if not (isinstance(error, NodeFailed) and "FederationStopped" in error.trace):
            return node_id, error
    return failed[0]
