"""``Worker``: hosts many live nodes; plain Python, wrapped as a Ray actor by the ray runtime.

Nodes are built lazily on first use and stay on their worker for the whole run (sticky
placement), so their state survives between rounds.
"""

from __future__ import annotations

import resource
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from redfl.algorithms.strategy import ClientUpdate
from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters, WeightedSum, check_update
from redfl.core.message import Message
from redfl.core.result import Failure
from redfl.nodes.client import Client
from redfl.nodes.node import FederatedNode
from redfl.runtime.mailbox import Mailbox
from redfl.runtime.replies import EvaluateBatch, FitBatch, NodeFailed, RoundTotals
from redfl.runtime.state import DEFAULT_MEMORY_BYTES, StateStore
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.virtual import VirtualNode

GUEST_CACHE = 1024
"""Clients of other workers (taken by work stealing) kept built on this worker, at most."""


class Worker:
    """A process-level host for many nodes (one per placement-group bundle on Ray)."""

    def __init__(
        self,
        index: int,
        federation_id: str,
        seed: int,
        num_nodes: int,
        nodes: Sequence[VirtualNode],
        manager: TopologyManager,
        state_memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        self.index = index
        self.federation_id = federation_id
        self.seed = seed
        self.num_nodes = num_nodes
        self.manager = manager
        self.mailbox = Mailbox()
        self._specs = {node.node_id: node for node in nodes}
        self._live: dict[str, FederatedNode] = {}
        self._versions: dict[str, tuple[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._segments = [0, 0]  # of the running fit_batch: next to start, end
        self._peers: Sequence[Any] = ()
        self._batches = 0
        self._busy = 0.0
        self._running = 0
        self._rounds: dict[int, RoundTotals] = {}
        self._guests = 0
        self._guest_batches = 0
        self._guest_specs: dict[str, VirtualNode] = {}
        self._guest_live: OrderedDict[str, FederatedNode] = OrderedDict()
        self.states = StateStore(state_memory_bytes)

    # -- lifecycle -----------------------------------------------------------------------
    def connect(self, peers: Sequence[Any]) -> int:
        """Give the worker the handles of every worker (indexed like the placement)."""
        self._peers = peers
        return self.index

    def node(self, node_id: str) -> FederatedNode:
        """The live node ``node_id``, built (and set up) on first use."""
        live = self._live.get(node_id)
        if live is None:
            spec = self._specs.get(node_id)
            if spec is None:
                return self._guest(node_id)
            live = spec.build(self.federation_id, self.seed, self.num_nodes, self)
            self._live[node_id] = live
        return live

    def _guest(self, node_id: str) -> FederatedNode:
        """A client another worker hosts, run here for it (kept in a bounded cache)."""
        live = self._guest_live.get(node_id)
        if live is not None:
            self._guest_live.move_to_end(node_id)
            return live
        spec = self._guest_specs.get(node_id)
        if spec is None:
            raise KeyError(f"node {node_id!r} is not hosted on worker {self.index}")
        live = spec.build(self.federation_id, self.seed, self.num_nodes, self)
        self._guest_live[node_id] = live
        if len(self._guest_live) > GUEST_CACHE:
            self._guest_live.popitem(last=False)
        return live

    def stats(self) -> dict[str, float]:
        """For tests and monitoring: nodes hosted and built, batch calls, busy time, peak RSS."""
        return {
            "hosted": len(self._specs),
            "built": len(self._live),
            "batches": self._batches,
            "busy_seconds": self._busy,
            "running": self._running,
            "guest_fits": self._guests,
            "guest_batches": self._guest_batches,
            "guests_built": len(self._guest_live),
            "states": len(self.states),
            "states_spilled": self.states.spilled,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    def stop_nodes(self) -> None:
        """Wake every node blocked on ``receive`` so that its ``train()`` ends."""
        self.mailbox.stop()

    def close(self) -> None:
        """Drop client states and their spill folder."""
        self.states.close()

    # -- star fast path ------------------------------------------------------------------
    def fit_batch(
        self,
        parameters: Parameters,
        node_ids: Sequence[str] | Sequence[Sequence[str]],
        config: dict[str, Any],
        fold: bool,
        policy: UpdatePolicy | None = None,
        guests: Sequence[VirtualNode] = (),
        separate: bool = False,
    ) -> FitBatch:
        """Fit each segment's clients in turn; fold successful updates if ``fold``.

        ``node_ids`` holds the segments (lists of client ids; a flat list is one segment).
        With ``fold``, each segment is summed on its own and the segment sums are folded in
        order into ``total``, or, with ``separate``, returned one per segment in
        ``segment_totals``. While this runs, :meth:`release` may take segments not yet
        started (work stealing); ``segments_run`` says how many ran. ``guests`` describes
        clients hosted by another worker that this one runs for it (built here). ``policy``
        (from the strategy) gives per-client config, rejects updates of the wrong dtype or
        above a norm bound, and clips them for client-side DP.
        """
        flat = bool(node_ids) and isinstance(node_ids[0], str)
        segments = cast(list[Sequence[str]], [node_ids] if flat else list(node_ids))
        self._batches += 1
        started = time.perf_counter()
        for spec in guests:
            if spec.node_id not in self._specs:
                self._guest_specs[spec.node_id] = spec
        self._guests += len(guests)
        self._guest_batches += 1 if guests else 0
        batch = FitBatch(total=WeightedSum() if fold else None)
        with self._lock:
            self._segments = [0, len(segments)]  # next to start, end (release lowers it)
        while True:
            with self._lock:
                if self._segments[0] >= self._segments[1]:
                    break
                index = self._segments[0]
                self._segments[0] += 1
            part = FitBatch(total=WeightedSum() if fold else None)
            self._fit_clients(parameters, segments[index], config, part, policy)
            batch.absorb(part)
            batch.failures.extend(part.failures)
            batch.updates.extend(part.updates)
            if part.total is not None and batch.total is not None:
                if separate:
                    batch.segment_totals.append(part.total)
                else:
                    batch.total.merge(part.total)
            batch.segments_run += 1
        self._busy += time.perf_counter() - started
        return batch

    def release(self) -> list[int]:
        """Give up the latter half (rounded up) of the running call's unstarted segments."""
        with self._lock:
            following, end = self._segments
            keep = end - (end - following + 1) // 2
            self._segments[1] = keep
            return list(range(keep, end))

    def _fit_clients(
        self,
        parameters: Parameters,
        node_ids: Sequence[str],
        config: dict[str, Any],
        batch: FitBatch,
        policy: UpdatePolicy | None,
    ) -> None:
        """Fit each client of ``node_ids`` in turn, recording each result in ``batch``."""
        rnd = int(config["round"])
        policy = policy or UpdatePolicy()
        for node_id in node_ids:
            try:
                client = self._client(node_id)
                if client.stateful:
                    client.state = self.states.get(node_id)
                new, num_examples, metrics = client.fit(
                    parameters, policy.config_for(node_id, config)
                )
                reason = check_update(new, parameters)
                if reason is None and (
                    not isinstance(num_examples, int | np.integer) or num_examples < 1
                ):
                    reason = f"num_examples must be a positive int, got {num_examples!r}"
                count, report = int(num_examples), {k: float(v) for k, v in metrics.items()}
                if reason is None:
                    new, weight, stats, reason = policy.apply(new, parameters, count)
                if reason is None and client.stateful:
                    self.states.put(node_id, client.state)
            except Exception as error:  # a failing client is a value, not a crash
                reason = _describe(error)
            finally:
                _detach_state(self._live.get(node_id) or self._guest_live.get(node_id))
            if reason is not None:
                batch.failures.append(Failure(node_id, rnd, "fit", reason))
                continue
            for name, value in stats.items():
                batch.stats[name] = batch.stats.get(name, 0.0) + value
            if batch.total is not None:
                batch.total.add(new, weight)
            else:
                batch.updates.append(ClientUpdate(node_id, new, count, report))
            batch.succeeded.append(node_id)
            batch.add_metrics(report, count)

    def evaluate_batch(
        self, parameters: Parameters, node_ids: Sequence[str], config: dict[str, Any]
    ) -> EvaluateBatch:
        """Evaluate ``parameters`` on each client in turn."""
        self._batches += 1
        batch = EvaluateBatch()
        rnd = int(config["round"])
        for node_id in node_ids:
            try:
                client = self._client(node_id)
                if client.stateful:
                    client.state = self.states.get(node_id)
                loss, num_examples, metrics = client.evaluate(parameters, dict(config))
                loss = float(loss)
                if loss != loss:  # NaN
                    raise ValueError("evaluation loss is NaN")
                report = (
                    node_id,
                    loss,
                    int(num_examples),
                    {k: float(v) for k, v in metrics.items()},
                )
            except Exception as error:
                batch.failures.append(Failure(node_id, rnd, "evaluate", _describe(error)))
                continue
            finally:
                _detach_state(self._live.get(node_id) or self._guest_live.get(node_id))
            batch.reports.append(report)
        return batch

    def _client(self, node_id: str) -> Client:
        node = self.node(node_id)
        if not isinstance(node, Client):
            raise TypeError(f"node {node_id!r} is a {type(node).__name__}, not a Client")
        return node

    # -- message-driven nodes ------------------------------------------------------------
    def run_node(self, node_id: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``node_id``'s ``train(**arguments)`` to the end and return its output."""
        with self._lock:
            self._running += 1
        try:
            return self.node(node_id).train(**(arguments or {}))
        except Exception:
            raise NodeFailed(node_id, traceback.format_exc()) from None
        finally:
            with self._lock:
                self._running -= 1

    def neighbours(self, node_id: str) -> set[str]:
        """The ids ``node_id`` may send to (the :class:`NodePort` side of a node)."""
        return self.manager.neighbours(node_id)

    def senders(self, node_id: str) -> set[str]:
        """The ids that may send to ``node_id``."""
        return self.manager.senders(node_id)

    def weights_into(self, node_id: str) -> dict[str, float]:
        """The topology's weights of the edges into ``node_id`` (empty when unweighted)."""
        return self.manager.weights_into(node_id)

    def sum_parameters(self, node_ids: Sequence[str]) -> WeightedSum:
        """The ``weight``-weighted sum of the ``parameters`` the nodes last published.

        Message-driven nodes publish ``parameters`` and ``weight`` (how much their model
        counts in the federation's final model); nodes with no such version are skipped.
        """
        total = WeightedSum()
        with self._lock:
            states = [self._versions.get(node_id, (0, {}))[1] for node_id in node_ids]
        for state in states:
            weight = float(state.get("weight", 0.0))
            if weight > 0 and "parameters" in state:
                total.add(state["parameters"], weight)
        return total

    def send(self, message: Message) -> None:
        """Check ``message`` against the topology and deliver it, each worker once."""
        self.manager.check_send(message.sender, message.recipients)
        groups = self.manager.route(message.recipients)
        local = groups.pop(self.index, None)
        if local:
            self.mailbox.put(message, local)
        if groups:
            self.post(message, groups)

    def post(self, message: Message, groups: dict[int, list[str]]) -> None:
        """Hand ``message`` to other workers (in-process: direct calls)."""
        for worker_index, node_ids in groups.items():
            self._peers[worker_index].deliver(message, node_ids)

    def deliver(self, message: Message, node_ids: Sequence[str]) -> None:
        """Queue a message that arrived from another worker."""
        self.mailbox.put(message, node_ids)

    def receive(
        self, node_id: str, header: str | None, block: bool, timeout: float | None
    ) -> Message | None:
        """Take the first queued message for ``node_id`` matching ``header``."""
        return self.mailbox.take(node_id, header, block, timeout)

    # -- versions ------------------------------------------------------------------------
    def publish_version(self, node_id: str, state: dict[str, Any]) -> int:
        """Store a snapshot of ``node_id``'s state under the next version number."""
        with self._lock:
            number = self._versions.get(node_id, (0, {}))[0] + 1
            self._versions[node_id] = (number, state)
        return number

    def report_round(self, node_id: str, rnd: int, metrics: dict[str, float]) -> None:
        """Fold a node's round metrics into this worker's totals for the round."""
        with self._lock:
            totals = self._rounds.setdefault(rnd, RoundTotals())
            totals.add(metrics)

    def round_totals(self, first: int) -> dict[int, RoundTotals]:
        """The totals of every round from ``first`` on (what the driver's history needs)."""
        with self._lock:
            return {r: t.copy() for r, t in self._rounds.items() if r >= first}

    def pull_version(self, node_id: str) -> tuple[int, dict[str, Any]]:
        """The latest published (version, state) of ``node_id``; (0, {}) if none."""
        if node_id not in self._specs:
            raise KeyError(f"node {node_id!r} is not hosted on worker {self.index}")
        with self._lock:
            return self._versions.get(node_id, (0, {}))


def _detach_state(node: FederatedNode | None) -> None:
    """Drop a stateful client's reference to its state: the store alone holds it."""
    if isinstance(node, Client) and node.stateful:
        node.state = {}


def _describe(error: BaseException) -> str:
    text = str(error) or "(no message)"
    return f"{type(error).__name__}: {text}"
