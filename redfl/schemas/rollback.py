"""Running message-driven nodes (:func:`run_nodes`), and the rollback of a decentralised
federation after a worker loss.

Message-driven nodes wait on each other, so when a worker is lost mid-round its nodes'
neighbours cannot go on. After every :data:`SNAPSHOT_EVERY`-th round all nodes completed
(every checkpoint round, with checkpoints), the driver keeps the states the nodes published
for it (:class:`~redfl.runtime.port_runner.Snapshots`; one model per node on the driver).
When a worker is lost, every node is stopped, the worker is re-created
(:class:`~redfl.runtime.supervisor.Supervisor`), queued messages are delivered
(:class:`~redfl.runtime.port_runner.Quiesce`) and then forgotten with the live nodes
(:class:`~redfl.runtime.port_runner.Rewind`), and every node starts again from the last
snapshot's state (``train(rounds, resume=state)``). Per-node randomness is a function of
(seed, round, node id) and mixing adds terms in a fixed order, so the rounds run again end
as they did (their records, kept, are not emitted twice) and the rolled back run ends with
the same bits as an undisturbed one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redfl.core.result import Failure, FederationError
from redfl.runtime.backend import Backend
from redfl.runtime.host import Stats, StopNodes
from redfl.runtime.port_runner import Quiesce, Rewind, RunNode, Snapshots
from redfl.runtime.protocol import Unfinished
from redfl.runtime.replies import NodeFailed
from redfl.runtime.supervisor import Supervisor
from redfl.runtime.watch import CONTROL_TIMEOUT_S

SNAPSHOT_EVERY = 5
"""Rounds between snapshots (without checkpoints): a rollback runs at most this many
completed rounds again (their records are kept, not emitted twice), and nodes keep and
send their states for one round in this many."""
STOP_S = 30.0
"""How long stopped nodes may take to end their ``train()`` before a rollback."""

Lost = dict[int, str]
"""Lost workers and why, by index."""


@dataclass
class Snapshot:
    """The states all nodes published for ``round`` (round 0: none, start afresh)."""

    round: int = 0
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def take(self, backend: Backend, rnd: int, expected: int) -> None:
        """Keep round ``rnd``'s states if every one of the ``expected`` nodes has one."""
        pending = [backend.call(w, Snapshots(rnd)) for w in range(backend.num_workers)]
        states: dict[str, dict[str, Any]] = {}
        for outcome in backend.gather(pending, timeout=CONTROL_TIMEOUT_S):
            if outcome.value is None:
                return
            states.update(outcome.value)
        if len(states) >= expected:
            self.round, self.states = rnd, states


def run_nodes(
    backend: Backend,
    ids: Sequence[str],
    worker_of: Callable[[str], int],
    arguments: Callable[[str], dict[str, Any]],
    rnd: int,
    stopping: Callable[[], bool] = lambda: False,
) -> tuple[dict[str, Any], Lost]:
    """Run ``train(**arguments(id))`` on each node at once; (outputs, lost workers).

    At the first error every node is stopped; when a worker was lost, its index and reason
    are returned (and no outputs) instead of raising, unless the federation is
    ``stopping`` (its workers are being ended on purpose).

    Raises
    ------
    FederationError
        Naming the first node that failed (no worker lost), with its traceback; its
        ``failures`` hold that node's failure in round ``rnd``.
    """
    where = {i: worker_of(i) for i in ids}  # known even if the federation stops meanwhile
    pending = [backend.call(where[i], RunNode(i, arguments(i))) for i in ids]
    outcomes = backend.gather(pending, fail_fast=True)
    if all(o.error is None for o in outcomes):
        return {i: o.value for i, o in zip(ids, outcomes, strict=True)}, {}
    stop(backend)
    late = [k for k, o in enumerate(outcomes) if isinstance(o.error, Unfinished)]
    ended = backend.gather([pending[k] for k in late], timeout=STOP_S)
    for k, outcome in zip(late, ended, strict=True):
        outcomes[k] = outcome
    lost: Lost = {}
    failed: list[tuple[str, BaseException]] = []
    for node_id, outcome in zip(ids, outcomes, strict=True):
        if outcome.error is None or isinstance(outcome.error, Unfinished):
            continue
        reason = backend.lost(outcome.error)
        if reason is not None:
            lost.setdefault(where[node_id], reason)
        else:
            failed.append((node_id, outcome.error))
    if lost and not stopping():
        return {}, lost
    if stopping() and all(_woken(error) for _, error in failed):  # its workers go too
        raise FederationError("federation stopped: its nodes ended with FederationStopped")
    failed.extend((f"worker {w}", RuntimeError(reason)) for w, reason in lost.items())
    if not failed:
        raise FederationError(f"nodes did not end within {STOP_S:g} s of being stopped")
    node_id, error = first_cause(failed)
    detail = error.trace if isinstance(error, NodeFailed) else repr(error)
    reason = detail.strip().splitlines()[-1] if detail.strip() else repr(error)
    raise FederationError(
        f"node {node_id!r} failed; federation stopped:\n{detail}",
        [Failure(node_id, rnd, "train", reason)],
    )


def roll_back(
    backend: Backend,
    supervisor: Supervisor | None,
    lost: Lost,
    snapshot: Snapshot,
    worker_of: Callable[[str], int],
    rnd: int,
) -> None:
    """Re-create the ``lost`` workers and put every worker back to ``snapshot``.

    Raises
    ------
    FederationError
        If workers cannot be re-created (no supervisor, or past ``max_worker_restarts``).
    """
    if supervisor is None:
        causes = "; ".join(f"worker {w}: {reason}" for w, reason in sorted(lost.items()))
        raise FederationError(f"round {rnd}: workers lost: {causes}")
    for worker, reason in sorted(lost.items()):
        supervisor.lost(worker, f"round {rnd}: {reason}")
    supervisor.settle()
    wait_stopped(backend)
    replies = backend.gather(
        [backend.call(w, Quiesce(CONTROL_TIMEOUT_S)) for w in range(backend.num_workers)],
        timeout=CONTROL_TIMEOUT_S * 2,
    )
    by_worker: dict[int, dict[str, dict[str, Any]]] = {w: {} for w in range(backend.num_workers)}
    for node_id, state in snapshot.states.items():
        by_worker[worker_of(node_id)][node_id] = state
    rewound = [backend.call(w, Rewind(snapshot.round, s)) for w, s in by_worker.items()]
    outcomes = backend.gather(rewound, timeout=CONTROL_TIMEOUT_S)
    errors = [o.error for o in replies] + [o.error for o in outcomes]
    if any(e is not None for e in errors) or not all(r.value for r in replies):
        first = next((e for e in errors if e is not None), "messages still in flight")
        raise FederationError(f"round {rnd}: rollback to round {snapshot.round} failed: {first}")


def stop(backend: Backend) -> None:
    """Wake every node blocked in ``receive`` (it ends with ``FederationStopped``)."""
    pending = [backend.call(w, StopNodes()) for w in range(backend.num_workers)]
    backend.gather(pending, timeout=CONTROL_TIMEOUT_S)


def wait_stopped(backend: Backend, seconds: float = STOP_S) -> None:
    """Stop the nodes and wait until no ``train()`` runs on any worker (at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stop(backend)
        pending = [backend.call(w, Stats()) for w in range(backend.num_workers)]
        replies = backend.gather(pending, timeout=CONTROL_TIMEOUT_S)
        if all(r.value is not None and not r.value.get("running") for r in replies):
            return
        time.sleep(0.02)


def _woken(error: BaseException) -> bool:
    """Whether ``error`` is a node's ``train()`` ended by the stop (``FederationStopped``)."""
    return isinstance(error, NodeFailed) and "FederationStopped" in error.trace


def first_cause(failed: list[tuple[str, BaseException]]) -> tuple[str, BaseException]:
    """The failure to report: the first that is not a node woken by the stop."""
    for node_id, error in failed:
        if not _woken(error):
            return node_id, error
    return failed[0]
