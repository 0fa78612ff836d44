"""The messages of a secure aggregation round and its result: frozen, picklable dataclasses.

Clients send the server one message per stage; the server answers each client with one.
Every message names its round and its client (the sender of a client's message, the
recipient of the server's), and both sides refuse messages of another round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from redfl.core.arrays import Parameters, WeightedSum
from redfl.privacy.secagg.config import Stage
from redfl.privacy.secagg.shamir import Share


@dataclass(frozen=True)
class KeyAdvertisement:
    """Client to server, stage 1: the client's two public keys (X25519, raw bytes)."""

    round: int
    client: int
    cipher_key: bytes
    mask_key: bytes


@dataclass(frozen=True)
class NeighbourKeys:
    """Server to client after stage 1: the advertisements of its neighbours that sent one."""

    round: int
    client: int
    keys: tuple[KeyAdvertisement, ...]


@dataclass(frozen=True)
class EncryptedShare:
    """The sender's shares of its mask private key and self-mask seed for one recipient,
    sealed with the key the two agreed (the server cannot open it)."""

    sender: int
    recipient: int
    ciphertext: bytes


@dataclass(frozen=True)
class ShareBundle:
    """Client to server, stage 2: one encrypted share per neighbour with keys."""

    round: int
    client: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class RoutedShares:
    """Server to client after stage 2: the shares addressed to it by neighbours that sent
    theirs (the client masks with exactly these neighbours)."""

    round: int
    client: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Client to server, stage 3: the encoded weighted update plus masks, modulo ``2^m``."""

    round: int
    client: int
    vector: np.ndarray


@dataclass(frozen=True, eq=False)
class MaskedSum:
    """Client side to server, stage 3: the sum modulo ``2^m`` of several clients' masked
    inputs, folded where they run (one message per worker instead of one per client).

    It tells the server less than the inputs would: pairwise masks between the folded
    clients cancel, the rest (self masks, masks with clients elsewhere) only in the total.
    """

    round: int
    clients: tuple[int, ...]
    vector: np.ndarray


@dataclass(frozen=True)
class UnmaskRequest:
    """Server to client after stage 3: which of its neighbours sent a masked input
    (``survivors``: reveal their self-mask seed shares) and which shared keys but sent no
    input (``dropped``: reveal their mask key shares), and how many inputs are summed."""

    round: int
    client: int
    survivors: frozenset[int]
    dropped: frozenset[int]
    survivor_count: int


@dataclass(frozen=True)
class UnmaskReply:
    """Client to server, stage 4: shares by owner, for the owners asked about."""

    round: int
    client: int
    seed_shares: Mapping[int, Share]
    key_shares: Mapping[int, Share]


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """The unmasked sum of a round.

    Attributes
    ----------
    round:
        The round.
    sums:
        ``sum_i w_i x_i`` over the survivors (float64 arrays of the config's layout).
    weight:
        ``sum_i w_i`` over the survivors.
    survivors:
        The clients whose inputs are in the sum.
    dropouts:
        For each stage, the clients that sent nothing in it (having sent in the one
        before).
    """

    round: int
    sums: Parameters
    weight: float
    survivors: frozenset[int]
    dropouts: Mapping[Stage, frozenset[int]]

    def weighted_sum(self) -> WeightedSum:
        """The sum as the partial sum a weighted-sum strategy aggregates."""
        return WeightedSum(sums=dict(self.sums), weight=self.weight, count=len(self.survivors))
