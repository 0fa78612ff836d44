"""The client side of a secure aggregation round: four stages, one message each.

1. :meth:`SecAggClient.advertise_keys`: two fresh X25519 public keys.
2. :meth:`SecAggClient.share_keys`: Shamir shares (threshold ``t``) of its mask private
   key ``s_i`` and of a fresh self-mask seed ``b_i``, one pair per neighbour, each
   encrypted for that neighbour.
3. :meth:`SecAggClient.mask_input`: ``y_i = q(x_i) + PRG(b_i) + sum_j +-PRG(s_ij)``
   modulo ``2^m``, over the neighbours ``j`` that shared keys (``+`` when ``i < j``), with
   ``s_ij`` the seed agreed from the mask keys: the pairwise masks cancel in the sum.
4. :meth:`SecAggClient.unmask`: for each neighbour the server names, the share of its
   ``b_j`` if it sent a masked input, or of its ``s_j`` if it did not.

The client refuses (:class:`~redfl.privacy.secagg.errors.ClientRefusal`) to reveal both
shares of one neighbour, in one request or across several: with ``b_j`` and ``s_j`` the
server could strip every mask from ``y_j``. It also refuses to unmask a sum of fewer
than ``min_survivors`` inputs, or when named dropped itself.

The object holds only bytes, ints and dicts, so it pickles between the stages.

A client's *cipher* key pair may be kept from round to round (``cipher``, with the secrets
already agreed with peers' cipher keys in ``agreed``): the protocol never reveals it (only
shares of the mask key and of the self-mask seed are ever rebuilt), and every round's
share keys are derived afresh from the agreed secret with that round's public seed and
number, so keeping it saves half of a client's X25519 agreements and tells the server
nothing more. The *mask* key pair and the self-mask seed are always fresh: a mask key
rebuilt for a client that dropped would otherwise unmask its inputs of every other round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

import numpy as np

from redfl.privacy.secagg.config import SecAggConfig
from redfl.privacy.secagg.dp import skellam
from redfl.privacy.secagg.errors import ClientRefusal, RoundFailed
from redfl.privacy.secagg.keys import (
    KEY_BYTES,
    KeyPair,
    agree,
    cipher_key,
    decrypt,
    encrypt,
    mask_seed,
)
from redfl.privacy.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    NeighbourKeys,
    RoutedShares,
    ShareBundle,
    UnmaskReply,
    UnmaskRequest,
)
from redfl.privacy.secagg.prg import expand
from redfl.privacy.secagg.shamir import ELEMENT_BYTES, Share, chunk_count, split

_SECRET_BYTES = chunk_count(KEY_BYTES) * ELEMENT_BYTES
"""Bytes of one share of a 32-byte secret on the wire."""


class SecAggClient:
    """One client of one round.

    Parameters
    ----------
    config:
        The round's public parameters (the server's object).
    client:
        This client's id, one of ``config.clients``.
    cipher:
        The client's cipher key pair kept from earlier rounds (default: a fresh one).
    agreed:
        Peer cipher public key -> the secret agreed with it under ``cipher``: filled as
        secrets are agreed, and read before agreeing (pass the same mapping with the same
        ``cipher`` from round to round).

    Its private keys and seed are drawn when it is made and live in its attributes: a
    pickled client carries them, so it must stay where the client's update is.
    """

    def __init__(
        self,
        config: SecAggConfig,
        client: int,
        cipher: KeyPair | None = None,
        agreed: MutableMapping[bytes, bytes] | None = None,
    ) -> None:
        if client not in config.clients:
            raise ValueError(f"client {client} is not one of the round's clients")
        self.config = config
        self.client = client
        self.neighbours = config.neighbours_of(client)
        self._cipher = cipher if cipher is not None else KeyPair.generate()
        self._agreed: MutableMapping[bytes, bytes] = {} if agreed is None else agreed
        self._mask = KeyPair.generate()
        self._seed = os.urandom(KEY_BYTES)
        self._stage = 0
        self._peers: dict[int, KeyAdvertisement] = {}
        """Neighbours that advertised keys, with their keys."""
        self._cipher_keys: dict[int, bytes] = {}
        """The share encryption key agreed with each of them."""
        self._held: dict[int, tuple[Share, Share]] = {}
        """Neighbours that shared keys: our shares of their (mask key, self-mask seed)."""
        self._revealed_seeds: set[int] = set()
        self._revealed_keys: set[int] = set()

    def advertise_keys(self) -> KeyAdvertisement:
        """Stage 1: this round's public cipher and mask keys."""
        self._advance(1, "advertise_keys")
        return KeyAdvertisement(
            self.config.round, self.client, self._cipher.public, self._mask.public
        )

    def share_keys(self, keys: NeighbourKeys) -> ShareBundle:
        """Stage 2: shares of the mask private key and self-mask seed, one encrypted pair
        for each neighbour in ``keys``.

        Raises
        ------
        RoundFailed
            If fewer than ``threshold`` neighbours advertised keys (this client's secrets
            could never be rebuilt).
        ValueError
            If ``keys`` is for another client or round, or names a non-neighbour.
        """
        self._check(keys.round, keys.client, "neighbour keys")
        self._advance(2, "share_keys")
        for advert in keys.keys:
            if advert.client not in self.neighbours or advert.client in self._peers:
                raise ValueError(
                    f"client {self.client}: keys of client {advert.client} are not expected "
                    "(not a neighbour, or sent twice)"
                )
            self._peers[advert.client] = advert
        holders = sorted(self._peers)
        config = self.config
        if len(holders) < config.threshold:
            raise RoundFailed(
                config.round,
                "share_keys",
                f"client {self.client} has {len(holders)} neighbours with keys, threshold "
                f"{config.threshold}",
            )
        points = [holder + 1 for holder in holders]
        key_shares = split(self._mask.private, config.threshold, points)
        seed_shares = split(self._seed, config.threshold, points)
        peers = [self._peers[h].cipher_key for h in holders]
        missing = [peer for peer in peers if peer not in self._agreed]
        self._agreed.update(zip(missing, agree(self._cipher.private, missing), strict=True))
        secrets = [self._agreed[peer] for peer in peers]
        sealed = []
        for holder, secret, key_share, seed_share in zip(
            holders, secrets, key_shares, seed_shares, strict=True
        ):
            key = cipher_key(secret, config.seed, config.round, self.client, holder)
            self._cipher_keys[holder] = key
            payload = key_share.to_bytes() + seed_share.to_bytes()
            ciphertext = encrypt(key, payload, config.round, self.client, holder)
            sealed.append(EncryptedShare(self.client, holder, ciphertext))
        return ShareBundle(config.round, self.client, tuple(sealed))

    def mask_input(
        self, shares: RoutedShares, parameters: Mapping[str, np.ndarray], weight: float = 1.0
    ) -> MaskedInput:
        """Stage 3: the masked encoding of ``weight * parameters`` and ``weight``.

        ``shares`` are the encrypted shares neighbours addressed to this client; they are
        opened here, so a forged one stops the client before it sends its input.

        Raises
        ------
        ShareAuthenticationError
            If a share does not open (altered, or not sealed by that neighbour for this
            client and round).
        RoundFailed
            If fewer than ``threshold`` neighbours shared keys.
        ValueError
            If the message is not for this client and round, or the update does not fit
            the config (names, shapes, finite values, weight bounds).
        """
        self._check(shares.round, shares.client, "routed shares")
        self._advance(3, "mask_input")
        config = self.config
        for share in shares.shares:
            self._open(share)
        if len(self._held) < config.threshold:
            raise RoundFailed(
                config.round,
                "masked_input",
                f"client {self.client} received shares from {len(self._held)} neighbours, "
                f"threshold {config.threshold}",
            )
        quantizer = config.quantizer
        l2_clip = None if config.noise is None else config.noise.l2_clip
        encoded = quantizer.encode(parameters, weight, config.layout, l2_clip)
        if quantizer.noise_variance > 0:
            noise = skellam(quantizer.noise_variance, config.size, np.random.default_rng())
            encoded[:-1] += noise
        vector = quantizer.to_ring(encoded)
        length, dtype = vector.size, quantizer.dtype
        vector += expand(self._seed, length, dtype)
        partners = sorted(self._held)
        secrets = agree(self._mask.private, [self._peers[p].mask_key for p in partners])
        for partner, secret in zip(partners, secrets, strict=True):
            seed = mask_seed(secret, config.seed, config.round, self.client, partner)
            if self.client < partner:
                vector += expand(seed, length, dtype)
            else:
                vector -= expand(seed, length, dtype)
        return MaskedInput(config.round, self.client, vector)

    def unmask(self, request: UnmaskRequest) -> UnmaskReply:
        """Stage 4: the self-mask seed shares of the named survivors and the mask key
        shares of the named dropped neighbours (of those this client holds shares of).

        A repeated request is answered again, as long as no neighbour is ever named both
        ways.

        Raises
        ------
        ClientRefusal
            If a neighbour is named both survivor and dropped (in this request, or this
            one and an earlier one), this client is named dropped, or fewer than
            ``min_survivors`` inputs would be summed.
        """
        self._check(request.round, request.client, "unmask request")
        if self._stage < 3:
            raise RuntimeError(f"client {self.client}: unmask before mask_input")
        self._stage = 4
        both = (request.survivors & request.dropped) | (
            (request.survivors & self._revealed_keys) | (request.dropped & self._revealed_seeds)
        )
        if both:
            raise ClientRefusal(
                f"client {self.client} refuses to unmask: the server asks for both the "
                f"self-mask seed share and the mask key share of client(s) {sorted(both)}"
            )
        if self.client in request.dropped:
            raise ClientRefusal(
                f"client {self.client} refuses to unmask: the server names it dropped, but "
                "it sent its masked input"
            )
        if request.survivor_count < self.config.min_survivors:
            raise ClientRefusal(
                f"client {self.client} refuses to unmask a sum of {request.survivor_count} "
                f"inputs: the round requires at least min_survivors="
                f"{self.config.min_survivors}"
            )
        seeds = {owner: self._held[owner][1] for owner in request.survivors if owner in self._held}
        keys = {owner: self._held[owner][0] for owner in request.dropped if owner in self._held}
        self._revealed_seeds.update(seeds)
        self._revealed_keys.update(keys)
        return UnmaskReply(self.config.round, self.client, seeds, keys)

    def _open(self, share: EncryptedShare) -> None:
        """Decrypt a neighbour's share for us and keep it."""
        sender = share.sender
        if share.recipient != self.client or sender not in self._cipher_keys:
            raise ValueError(
                f"client {self.client}: a share from {sender} to {share.recipient} is not "
                "for this client from a neighbour with keys"
            )
        if sender in self._held:
            raise ValueError(f"client {self.client}: two shares from client {sender}")
        key = self._cipher_keys[sender]
        payload = decrypt(key, share.ciphertext, self.config.round, sender, self.client)
        if len(payload) != 2 * _SECRET_BYTES:
            raise ValueError(f"client {self.client}: the share from {sender} has a bad length")
        point = self.client + 1
        self._held[sender] = (
            Share.from_bytes(point, payload[:_SECRET_BYTES], KEY_BYTES),
            Share.from_bytes(point, payload[_SECRET_BYTES:], KEY_BYTES),
        )

    def _check(self, rnd: int, client: int, what: str) -> None:
        if rnd != self.config.round or client != self.client:
            raise ValueError(
                f"client {self.client} of round {self.config.round} got {what} for client "
                f"{client} of round {rnd}"
            )

    def _advance(self, stage: int, name: str) -> None:
        if self._stage != stage - 1:
            raise RuntimeError(
                f"client {self.client}: {name} is stage {stage}, but the client is at stage "
                f"{self._stage}"
            )
        self._stage = stage
