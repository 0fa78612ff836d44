"""The secure aggregation runner: a worker plays the client side of SecAgg+ for its clients.

The driver plays the server (:mod:`redfl.schemas.secure_round`); each stage is one typed
request per worker, carrying the server's messages for that worker's clients:

1. :class:`SecureFit`: fit the clients (the star batch runner, in-process: the same
   per-client ``try``, update checks, update policy, probes and work stealing), keep each
   successful client's update (new minus global parameters) and weight here, make its
   :class:`~redfl.privacy.secagg.SecAggClient` (its mask key pair and self-mask seed are
   drawn here each round; its cipher key pair is drawn here once and kept, with the
   secrets agreed under it) and answer with its public keys only.
2. :class:`ShareKeys`: each client's encrypted shares for its neighbours.
3. :class:`MaskInputs`: each client masks its update; the worker folds its clients'
   masked vectors modulo ``2^m`` into one :class:`~redfl.privacy.secagg.MaskedSum`.
4. :class:`Unmask`: each client's shares the server asked for (an honest client refuses
   to reveal both shares of one neighbour), after which the round's state here is gone.

Updates, private keys and seeds never leave the worker: a reply holds public keys,
ciphertexts the driver cannot open, masked vectors and the shares the protocol reveals.
A client that fails at a stage (a refused share, a weight above ``max_weight``) is named
in the reply with its reason and counts as dropped from that stage on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from redfl.core.arrays import Parameters
from redfl.core.result import Failure
from redfl.privacy.secagg import (
    KeyAdvertisement,
    MaskedSum,
    NeighbourKeys,
    RoutedShares,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    SecureAggregationConfig,
    ShareBundle,
    Stage,
    UnmaskReply,
    UnmaskRequest,
)
from redfl.privacy.secagg.keys import KeyPair
from redfl.privacy.secagg.quantize import ring_sum
from redfl.runtime.protocol import Handlers, NodeHost, Request, Runner
from redfl.runtime.replies import FitBatch
from redfl.runtime.star_runner import FitSegments, describe

M = TypeVar("M")
R = TypeVar("R")


@dataclass
class SecureFitBatch(FitBatch):
    """A worker's fit reply in a secure round: a :class:`~redfl.runtime.replies.FitBatch`
    without updates (``total`` ``None``, ``updates`` empty), plus each successful
    client's public keys and the worker that holds its state.

    Attributes
    ----------
    adverts:
        One :class:`~redfl.privacy.secagg.KeyAdvertisement` per client kept for the
        round, in fit order.
    worker:
        The index of the worker that ran these clients (the later stages go there).
    """

    adverts: list[KeyAdvertisement] = field(default_factory=list)
    worker: int = -1


@dataclass
class StageReply(Generic[M]):
    """A worker's answer to one stage: a message per client that sent one, and the
    reason of each client that could not.

    Attributes
    ----------
    messages:
        Client id -> its message of the stage.
    failed:
        Client id -> why it sent nothing (it drops from the round).
    """

    messages: dict[int, M] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class MaskedReply:
    """A worker's masked inputs: their sum modulo ``2^m`` (``None`` if no client masked)
    and the reason of each client that could not."""

    masked: MaskedSum | None
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class _Held:
    """What the worker keeps of one client between the stages."""

    client: SecAggClient
    update: Parameters
    weight: float


@dataclass
class _Round:
    """The worker's state of one secure round."""

    config: SecAggConfig
    held: dict[int, _Held] = field(default_factory=dict)


@dataclass
class _Identity:
    """What a client keeps from round to round: its cipher key pair and the secrets it
    agreed with peers' cipher keys (at most :data:`AGREED_KEPT`; the protocol never
    reveals a cipher key, see :mod:`redfl.privacy.secagg.client`)."""

    cipher: KeyPair
    agreed: dict[bytes, bytes] = field(default_factory=dict)


AGREED_KEPT = 4096
"""Secrets a client keeps agreed with peers' cipher keys; past it, it forgets them all."""


class SecureAggregationRunner(Runner):
    """Keeps each client's update and protocol state between the stages of a round."""

    def __init__(self, host: NodeHost) -> None:
        super().__init__(host)
        self._rounds: dict[int, _Round] = {}
        self._identities: dict[str, _Identity] = {}
        self._lock = threading.Lock()
        self._made = 0
        self._seconds: dict[str, float] = {}

    def register(self, handlers: Handlers) -> None:
        """Answer :class:`SecureFit`, :class:`ShareKeys`, :class:`MaskInputs` and
        :class:`Unmask`."""
        handlers.add(SecureFit, self.fit)
        handlers.add(ShareKeys, self.share_keys)
        handlers.add(MaskInputs, self.mask_inputs)
        handlers.add(Unmask, self.unmask)

    def stats(self) -> dict[str, float]:
        """``secagg_clients``: the protocol clients made on this worker (their keys drawn
        here); ``secagg_held``: those still held; ``secagg_<stage>_seconds``: the time
        spent in each stage's client work (the fit excluded)."""
        with self._lock:
            held = sum(len(r.held) for r in self._rounds.values())
            spent = {f"secagg_{stage}_seconds": s for stage, s in self._seconds.items()}
        return {"secagg_clients": self._made, "secagg_held": held, **spent}

    def close(self) -> None:
        """Forget every round and every client's cipher keys."""
        with self._lock:
            self._rounds.clear()
            self._identities.clear()

    def fit(self, request: SecureFit) -> SecureFitBatch:
        """Stage 1: fit the clients, keep their updates, advertise their keys."""
        config = request.secagg
        if config is None:
            raise ValueError("SecureFit needs the round's secagg config")
        with self._lock:
            for old in [r for r in self._rounds if r < config.round]:
                del self._rounds[old]  # a round that failed on the driver left it here
            state = self._rounds.setdefault(config.round, _Round(config))
        fitted = self.host.handle(
            FitSegments(
                request.parameters,
                request.segments,
                request.instructions,
                False,
                request.policy,
                request.guests,
                request.separate,
            )
        )
        batch = SecureFitBatch(total=None, worker=self.host.index)
        batch.absorb(fitted)
        batch.failures.extend(fitted.failures)
        batch.segments_run = fitted.segments_run
        equal = request.policy is not None and request.policy.equal_weights
        started = time.perf_counter()
        kept = set()
        for update in fitted.updates:
            weight = request.table.weight(1.0 if equal else update.num_examples)
            reason = None
            if weight > config.quantizer.max_weight:
                reason = (
                    f"weight {weight:g} (its examples) exceeds secure_aggregation.max_weight="
                    f"{config.quantizer.max_weight:g}"
                )
            else:
                try:
                    delta = {
                        k: np.subtract(v, request.parameters[k], dtype=np.float64)
                        for k, v in update.parameters.items()
                    }
                    identity = self._identity(update.node_id)
                    number = request.ids[update.node_id]
                    client = SecAggClient(config, number, identity.cipher, identity.agreed)
                    advert = client.advertise_keys()
                except (SecAggError, ValueError, KeyError) as error:
                    reason = describe(error)
            if reason is not None:
                batch.failures.append(secure_failure(update.node_id, request.round, reason))
                continue
            with self._lock:
                state.held[client.client] = _Held(client, delta, weight)
                self._made += 1
            batch.adverts.append(advert)
            kept.add(update.node_id)
        batch.succeeded = [n for n in batch.succeeded if n in kept]
        self._spent("advertise_keys", started)
        return batch

    def _spent(self, stage: Stage, since: float) -> None:
        """Count the time since ``since`` to ``stage``."""
        with self._lock:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + time.perf_counter() - since

    def _identity(self, node_id: str) -> _Identity:
        """The cipher keys ``node_id`` keeps on this worker (made on first use)."""
        with self._lock:
            identity = self._identities.get(node_id)
            if identity is None:
                identity = self._identities[node_id] = _Identity(KeyPair.generate())
            if len(identity.agreed) > AGREED_KEPT:
                identity.agreed.clear()
            return identity

    def share_keys(self, request: ShareKeys) -> StageReply[ShareBundle]:
        """Stage 2: each named client's shares, encrypted for its neighbours."""
        return self._each(
            "share_keys",
            request.round,
            request.keys,
            lambda held, keys: held.client.share_keys(keys),
        )

    def mask_inputs(self, request: MaskInputs) -> MaskedReply:
        """Stage 3: each named client's masked update, folded into one sum."""
        reply = self._each(
            "masked_input",
            request.round,
            request.shares,
            lambda held, shares: held.client.mask_input(shares, held.update, held.weight),
        )
        if not reply.messages:
            return MaskedReply(None, reply.failed)
        state = self._rounds[request.round]
        clients = tuple(sorted(reply.messages))
        vectors = [reply.messages[c].vector for c in clients]
        total = ring_sum(vectors, state.config.quantizer.dtype)
        with self._lock:
            for client in clients:
                state.held[client].update = {}  # masked: the update is no longer needed
        return MaskedReply(MaskedSum(request.round, clients, total), reply.failed)

    def unmask(self, request: Unmask) -> StageReply[UnmaskReply]:
        """Stage 4: each named client's shares for the sum; then its state is dropped."""
        reply = self._each(
            "unmasking",
            request.round,
            request.requests,
            lambda held, asked: held.client.unmask(asked),
        )
        with self._lock:
            state = self._rounds.get(request.round)
            if state is not None:
                for client in request.requests:
                    state.held.pop(client, None)
                if not state.held:
                    del self._rounds[request.round]
        return reply

    def _each(
        self, stage: Stage, rnd: int, inbox: Mapping[int, M], step: Callable[[_Held, M], R]
    ) -> StageReply[R]:
        """Run ``step`` for each client of ``inbox`` held for round ``rnd``; a client that
        raises, or that this worker does not hold, fails with the reason."""
        started = time.perf_counter()
        reply: StageReply[R] = StageReply()
        state = self._rounds.get(rnd)
        for client, message in sorted(inbox.items()):
            held = None if state is None else state.held.get(client)
            if held is None:
                reply.failed[client] = f"worker {self.host.index} holds no state of it"
                continue
            try:
                reply.messages[client] = step(held, message)
            except (SecAggError, ValueError, RuntimeError) as error:
                reply.failed[client] = describe(error)
                with self._lock:
                    held_now = self._rounds.get(rnd)
                    if held_now is not None:
                        held_now.held.pop(client, None)
        self._spent(stage, started)
        return reply


def secure_failure(node_id: str, rnd: int, reason: str) -> Failure:
    """The failure of a client whose update cannot enter the secure sum."""
    return Failure(node_id, rnd, "fit", f"secure aggregation: {reason}")


@dataclass(frozen=True)
class SecureFit(FitSegments):
    """Fit a round's clients and start their secure aggregation (stage 1).

    As :class:`~redfl.runtime.star_runner.FitSegments` (``fold`` is ignored: updates are
    never folded in the clear), plus:

    Attributes
    ----------
    secagg:
        The round's public parameters.
    table:
        The ``[secure_aggregation]`` settings (weights).
    ids:
        Node id -> the integer id of the client in ``secagg``, for the round's clients.
    """

    runner = SecureAggregationRunner

    secagg: SecAggConfig | None = None
    table: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)
    ids: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ShareKeys(Request[StageReply[ShareBundle]]):
    """Stage 2: the neighbours' keys of each of this worker's clients."""

    runner = SecureAggregationRunner

    round: int
    keys: Mapping[int, NeighbourKeys]


@dataclass(frozen=True)
class MaskInputs(Request[MaskedReply]):
    """Stage 3: the shares routed to each of this worker's clients."""

    runner = SecureAggregationRunner

    round: int
    shares: Mapping[int, RoutedShares]


@dataclass(frozen=True)
class Unmask(Request[StageReply[UnmaskReply]]):
    """Stage 4: what the server asks each of this worker's clients to reveal."""

    runner = SecureAggregationRunner

    round: int
    requests: Mapping[int, UnmaskRequest]
