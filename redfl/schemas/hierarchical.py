"""``HierarchicalFederation``: a star's clients under the LCPs of a relay tree.

Clients hang under LCPs; each LCP folds its round's clients into one sample-weighted partial
sum (or applies a robust ``leaf_strategy`` to them), each aggregator folds its children's
sums, and the server applies the strategy (FedAvg, FedAvgM, FedAdam, DP with clipping on
the workers and noise at the root, ...) to the tree's aggregate, with the same round loop,
hooks (``end_round`` included), events, history and failures as the star. FedAvg over any
tree equals the flat star within float64 rounding.

**Layout.** A *unit* is a subtree folded entirely by one worker, which returns one partial
sum for it (:class:`~redfl.runtime.tree_runner.TreeRunner`). :func:`choose_units` cuts the
tree at the shallowest tier that has at least as many folding sites as there are workers
(the top tier whenever ``width >= workers``), so the global model goes down once per worker,
one partial sum per unit comes up, and the root's traffic grows with its children, not with
clients. A *pinned* site is a unit of its own, on a worker of its own that asks for the
custom resource :func:`~redfl.topology.tree.site_resource` (the Ray node of the host that
``redfl tree --hosts`` gives the site offers it). With pins and no ``num_workers``, the
shared workers take what the pinned ones leave. The sites above the units (the server and any
aggregator whose subtree spans several units) are folded by the driver, children first, in
site order, so the sum does not depend on the cut. Units that are not pinned go to the
shared workers round-robin, in site order.

**Dispatch.** Each worker's units are the segments of its share of the round
(:mod:`redfl.runtime.dispatch`), so the hierarchy gets what the star has: an idle worker
folds a busy one's unstarted units as guests (:class:`~redfl.runtime.tree_runner.ReleaseUnits`),
which changes who folds a subtree, never the sum; a client past ``client_timeout`` is a
failure ``timeout after X s``, its worker is replaced and its unfinished units are folded
again without it; a subtree folding past ``subtree_timeout`` fails the same way, as a whole
(one failure of the subtree), and the worker's other unfinished units are folded again
elsewhere; units unfinished at ``round_timeout`` are failed subtrees. A worker that *dies*
is re-created (up to ``max_worker_restarts``) and its unfinished units are folded again
within the round, by a free worker or the re-created one, as the star re-runs a lost share:
the round's sum is the one the undisturbed run makes, bit for bit. A unit is re-run once: if
its worker dies again, the unit is a failed subtree (a client that kills its process would
otherwise take down every worker it is re-run on). A pinned subtree runs only on its own
worker, which folds nothing else (after a loss, on that worker once re-created).

**Secure aggregation.** With ``secure_aggregation``, each LCP sums its sampled clients'
updates by a SecAgg+ round among them (:func:`~redfl.privacy.secagg.table.secure_sum`), so
each LCP, and each aggregator above it, learns only its subtree's sum; an LCP with fewer
than 2 updates fails (a sum of one is that update). The LCP runs on the same worker as its
clients here, so this protects the sums that leave the worker; the sites runtime, where
an LCP is a process of its own, is where it protects a client from its LCP.

**Failures.** A failed LCP or aggregator (a leaf strategy that refuses the round, a unit
lost with its worker twice, a subtree past ``subtree_timeout`` or unfinished at
``round_timeout``) is one recorded failure of its subtree,
with the subtree's sites; the round goes on while the coverage (the fraction of sampled
clients whose updates arrived) is at least ``min_coverage``, otherwise the run fails naming
the subtrees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Unpack

from pydantic import Field, field_validator, model_validator

from redfl.algorithms.hierarchy import LEAF_STRATEGIES, make_leaf_strategy
from redfl.algorithms.registry import StrategyParam
from redfl.algorithms.strategy import ParameterError, Strategy
from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.config import SERVER_FILE, ConfigError
from redfl.core.instructions import Instructions
from redfl.core.registry import quote_choices
from redfl.core.result import Failure, FederationError
from redfl.nodes.client import Client
from redfl.privacy.clipping import DPFixedClipping
from redfl.runtime.backend import Backend, Plan, WorkerSpec
from redfl.runtime.dispatch import Calls, WorkerRound, run_round
from redfl.runtime.protocol import Outcome, Pending
from redfl.runtime.replies import FitBatch
from redfl.runtime.resources import ResourcesConfig, check_capacity, worker_bundles
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.tree_runner import FoldSubtrees, ReleaseUnits, TreeBatch, UnitPlan, UnitResult
from redfl.runtime.virtual import VirtualNode
from redfl.runtime.watch import Watch
from redfl.schemas.base import StarSettings, check_timeout
from redfl.schemas.registry import SCHEMAS, FederationParts, SchemaSpec, TopologyTable
from redfl.schemas.star import RoundTally, StarFederation
from redfl.topology.assign import Assignment, assign_clients
from redfl.topology.tree import RelayTree, SiteKind, TreeError, relay_tree, site_resource
from redfl.topology.tree_file import load_tree

PerLcp = int | Mapping[str, str] | Sequence[tuple[str, str]] | None
"""Clients per LCP: a count, an explicit client -> LCP map, or ``None`` (spread evenly)."""

RERUNS = 1
"""How many times a subtree lost with its worker is folded again within its round."""


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
    subtree_timeout:
        Seconds a worker may fold one subtree (a unit: its clients' fits and its folds);
        past it the subtree is a failure ``timeout after X s``, its worker is replaced and
        the worker's other unfinished subtrees are folded elsewhere. ``None``: no limit.
    star:
        The star's arguments and the federation's settings (timeouts as for the star: a
        subtree unfinished at ``round_timeout`` is a failed subtree).

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
        subtree_timeout: float | None = None,
        **star: Unpack[StarSettings],
    ) -> None:
        check_timeout("subtree_timeout", subtree_timeout)
        super().__init__(client, num_clients, initial_parameters=initial_parameters, **star)
        if subtree_timeout is not None and not self._runtime.supervised:
            raise ValueError(
                f"subtree_timeout needs a runtime that can interrupt clients (ray): the "
                f"{self.runtime} runtime runs clients in the driver's thread"
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
        if self.secure is not None and leaf_strategy is not None:
            raise ValueError(
                f"invalid config: secure_aggregation: the leaf strategy "
                f"{type(leaf_strategy).__name__} needs every client's update, but with secure "
                "aggregation each LCP learns only its clients' sum; remove leaf_strategy or "
                "[secure_aggregation]"
            )
        self.tree = tree
        self.assignment = assign_clients(
            [n.node_id for n in self.nodes], [s.name for s in tree.lcps], clients_per_lcp
        )
        self.leaf_strategy = leaf_strategy
        self.min_coverage = min_coverage
        self.pin = tuple(pin)
        self.subtree_timeout = subtree_timeout
        make_layout(tree, 1, self.pin)  # refuse bad pins now, before anything starts
        self._layout: Layout | None = None

    @property
    def layout(self) -> Layout:
        """Which worker folds which subtree (after start)."""
        if self._layout is None:
            raise RuntimeError("the federation has not started")
        return self._layout

    def _worker_resources(self, backend: Backend) -> ResourcesConfig:
        """With pins and no ``num_workers``: as many shared workers as the resources left
        beside the pinned workers allow (by default they would take every CPU, and the
        pinned workers would find none)."""
        spec = self.resources
        if not self.pin or spec.num_workers is not None or spec.split != "uniform":
            return spec
        if not self._runtime.supervised:
            return spec
        left = dict(backend.available_resources())
        for key, value in spec.worker.items():
            left[key] = float(left.get(key, 0.0)) - float(value) * len(self.pin)
        shared = len(worker_bundles(spec, left, len(self.nodes)))
        return spec.model_copy(update={"num_workers": shared})

    def _plan(self, backend: Backend) -> Plan:
        """The star's plan, re-placed so that every unit's clients share one worker."""
        plan = super()._plan(backend)
        layout = make_layout(self.tree, len(plan.workers), self.pin)
        workers = [WorkerSpec(w.name, w.bundle, [], w.options) for w in plan.workers]
        for site in layout.pinned:
            bundle = {**self.resources.worker, site_resource(site): 1.0}
            name = f"{self.federation_id}::{site}"
            workers.append(WorkerSpec(name, bundle, [], {"max_concurrency": 2}))
        if layout.pinned and self._runtime.supervised:
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

    def _fit(
        self,
        backend: Backend,
        rnd: int,
        sampled: list[str],
        config: Instructions,
        policy: UpdatePolicy,
        progress: Callable[[int], None],
    ) -> RoundTally:
        """Fold the round's units on the workers (see the module docstring), then the sites
        above them on the driver."""
        chosen = frozenset(sampled)
        plans: dict[int, list[UnitPlan]] = {}
        for unit in self.layout.units:
            plan = unit_plan(self.tree, unit, self.assignment, chosen)
            plans.setdefault(self.layout.worker[unit], []).append(plan)
        shares = shares_of(plans, frozenset(self.layout.worker[u] for u in self.layout.pinned))
        request = FoldSubtrees(
            backend.put(self.parameters),
            [],
            config,
            policy,
            self.leaf_strategy,
            secure=None if self.secure is None else self.secure.table,
        )
        watch = Watch(
            self._supervisor,
            self.client_timeout,
            self.round_timeout,
            rnd,
            reruns=RERUNS,
            piece_timeout=self.subtree_timeout,
        )
        calls = fold_calls(backend, request, plans, self._spec)
        run_round(backend, shares, calls, progress, steal=self._stealable, watch=watch)
        return fold_shares(self.tree, self.layout, self.assignment, rnd, shares, plans, chosen)

    def _check(self, rnd: int, sampled: list[str], tally: RoundTally) -> None:
        """Stop the run when too few updates arrived: coverage below ``min_coverage``, then
        fewer than ``min_fit_clients``.

        Raises
        ------
        FederationError
            Naming the round, the coverage and the failed subtrees (else the failed
            clients).
        """
        arrived, failures = len(tally.fitted.succeeded), tally.failures
        coverage = arrived / max(1, len(sampled))
        subtrees = [f for f in failures if f.node_id in self.tree]
        reasons = "; ".join(f"{f.node_id}: {f.reason}" for f in (subtrees or failures)[:5])
        if coverage < self.min_coverage:
            raise FederationError(
                f"round {rnd}: coverage {coverage:.3f} ({arrived} of {len(sampled)} sampled "
                f"clients' updates arrived) is below min_coverage {self.min_coverage:g}; "
                f"failed: {reasons}",
                failures,
            )
        if arrived < self.strategy.min_fit_clients:
            raise FederationError(
                f"round {rnd}: {arrived} of {len(sampled)} clients' updates arrived, fewer than "
                f"min_fit_clients={self.strategy.min_fit_clients}; failures: {reasons}",
                failures,
            )


# -- layout: which worker folds which subtree --------------------------------------------


FOLDING: tuple[SiteKind, ...] = ("aggregator", "lcp")
"""The kinds below the server that fold partial sums."""


@dataclass(frozen=True)
class Layout:
    """The units of a tree, who folds them and what the driver folds above them.

    Attributes
    ----------
    units:
        Unit roots, in site order.
    worker:
        Unit root -> worker index (pinned units after the shared workers).
    pinned:
        Pinned unit roots, in the order of their extra workers.
    driver_sites:
        The folding sites above the units, children first (the server last).
    """

    units: tuple[str, ...]
    worker: Mapping[str, int]
    pinned: tuple[str, ...]
    driver_sites: tuple[str, ...]


def choose_units(tree: RelayTree, workers: int, pinned: Sequence[str] = ()) -> list[str]:
    """The unit roots for ``workers`` shared workers, pinned sites included (site order).

    Raises
    ------
    TreeError
        If a pinned site is not an aggregator or LCP of the tree, or lies inside another
        pinned site's subtree.
    """
    pins = set(pinned)
    for name in pinned:
        if name not in tree or tree.site(name).kind not in FOLDING:
            raise TreeError(f"pin: {name!r} is not an aggregator or LCP of the tree")
        above = set(tree.path_to_root(name)[1:]) & pins
        if above:
            raise TreeError(f"pin: {name!r} lies inside the pinned subtree of {sorted(above)[0]!r}")
    counts: dict[int, int] = {}
    for site in tree.sites:
        if site.kind in FOLDING:
            counts[site.tier] = counts.get(site.tier, 0) + 1
    deepest = max(counts)
    cut = min((t for t, n in counts.items() if n >= workers), default=deepest)
    pinned_below = {a for p in pins for a in tree.path_to_root(p)[1:]}
    units: list[str] = []

    def visit(name: str) -> None:
        site = tree.site(name)
        if name in pins or site.kind == "lcp" or (site.tier >= cut and name not in pinned_below):
            units.append(name)
            return
        for child in tree.children(name, FOLDING):
            visit(child.name)

    for top in tree.children("server", FOLDING):
        visit(top.name)
    return units


def make_layout(tree: RelayTree, workers: int, pinned: Sequence[str] = ()) -> Layout:
    """Choose the units and give each a worker (see the module docstring)."""
    units = choose_units(tree, workers, pinned)
    pins = tuple(u for u in units if u in set(pinned))
    shared = [u for u in units if u not in set(pins)]
    worker = {u: i % max(1, workers) for i, u in enumerate(shared)}
    worker.update({u: workers + i for i, u in enumerate(pins)})
    inside = {s for u in units for s in tree.subtree(u)}
    driver = tuple(s for s in tree.aggregation_order() if s not in inside)
    return Layout(tuple(units), worker, pins, driver)


def unit_plan(
    tree: RelayTree, root: str, assignment: Assignment, sampled: frozenset[str]
) -> UnitPlan:
    """The :class:`UnitPlan` of the subtree of ``root``, with this round's ``sampled`` clients."""
    inside = set(tree.subtree(root))
    lcps = tuple(
        (lcp, tuple(c for c in assignment.get(lcp, ()) if c in sampled))
        for lcp in tree.lcps_under(root)
    )
    aggregators = tuple(
        (name, tuple(c.name for c in tree.children(name, FOLDING)))
        for name in tree.aggregation_order()
        if name in inside and tree.site(name).kind == "aggregator"
    )
    return UnitPlan(root, lcps, aggregators)


def clients_of_unit(tree: RelayTree, root: str, assignment: Assignment) -> list[str]:
    """Every client (sampled or not) below ``root``, LCP by LCP in site order."""
    return [c for lcp in tree.lcps_under(root) for c in assignment.get(lcp, ())]


# -- dispatch: the star's dispatcher, unit by unit ---------------------------------------


Plans = Mapping[int, Sequence[UnitPlan]]
"""Worker -> the units it folds this round, in site order."""


def shares_of(plans: Plans, pinned: frozenset[int] = frozenset()) -> list[WorkerRound]:
    """One share per worker with units: a segment per unit holding the unit's sampled
    clients (for sizes, progress and skips); the ``pinned`` workers' shares stay put."""
    return [
        WorkerRound(
            worker,
            [[c for _, clients in plan.lcps for c in clients] for plan in plans[worker]],
            movable=worker not in pinned,
        )
        for worker in sorted(plans)
    ]


def without(plan: UnitPlan, skipped: set[str]) -> UnitPlan:
    """``plan`` with the ``skipped`` clients (past their timeout) left out."""
    if not skipped:
        return plan
    lcps = tuple((lcp, tuple(c for c in clients if c not in skipped)) for lcp, clients in plan.lcps)
    return replace(plan, lcps=lcps)


def fold_calls(
    backend: Backend, request: FoldSubtrees, plans: Plans, specs: Mapping[str, VirtualNode]
) -> Calls:
    """How the dispatcher (:func:`~redfl.runtime.dispatch.run_round`) reaches the workers
    to fold every share's units with ``request``'s parameters and instructions (see the
    module docstring)."""

    def guest(worker: int, share: WorkerRound, indices: list[int]) -> Pending[TreeBatch]:
        units = [without(plans[share.worker][i], share.skipped) for i in indices]
        guests = [specs[c] for unit in units for _, clients in unit.lcps for c in clients]
        return backend.call(worker, replace(request, units=units, guests=guests))

    return Calls(
        home=lambda share: backend.call(share.worker, replace(request, units=plans[share.worker])),
        guest=guest,
        release=lambda worker: backend.call(worker, ReleaseUnits()),
    )


# -- fold: the driver's side of a round -------------------------------------------------


def unit_outcomes(share: WorkerRound) -> dict[int, UnitResult | str]:
    """Each of the share's units -> its result, or the cause of its failure."""
    calls: list[tuple[list[int], Outcome[FitBatch], str]] = []
    if share.home is not None:
        calls.append((share.unreleased(), share.home, f"worker {share.worker}"))
    calls.extend((indices, outcome, "a guest worker") for indices, outcome in share.stolen)
    got: dict[int, UnitResult | str] = dict(share.given_up)
    for indices, outcome, who in calls:
        if outcome.error is not None:
            text = (str(outcome.error).strip().splitlines() or ["(no message)"])[0]
            cause = f"{who} failed: {type(outcome.error).__name__}: {text}"
            got.update((i, cause) for i in indices)
            continue
        batch = outcome.result()
        assert isinstance(batch, TreeBatch)
        got.update(zip(indices, batch.units, strict=True))
    return got


def fold_shares(
    tree: RelayTree,
    layout: Layout,
    assignment: Assignment,
    rnd: int,
    shares: Sequence[WorkerRound],
    plans: Plans,
    chosen: frozenset[str],
) -> RoundTally:
    """Fold a round's shares: the server's sum, the clients' folded results, the failures
    (a unit whose call failed or that was unfinished at the deadline, and every failed LCP
    or aggregator inside a unit, is one failure of its subtree) and the round's metrics.

    The metrics are ``clients/<aggregator>`` (clients whose update is in that aggregator's
    sum), ``coverage`` (the fraction of ``chosen`` whose update reached the server) and
    ``root_bytes`` (the bytes of the partial sums the driver received). ``fitted.succeeded``
    keeps only the clients whose update reached the server.
    """
    sums: dict[str, WeightedSum] = {}
    arrived: dict[str, int] = {}
    fitted = FitBatch(total=None)
    failures: list[Failure] = []
    lost: list[tuple[str, str]] = []
    received = 0
    for share in shares:
        failures.extend(share.failures)
        for outcome in (share.home, *(o for _, o in share.stolen)):
            if outcome is not None and outcome.value is not None:
                failures.extend(outcome.value.failures)
                fitted.absorb(outcome.value)
        got = unit_outcomes(share)
        for index, plan in enumerate(plans[share.worker]):
            unit = got.get(index, "no reply")
            if isinstance(unit, str):
                sums[plan.root] = WeightedSum()
                lost.append((plan.root, unit))
                continue
            sums[unit.root] = unit.total
            arrived.update(unit.arrived)
            lost.extend(unit.failed)
            received += sum(a.nbytes for a in unit.total.sums.values())
    gone: set[str] = set()
    for site, cause in lost:
        failures.append(subtree_failure(tree, assignment, rnd, site, cause, chosen))
        gone.update(c for lcp in tree.lcps_under(site) for c in assignment[lcp])
    fitted.succeeded = [c for c in fitted.succeeded if c not in gone]
    for site in layout.driver_sites:
        total = WeightedSum()
        children = [c.name for c in tree.children(site, FOLDING)]
        for child in children:
            total.merge(sums[child])
        sums[site] = total
        arrived[site] = sum(arrived.get(c, 0) for c in children)
    extra = {f"clients/{s.name}": float(arrived.get(s.name, 0)) for s in tree.of_kind("aggregator")}
    extra["coverage"] = len(fitted.succeeded) / max(1, len(chosen))
    extra["root_bytes"] = float(received)
    return RoundTally(sums["server"], [], fitted, failures, extra)


def subtree_failure(
    tree: RelayTree,
    assignment: Assignment,
    rnd: int,
    site: str,
    cause: str,
    chosen: frozenset[str],
) -> Failure:
    """The recorded failure of ``site``'s subtree: its cause, its sites, the clients lost."""
    sites = tree.subtree(site)
    lost = sum(1 for lcp in tree.lcps_under(site) for c in assignment[lcp] if c in chosen)
    reason = f"subtree {site} failed: {cause}; sites: {', '.join(sites)}; "
    return Failure(site, rnd, "fit", reason + f"{lost} sampled clients lost")


class HierarchicalTopology(TopologyTable):
    """``[topology]`` of a hierarchy: the relay tree and how clients hang under it.

    The tree comes from ``tree_file`` (``redfl tree``'s ``tree.json``; a relative path is
    read beside the config file) or is built from ``depth``, ``width`` and ``lcps`` (LCPs
    per leaf relay); ``clients_per_lcp`` (default: spread evenly), a robust
    ``leaf_strategy`` with its ``leaf_params``, ``min_coverage``, the sites to ``pin`` and
    the ``subtree_timeout``.
    """

    schema_: Literal["hierarchical"] = Field(default="hierarchical", alias="schema")
    tree_file: str | None = Field(default=None, min_length=1, json_schema_extra=SERVER_FILE)
    depth: int | None = Field(default=None, ge=1, le=5)
    width: int | None = Field(default=None, ge=1, le=9)
    lcps: int | None = Field(default=None, ge=1, le=9)
    clients_per_lcp: int | None = Field(default=None, ge=1, le=1_000_000)
    leaf_strategy: str | None = None
    leaf_params: dict[str, StrategyParam] = Field(default_factory=dict)
    min_coverage: float = Field(default=0.5, gt=0.0, le=1.0)
    """The fraction of a round's sampled clients whose updates must arrive."""
    pin: list[str] = Field(default_factory=list, max_length=10_000)
    subtree_timeout: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    """Seconds a worker may fold one subtree before it fails and the worker is replaced."""

    @field_validator("leaf_strategy")
    @classmethod
    def _leaf_strategy(cls, value: str | None) -> str | None:
        if value is not None and value not in LEAF_STRATEGIES:
            raise ValueError(f"Input should be {quote_choices(list(LEAF_STRATEGIES))}")
        return value

    @model_validator(mode="after")
    def _tree(self) -> HierarchicalTopology:
        shape = [getattr(self, k) is not None for k in ("depth", "width", "lcps")]
        if (self.tree_file is None) != all(shape) or (any(shape) and not all(shape)):
            raise ValueError(
                "a hierarchy needs either 'tree_file' or all of 'depth', 'width' and 'lcps' "
                "(LCPs per leaf relay)"
            )
        if self.leaf_params and self.leaf_strategy is None:
            raise ValueError("'leaf_params' given without 'leaf_strategy'")
        return self

    def tree(self) -> RelayTree:
        """The relay tree this table describes.

        Raises
        ------
        ConfigError
            For a tree file that is missing or not a relay tree, or a bad shape.
        """
        try:
            if self.tree_file is not None:
                return load_tree(self.tree_file).tree
            return relay_tree(self.depth or 0, self.width or 0, self.lcps or 0)
        except TreeError as error:
            field = "tree_file" if self.tree_file is not None else "depth/width/lcps"
            raise ConfigError(f"invalid config: topology.{field}: {error}") from None

    def leaf(self) -> Strategy | None:
        """The ``leaf_strategy`` with its ``leaf_params``, or ``None``.

        Raises
        ------
        ConfigError
            For a bad parameter, naming it.
        """
        if self.leaf_strategy is None:
            return None
        try:
            return make_leaf_strategy(self.leaf_strategy, **self.leaf_params)
        except ParameterError as error:
            where = f"leaf_params.{error.parameter}"
            raise ConfigError(f"invalid config: topology.{where}: {error.detail}") from None


def hierarchy_from_parts(
    table: HierarchicalTopology, parts: FederationParts
) -> HierarchicalFederation:
    """The hierarchical federation a config describes.

    Raises
    ------
    ConfigError
        Naming the ``topology.*`` field at fault (a ``clients_per_lcp`` that does not
        multiply to ``client.num_clients`` included).
    """
    tree = table.tree()
    lcps, clients = len(tree.lcps), parts.num_nodes
    if table.clients_per_lcp is not None and table.clients_per_lcp * lcps != clients:
        raise ConfigError(
            f"invalid config: topology.clients_per_lcp: {table.clients_per_lcp} x {lcps} LCPs = "
            f"{table.clients_per_lcp * lcps} clients, but client.num_clients is {clients}"
        )
    return HierarchicalFederation(
        parts.client(),
        clients,
        initial_parameters=parts.initial_parameters(),
        tree=tree,
        clients_per_lcp=table.clients_per_lcp,
        leaf_strategy=table.leaf(),
        min_coverage=table.min_coverage,
        pin=tuple(table.pin),
        subtree_timeout=table.subtree_timeout,
        **parts.star_settings(),
    )


SCHEMAS.register(
    "hierarchical",
    SchemaSpec(HierarchicalTopology, hierarchy_from_parts, round_driven=True),
    description="clients under the LCPs of a relay tree; aggregators fold partial sums",
)
