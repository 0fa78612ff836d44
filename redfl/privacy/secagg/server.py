"""The server side of a secure aggregation round: collect, route, unmask.

Each ``collect_*`` method takes the messages that arrived for one stage (a client whose
message is missing has dropped) and returns the server's message for each client still
in the round:

1. :meth:`SecAggServer.collect_keys`: advertisements in, each client's neighbours' keys
   out.
2. :meth:`SecAggServer.collect_shares`: encrypted shares in, routed to their recipients.
3. :meth:`SecAggServer.collect_masked`: masked inputs (or sums of several, folded where
   the clients run) in, unmasking requests out.
4. :meth:`SecAggServer.collect_unmask`: shares in; the self-mask seeds of the survivors
   and the mask keys of the clients that dropped after sharing are rebuilt, their masks
   removed, and the sum returned.

Before asking for anything more the server checks that the round can still finish: every
client whose secret will be needed must keep at least ``threshold`` neighbours, at least
``min_survivors`` inputs must be summed, and the survivors must be connected in the
graph (else unmasking would give the sum of each separate group). Otherwise the round
fails (:class:`~redfl.privacy.secagg.errors.RoundFailed`, naming the stage and the
counts) while the server still holds fewer than ``threshold`` shares of every secret.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from redfl.privacy.secagg.config import STAGES, SecAggConfig, Stage
from redfl.privacy.secagg.errors import RoundFailed, SecAggError
from redfl.privacy.secagg.graph import connected
from redfl.privacy.secagg.keys import agree, mask_seed, public_key
from redfl.privacy.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    MaskedSum,
    NeighbourKeys,
    RoutedShares,
    SecAggResult,
    ShareBundle,
    UnmaskReply,
    UnmaskRequest,
)
from redfl.privacy.secagg.prg import expand
from redfl.privacy.secagg.quantize import ring_sum
from redfl.privacy.secagg.shamir import Share, reconstruct, reconstruct_many


class _Message(Protocol):
    @property
    def round(self) -> int: ...

    @property
    def client(self) -> int: ...


@dataclass(frozen=True)
class _Member:
    """One client's part in a :class:`MaskedSum` (what :meth:`SecAggServer._gather` checks)."""

    round: int
    client: int


_M = TypeVar("_M", bound=_Message)


class SecAggServer:
    """The server of one round.

    Parameters
    ----------
    config:
        The round's public parameters (the same object goes to every client).

    Attributes
    ----------
    dropouts:
        For each stage collected so far, the clients that sent nothing in it.
    """

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.graph = config.graph()
        self.dropouts: dict[Stage, frozenset[int]] = {}
        self._stage = 0
        self._keys: dict[int, KeyAdvertisement] = {}
        self._shared: frozenset[int] = frozenset()
        self._survivors: frozenset[int] = frozenset()
        self._masked: list[np.ndarray] = []

    def collect_keys(self, adverts: Iterable[KeyAdvertisement]) -> dict[int, NeighbourKeys]:
        """Stage 1: for each client that advertised, its neighbours' advertisements.

        Raises
        ------
        RoundFailed
            If a client that advertised has fewer than ``threshold`` neighbours that did.
        """
        self._keys = self._gather("advertise_keys", adverts, self.config.clients)
        alive = frozenset(self._keys)
        self._require_neighbours("advertise_keys", alive, alive)
        return {
            client: NeighbourKeys(
                self.config.round,
                client,
                tuple(self._keys[peer] for peer in sorted(self.graph[client] & alive)),
            )
            for client in sorted(alive)
        }

    def collect_shares(self, bundles: Iterable[ShareBundle]) -> dict[int, RoutedShares]:
        """Stage 2: the shares addressed to each client that sent its own, from senders
        that did too.

        Raises
        ------
        RoundFailed
            If a client that shared has fewer than ``threshold`` neighbours that did (its
            secrets would have too few holders).
        ValueError
            If a bundle holds a share of another sender or for a non-neighbour.
        """
        received = self._gather("share_keys", bundles, self._keys)
        shared = frozenset(received)
        self._require_neighbours("share_keys", shared, shared)
        self._shared = shared
        inbox: dict[int, list[EncryptedShare]] = {client: [] for client in shared}
        for client, bundle in received.items():
            for share in bundle.shares:
                if share.sender != client or share.recipient not in self.graph[client]:
                    raise ValueError(
                        f"share_keys: client {client} sent a share from {share.sender} to "
                        f"{share.recipient}, not one of its own for a neighbour"
                    )
                if share.recipient in inbox:
                    inbox[share.recipient].append(share)
        return {
            client: RoutedShares(self.config.round, client, tuple(shares))
            for client, shares in sorted(inbox.items())
        }

    def collect_masked(self, inputs: Iterable[MaskedInput | MaskedSum]) -> dict[int, UnmaskRequest]:
        """Stage 3: for each client whose masked input arrived (alone or in a sum), which
        of its neighbours survived (seed shares wanted) and which dropped after sharing
        (key shares wanted).

        Raises
        ------
        RoundFailed
            If fewer than ``min_survivors`` inputs arrived, a client that shared keeps
            fewer than ``threshold`` neighbours with inputs, or the survivors are not
            connected in the graph.
        ValueError
            If a vector has the wrong type or length, or a sum names no client.
        """
        config = self.config
        parts = [
            MaskedSum(m.round, (m.client,), m.vector) if isinstance(m, MaskedInput) else m
            for m in inputs
        ]
        members = [_Member(part.round, client) for part in parts for client in part.clients]
        self._gather("masked_input", members, self._shared)
        size, dtype = config.size + 1, config.quantizer.dtype
        for part in parts:
            vector = part.vector
            if not part.clients:
                raise ValueError("masked_input: a masked sum of no client")
            if (
                not isinstance(vector, np.ndarray)
                or vector.dtype != dtype
                or vector.shape != (size,)
            ):
                raise ValueError(
                    f"masked_input: client(s) {list(part.clients)[:5]} sent a vector that is "
                    f"not {np.dtype(dtype)} of shape ({size},)"
                )
        survivors = frozenset(member.client for member in members)
        if len(survivors) < config.min_survivors:
            self._fail(
                "masked_input",
                f"{len(survivors)} clients sent masked inputs, the round needs at least "
                f"min_survivors={config.min_survivors}",
            )
        self._require_neighbours("masked_input", self._shared, survivors)
        if not connected(survivors, self.graph):
            self._fail(
                "masked_input",
                "the survivors fall apart into separate groups in the graph, whose sums "
                "unmasking would reveal",
            )
        self._survivors = survivors
        self._masked = [part.vector for part in parts]
        dropped = self._shared - survivors
        return {
            client: UnmaskRequest(
                config.round,
                client,
                self.graph[client] & survivors,
                self.graph[client] & dropped,
                len(survivors),
            )
            for client in sorted(survivors)
        }

    def collect_unmask(self, replies: Iterable[UnmaskReply]) -> SecAggResult:
        """Stage 4: rebuild the secrets, remove every mask, decode the sum.

        Raises
        ------
        RoundFailed
            If a needed secret has fewer than ``threshold`` shares (nothing is rebuilt).
        SecAggError
            If a secret's shares do not fit together, or a rebuilt mask key does not match
            the key its owner advertised (a share was altered).
        ValueError
            If a reply holds a share the server did not ask that client for.
        """
        config = self.config
        survivors = self._survivors
        dropped = self._shared - survivors
        received = self._gather("unmasking", replies, survivors)
        seed_shares: dict[int, list[Share]] = {client: [] for client in survivors}
        key_shares: dict[int, list[Share]] = {client: [] for client in dropped}
        for client, reply in received.items():
            self._sort_shares(client, reply.seed_shares, survivors, seed_shares)
            self._sort_shares(client, reply.key_shares, dropped, key_shares)
        short = [
            f"the {what} of client {owner} has {len(shares)}"
            for what, groups in (("self-mask seed", seed_shares), ("mask key", key_shares))
            for owner, shares in sorted(groups.items())
            if len(shares) < config.threshold
        ]
        if short:
            self._fail(
                "unmasking",
                f"{len(short)} secrets lack shares ({'; '.join(short[:3])}"
                f"{'; ...' if len(short) > 3 else ''}), threshold {config.threshold}, "
                f"after {len(survivors) - len(received)} of {len(survivors)} survivors did "
                "not answer",
            )
        seeds = self._rebuild("self-mask seed", seed_shares)
        keys = self._rebuild("mask key", key_shares)
        total = self._unmasked(seeds, keys)
        sums, weight = config.quantizer.decode(total, config.layout)
        return SecAggResult(config.round, sums, weight, survivors, dict(self.dropouts))

    def _rebuild(self, what: str, shares: dict[int, list[Share]]) -> dict[int, bytes]:
        """Each owner's secret from its shares.

        Raises
        ------
        SecAggError
            If an owner's shares do not interpolate to a secret (a share was altered).
        """
        owners = sorted(shares)
        threshold = self.config.threshold
        try:
            secrets = reconstruct_many([shares[owner] for owner in owners], threshold)
        except ValueError:
            for owner in owners:
                try:
                    reconstruct(shares[owner], threshold)
                except ValueError as error:
                    raise SecAggError(
                        f"unmasking: the shares of the {what} of client {owner} do not fit "
                        f"together ({error})"
                    ) from None
            raise
        return dict(zip(owners, secrets, strict=True))

    def _unmasked(self, seeds: dict[int, bytes], keys: dict[int, bytes]) -> np.ndarray:
        """The sum of the masked inputs minus every self mask and every mask shared with a
        client that dropped after sharing."""
        config = self.config
        dtype = config.quantizer.dtype
        total = ring_sum(self._masked, dtype)
        length = total.size
        for seed in seeds.values():
            total -= expand(seed, length, dtype)
        for owner, private in keys.items():
            if public_key(private) != self._keys[owner].mask_key:
                raise SecAggError(
                    f"the mask key rebuilt for client {owner} does not match the key it "
                    "advertised: a share was wrong"
                )
            partners = sorted(self.graph[owner] & seeds.keys())
            secrets = agree(private, [self._keys[p].mask_key for p in partners])
            for partner, secret in zip(partners, secrets, strict=True):
                mask = expand(
                    mask_seed(secret, config.seed, config.round, owner, partner), length, dtype
                )
                # The partner added +mask when its id is below the owner's, -mask otherwise.
                if partner < owner:
                    total -= mask
                else:
                    total += mask
        return total

    def _sort_shares(
        self,
        client: int,
        shares: Mapping[int, Share],
        owners: Collection[int],
        into: dict[int, list[Share]],
    ) -> None:
        """File the shares of ``client``'s reply under their owners, checking each one was
        asked for (an owner among ``owners`` and a neighbour) and is at the client's point."""
        for owner, share in shares.items():
            if owner not in owners or owner not in self.graph[client]:
                raise ValueError(
                    f"unmasking: client {client} sent a share of client {owner}, which it "
                    "was not asked for"
                )
            if not isinstance(share, Share) or share.x != client + 1:
                raise ValueError(f"unmasking: client {client} sent a malformed share of {owner}")
            into[owner].append(share)

    def _gather(
        self, stage: Stage, messages: Iterable[_M], expected: Collection[int]
    ) -> dict[int, _M]:
        """The messages of ``stage`` by client; records who dropped (expected, silent).

        Raises
        ------
        ValueError
            If a message is of another round, from an unexpected client, or repeated.
        """
        index = STAGES.index(stage)
        if self._stage != index:
            done = STAGES[self._stage - 1] if self._stage else "nothing"
            raise RuntimeError(f"{stage} cannot be collected after {done}")
        self._stage = index + 1
        received: dict[int, _M] = {}
        for message in messages:
            if message.round != self.config.round:
                raise ValueError(
                    f"{stage}: a message of round {message.round} in round {self.config.round}"
                )
            if message.client not in expected or message.client in received:
                raise ValueError(
                    f"{stage}: a message from client {message.client}, which is not expected "
                    "at this stage (not in the round, dropped before, or sent twice)"
                )
            received[message.client] = message
        self.dropouts[stage] = frozenset(expected) - frozenset(received)
        return received

    def _require_neighbours(
        self, stage: Stage, owners: Collection[int], alive: frozenset[int]
    ) -> None:
        """Fail unless every owner keeps ``threshold`` neighbours among ``alive``."""
        threshold = self.config.threshold
        short = sorted(
            (len(self.graph[owner] & alive), owner)
            for owner in owners
            if len(self.graph[owner] & alive) < threshold
        )
        if short:
            count, owner = short[0]
            self._fail(
                stage,
                f"{len(self.dropouts[stage])} clients dropped at this stage and {len(short)} "
                f"clients keep fewer than threshold={threshold} of their "
                f"{self.config.neighbours} neighbours (client {owner} keeps {count})",
            )

    def _fail(self, stage: Stage, reason: str) -> None:
        raise RoundFailed(self.config.round, stage, reason)
