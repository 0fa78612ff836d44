"""Turn a federation's virtual nodes into a plan: bundles, workers, sticky placement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redfl.runtime.backend import Plan, WorkerSpec
from redfl.runtime.remote import remote_options
from redfl.runtime.resources import ResourcesConfig, check_capacity, worker_bundles
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.virtual import VirtualNode
from redfl.topology.graph import Topology

MESSAGING_THREADS = 16
"""Extra threads in a message-driven worker, beyond one per hosted node."""


def make_plan(
    federation_id: str,
    seed: int,
    nodes: Sequence[VirtualNode],
    topology: Topology | None,
    resources: ResourcesConfig,
    available: Mapping[str, float],
    machines: Sequence[Mapping[str, float]],
    check: bool = True,
) -> Plan:
    """Place ``nodes`` on workers: shared nodes round-robin (sticky), dedicated alone.

    Raises
    ------
    ResourceError
        If ``check`` and the cluster cannot hold the bundles (before anything starts).
    """
    shared = [n for n in nodes if not n.dedicated]
    dedicated = [n for n in nodes if n.dedicated]
    bundles = worker_bundles(resources, available, len(shared)) if shared else []
    messaging = topology is not None
    workers = [WorkerSpec(f"{federation_id}::worker-{i}", b, []) for i, b in enumerate(bundles)]
    placement: dict[str, int] = {}
    for position, node in enumerate(shared):
        slot = position % len(workers)
        workers[slot].nodes.append(node)
        placement[node.node_id] = slot
    for node in dedicated:
        placement[node.node_id] = len(workers)
        template = node.template
        options = (remote_options(template) if isinstance(template, type) else None) or {}
        options = {k: v for k, v in options.items() if k == "max_concurrency"}
        bundle = {k: float(v) for k, v in (node.resources or {}).items() if v}
        workers.append(WorkerSpec(f"{federation_id}/{node.node_id}", bundle, [node], options))
    for spec in workers:
        if "max_concurrency" not in spec.options:
            # A star worker takes a ``release`` call (work stealing) and a probe (client
            # timeouts, health) while it fits.
            threads = len(spec.nodes) + MESSAGING_THREADS if messaging else 3
            spec.options["max_concurrency"] = threads
    if check:
        check_capacity(
            [w.bundle for w in workers if w.bundle],
            resources.placement_strategy,
            available,
            machines,
        )
    return Plan(
        federation_id,
        seed,
        len(nodes),
        workers,
        TopologyManager(topology, placement),
        resources.placement_strategy,
        int(resources.client_state_mb * 2**20),
    )
