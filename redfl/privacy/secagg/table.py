"""The ``[secure_aggregation]`` table: its presence turns secure aggregation on for a run.

Every key has a default that is sound for any number of clients, so an empty table is
enough:

.. code-block:: toml

    [secure_aggregation]          # the server learns only the sum of the updates

The graph degree ``neighbours`` and the ``threshold`` are chosen each round from the
number of sampled clients and the fractions of clients assumed to drop (``dropout``) and
to collude with the server (``corrupted``), unless given
(:func:`~redfl.privacy.secagg.graph.choose_neighbourhood`). What is masked is each client's
*update*, its new parameters minus the round's global parameters, weighted by its number
of examples (at most ``max_weight``; a client with more is a recorded failure) and
encoded with ``bits`` bits per entry after clipping each coordinate to ``[-clip, clip]``,
modulo ``2^modulus_bits`` (:class:`~redfl.privacy.secagg.quantize.Quantizer`). The server
adds the total weight times the global parameters back to the unmasked sum, so a
weighted-sum strategy aggregates the same :class:`~redfl.core.arrays.WeightedSum` as
without secure aggregation, up to the quantisation error (the bound is in
:mod:`~redfl.privacy.secagg.quantize`).

Distributed differential privacy: ``noise_multiplier > 0`` makes each client add Skellam
noise to its encoded update, calibrated so that the sum of ``honest_clients`` clients'
noise has the standard deviation ``noise_multiplier * l2_clip`` (each update is clipped
to L2 norm ``l2_clip`` first) and every client weighs the same
(:mod:`~redfl.privacy.secagg.dp`); the run then reports ``epsilon`` for ``delta``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.config import Strict
from redfl.privacy.secagg.config import SecAggConfig
from redfl.privacy.secagg.dp import DistributedSkellam
from redfl.privacy.secagg.local import LocalRound
from redfl.privacy.secagg.messages import SecAggResult
from redfl.privacy.secagg.quantize import Layout, layout_of


class SecureAggregationConfig(Strict):
    """The ``[secure_aggregation]`` table (see the module docstring).

    Attributes
    ----------
    neighbours:
        k, each client's neighbours in the round's graph (an even number below the
        round's clients minus one, or that number: SecAgg's complete graph, which a
        larger value becomes); default: chosen from the round's clients, ``dropout``
        and ``corrupted``.
    threshold:
        t, the shares that rebuild a client's secrets; default: chosen with ``neighbours``.
    min_survivors:
        The fewest inputs a sum may hold; default: the threshold, or, with noise, the
        clients expected to survive (``(1 - dropout)`` of the round).
    dropout, corrupted:
        The fractions of a round's clients assumed to drop and to collude with the server.
    clip:
        c: each coordinate of an update (new minus global parameters) is clipped to
        ``[-clip, clip]`` before it is encoded.
    bits, modulus_bits:
        Bits of an encoded entry (sign included; default 32, or 20 with noise or modulo
        ``2^32``) and of the ring (32 or 64).
    max_weight:
        The largest weight (number of examples) a client may have.
    noise_multiplier, l2_clip, honest_clients, delta:
        Distributed Skellam noise (off at 0): the summed noise's standard deviation over
        ``l2_clip``, the L2 bound of each update, the fewest non-colluding clients whose
        noise is in a sum (default: ``min_survivors`` minus the colluders assumed), and
        the delta of the reported epsilon.
    stage_timeout:
        Seconds a worker may take to answer one stage; past it, its clients count as
        dropped at that stage (default: no limit).
    """

    neighbours: int | None = Field(default=None, ge=2, le=1_000_000)
    threshold: int | None = Field(default=None, ge=1, le=1_000_000)
    min_survivors: int | None = Field(default=None, ge=1, le=1_000_000)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    corrupted: float = Field(default=0.05, ge=0.0, lt=1.0)
    clip: float = Field(default=8.0, gt=0.0, allow_inf_nan=False)
    bits: int | None = Field(default=None, ge=2, le=63)
    modulus_bits: Literal[32, 64] = 64
    max_weight: float = Field(default=1000.0, gt=0.0, allow_inf_nan=False)
    noise_multiplier: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    l2_clip: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    honest_clients: int | None = Field(default=None, ge=1, le=1_000_000)
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    stage_timeout: float | None = Field(default=None, gt=0.0, le=86_400.0)

    @model_validator(mode="after")
    def _consistent(self) -> SecureAggregationConfig:
        if self.entry_bits > self.modulus_bits - 1:
            raise ValueError(
                f"bits ({self.entry_bits}) must be at most modulus_bits - 1 "
                f"({self.modulus_bits - 1})"
            )
        if (
            self.neighbours is not None
            and self.threshold is not None
            and self.threshold > self.neighbours
        ):
            raise ValueError(
                f"threshold ({self.threshold}) must be at most neighbours ({self.neighbours})"
            )
        return self

    @property
    def entry_bits(self) -> int:
        """The bits of an encoded entry: ``bits``, or by default 32 modulo ``2^64`` and 20
        modulo ``2^32`` (whose sum then holds 4,095 clients) or with noise (whose spread
        dwarfs the rounding, and whose draws must stay below
        :data:`~redfl.privacy.secagg.dp.MAX_VARIANCE`)."""
        if self.bits is not None:
            return self.bits
        return 20 if self.noisy or self.modulus_bits == 32 else 32

    @property
    def noisy(self) -> bool:
        """Whether clients add distributed noise (then every client weighs the same)."""
        return self.noise_multiplier > 0

    def weight(self, examples: float) -> float:
        """A client's weight in the sum: its examples, or 1 with noise."""
        return 1.0 if self.noisy else float(examples)

    def round_config(
        self, clients: Sequence[int], layout: Layout, rnd: int, seed: bytes
    ) -> SecAggConfig:
        """The public parameters of a round of ``clients`` summing updates of ``layout``.

        Raises
        ------
        ValueError
            If the settings do not fit this many clients (a ``neighbours``, ``threshold``
            or ``min_survivors`` too large, a sum too large for ``modulus_bits``), naming
            them.
        """
        n = len(clients)
        if n < 2:
            raise ValueError(f"secure aggregation needs at least 2 clients a round, got {n}")
        noise = None
        min_survivors = self.min_survivors
        if self.noisy:
            if min_survivors is None:
                min_survivors = max(2, n - math.ceil(self.dropout * n))
            honest = self.honest_clients or max(1, min_survivors - math.ceil(self.corrupted * n))
            noise = DistributedSkellam(self.noise_multiplier, self.l2_clip, honest)
        if min_survivors is not None:
            min_survivors = min(min_survivors, n)
        neighbours = None if self.neighbours is None else min(self.neighbours, n - 1)
        return SecAggConfig.create(
            clients,
            layout,
            rnd=rnd,
            seed=seed,
            neighbours=neighbours,
            threshold=self.threshold,
            min_survivors=min_survivors,
            clip=self.clip,
            bits=self.entry_bits,
            modulus_bits=self.modulus_bits,
            max_weight=1.0 if self.noisy else self.max_weight,
            noise=noise,
            dropout=self.dropout,
            corrupted=self.corrupted,
        )


def secure_sum(
    table: SecureAggregationConfig,
    current: Parameters,
    updates: Mapping[int, tuple[Parameters, float]],
    rnd: int,
) -> WeightedSum:
    """The sum of ``updates`` (client id -> new parameters and examples) as a secure
    round in this process computes it: each update minus ``current``, weighted, encoded,
    masked and unmasked; then the total weight times ``current`` added back.

    A hierarchy's LCP sums its clients so (its aggregator learns only their sum).

    Raises
    ------
    ValueError
        For fewer than 2 updates, or a weight above ``max_weight``.
    """
    config = table.round_config(sorted(updates), layout_of(current), rnd, os.urandom(32))
    deltas = {
        client: (
            {k: np.subtract(v, current[k], dtype=np.float64) for k, v in parameters.items()},
            table.weight(examples),
        )
        for client, (parameters, examples) in updates.items()
    }
    return parameters_sum(LocalRound(config).run(deltas), current)


def parameters_sum(result: SecAggResult, current: Parameters) -> WeightedSum:
    """The unmasked sum of updates as the sum of the clients' parameters a weighted-sum
    strategy aggregates: ``sum_i w_i (x_i - g) + (sum_i w_i) g``, weight ``sum_i w_i``."""
    sums = {
        name: result.sums[name] + result.weight * np.asarray(array, np.float64)
        for name, array in current.items()
    }
    return WeightedSum(sums, result.weight, len(result.survivors))
