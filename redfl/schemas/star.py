"""``StarFederation``: round-driven clients around a server strategy (FedAvg and kin).

A round samples clients (a function of seed and round), serialises the global parameters
once, runs each worker's clients in one call (an idle worker takes a slow one's unstarted
segments, :mod:`redfl.runtime.dispatch`) and, for weighted-sum strategies, receives one
partial sum per worker. Folding follows worker order, then segment order, then sampling
order, so results depend neither on which client finishes first nor on who ran it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

from pydantic import Field

from redfl.algorithms.fedavg import FedAvg
from redfl.algorithms.strategy import ClientUpdate, RoundOutcome, Strategy, round_size
from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters, WeightedSum, copy_parameters
from redfl.core.events import ClientsProgress, FailureRecorded, RoundFinished, RoundStarted
from redfl.core.instructions import Instructions
from redfl.core.result import (
    EvaluateFn,
    Failure,
    FederationError,
    FederationResult,
    RoundRecord,
)
from redfl.core.seeding import round_rng
from redfl.core.server_state import ServerState
from redfl.nodes.client import Client
from redfl.privacy.secagg import SecureAggregationConfig
from redfl.runtime.backend import Backend
from redfl.runtime.dispatch import WorkerRound, run_round, segments_of
from redfl.runtime.replies import FitBatch
from redfl.runtime.star_runner import FitSegments
from redfl.runtime.state_runner import ExportClientStates, ImportClientStates
from redfl.runtime.watch import Watch
from redfl.schemas.base import Federation, FederationSettings, virtual_nodes
from redfl.schemas.callbacks import emit
from redfl.schemas.registry import SCHEMAS, FederationParts, SchemaSpec, TopologyTable
from redfl.schemas.secure_round import SecureRounds, refuse_strategy
from redfl.schemas.star_collect import collect, evaluate, evaluation, fit_calls

CLIENT_STATES = "client_states"
"""The key of stateful clients' states in :attr:`ServerState.extra`."""
SECURE_STATE = "secure_aggregation"
"""The key of secure aggregation's privacy accountant in :attr:`ServerState.extra`."""


@dataclass
class RoundTally:
    """What a round's fit brought back to the driver, folded in the round's fixed order.

    Attributes
    ----------
    total:
        The sample-weighted sum of the successful updates (weighted-sum strategies).
    updates:
        The individual updates (strategies that need every client's).
    fitted:
        The successes and the clients' folded metrics.
    failures:
        The round's failures.
    metrics:
        Metrics the schema adds to the round's record.
    """

    total: WeightedSum
    updates: list[ClientUpdate]
    fitted: FitBatch
    failures: list[Failure]
    metrics: dict[str, float] = field(default_factory=dict)


class StarFederation(Federation):
    """Clients around a server strategy.

    Parameters
    ----------
    client:
        A :class:`~redfl.nodes.Client` subclass (or factory), built on its worker with
        ``client(**options)``.
    num_clients:
        How many clients; ids are ``client-0`` ... unless ``client_ids`` is given.
    strategy:
        Server math; default :class:`~redfl.algorithms.FedAvg`.
    initial_parameters:
        The starting global model (required).
    options:
        Keyword arguments of ``client`` (the same for every client).
    client_ids:
        The clients' node ids (default ``client-0``, ``client-1``, ...).
    roles:
        The clients' roles (``train-eval``: trained and evaluated).
    evaluate_fn:
        Optional central evaluation run on the driver after every round.
    secure_aggregation:
        Secure aggregation (SecAgg+) of the clients' updates: the driver, which runs the
        strategy, learns only their sum (:mod:`redfl.schemas.secure_round`); the strategy
        must aggregate a weighted sum.
    settings:
        Seed, runtime, resources, callbacks, timeouts and restarts
        (:class:`~redfl.schemas.base.FederationSettings`).

    Examples
    --------
    >>> import numpy as np
    >>> from redfl import Client, StarFederation
    >>> class Plus(Client):
    ...     def fit(self, parameters, config):
    ...         return {"w": parameters["w"] + 1}, 1, {}
    >>> fed = StarFederation(Plus, 3, initial_parameters={"w": np.zeros(2, np.float32)},
    ...                      runtime="local")
    >>> fed.train(2).parameters["w"]
    array([2., 2.], dtype=float32)
    """

    def __init__(
        self,
        client: Callable[..., Client],
        num_clients: int,
        *,
        initial_parameters: Parameters,
        strategy: Strategy | None = None,
        options: Mapping[str, Any] | None = None,
        client_ids: Sequence[str] | None = None,
        roles: str = "train-eval",
        evaluate_fn: EvaluateFn | None = None,
        secure_aggregation: SecureAggregationConfig | None = None,
        **settings: Unpack[FederationSettings],
    ) -> None:
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        ids = (
            list(client_ids)
            if client_ids is not None
            else [f"client-{i}" for i in range(num_clients)]
        )
        if len(ids) != num_clients:
            raise ValueError(f"client_ids has {len(ids)} ids but num_clients is {num_clients}")
        nodes = virtual_nodes(client, ids, roles=roles, options=options)
        super().__init__(nodes, None, **settings)
        self.strategy = strategy or FedAvg()
        self.evaluate_fn = evaluate_fn
        self.parameters = copy_parameters(initial_parameters)
        self._train_ids = [n.node_id for n in nodes if "train" in n.roles]
        self.strategy.check_round_size(self._round_size())
        if len(self._train_ids) < self.strategy.min_fit_clients:
            raise ValueError(
                f"{len(self._train_ids)} clients have the train role (roles={roles!r}) but "
                f"strategy.min_fit_clients is {self.strategy.min_fit_clients}"
            )
        self._eval_ids = [n.node_id for n in nodes if "eval" in n.roles]
        self._failures: list[Failure] = []
        self._spec = {n.node_id: n for n in nodes}
        # Idle workers may run other workers' clients unless clients keep state on their
        # worker, need a dedicated actor, or run only where they are (at their site).
        self._stateful = bool(getattr(client, "stateful", False))
        self._stealable = (
            not self._stateful and not any(n.dedicated for n in nodes) and self._runtime.movable
        )
        self.secure: SecureRounds | None = None
        """The driver's side of secure aggregation (``None``: updates arrive in the clear)."""
        if secure_aggregation is not None:
            refuse_strategy(self.strategy, secure_aggregation)
            self.secure = SecureRounds(
                secure_aggregation, self.seed, {n.node_id: n.index for n in nodes}
            )
            self.secure.check(self._round_size(), self.parameters)

    def _round_size(self) -> int:
        """How many clients a round samples."""
        strategy = self.strategy
        return round_size(len(self._train_ids), strategy.fraction_fit, strategy.min_fit_clients)

    @property
    def failures(self) -> list[Failure]:
        """Every failure recorded so far."""
        return list(self._failures)

    def model(self) -> Parameters | None:
        """The global parameters after the last completed round (``None`` before one)."""
        return copy_parameters(self.parameters) if self._history else None

    def notes(self) -> list[str]:
        """A round size the strategy raised above what ``fraction_fit`` gives, if any."""
        strategy, available = self.strategy, len(self._train_ids)
        asked = round_size(available, strategy.fraction_fit, 1)
        actual = round_size(available, strategy.fraction_fit, strategy.min_fit_clients)
        if actual <= asked:
            return []
        return [
            f"{type(strategy).__name__} needs min_fit_clients={strategy.min_fit_clients}, "
            f"so each round trains {actual} of {available} clients, not the {asked} "
            f"that fraction_fit={strategy.fraction_fit:g} gives"
        ]

    def server_state(self, config_digest: str = "") -> ServerState:
        """Everything needed to continue this run later, taken between rounds: the round,
        the global parameters, the strategy's state (wrappers included), history,
        failures and, in ``extra["client_states"]``, what stateful clients keep on their
        workers."""
        extra: dict[str, Any] = {}
        if self.secure is not None:
            extra[SECURE_STATE] = self.secure.state()
        if self._stateful and self.started:
            states: dict[str, object] = {}
            for outcome in self._start().call_all(ExportClientStates()):
                states.update(outcome.result())
            extra[CLIENT_STATES] = dict(sorted(states.items()))
        return ServerState(
            self.round,
            copy_parameters(self.parameters),
            self.strategy.state(),
            self.history,
            list(self._failures),
            self.seed,
            config_digest,
            extra,
        )

    def load_server_state(self, state: ServerState) -> None:
        """Continue from ``state`` (taken from a federation built the same way): the next
        round is ``state.round + 1`` and its results are those of the run it was taken
        from.

        Raises
        ------
        ValueError
            If the state was taken with another seed or with other parameter names.
        """
        if state.seed != self.seed:
            raise ValueError(f"the state's seed is {state.seed}, the federation's {self.seed}")
        if sorted(state.parameters) != sorted(self.parameters):
            raise ValueError(
                f"the state's parameters are {sorted(state.parameters)}, the federation's "
                f"{sorted(self.parameters)}"
            )
        self.round = state.round
        self.parameters = copy_parameters(state.parameters)
        self.strategy.load_state(state.strategy_state)
        self._history, self._failures = list(state.history), list(state.failures)
        if self.secure is not None and SECURE_STATE in state.extra:
            self.secure.load_state(state.extra[SECURE_STATE])
        states = state.extra.get(CLIENT_STATES) or {}
        if states:
            backend = self._start()
            by_worker: dict[int, dict[str, object]] = {}
            for node_id, arrays in states.items():
                by_worker.setdefault(self.worker_of(node_id), {})[node_id] = arrays
            pending = [
                backend.call(worker, ImportClientStates(group))  # type: ignore[arg-type]
                for worker, group in sorted(by_worker.items())
            ]
            for outcome in backend.gather(pending):
                outcome.result()

    @property
    def train_ids(self) -> list[str]:
        """The ids of the clients with the train role (those a round samples from)."""
        return list(self._train_ids)

    def train(self, rounds: int = 1) -> FederationResult:
        """Run ``rounds`` more rounds; return history, final parameters and failures.

        Raises
        ------
        FederationError
            If fewer than ``strategy.min_fit_clients`` clients succeed in a round.
        """
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        backend = self._start()
        for callback in self.callbacks:
            callback.on_train_begin(rounds)
        for _ in range(rounds):
            known = len(self._failures)
            record = self._round(backend, self.round + 1)
            self.round += 1
            self._history.append(record)
            for failure in self._failures[known:]:
                emit(self.callbacks, FailureRecorded(failure))
            if emit(self.callbacks, RoundFinished(record)):
                break
        if self._supervisor is not None:
            self._supervisor.settle()  # a worker lost in the last round is back, reported
        result = FederationResult(
            list(self._history), copy_parameters(self.parameters), list(self._failures)
        )
        for callback in self.callbacks:
            callback.on_train_end(result)
        return result

    def evaluate(self, rnd: int | None = None) -> tuple[float | None, dict[str, float]]:
        """Federated evaluation of the current parameters on the eval-role clients."""
        backend = self._start()
        rnd = self.round if rnd is None else rnd
        return self._evaluate(backend, rnd, self._eval_ids)

    def _round(self, backend: Backend, rnd: int) -> RoundRecord:
        """One round: sample, fit (:meth:`_fit`), check, aggregate, evaluate."""
        if self._supervisor is not None:
            self._supervisor.drain()  # restarts done since; a worker still restarting is
        start = time.perf_counter()  # skipped by the round (others run its share)
        sampled = self.strategy.configure_fit(rnd, self._train_ids, round_rng(self.seed, rnd))
        emit(self.callbacks, RoundStarted(rnd, len(sampled)))
        config = Instructions.make(rnd, self.strategy.fit_config(rnd))
        policy = self.strategy.update_policy(rnd, sampled)
        done = 0

        def progress(count: int) -> None:
            nonlocal done
            done += count
            emit(self.callbacks, ClientsProgress(rnd, done, len(sampled)))

        tally = self._fit(backend, rnd, sampled, config, policy, progress)
        self._failures.extend(tally.failures)
        self._check(rnd, sampled, tally)
        if self.strategy.weighted_sum:
            self.parameters = self.strategy.aggregate(rnd, self.parameters, tally.total)
        else:
            order = {node_id: i for i, node_id in enumerate(sampled)}
            updates = sorted(tally.updates, key=lambda u: order[u.node_id])
            self.parameters = self.strategy.aggregate_updates(rnd, self.parameters, updates)
        return self._conclude(backend, rnd, start, len(sampled), tally)

    def _fit(
        self,
        backend: Backend,
        rnd: int,
        sampled: list[str],
        config: Instructions,
        policy: UpdatePolicy,
        progress: Callable[[int], None],
    ) -> RoundTally:
        """Run the sampled clients' fit on their workers (idle workers take unstarted
        segments of busy ones) and fold the replies in the round's fixed order; with
        secure aggregation, the workers mask the updates and the driver unmasks their sum."""
        shares = [WorkerRound(w, segments_of(ids)) for w, ids in self._groups(sampled)]
        watch = Watch(self._supervisor, self.client_timeout, self.round_timeout, rnd)
        if self.secure is not None:
            secure = self.secure.fit(
                backend,
                rnd,
                sampled,
                len(self._train_ids),
                self.parameters,
                config,
                policy,
                shares,
                self._spec,
                progress,
                self._stealable,
                watch,
                lambda event: emit(self.callbacks, event),
            )
            return RoundTally(secure[0], [], secure[1], secure[2], secure[3])
        fold = self.strategy.weighted_sum
        request = FitSegments(backend.put(self.parameters), [], config, fold, policy)
        calls = fit_calls(backend, request, self._spec)
        run_round(backend, shares, calls, progress, steal=self._stealable, watch=watch)
        total, updates, fitted, failures = collect(rnd, shares)
        return RoundTally(total, updates, fitted, failures)

    def _check(self, rnd: int, sampled: list[str], tally: RoundTally) -> None:
        """Stop the run when fewer than ``min_fit_clients`` clients succeeded.

        Raises
        ------
        FederationError
            Naming the round, the counts and the first failures.
        """
        succeeded = len(tally.fitted.succeeded)
        if succeeded < self.strategy.min_fit_clients:
            reasons = "; ".join(f"{f.node_id}: {f.reason}" for f in tally.failures[:5])
            raise FederationError(
                f"round {rnd}: {succeeded} of {len(sampled)} clients succeeded, fewer than "
                f"min_fit_clients={self.strategy.min_fit_clients}; failures: {reasons}",
                tally.failures,
            )

    def _conclude(
        self, backend: Backend, rnd: int, start: float, sampled: int, tally: RoundTally
    ) -> RoundRecord:
        """End an aggregated round: ``end_round``, callbacks, evaluation, the record."""
        fitted = tally.fitted
        succeeded = len(fitted.succeeded)
        self.strategy.end_round(
            RoundOutcome(rnd, len(self._train_ids), sampled, succeeded, fitted.stats)
        )
        strategy_metrics = self.strategy.round_metrics(rnd, fitted.stats)
        for callback in self.callbacks:
            callback.on_aggregate(rnd, self.parameters)
        fit_means = {
            k: fitted.metric_sums[k] / n for k, n in fitted.metric_examples.items() if n > 0
        }
        eval_ids = self.strategy.configure_evaluate(
            rnd, self._eval_ids, round_rng(self.seed, rnd, 1)
        )
        loss, accuracy, metrics = evaluation(
            lambda: self._evaluate(backend, rnd, eval_ids) if eval_ids else None,
            self.evaluate_fn,
            self.parameters,
        )
        metrics.update({f"fit_{k}": v for k, v in fit_means.items()})
        metrics.update(strategy_metrics)
        metrics.update(tally.metrics)
        for callback in self.callbacks:
            callback.on_metrics(rnd, metrics)
        counts = (rnd, sampled, succeeded, len(tally.failures), time.perf_counter() - start)
        return RoundRecord(*counts, fit_means.get("loss"), loss, accuracy, metrics)

    def _groups(self, sampled: Sequence[str]) -> list[tuple[int, list[str]]]:
        by_worker: dict[int, list[str]] = {}
        for node_id in sampled:
            by_worker.setdefault(self.worker_of(node_id), []).append(node_id)
        return sorted(by_worker.items())

    def _evaluate(
        self, backend: Backend, rnd: int, node_ids: Sequence[str]
    ) -> tuple[float | None, dict[str, float]]:
        if self._supervisor is not None:
            self._supervisor.settle()  # clients evaluate on their own worker: wait for it
        groups = self._groups(node_ids)
        config = Instructions.make(rnd, self.strategy.evaluate_config(rnd), phase="evaluate")
        timeout = self.round_timeout
        if self.client_timeout is not None:
            largest = max((len(ids) for _, ids in groups), default=1)
            timeout = min(timeout or math.inf, self.client_timeout * largest + 1.0)
        reports, failures = evaluate(
            backend, groups, backend.put(self.parameters), config, timeout, self._supervisor
        )
        self._failures.extend(failures)
        return self.strategy.aggregate_evaluate(rnd, reports)


class StarTopology(TopologyTable):
    """``[topology]`` of the star: nothing but the schema (the default table)."""

    schema_: Literal["star"] = Field(default="star", alias="schema")


def star_from_parts(table: StarTopology, parts: FederationParts) -> StarFederation:
    """The star federation a config describes."""
    return StarFederation(
        parts.client(),
        parts.num_nodes,
        initial_parameters=parts.initial_parameters(),
        **parts.star_settings(),
    )


SCHEMAS.register(
    "star",
    SchemaSpec(StarTopology, star_from_parts, round_driven=True, sites=True),
    description="clients around a server strategy",
)
