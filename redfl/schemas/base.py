"""``Federation``: what every schema shares: lazy start, settings, versions, stop."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Self, TypedDict

from redfl.algorithms.strategy import Strategy
from redfl.core.arrays import Parameters
from redfl.core.events import Event, WorkerRestarted
from redfl.core.result import EvaluateFn, FederationResult, RoundRecord
from redfl.core.roles import parse_roles
from redfl.core.server_state import ServerState
from redfl.privacy.secagg import SecureAggregationConfig
from redfl.runtime.backend import Backend, Plan
from redfl.runtime.host import PullVersion, Stats
from redfl.runtime.plan import make_plan
from redfl.runtime.registry import RUNTIMES, RuntimeOptions
from redfl.runtime.remote import remote_options
from redfl.runtime.resources import ResourceError, ResourcesConfig
from redfl.runtime.sites.config import SitesConfig
from redfl.runtime.supervisor import Supervisor, WorkerHealth
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.virtual import NodeFactory, VirtualNode
from redfl.runtime.watch import CONTROL_TIMEOUT_S
from redfl.schemas.callbacks import Callback, emit
from redfl.topology.graph import Topology

CAPACITY_GRACE_S = 3.0
"""How long a resource shortfall is re-checked before it is reported."""
DEFAULT_MAX_WORKER_RESTARTS = 3
"""How many times each worker may be re-created by default."""


def check_timeout(name: str, value: float | None) -> None:
    """Refuse a timeout that is not a finite number of seconds > 0 (or ``None``).

    Raises
    ------
    ValueError
        Naming the setting, its value and what is allowed.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0 (or None), got {value!r}")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite (use None for no timeout), got {value!r}")


def check_fault_settings(
    client_timeout: float | None, round_timeout: float | None, max_worker_restarts: int
) -> None:
    """Refuse bad fault settings with the setting's name, its value and what is allowed.

    Raises
    ------
    ValueError
        For a timeout that is not a number of seconds > 0 (or ``None``), or a restart
        limit that is not an int >= 0.
    """
    for name, value in (("client_timeout", client_timeout), ("round_timeout", round_timeout)):
        check_timeout(name, value)
    if (
        isinstance(max_worker_restarts, bool)
        or not isinstance(max_worker_restarts, int)
        or max_worker_restarts < 0
    ):
        raise ValueError(f"max_worker_restarts must be an int >= 0, got {max_worker_restarts!r}")


class FederationSettings(TypedDict, total=False):
    """The keyword arguments every federation class takes (see :class:`Federation`); a
    schema's class takes its own arguments plus ``**settings``."""

    seed: int
    runtime: str
    address: str | None
    resources: ResourcesConfig | None
    federation_id: str | None
    client_timeout: float | None
    round_timeout: float | None
    max_worker_restarts: int
    callbacks: Sequence[Callback]
    sites: SitesConfig | None


class StarSettings(FederationSettings, total=False):
    """The star's optional arguments and the federation's settings: what a schema built on
    the star (the hierarchy) passes through to it, and what a config gives a round-driven
    schema (:meth:`~redfl.schemas.registry.FederationParts.star_settings`)."""

    strategy: Strategy | None
    options: Mapping[str, Any] | None
    client_ids: Sequence[str] | None
    roles: str
    evaluate_fn: EvaluateFn | None
    secure_aggregation: SecureAggregationConfig | None


class Federation:
    """A set of virtual nodes, a topology and a runtime; nothing starts until first use.

    Parameters
    ----------
    nodes:
        The federation's virtual nodes (ids must be unique).
    topology:
        Who may send to whom; ``None`` when nodes exchange no messages.
    seed:
        Every random draw of the run is a function of it (and of the round and node id).
    runtime:
        A registered runtime (:data:`~redfl.runtime.registry.RUNTIMES`): ``"ray"``
        (default), ``"local"`` (in-process, deterministic, debuggable) or ``"sites"``
        (each client at its own site, over mutual TLS; ``sites`` says where).
    address:
        Ray address to join (``"auto"``, ``"ray://host:port"``); default: the embedded
        local Ray instance (started if Ray is not initialised).
    resources:
        How workers are sized and placed.
    federation_id:
        Prefix of every actor name; default: a fresh unique id.
    client_timeout:
        Seconds a star client may run before it is a failure ``timeout after X s`` and its
        worker is replaced (ray runtime; ``None``: no limit).
    round_timeout:
        Seconds a star round may take; past it, unfinished clients fail (``None``: no limit).
    max_worker_restarts:
        How many times each worker may be re-created after it died or was replaced; one
        loss more fails the run, naming the worker and the causes.
    callbacks:
        Receive the federation's events (progress, logging, checkpoints, early stopping).
    sites:
        The ``[sites]`` table of the ``sites`` runtime: its trust home, listen address and
        expected sites (site ``i`` hosts node ``i``, whose id is the site's name).
    """

    def __init__(
        self,
        nodes: Sequence[VirtualNode],
        topology: Topology | None = None,
        *,
        seed: int = 0,
        runtime: str = "ray",
        address: str | None = None,
        resources: ResourcesConfig | None = None,
        federation_id: str | None = None,
        client_timeout: float | None = None,
        round_timeout: float | None = None,
        max_worker_restarts: int = DEFAULT_MAX_WORKER_RESTARTS,
        callbacks: Sequence[Callback] = (),
        sites: SitesConfig | None = None,
    ) -> None:
        check_fault_settings(client_timeout, round_timeout, max_worker_restarts)
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be {RUNTIMES.choices()}, got {runtime!r}")
        self._runtime = RUNTIMES.get(runtime)
        if not self._runtime.supervised and (client_timeout or round_timeout):
            raise ValueError(
                f"client_timeout and round_timeout need a runtime that can interrupt clients "
                f"(ray): the {runtime} runtime runs clients in the driver's thread"
            )
        self.nodes = list(nodes)
        counts = Counter(n.node_id for n in self.nodes)
        if len(counts) != len(self.nodes):
            dupes = sorted(node_id for node_id, count in counts.items() if count > 1)
            raise ValueError(f"node ids must be unique; repeated: {dupes[:5]}")
        self.topology = topology
        self.seed = seed
        self.runtime = runtime
        self.address = address
        self.resources = resources or ResourcesConfig()
        self.federation_id = federation_id or f"redfl-{uuid.uuid4().hex[:10]}"
        self.client_timeout = client_timeout
        self.round_timeout = round_timeout
        self.max_worker_restarts = max_worker_restarts
        self.sites = sites
        self.callbacks: list[Callback] = list(callbacks)
        """Receive the federation's events."""
        self.round = 0
        """Rounds completed."""
        self.checkpoint_every = 0
        """The run saves the server state after every multiple of this round (0: only at
        the end); a schema without a global barrier between rounds pauses its nodes
        there so that the state can be taken."""
        self._history: list[RoundRecord] = []
        self._backend: Backend | None = None
        self._manager: TopologyManager | None = None
        self._supervisor: Supervisor | None = None

    def train(self, rounds: int = 1) -> FederationResult:
        """Run ``rounds`` more rounds; return the history, the final model and failures.

        Every schema keeps this contract; a second call continues where the first ended.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement train()")

    @property
    def history(self) -> list[RoundRecord]:
        """The record of every round completed so far."""
        return list(self._history)

    def model(self) -> Parameters | None:
        """The global model after the last completed round, for schemas that keep one on
        the driver (``None`` otherwise, and before the first round)."""
        return None

    def notes(self) -> list[str]:
        """What a user should know before the run (e.g. a round size the strategy raised)."""
        return []

    def server_state(self, config_digest: str = "") -> ServerState:
        """Everything needed to continue this run later (between rounds).

        Raises
        ------
        NotImplementedError
            For a schema whose state cannot be saved.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot save its server state")

    def load_server_state(self, state: ServerState) -> None:
        """Continue from ``state`` (taken from a federation built the same way).

        Raises
        ------
        NotImplementedError
            For a schema whose state cannot be loaded.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot load a server state")

    @property
    def started(self) -> bool:
        """Whether workers are running (they start on first ``train``/``evaluate``)."""
        return self._backend is not None

    def _start(self) -> Backend:
        """Build the plan and start the workers, once."""
        if self._backend is not None:
            return self._backend
        backend = self._runtime.make(RuntimeOptions(self.address, self.resources, self.sites))
        plan = self._plan(backend)
        if self._runtime.supervised:
            plan.max_restarts = self.max_worker_restarts
        backend.start(plan)
        try:
            backend.wait_for_workers(self._notify)
        except BaseException:
            backend.stop()
            raise
        self._backend, self._manager = backend, plan.manager
        if self._runtime.supervised:
            nodes = [len(spec.nodes) for spec in plan.workers]
            self._supervisor = Supervisor(
                backend, nodes, self.max_worker_restarts, self._notify, self._runtime.recreates
            )
            self._supervisor.learn()
        return backend

    def _notify(self, event: Event) -> None:
        """Pass a runtime event (a worker restart) to the callbacks; a restart says when
        the state of stateful clients was lost with the worker's process."""
        if isinstance(event, WorkerRestarted) and any(
            getattr(n.template, "stateful", False) for n in self.nodes
        ):
            lost = "; the state of its stateful clients was lost with its process"
            event = replace(event, reason=event.reason + lost)
        emit(self.callbacks, event)

    def health(self) -> list[WorkerHealth]:
        """Each worker's state (``alive``, ``restarting``, ``dead``), node count, busy
        seconds and restarts (empty before the workers start).

        The in-process runtime's workers are always ``alive`` and never restart.
        """
        if self._backend is None:
            return []
        if self._supervisor is not None:
            return self._supervisor.health()
        return [
            WorkerHealth(w, "alive", int(stats.get("hosted", 0)), stats.get("busy_seconds", 0.0), 0)
            for w, stats in enumerate(self.worker_stats())
        ]

    def _plan(self, backend: Backend) -> Plan:
        """Plan against the free resources; a shortfall is re-checked for a few seconds,
        since resources a stopped federation released take a moment to show as free."""
        deadline = time.monotonic() + CAPACITY_GRACE_S
        while True:
            try:
                return make_plan(
                    self.federation_id,
                    self.seed,
                    self.nodes,
                    self.topology,
                    backend.plan_resources(self._worker_resources(backend)),
                    backend.available_resources(),
                    backend.machine_resources(),
                    check=self._runtime.supervised,
                )
            except ResourceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _worker_resources(self, backend: Backend) -> ResourcesConfig:
        """The ``[resources]`` the shared workers are planned with (a schema that adds
        workers of its own narrows them)."""
        return self.resources

    def worker_of(self, node_id: str) -> int:
        """The index of the worker that hosts ``node_id`` (after start)."""
        if self._manager is None:
            raise RuntimeError("the federation has not started")
        return self._manager.worker_of(node_id)

    def pull_version(self, node_id: str) -> tuple[int, dict[str, Any]]:
        """The latest (version number, state) that ``node_id`` published."""
        backend = self._start()
        pending = backend.call(self.worker_of(node_id), PullVersion(node_id))
        return backend.gather([pending], timeout=CONTROL_TIMEOUT_S)[0].result()

    def worker_stats(self) -> list[dict[str, float]]:
        """Per worker: nodes hosted and built, batch calls, seconds busy (none before start)."""
        if self._backend is None:
            return []
        backend = self._backend
        pending = [backend.call(w, Stats()) for w in range(backend.num_workers)]
        outcomes = backend.gather(pending, timeout=CONTROL_TIMEOUT_S)
        return [o.value if o.value is not None else {} for o in outcomes]

    def worker_nodes(self) -> list[str]:
        """The machine (Ray node id) each worker runs on, in worker order (none before start)."""
        return [] if self._backend is None else self._backend.worker_nodes()

    def stop(self) -> None:
        """Stop the workers and release the placement group. Safe to call twice."""
        if self._supervisor is not None:
            self._supervisor.stop()
        if self._backend is not None:
            self._backend.stop()
        if self._supervisor is not None:
            self._supervisor.drain_quietly()  # what the runtime reported while stopping
        self._backend = None
        self._manager = None
        self._supervisor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def virtual_nodes(
    template: NodeFactory,
    node_ids: Sequence[str],
    *,
    roles: str = "train",
    options: Mapping[str, Any] | None = None,
    resources: Mapping[str, float] | None = None,
    start: int = 0,
) -> list[VirtualNode]:
    """Describe one node per id, all from ``template`` (nothing is built).

    A template decorated with :func:`redfl.remote` gets a dedicated actor per node, sized
    by its ``num_cpus``/``num_gpus`` unless ``resources`` says otherwise.
    """
    role_set = parse_roles(roles)
    shared = dict(options or {})
    if resources is None and isinstance(template, type):
        marked = remote_options(template)
        if marked is not None:
            resources = {
                "CPU": float(marked.get("num_cpus", 0.0)),
                "GPU": float(marked.get("num_gpus", 0.0)),
            }
    return [
        VirtualNode(template, node_id, role_set, start + i, shared, resources)
        for i, node_id in enumerate(node_ids)
    ]
