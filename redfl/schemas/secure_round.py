"""A star round with secure aggregation: the driver plays the server of SecAgg+.

The workers play the clients (:mod:`redfl.runtime.secagg_runner`): they fit, keep each
client's update and its protocol state (private keys, self-mask seed), and answer each
stage for their clients; the driver only routes what the protocol lets a server see and
unmasks the sum (:class:`~redfl.privacy.secagg.SecAggServer`). A round:

1. fit (the star's dispatcher: segments, work stealing, timeouts, restarts) and collect
   the clients' public keys; clients whose fit failed dropped before advertising;
2. route each client's neighbours' keys to the worker that holds it, and collect the
   encrypted shares;
3. route the shares to their recipients' workers, collect one masked sum per worker;
4. ask the survivors' workers for the shares the server needs, unmask the sum.

A worker that fails a stage's call, or misses ``stage_timeout``, drops its clients from
that stage on (a lost worker is reported to the supervisor, as in an evaluation). Up to
the threshold, dropouts at any stage leave the sum of the clients whose masked input
arrived; beyond it the round fails (:class:`~redfl.core.result.FederationError`, with the
protocol's reason) and nothing is revealed. The sum is exact in the ring, so a round's
result depends only on the clients' encoded updates: the same seed gives the same model
(without distributed noise, which no seed may predict).

The unmasked sum is ``sum_i w_i (x_i - g)`` and ``sum_i w_i`` over the survivors; adding
``(sum_i w_i) g`` gives the :class:`~redfl.core.arrays.WeightedSum` a weighted-sum
strategy aggregates, as without secure aggregation up to the quantisation error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from redfl.algorithms.strategy import Strategy
from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.events import Event, SecureAggregationStage
from redfl.core.instructions import Instructions
from redfl.core.result import Failure, FederationError
from redfl.core.seeding import round_rng
from redfl.privacy.accountant import RdpAccountant
from redfl.privacy.clipping import DPFixedClipping
from redfl.privacy.secagg import (
    STAGES,
    KeyAdvertisement,
    RoundFailed,
    SecAggConfig,
    SecAggServer,
    SecureAggregationConfig,
    Stage,
    layout_of,
)
from redfl.privacy.secagg.table import parameters_sum
from redfl.runtime.backend import Backend
from redfl.runtime.dispatch import WorkerRound, run_round
from redfl.runtime.protocol import Outcome, Request, Unfinished
from redfl.runtime.replies import FitBatch
from redfl.runtime.secagg_runner import (
    MaskedReply,
    MaskInputs,
    SecureFit,
    SecureFitBatch,
    ShareKeys,
    Unmask,
    secure_failure,
)
from redfl.runtime.supervisor import Supervisor
from redfl.runtime.virtual import VirtualNode
from redfl.runtime.watch import Watch
from redfl.schemas.star_collect import collect, fit_calls

SEED_STREAM = 0x5EC
"""The stream of :func:`~redfl.core.seeding.round_rng` that draws the run's public seed."""

M = TypeVar("M")
R = TypeVar("R")


def refuse_strategy(strategy: Strategy, table: SecureAggregationConfig) -> None:
    """Refuse a strategy that cannot work on the sum alone.

    Raises
    ------
    ValueError
        For a strategy that needs every client's update (robust rules, server-side DP
        clipping), or central DP noise together with distributed noise.
    """
    name = type(strategy).__name__
    if not strategy.weighted_sum:
        hint = (
            ' ([privacy] side = "client" clips on the workers instead)'
            if isinstance(strategy, DPFixedClipping)
            else ""
        )
        raise ValueError(
            f"invalid config: secure_aggregation: the strategy {name} needs every client's "
            "update, but with secure aggregation the server learns only their sum; use a "
            f"weighted-sum strategy (FedAvg, FedAvgM, FedAdam, ...){hint} or remove "
            "[secure_aggregation]"
        )
    if isinstance(strategy, DPFixedClipping) and strategy.noise_multiplier > 0 and table.noisy:
        raise ValueError(
            "invalid config: secure_aggregation.noise_multiplier: distributed noise and the "
            "[privacy] table's server noise both protect the sum; choose one (set "
            "privacy.noise_multiplier = 0 or secure_aggregation.noise_multiplier = 0)"
        )


class SecureRounds:
    """The driver's side of a federation's secure rounds (see the module docstring).

    Parameters
    ----------
    table:
        The ``[secure_aggregation]`` settings.
    seed:
        The federation's seed (a round's public seed is drawn from it and the round).
    index:
        Node id -> its integer id in the protocol, for every client that may train.

    Attributes
    ----------
    silent:
        Stage -> node ids that send nothing from that stage on: dropouts injected by tests
        and benchmarks (the server sees exactly what a client that stopped answering
        leaves it).
    accountant:
        The privacy spent by distributed noise so far.
    """

    def __init__(self, table: SecureAggregationConfig, seed: int, index: Mapping[str, int]) -> None:
        self.table = table
        self.seed = seed
        self.index = dict(index)
        self.silent: dict[Stage, frozenset[str]] = {}
        self.accountant = RdpAccountant()

    def check(self, clients: int, parameters: Parameters) -> None:
        """Refuse settings that cannot work for rounds of ``clients`` clients.

        Raises
        ------
        ValueError
            ``invalid config: secure_aggregation: ...`` with the reason.
        """
        try:
            self.config(range(clients), parameters, 1)
        except ValueError as error:
            raise ValueError(
                f"invalid config: secure_aggregation: {error} (rounds of {clients} clients)"
            ) from None

    def config(self, clients: range | list[int], parameters: Parameters, rnd: int) -> SecAggConfig:
        """The public parameters of round ``rnd`` for these integer client ids.

        The public seed is the run's, not the round's: the same clients get the same graph
        every round, so a client's cipher secrets agreed with its neighbours serve again
        (:mod:`redfl.runtime.secagg_runner`). Every derived key still differs per round
        (the round number is bound into each), and a graph drawn once for the run meets
        the graph's bounds once, instead of once per round.
        """
        seed = round_rng(self.seed, 0, SEED_STREAM).bytes(32)
        return self.table.round_config(sorted(clients), layout_of(parameters), rnd, seed)

    def state(self) -> dict[str, Any]:
        """The accountant's state (for checkpoints)."""
        return {"rdp": self.accountant.rdp.copy(), "steps": self.accountant.steps}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.accountant.rdp = np.array(state["rdp"], np.float64)
        self.accountant.steps = int(state["steps"])

    def fit(
        self,
        backend: Backend,
        rnd: int,
        sampled: list[str],
        available: int,
        parameters: Parameters,
        instructions: Instructions,
        policy: UpdatePolicy,
        shares: list[WorkerRound],
        specs: Mapping[str, VirtualNode],
        progress: Callable[[int], None],
        steal: bool,
        watch: Watch,
        emit: Callable[[Event], object],
    ) -> tuple[WeightedSum, FitBatch, list[Failure], dict[str, float]]:
        """Run one secure round; return the sum, the folded fit results (only the clients
        whose input is in the sum succeed), the failures and the round's metrics.

        Raises
        ------
        FederationError
            If the protocol cannot finish (too many dropouts at a stage), with its reason
            and, among its failures, every client that dropped after its fit and why.
        """
        ids = {node_id: self.index[node_id] for node_id in sampled}
        names = {number: node_id for node_id, number in ids.items()}
        config = self.config(list(ids.values()), parameters, rnd)
        exchange = _Exchange(
            backend, rnd, names, self.silent, self.table.stage_timeout, watch.supervisor, emit
        )
        started = time.perf_counter()
        request = SecureFit(
            backend.put(parameters),
            [],
            instructions,
            False,
            policy,
            secagg=config,
            table=self.table,
            ids=ids,
        )
        calls = fit_calls(backend, request, specs)
        run_round(backend, shares, calls, progress, steal=steal, watch=watch)
        _, _, fitted, failures = collect(rnd, shares)
        adverts: list[KeyAdvertisement] = []
        for share in shares:
            for outcome in (share.home, *(o for _, o in share.stolen)):
                if outcome is not None and isinstance(outcome.value, SecureFitBatch):
                    batch = outcome.value
                    adverts.extend(batch.adverts)
                    exchange.holders.update((a.client, batch.worker) for a in batch.adverts)
        server = SecAggServer(config)
        try:
            keys = server.collect_keys(exchange.keep("advertise_keys", adverts))
            exchange.report(server, "advertise_keys", started)
            bundles = exchange.stage("share_keys", keys, lambda group: ShareKeys(rnd, group))
            routed = server.collect_shares(_messages(bundles))
            exchange.report(server, "share_keys")
            masked = exchange.stage("masked_input", routed, lambda group: MaskInputs(rnd, group))
            parts = [r.masked for r in masked if isinstance(r, MaskedReply) and r.masked]
            requests = server.collect_masked(parts)
            exchange.report(server, "masked_input")
            replies = exchange.stage("unmasking", requests, lambda group: Unmask(rnd, group))
            result = server.collect_unmask(_messages(replies))
            exchange.report(server, "unmasking")
        except RoundFailed as error:
            dropped = [
                secure_failure(names[c], rnd, why) for c, why in sorted(exchange.lost.items())
            ]
            raise FederationError(f"round {rnd}: {error}", failures + dropped) from None
        total = parameters_sum(result, parameters)
        survivors = {names[c] for c in result.survivors}
        for client, reason in sorted(exchange.lost.items()):
            if client not in result.survivors:
                failures.append(secure_failure(names[client], rnd, reason))
        fitted.succeeded = [n for n in fitted.succeeded if n in survivors]
        metrics = {
            "secagg/neighbours": float(config.neighbours),
            "secagg/threshold": float(config.threshold),
            "secagg/survivors": float(len(result.survivors)),
            "secagg/seconds": time.perf_counter() - started,
        }
        if config.noise is not None:
            scale, size = config.quantizer.scale, config.size
            multiplier = config.noise.accountant_noise_multiplier(scale, size)
            self.accountant.step(multiplier, len(sampled) / max(1, available))
            metrics["epsilon"] = self.accountant.epsilon(self.table.delta)
        return total, fitted, failures, metrics


def _messages(replies: list[Any]) -> list[Any]:
    """Every client message of a stage's worker replies."""
    return [m for reply in replies for _, m in sorted(reply.messages.items())]


@dataclass
class _Exchange:
    """One round's traffic between the server and the workers after the fit: who holds
    which client, the stage calls, the dropouts and their reasons, the stage events.

    Attributes
    ----------
    names:
        Client id -> node id, for the round's clients.
    silent:
        Stage -> node ids that send nothing from it on (injected dropouts).
    timeout:
        Seconds a worker may take to answer a stage (``None``: no limit).
    holders:
        Client id -> the worker that holds its state.
    lost:
        Client id -> why it dropped after its fit.
    """

    backend: Backend
    round: int
    names: Mapping[int, str]
    silent: Mapping[Stage, frozenset[str]]
    timeout: float | None
    supervisor: Supervisor | None
    emit: Callable[[Event], object]
    holders: dict[int, int] = field(default_factory=dict)
    lost: dict[int, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def keep(self, stage: Stage, messages: list[KeyAdvertisement]) -> list[KeyAdvertisement]:
        """The first stage's messages without those of clients silent from it on."""
        quiet = self._quiet(stage)
        for message in messages:
            if message.client in quiet:
                self.lost[message.client] = f"silent from stage {stage} on"
        return [m for m in messages if m.client not in quiet]

    def _quiet(self, stage: Stage) -> set[int]:
        numbers = {name: number for number, name in self.names.items()}
        return {numbers[n] for n in self.silent.get(stage, ()) if n in numbers}

    def stage(
        self, stage: Stage, inbox: Mapping[int, M], make: Callable[[dict[int, M]], Request[R]]
    ) -> list[R]:
        """Send each worker the server's messages for its clients (``make``), wait for
        the replies (``stage_timeout``); the clients of a worker that failed or did not
        answer, and those a reply names failed, drop from this stage on."""
        quiet = self._quiet(stage)
        groups: dict[int, dict[int, M]] = {}
        for client, message in sorted(inbox.items()):
            if client in quiet:
                self.lost[client] = f"silent from stage {stage} on"
                continue
            groups.setdefault(self.holders[client], {})[client] = message
        workers = sorted(groups)
        pending = [self.backend.call(w, make(groups[w])) for w in workers]
        outcomes: list[Outcome[R]] = self.backend.gather(pending, timeout=self.timeout)
        replies: list[R] = []
        for worker, outcome in zip(workers, outcomes, strict=True):
            if outcome.error is None:
                reply = outcome.result()
                replies.append(reply)
                failed = getattr(reply, "failed", {})
                self.lost.update((c, f"{stage}: {why}") for c, why in failed.items())
                continue
            reason = self._worker_failed(worker, outcome.error)
            self.lost.update((c, f"{stage}: {reason}") for c in groups[worker])
        return replies

    def _worker_failed(self, worker: int, error: BaseException) -> str:
        """Why a worker's stage call failed; a lost or late worker goes to the supervisor."""
        lost = self.backend.lost(error)
        if isinstance(error, Unfinished):
            reason = f"worker {worker} did not answer within stage_timeout={self.timeout:g} s"
            if self.supervisor is not None:
                self.supervisor.replace(worker, f"round {self.round}: {reason}")
            return reason
        if lost is not None:
            if self.supervisor is not None:
                self.supervisor.lost(worker, f"round {self.round}: {lost}")
            return f"worker {worker} lost: {lost}"
        return f"worker {worker} failed: {type(error).__name__}: {error}"

    def report(self, server: SecAggServer, stage: Stage, since: float | None = None) -> None:
        """Emit the stage's event: who sent, who dropped (node ids), how long it took."""
        now = time.perf_counter()
        dropped = tuple(sorted(self.names[c] for c in server.dropouts[stage]))
        upto = STAGES[: STAGES.index(stage) + 1]
        sent = len(server.config.clients) - sum(len(server.dropouts[s]) for s in upto)
        elapsed = now - (self.started if since is None else since)
        self.emit(SecureAggregationStage(self.round, stage, sent, dropped, elapsed))
        self.started = now
