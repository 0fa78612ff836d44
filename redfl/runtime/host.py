"""``Host``: the process-level home of many nodes (one per placement-group bundle on Ray).

A host builds its nodes lazily on first use and keeps them for the whole run (sticky
placement), so their state survives between rounds; it also keeps a bounded cache of
*guests* (clients of other workers it runs for them, work stealing), the client state
store, the versions nodes publish and the mailbox of its nodes. It answers the requests
of the host itself (:class:`Connect`, :class:`Stats`, :class:`StopNodes`, :class:`Close`,
:class:`PullVersion`, :class:`Probe`) and hands every other request to the
:class:`~redfl.runtime.protocol.Runner` that registered a handler for it: the star batch runner
(:mod:`redfl.runtime.star_runner`) and the message port (:mod:`redfl.runtime.port_runner`)
by default. A request of a runner the host has not installed installs it on first use.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redfl.core.message import Message
from redfl.nodes.node import FederatedNode, NodePort
from redfl.runtime.mailbox import Mailbox
from redfl.runtime.port_runner import Deliver, PortRunner
from redfl.runtime.protocol import Handlers, R, Request, Runner, Version
from redfl.runtime.replies import WorkerProbe
from redfl.runtime.star_runner import StarRunner
from redfl.runtime.state import DEFAULT_MEMORY_BYTES, StateStore
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.virtual import VirtualNode

GUEST_CACHE = 1024
"""Clients of other workers (taken by work stealing) kept built on this worker, at most."""

DEFAULT_RUNNERS: tuple[type[Runner], ...] = (PortRunner, StarRunner)
"""The runners every host installs up front."""


@dataclass(frozen=True)
class Connect(Request[int]):
    """Give the worker the handles of every worker (indexed like the placement)."""

    peers: Sequence[Any]


@dataclass(frozen=True)
class Stats(Request[dict[str, float]]):
    """Nodes hosted and built, batch calls, busy time, peak RSS (tests and monitoring)."""


@dataclass(frozen=True)
class StopNodes(Request[None]):
    """Wake every node blocked on ``receive`` so that its ``train()`` ends."""


@dataclass(frozen=True)
class Close(Request[None]):
    """Drop client states and their spill folder (the worker is being stopped)."""


@dataclass(frozen=True)
class Probe(Request[WorkerProbe]):
    """Which client the worker runs now and for how long (answered while it runs one)."""


@dataclass(frozen=True)
class PullVersion(Request[Version]):
    """The latest published (version, state) of ``node_id``; (0, {}) if none."""

    node_id: str


class Host:
    """Builds and keeps nodes; answers requests through its runners' handlers.

    Its runners get it as a :class:`~redfl.runtime.protocol.NodeHost`.

    Parameters
    ----------
    index:
        The worker's position in the placement.
    nodes:
        The virtual nodes this worker hosts.
    manager:
        The topology and the placement of every node.
    runners:
        Runner classes installed up front (others are installed on first request).
    """

    def __init__(
        self,
        index: int,
        federation_id: str,
        seed: int,
        num_nodes: int,
        nodes: Sequence[VirtualNode],
        manager: TopologyManager,
        state_memory_bytes: int = DEFAULT_MEMORY_BYTES,
        runners: Sequence[type[Runner]] = DEFAULT_RUNNERS,
    ) -> None:
        self.index = index
        self.federation_id = federation_id
        self.seed = seed
        self.num_nodes = num_nodes
        self.manager = manager
        self.mailbox = Mailbox()
        self.states = StateStore(state_memory_bytes)
        self.peers: Sequence[Any] = ()
        self.port: NodePort | None = None
        """How built nodes reach the federation (set by the message port runner)."""
        self.running: tuple[str, float] | None = None
        """The client a runner runs now and since when (``time.monotonic()``)."""
        self.piece: tuple[int, float] | None = None
        """The piece of the running request a runner folds now and since when."""
        self._lock = threading.Lock()
        self._specs = {node.node_id: node for node in nodes}
        self._live: dict[str, FederatedNode] = {}
        self._guest_specs: dict[str, VirtualNode] = {}
        self._guest_live: OrderedDict[str, FederatedNode] = OrderedDict()
        self._versions: dict[str, Version] = {}
        self._handlers = Handlers()
        self._handlers.add(Connect, self._connect)
        self._handlers.add(Stats, self._stats)
        self._handlers.add(StopNodes, self._stop_nodes)
        self._handlers.add(Close, self._close)
        self._handlers.add(PullVersion, self._pull_version)
        self._handlers.add(Probe, self._probe)
        self._runners: dict[type[Runner], Runner] = {}
        self._install_lock = threading.Lock()
        for runner in runners:
            self.install(runner)

    # -- requests ------------------------------------------------------------------------
    def handle(self, request: Request[R]) -> R:
        """Answer ``request`` with the handler registered for its class.

        Raises
        ------
        TypeError
            If no handler answers it and it names no runner to install.
        """
        handler = self._handlers.find(request)
        if handler is None:
            runner = type(request).runner
            if runner is None or runner in self._runners:
                raise TypeError(
                    f"worker {self.index} has no handler for {type(request).__name__}; "
                    f"it answers {', '.join(self._handlers.kinds())}"
                )
            self.install(runner)
            return self.handle(request)
        return handler(request)

    def install(self, runner: type[Runner]) -> Runner:
        """Create ``runner`` on this host (once) and register its handlers."""
        with self._install_lock:
            live = self._runners.get(runner)
            if live is None:
                live = runner(self)
                live.register(self._handlers)
                self._runners[runner] = live
            return live

    def _connect(self, request: Connect) -> int:
        self.peers = request.peers
        return self.index

    def _stats(self, request: Stats) -> dict[str, float]:
        return self.stats()

    def _stop_nodes(self, request: StopNodes) -> None:
        self.mailbox.stop()

    def _close(self, request: Close) -> None:
        self.close()

    def _probe(self, request: Probe) -> WorkerProbe:
        running, piece, now = self.running, self.piece, time.monotonic()
        node_id, elapsed = (None, 0.0) if running is None else (running[0], now - running[1])
        if piece is None:
            return WorkerProbe(os.getpid(), node_id, elapsed)
        return WorkerProbe(os.getpid(), node_id, elapsed, piece[0], now - piece[1])

    def _pull_version(self, request: PullVersion) -> Version:
        return self.pull_version(request.node_id)

    # -- nodes ---------------------------------------------------------------------------
    def hosts(self, node_id: str) -> bool:
        """Whether ``node_id`` lives on this worker (guests do not)."""
        return node_id in self._specs

    def node_ids(self) -> list[str]:
        """The ids of the nodes that live on this worker."""
        return list(self._specs)

    def node(self, node_id: str) -> FederatedNode:
        """The live node ``node_id``, built (and set up) on first use."""
        live = self._live.get(node_id)
        if live is None:
            spec = self._specs.get(node_id)
            if spec is None:
                return self._guest(node_id)
            live = spec.build(self.federation_id, self.seed, self.num_nodes, self.port)
            self._live[node_id] = live
        return live

    def built(self, node_id: str) -> FederatedNode | None:
        """The live node or guest ``node_id`` if built, without building it."""
        return self._live.get(node_id) or self._guest_live.get(node_id)

    def add_guests(self, guests: Sequence[VirtualNode]) -> None:
        """Describe clients of other workers that this one will run for them."""
        for spec in guests:
            if spec.node_id not in self._specs:
                self._guest_specs[spec.node_id] = spec

    def _guest(self, node_id: str) -> FederatedNode:
        """A client another worker hosts, run here for it (kept in a bounded cache)."""
        live = self._guest_live.get(node_id)
        if live is not None:
            self._guest_live.move_to_end(node_id)
            return live
        spec = self._guest_specs.get(node_id)
        if spec is None:
            raise KeyError(f"node {node_id!r} is not hosted on worker {self.index}")
        live = spec.build(self.federation_id, self.seed, self.num_nodes, self.port)
        self._guest_live[node_id] = live
        if len(self._guest_live) > GUEST_CACHE:
            self._guest_live.popitem(last=False)
        return live

    # -- messages between workers -------------------------------------------------------
    def post(self, message: Message, groups: dict[int, list[str]]) -> None:
        """Hand ``message`` to other workers (in-process: direct calls to their hosts)."""
        for worker, node_ids in groups.items():
            self.peers[worker].handle(Deliver(message, tuple(node_ids)))

    # -- versions ------------------------------------------------------------------------
    def publish_version(self, node_id: str, state: dict[str, Any]) -> int:
        """Store a snapshot of ``node_id``'s state under the next version number."""
        with self._lock:
            number = self._versions.get(node_id, (0, {}))[0] + 1
            self._versions[node_id] = (number, state)
        return number

    def version(self, node_id: str) -> Version:
        """The latest (version, state) of ``node_id`` (hosted or not); (0, {}) if none."""
        with self._lock:
            return self._versions.get(node_id, (0, {}))

    def pull_version(self, node_id: str) -> Version:
        """The latest published (version, state) of a node hosted here; (0, {}) if none."""
        if node_id not in self._specs:
            raise KeyError(f"node {node_id!r} is not hosted on worker {self.index}")
        return self.version(node_id)

    # -- rollback (a worker of a message-driven federation was lost) --------------------
    def quiesce(self, timeout: float) -> bool:
        """Deliver every message still queued for other workers; ``False`` if ``timeout``
        passed first (in-process: messages go straight to their worker, nothing queues)."""
        return True

    def rewind(self, versions: dict[str, Version]) -> None:
        """Forget every message and live node (rebuilt on next use); take ``versions`` as
        the published versions of this worker's nodes."""
        with self._lock:
            self.mailbox = Mailbox()
            self._live.clear()
            self._guest_live.clear()
            self._versions = dict(versions)

    # -- monitoring and shutdown ---------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """Nodes hosted and built, client states, peak RSS, plus each runner's counters."""
        counts: dict[str, float] = {
            "hosted": len(self._specs),
            "built": len(self._live),
            "guests_built": len(self._guest_live),
            "states": len(self.states),
            "states_spilled": self.states.spilled,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        for runner in list(self._runners.values()):
            counts.update(runner.stats())
        return counts

    def close(self) -> None:
        """Close every runner, then drop client states and their spill folder."""
        for runner in list(self._runners.values()):
            runner.close()
        self.states.close()
