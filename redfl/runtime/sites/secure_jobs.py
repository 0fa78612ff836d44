"""A secure round's jobs: a site's answers to the four stages, checked and turned into the
replies the secure round expects of a worker (:mod:`redfl.runtime.secagg_runner`).

The driver plays the server of SecAgg+ exactly as with simulated workers
(:mod:`redfl.schemas.secure_round`): ``backend.call(site, SecureFit(...))`` becomes a
:class:`SecureFitJob`, and each later stage (``ShareKeys``, ``MaskInputs``, ``Unmask``) a
:class:`StageJob`. The site keeps its client's update, private keys and seeds between the
stages (its own :class:`~redfl.runtime.secagg_runner.SecureAggregationRunner`); what comes
back is what a server may see: public keys, ciphertexts, the masked vector and the shares
it asked for.

Before the secure round folds an answer, it is checked against the round's public
parameters: shares only for the client's neighbours, a masked vector of the ring's type and
length, revealed shares only of the neighbours asked about. A site whose answer fails a
check, or that failed, left or timed out, drops from the round at that stage (its client
is named in the reply's ``failed`` with the reason), as a simulated client that raised.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import numpy as np

from redfl.algorithms.updates import UpdatePolicy
from redfl.core.instructions import Instructions
from redfl.core.result import Failure
from redfl.privacy.secagg import (
    KeyAdvertisement,
    MaskedSum,
    NeighbourKeys,
    SecAggConfig,
    ShareBundle,
    UnmaskReply,
    UnmaskRequest,
)
from redfl.runtime.secagg_runner import (
    MaskedReply,
    MaskInputs,
    SecureFit,
    SecureFitBatch,
    ShareKeys,
    StageReply,
    Unmask,
)
from redfl.runtime.sites.jobs import Job
from redfl.runtime.sites.secure_wire import (
    SecureFitReply,
    SecureFitTask,
    StageKind,
    StageMessage,
    StageResponse,
    StageTask,
    read_secure_reply,
    secure_fit_frame,
    stage_task_frame,
)
from redfl.runtime.sites.wire import MAX_HEADER_BYTES, Broadcast, WireError

REPLY_BYTES = 8 + MAX_HEADER_BYTES
"""The largest reply to a stage without arrays (a header of at most its limit)."""
MASKED_SLACK_BYTES = 4096
"""A masked input's reply may be its vector's size plus this."""

StageRequest = ShareKeys | MaskInputs | Unmask
"""The requests of the stages after the fit."""


class SecureFitJob(Job[SecureFitBatch]):
    """A secure fit task: the site fits, keeps its update and answers with its public keys
    (never its update), which become the worker's :class:`SecureFitBatch`."""

    kind = "secure_fit"

    def __init__(
        self,
        job_id: str,
        worker: int,
        request: SecureFit,
        shared: Broadcast,
        instructions: Instructions,
        node_id: str,
    ) -> None:
        config = request.secagg
        if config is None:
            raise ValueError("SecureFit needs the round's secagg config")
        policy = request.policy or UpdatePolicy()
        self.client = request.ids[node_id]
        task = SecureFitTask(
            job_id,
            node_id,
            instructions,
            shared.parameters,
            UpdatePolicy(policy.max_update_norm, policy.clip_norm, policy.equal_weights),
            request.table,
            config.clients,
            config.seed,
            self.client,
        )
        chunks = secure_fit_frame(task, shared)
        super().__init__(job_id, worker, node_id, instructions.round, chunks, REPLY_BYTES)

    def _read(self, body: bytes) -> SecureFitBatch:
        reply = read_secure_reply(body)
        self.check(reply, SecureFitReply)
        reply = cast(SecureFitReply, reply)
        if not reply.ok:
            return self._failed(reply.reason or "(no reason)")
        if set(reply.metric_sums) != set(reply.metric_examples):
            raise WireError("metric_sums and metric_examples name different metrics")
        batch = SecureFitBatch(total=None, worker=self.worker, segments_run=1)
        batch.succeeded.append(self.node_id)
        batch.metric_sums.update(reply.metric_sums)
        batch.metric_examples.update(reply.metric_examples)
        batch.stats.update(reply.stats)
        advert = KeyAdvertisement(self.round, self.client, reply.cipher_key, reply.mask_key)
        batch.adverts.append(advert)
        return batch

    def _failed(self, reason: str) -> SecureFitBatch:
        failure = Failure(self.node_id, self.round, "fit", reason)
        return SecureFitBatch(total=None, failures=[failure], worker=self.worker, segments_run=1)


class StageJob(Job[Any]):
    """A stage after the fit, for the site's one client: the server's message for it, and
    its answer checked against the round's public parameters ``config``.

    Raises
    ------
    ValueError
        If the request is for other clients than the site's one.
    """

    def __init__(
        self, job_id: str, worker: int, node_id: str, request: StageRequest, config: SecAggConfig
    ) -> None:
        kind: StageKind
        inbox: dict[int, StageMessage]
        if isinstance(request, ShareKeys):
            kind, inbox = "share_keys", dict(request.keys)
        elif isinstance(request, MaskInputs):
            kind, inbox = "mask_inputs", dict(request.shares)
        else:
            kind, inbox = "unmask", dict(request.requests)
        if len(inbox) != 1:
            raise ValueError(f"site {node_id!r} holds one client, not {sorted(inbox)[:5]}")
        ((client, message),) = inbox.items()
        self.kind = kind
        self.client = client
        self.message = message
        self.config = config
        chunks = stage_task_frame(StageTask(kind, job_id, node_id, request.round, client, message))
        limit = REPLY_BYTES
        if kind == "mask_inputs":
            itemsize = np.dtype(config.quantizer.dtype).itemsize
            limit = (config.size + 1) * itemsize + MASKED_SLACK_BYTES
        super().__init__(job_id, worker, node_id, request.round, chunks, limit)

    def succeeded(self) -> bool:
        """Whether the site's client answered the stage."""
        return self.done and not self.future.result().failed

    def _read(self, body: bytes) -> Any:
        reply = read_secure_reply(body)
        self.check(reply, StageResponse)
        reply = cast(StageResponse, reply)
        if reply.kind != self.kind:
            raise WireError(
                f"a reply of kind {reply.kind} does not answer the {self.kind} job {self.id}"
            )
        if not reply.ok:
            return self._failed(reply.reason or "(no reason)")
        answer = reply.answer
        if isinstance(answer, ShareBundle):
            return StageReply({self.client: self._bundle(answer)})
        if isinstance(answer, UnmaskReply):
            return StageReply({self.client: self._revealed(answer)})
        if isinstance(answer, np.ndarray):
            return MaskedReply(MaskedSum(self.round, (self.client,), self._masked(answer)))
        raise WireError(f"a reply of kind {self.kind} without its answer")

    def _bundle(self, answer: ShareBundle) -> ShareBundle:
        """The client's shares, each for a neighbour with keys, at most one each."""
        allowed = {advert.client for advert in cast(NeighbourKeys, self.message).keys}
        recipients = [share.recipient for share in answer.shares]
        if len(set(recipients)) != len(recipients) or not set(recipients) <= allowed:
            raise WireError(
                f"shares for {sorted(recipients)[:5]}, not one each for the neighbours "
                f"with keys {sorted(allowed)[:5]}"
            )
        shares = tuple(replace(share, sender=self.client) for share in answer.shares)
        return ShareBundle(self.round, self.client, shares)

    def _masked(self, vector: np.ndarray) -> np.ndarray:
        """The masked vector, of the ring's type and the round's length."""
        dtype, size = np.dtype(self.config.quantizer.dtype), self.config.size + 1
        if vector.dtype != dtype or vector.shape != (size,):
            raise WireError(
                f"a masked input is {dtype} of shape ({size},), got {vector.dtype} of shape "
                f"{vector.shape}"
            )
        return vector

    def _revealed(self, answer: UnmaskReply) -> UnmaskReply:
        """The shares asked for: self-mask seeds of survivors, mask keys of the dropped."""
        asked = cast(UnmaskRequest, self.message)
        seeds, keys = set(answer.seed_shares), set(answer.key_shares)
        if not seeds <= asked.survivors or not keys <= asked.dropped:
            raise WireError(
                f"shares of {sorted(seeds - asked.survivors)[:5]} and "
                f"{sorted(keys - asked.dropped)[:5]} that the server did not ask for"
            )
        return UnmaskReply(self.round, self.client, answer.seed_shares, answer.key_shares)

    def _failed(self, reason: str) -> Any:
        if self.kind == "mask_inputs":
            return MaskedReply(None, {self.client: reason})
        return StageReply(failed={self.client: reason})
