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
from typing import Any

from redfl.algorithms.fedavg import FedAvg
from redfl.algorithms.strategy import RoundOutcome, Strategy, round_size
from redfl.core.arrays import Parameters, copy_parameters
from redfl.core.config import ResourcesConfig
from redfl.core.events import ClientsProgress, FailureRecorded, RoundFinished, RoundStarted
from redfl.core.instructions import Instructions
from redfl.core.result import Failure, FederationError, FederationResult, RoundRecord
from redfl.core.seeding import round_rng
from redfl.core.server_state import ServerState
from redfl.nodes.client import Client
from redfl.runtime.backend import Backend
from redfl.runtime.dispatch import WorkerRound, segments_of
from redfl.runtime.replies import FitBatch
from redfl.runtime.star_runner import FitSegments
from redfl.runtime.watch import Watch
from redfl.schemas.base import DEFAULT_MAX_WORKER_RESTARTS, Federation, RuntimeName, virtual_nodes
from redfl.schemas.callbacks import Callback, emit
from redfl.schemas.star_collect import collect, evaluate, evaluation, fit_round
from redfl.schemas.star_state import load_state, take_state

EvaluateFn = Callable[[Parameters], tuple[float, Mapping[str, float]]]
"""Central evaluation: parameters -> (loss, metrics such as ``accuracy``)."""


class StarFederation(Federation):
    """Clients around a server strategy.

    Parameters
    ----------
    client:
        A :class:`~redfl.nodes.Client` subclass (or factory), built on its worker with
        ``client(**client_options)``.
    num_clients:
        How many clients; ids are ``client-0`` ... unless ``client_ids`` is given.
    strategy:
        Server math; default :class:`~redfl.algorithms.FedAvg`.
    initial_parameters:
        The starting global model (required).
    evaluate_fn:
        Optional central evaluation run on the driver after every round.
    callbacks:
        Hooks for progress, logging and early stopping.
    client_timeout, round_timeout, max_worker_restarts:
        Fault handling (see :class:`~redfl.schemas.base.Federation`).

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
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        ids = (
            list(client_ids)
            if client_ids is not None
            else [f"client-{i}" for i in range(num_clients)]
        )
        if len(ids) != num_clients:
            raise ValueError(f"client_ids has {len(ids)} ids but num_clients is {num_clients}")
        nodes = virtual_nodes(client, ids, roles=roles, options=client_options)
        super().__init__(
            nodes,
            None,
            seed=seed,
            runtime=runtime,
            address=address,
            resources=resources,
            federation_id=federation_id,
            client_timeout=client_timeout,
            round_timeout=round_timeout,
            max_worker_restarts=max_worker_restarts,
        )
        self.strategy = strategy or FedAvg()
        self.evaluate_fn = evaluate_fn
        self.callbacks = list(callbacks)
        self.parameters, self.round = copy_parameters(initial_parameters), 0
        self._train_ids = [n.node_id for n in nodes if "train" in n.roles]
        self.strategy.check_round_size(
            round_size(
                len(self._train_ids), self.strategy.fraction_fit, self.strategy.min_fit_clients
            )
        )
        if len(self._train_ids) < self.strategy.min_fit_clients:
            raise ValueError(
                f"{len(self._train_ids)} clients have the train role (roles={roles!r}) but "
                f"strategy.min_fit_clients is {self.strategy.min_fit_clients}"
            )
        self._eval_ids = [n.node_id for n in nodes if "eval" in n.roles]
        self._history: list[RoundRecord] = []
        self._failures: list[Failure] = []
        self._spec = {n.node_id: n for n in nodes}
        # Idle workers may run other workers' clients unless clients keep state on their
        # worker or need a dedicated actor.
        self._stateful = bool(getattr(client, "stateful", False))
        self._stealable = not self._stateful and not any(n.dedicated for n in nodes)

    @property
    def history(self) -> list[RoundRecord]:
        """The record of every round completed so far."""
        return list(self._history)

    @property
    def failures(self) -> list[Failure]:
        """Every failure recorded so far."""
        return list(self._failures)

    def server_state(self, config_digest: str = "") -> ServerState:
        """Everything needed to continue this run later (:mod:`redfl.schemas.star_state`)."""
        return take_state(self, config_digest)

    def load_server_state(self, state: ServerState) -> None:
        """Continue from ``state`` (taken from a federation built the same way)."""
        load_state(self, state)

    @property
    def train_ids(self) -> list[str]:
        """The ids of the clients with the train role (those a round samples from)."""
        return list(self._train_ids)

    def train(self, rounds: int) -> FederationResult:
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
        if self._supervisor is not None:
            self._supervisor.drain()  # restarts done since; a worker still restarting is
        start = time.perf_counter()  # skipped by the round (others run its share)
        sampled = self.strategy.configure_fit(rnd, self._train_ids, round_rng(self.seed, rnd))
        emit(self.callbacks, RoundStarted(rnd, len(sampled)))
        shares = [WorkerRound(w, segments_of(ids)) for w, ids in self._groups(sampled)]
        reference = backend.put(self.parameters)
        config = Instructions.make(rnd, self.strategy.fit_config(rnd))
        fold = self.strategy.weighted_sum
        policy = self.strategy.update_policy(rnd, sampled)
        request = FitSegments(reference, [], config, fold, policy)
        done = 0

        def progress(count: int) -> None:
            nonlocal done
            done += count
            emit(self.callbacks, ClientsProgress(rnd, done, len(sampled)))

        watch = Watch(self._supervisor, self.client_timeout, self.round_timeout, rnd)
        fit_round(backend, shares, request, self._spec, progress, self._stealable, watch)
        total, updates, fitted, failures = collect(rnd, shares)
        self._failures.extend(failures)
        succeeded = len(fitted.succeeded)
        if succeeded < self.strategy.min_fit_clients:
            reasons = "; ".join(f"{f.node_id}: {f.reason}" for f in failures[:5])
            raise FederationError(
                f"round {rnd}: {succeeded} of {len(sampled)} clients succeeded, fewer than "
                f"min_fit_clients={self.strategy.min_fit_clients}; failures: {reasons}",
                failures,
            )
        if fold:
            self.parameters = self.strategy.aggregate(rnd, self.parameters, total)
        else:
            order = {node_id: i for i, node_id in enumerate(sampled)}
            updates.sort(key=lambda u: order[u.node_id])
            self.parameters = self.strategy.aggregate_updates(rnd, self.parameters, updates)
        return self._conclude(backend, rnd, start, len(sampled), fitted, len(failures))

    def _conclude(
        self,
        backend: Backend,
        rnd: int,
        start: float,
        sampled: int,
        fitted: FitBatch,
        failed: int,
        extra: Mapping[str, float] | None = None,
    ) -> RoundRecord:
        """End an aggregated round (``end_round``, callbacks, evaluation); ``extra``: metrics."""
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
        metrics.update(extra or {})
        for callback in self.callbacks:
            callback.on_metrics(rnd, metrics)
        counts = (rnd, sampled, succeeded, failed, time.perf_counter() - start)
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
