"""The public parameters of one secure aggregation round, shared by the server and clients."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from redfl.privacy.secagg.dp import MAX_VARIANCE, DistributedSkellam
from redfl.privacy.secagg.graph import (
    check_neighbours,
    choose_neighbourhood,
    harary_graph,
    neighbours_of,
)
from redfl.privacy.secagg.keys import KEY_BYTES
from redfl.privacy.secagg.quantize import Layout, Quantizer, layout_of, layout_size

Stage = Literal["advertise_keys", "share_keys", "masked_input", "unmasking"]
"""A stage of the protocol, named after what the clients send in it."""

STAGES: tuple[Stage, ...] = ("advertise_keys", "share_keys", "masked_input", "unmasking")
"""The stages in order."""

MAX_ID = 2**63 - 1
"""The largest client id (ids travel as 64-bit integers; a Shamir point is ``id + 1``)."""


@dataclass(frozen=True)
class SecAggConfig:
    """Everything public about a round: who takes part, the graph, thresholds, encoding.

    The server makes it and sends the same object to every client (it pickles). Prefer
    :meth:`create`, which fills the graph and threshold from the number of clients.

    Attributes
    ----------
    clients:
        The round's client ids, sorted, distinct, in ``[0, 2^63)``.
    layout:
        The names and shapes of the parameters summed.
    quantizer:
        The fixed-point encoding (its ``clients`` is ``len(clients)``).
    neighbours:
        k: each client's neighbours in the graph (``len(clients) - 1``: SecAgg).
    threshold:
        t in ``[1, k]``: shares needed to rebuild a client's secret; up to ``t - 1``
        neighbours of a client, with the server, learn nothing of it.
    min_survivors:
        The fewest masked inputs the server may unmask (the smallest sum it may learn).
    round:
        The round number, bound into every derived key and encrypted share.
    seed:
        32 public random bytes of the round: they order the graph and salt the keys.
    noise:
        Distributed Skellam noise, or ``None``; its per-client variance must be the
        quantiser's ``noise_variance``.
    """

    clients: tuple[int, ...]
    layout: Layout
    quantizer: Quantizer
    neighbours: int
    threshold: int
    min_survivors: int
    round: int = 0
    seed: bytes = field(default_factory=lambda: os.urandom(KEY_BYTES), repr=False)
    noise: DistributedSkellam | None = None

    def __post_init__(self) -> None:
        n = len(self.clients)
        if list(self.clients) != sorted(set(self.clients)):
            raise ValueError("clients must be sorted and distinct")
        if any(not 0 <= c <= MAX_ID for c in self.clients):
            raise ValueError(f"client ids must be integers in [0, {MAX_ID}]")
        check_neighbours(n, self.neighbours)
        if not 1 <= self.threshold <= self.neighbours:
            raise ValueError(
                f"threshold must be in [1, neighbours={self.neighbours}], got {self.threshold}"
            )
        if not 1 <= self.min_survivors <= n:
            raise ValueError(f"min_survivors must be in [1, {n}], got {self.min_survivors}")
        if self.quantizer.clients != n:
            raise ValueError(f"the quantizer is set for {self.quantizer.clients} clients, not {n}")
        if len(self.seed) != KEY_BYTES:
            raise ValueError(f"seed must have {KEY_BYTES} bytes, got {len(self.seed)}")
        if not 0 <= self.round <= MAX_ID:
            raise ValueError(f"round must be in [0, {MAX_ID}], got {self.round}")
        variance = 0.0 if self.noise is None else self.noise.client_variance(self.quantizer.scale)
        if variance > MAX_VARIANCE:
            raise ValueError(
                f"the noise needs a variance of {variance:.3g} integers per client and "
                f"coordinate, above the {MAX_VARIANCE:g} drawn exactly: lower bits "
                f"({self.quantizer.bits}) or raise clip ({self.quantizer.clip:g})"
            )
        if self.quantizer.noise_variance != variance:
            raise ValueError(
                f"the quantizer keeps room for noise of variance {self.quantizer.noise_variance}"
                f" per client, the noise adds {variance}"
            )
        if self.noise is not None and self.noise.honest_clients > self.min_survivors:
            raise ValueError(
                f"the noise is calibrated for {self.noise.honest_clients} honest clients but a "
                f"sum may have only min_survivors={self.min_survivors}"
            )

    @classmethod
    def create(
        cls,
        clients: Iterable[int],
        parameters: Mapping[str, np.ndarray] | Layout,
        *,
        rnd: int = 0,
        seed: bytes | None = None,
        neighbours: int | None = None,
        threshold: int | None = None,
        min_survivors: int | None = None,
        clip: float = 1.0,
        bits: int = 20,
        modulus_bits: int = 32,
        max_weight: float = 1.0,
        noise: DistributedSkellam | None = None,
        dropout: float = 0.1,
        corrupted: float = 0.05,
    ) -> SecAggConfig:
        """The config of a round of ``clients`` summing parameters shaped like ``parameters``.

        Parameters
        ----------
        clients:
            The round's client ids.
        parameters:
            Parameters (only names and shapes are read) or their :data:`Layout`.
        rnd:
            The round number.
        seed:
            The round's 32 public random bytes; fresh ones when ``None``.
        neighbours, threshold:
            ``None`` and ``None``: chosen by
            :func:`~redfl.privacy.secagg.graph.choose_neighbourhood` from the number of
            clients, ``dropout`` and ``corrupted``. A given ``threshold`` overrides the
            chosen one; given ``neighbours`` without threshold takes a majority of them.
        min_survivors:
            Default: the threshold, or the noise's ``honest_clients`` if larger.
        clip, bits, modulus_bits, max_weight:
            The :class:`~redfl.privacy.secagg.quantize.Quantizer` settings.
        noise:
            Distributed noise (see :mod:`redfl.privacy.secagg.dp`), or ``None``.
        dropout, corrupted:
            The fractions of dropped and colluding clients the chosen graph withstands.

        Examples
        --------
        >>> config = SecAggConfig.create(range(100), {"w": np.zeros((3, 4))})
        >>> config.neighbours, config.threshold, config.size
        (16, 7, 12)
        """
        ids = tuple(sorted(clients))
        if neighbours is None:
            neighbours, chosen = choose_neighbourhood(
                len(ids), dropout=dropout, corrupted=corrupted
            )
            threshold = chosen if threshold is None else threshold
        elif threshold is None:
            threshold = neighbours // 2 + 1
        if min_survivors is None:
            honest = 0 if noise is None else noise.honest_clients
            min_survivors = min(len(ids), max(threshold, honest))
        quantizer = Quantizer(len(ids), clip, bits, modulus_bits, max_weight)
        if noise is not None:
            variance = noise.client_variance(quantizer.scale)
            quantizer = Quantizer(len(ids), clip, bits, modulus_bits, max_weight, variance)
        layout = parameters if isinstance(parameters, tuple) else layout_of(parameters)
        return cls(
            clients=ids,
            layout=layout,
            quantizer=quantizer,
            neighbours=neighbours,
            threshold=threshold,
            min_survivors=min_survivors,
            round=rnd,
            seed=os.urandom(KEY_BYTES) if seed is None else seed,
            noise=noise,
        )

    @property
    def size(self) -> int:
        """The number of coordinates summed (without the weight entry)."""
        return layout_size(self.layout)

    def graph(self) -> dict[int, frozenset[int]]:
        """The round's communication graph (the same for everyone who holds this config)."""
        return harary_graph(self.clients, self.neighbours, self.seed)

    def neighbours_of(self, client: int) -> frozenset[int]:
        """One client's neighbours in :meth:`graph`."""
        return neighbours_of(self.clients, self.neighbours, self.seed, client)
