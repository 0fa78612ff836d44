"""``HierarchicalFederation``: a star's clients under the LCPs of a relay tree (seed 003).

Clients hang under LCPs; each LCP folds its round's clients into one sample-weighted partial
sum (or applies a robust ``leaf_strategy`` to them), each aggregator folds its children's
sums, and the server applies the strategy (FedAvg, FedAvgM, FedAdam, DP with clipping on
the workers and noise at the root, ...) to the tree's aggregate, with the same hooks
(``end_round`` included), events, history and failures as the star. On the runtime, whole
subtrees live on one worker (:mod:`redfl.schemas.hierarchy_layout`): the global model goes
down once per worker, one partial sum per subtree comes up
(:mod:`redfl.runtime.tree_runner`), and the driver folds the rest in site order, so FedAvg
over any tree equals the flat star within float64 rounding.

Workers take their units in turn; an idle worker folds a busy one's unstarted units
(:mod:`redfl.schemas.hierarchy_dispatch`), which changes who folds a subtree, never the sum.

A failed LCP or aggregator (a leaf strategy that refuses the round, a worker that dies, a
subtree unfinished at ``round_timeout``) is a recorded failure of its subtree, with the
subtree's sites; the round goes on while the coverage (the fraction of sampled clients
whose updates arrived) is at least ``min_coverage``, otherwise the run fails naming the
subtrees. A client past ``client_timeout`` fails as in the star: its worker is replaced and
the rest of its subtree is folded again without it. A dead worker is re-created (up to
``max_worker_restarts``) and folds its subtrees again from the next round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from redfl.algorithms.strategy import Strategy
from redfl.core.arrays import Parameters
from redfl.core.config import ResourcesConfig
from redfl.core.config_tables import TREE_KEYS
from redfl.core.events import ClientsProgress, RoundStarted
from redfl.core.instructions import Instructions
from redfl.core.registries import SCHEMAS
from redfl.core.result import RoundRecord
from redfl.core.seeding import round_rng
from redfl.nodes.client import Client
from redfl.privacy.clipping import DPFixedClipping
from redfl.runtime.backend import Backend, Plan, WorkerSpec
from redfl.runtime.resources import check_capacity
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.tree_runner import FoldSubtrees, UnitPlan
from redfl.runtime.watch import Watch
from redfl.schemas.base import DEFAULT_MAX_WORKER_RESTARTS, RuntimeName
from redfl.schemas.callbacks import Callback, emit
from redfl.schemas.hierarchy_dispatch import fold_round, shares_of
from redfl.schemas.hierarchy_fold import check_round, fold_shares
from redfl.schemas.hierarchy_layout import Layout, clients_of_unit, make_layout, unit_plan
from redfl.schemas.registry import SchemaSpec
from redfl.schemas.star import EvaluateFn, StarFederation
from redfl.topology.assign import assign_clients
from redfl.topology.tree import RelayTree
from redfl.topology.tree_shape import site_resource

PerLcp = int | Mapping[str, str] | Sequence[tuple[str, str]] | None
"""Clients per LCP: a count, an explicit client -> LCP map, or ``None`` (spread evenly)."""


class HierarchicalFederation(StarFederation):
    """Clients under the LCPs of a relay tree, a strategy at the root.

    Parameters
    ----------
    client, num_clients, initial_parameters, strategy, ...:
        As for :class:`~redfl.schemas.star.StarFederation`; the root ``strategy`` must
        aggregate a weighted sum (robust rules go to ``leaf_strategy``).
    tree:
        The relay tree (:func:`~redfl.topology.relay_tree` or ``load_tree(...).tree``).
    clients_per_lcp:
        A number per LCP, an explicit client -> LCP map, or ``None`` to spread the clients
        evenly (:func:`~redfl.topology.assign.assign_clients`).
    leaf_strategy:
        A robust rule (median, trimmed mean, Krum, ...) each LCP applies to its own
        clients' updates; default: plain sample-weighted sums.
    min_coverage:
        The least fraction of sampled clients whose updates must arrive for a round.
    pin:
        Sites (aggregators or LCPs) whose subtree runs on a worker of its own, placed on
        the machine that offers the custom resource ``site_resource(site)``.
    client_timeout, round_timeout, max_worker_restarts:
        As for the star; a subtree unfinished at ``round_timeout`` is a failed subtree.

    Examples
    --------
    >>> import numpy as np
    >>> from redfl import Client
    >>> from redfl.topology import relay_tree
    >>> class Plus(Client):
    ...     def fit(self, parameters, config):
    ...         return {"w": parameters["w"] + 1}, 1, {}
    >>> fed = HierarchicalFederation(Plus, 8, initial_parameters={"w": np.zeros(2)},
    ...                              tree=relay_tree(1, 2, 2), runtime="local")
    >>> result = fed.train(2)
    >>> result.parameters["w"], result.history[-1].metrics["clients/agg-1"]
    (array([2., 2.]), 4.0)
    """

    def __init__(
        self,
        client: Callable[..., Client],
        num_clients: int,
        *,
        initial_parameters: Parameters,
        tree: RelayTree,
        clients_per_lcp: PerLcp = None,
        leaf_strategy: Strategy | None = None,
        min_coverage: float = 0.5,
        pin: Sequence[str] = (),
        strategy: Strategy | None = None,
        client_options: Mapping[str, Any] | None = None,
        client_ids: Sequence[str] | None = None,
        roles: str = "train-eval",
        evaluate_fn: EvaluateFn | None = None,
        callbacks: Sequence[Callback] = (),
        seed: int = 0,
        runtime: RuntimeName = "ray",
        address: str | None = None,
        resources: ResourcesConfig | None = None,
        federation_id: str | None = None,
        client_timeout: float | None = None,
        round_timeout: float | None = None,
        max_worker_restarts: int = DEFAULT_MAX_WORKER_RESTARTS,
    ) -> None:
        super().__init__(
            client,
            num_clients,
            initial_parameters=initial_parameters,
            strategy=strategy,
            client_options=client_options,
            client_ids=client_ids,
            roles=roles,
            evaluate_fn=evaluate_fn,
            callbacks=callbacks,
            seed=seed,
            runtime=runtime,
            address=address,
            resources=resources,
            federation_id=federation_id,
            client_timeout=client_timeout,
            round_timeout=round_timeout,
            max_worker_restarts=max_worker_restarts,
        )
        if isinstance(self.strategy, DPFixedClipping):  # the LCPs clip, the root adds noise
            self.strategy = self.strategy.clipping_on_workers()
        if not self.strategy.weighted_sum:
            raise ValueError(
                f"strategy: {type(self.strategy).__name__} needs every client's update, but a "
                "tree delivers one partial sum per subtree; give a robust rule as "
                "leaf_strategy (DP wrappers work: the LCPs clip, the root adds the noise)"
            )
        if not 0.0 < min_coverage <= 1.0:
            raise ValueError(f"min_coverage {min_coverage} is out of range (0, 1]")
        if any(n.dedicated for n in self.nodes):
            raise ValueError("a hierarchy's clients live on its workers; @remote clients are not")
        self.tree = tree
        self.assignment = assign_clients(
            [n.node_id for n in self.nodes], [s.name for s in tree.lcps], clients_per_lcp
        )
        self.leaf_strategy = leaf_strategy
        self.min_coverage = min_coverage
        self.pin = tuple(pin)
        make_layout(tree, 1, self.pin)  # refuse bad pins now, before anything starts
        self._layout: Layout | None = None

    @property
    def layout(self) -> Layout:
        """Which worker folds which subtree (after start)."""
        if self._layout is None:
            raise RuntimeError("the federation has not started")
        return self._layout

    def _plan(self, backend: Backend) -> Plan:
        """The star's plan, re-placed so that every unit's clients share one worker."""
        plan = super()._plan(backend)
        layout = make_layout(self.tree, len(plan.workers), self.pin)
        workers = [WorkerSpec(w.name, w.bundle, [], w.options) for w in plan.workers]
        for site in layout.pinned:
            bundle = {**self.resources.worker, site_resource(site): 1.0}
            name = f"{self.federation_id}::{site}"
            workers.append(WorkerSpec(name, bundle, [], {"max_concurrency": 2}))
        if layout.pinned and self.runtime == "ray":
            bundles = [w.bundle for w in workers if w.bundle]
            available = backend.available_resources()
            check_capacity(bundles, plan.placement_strategy, available, backend.machine_resources())
        spec = {n.node_id: n for n in self.nodes}
        placement: dict[str, int] = {}
        for unit in layout.units:
            worker = layout.worker[unit]
            for node_id in clients_of_unit(self.tree, unit, self.assignment):
                workers[worker].nodes.append(spec[node_id])
                placement[node_id] = worker
        self._layout = layout
        return replace(plan, workers=workers, manager=TopologyManager(None, placement))

    def _round(self, backend: Backend, rnd: int) -> RoundRecord:
        if self._supervisor is not None:
            self._supervisor.drain()  # restarts done since; a worker still restarting is
        start = time.perf_counter()  # skipped by the round (others fold its units)
        sampled = self.strategy.configure_fit(rnd, self._train_ids, round_rng(self.seed, rnd))
        emit(self.callbacks, RoundStarted(rnd, len(sampled)))
        chosen = frozenset(sampled)
        plans: dict[int, list[UnitPlan]] = {}
        for unit in self.layout.units:
            plan = unit_plan(self.tree, unit, self.assignment, chosen)
            plans.setdefault(self.layout.worker[unit], []).append(plan)
        shares = shares_of(plans, frozenset(self.layout.worker[u] for u in self.layout.pinned))
        config = Instructions.make(rnd, self.strategy.fit_config(rnd))
        policy = self.strategy.update_policy(rnd, sampled)
        request = FoldSubtrees(backend.put(self.parameters), [], config, policy, self.leaf_strategy)
        done = 0

        def progress(count: int) -> None:
            nonlocal done
            done += count
            emit(self.callbacks, ClientsProgress(rnd, done, len(sampled)))

        watch = Watch(
            self._supervisor, self.client_timeout, self.round_timeout, rnd, rerun_lost=False
        )
        fold_round(backend, shares, plans, request, self._spec, progress, self._stealable, watch)
        tree, layout, assignment = self.tree, self.layout, self.assignment
        total, fitted, failures, extra = fold_shares(
            tree, layout, assignment, rnd, shares, plans, chosen
        )
        self._failures.extend(failures)
        check_round(
            tree,
            rnd,
            len(sampled),
            len(fitted.succeeded),
            failures,
            self.min_coverage,
            self.strategy.min_fit_clients,
        )
        self.parameters = self.strategy.aggregate(rnd, self.parameters, total)
        return self._conclude(backend, rnd, start, len(sampled), fitted, len(failures), extra)


SCHEMAS.register(
    "hierarchical",
    SchemaSpec(
        graph=False,
        allows=TREE_KEYS,
    ),
    description="clients under the LCPs of a relay tree; aggregators fold partial sums",
)
SCHEMAS.add_filler("redfl.schemas.hierarchical")
