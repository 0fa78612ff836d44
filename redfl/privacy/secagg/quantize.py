"""Fixed-point encoding of a weighted update as integers modulo ``2^32`` or ``2^64``.

Masks only cancel in a ring, so each client turns its update into integers. With
``Q = 2^(bits-1) - 1`` and ``W = max_weight``, a client of weight ``w`` (in ``[0, W]``)
and update ``x`` sends the vector

    round(Q * (w / W) * clip(x, -c, c) / c)   (one entry per coordinate)
    round(Q * w / W)                          (one last entry: the weight)

whose entries lie in ``[-Q, Q]``: the weighted update and the weight are masked
together, so the sum gives ``sum_i w_i x_i`` and ``sum_i w_i`` and the server divides.
The sum of ``n`` such vectors (plus noise, see below) stays in ``[-n Q - margin,
n Q + margin]``; the entries are kept modulo ``2^m`` and the sum is read back as a signed
``m``-bit integer, which is exact while ``n Q + margin < 2^(m-1)``. :class:`Quantizer`
checks that when it is made.

Error bound, per coordinate, for ``n`` summed clients (rounding only; coordinates beyond
``+-c`` are clipped first, a bias the bound does not count):

    |decoded sum_i w_i x_i - sum_i w_i clip(x_i)| <= n W c / (2 Q)
    |decoded sum_i w_i - sum_i w_i|                <= n W / (2 Q)

With equal weights ``w_i = W`` the weight is exact and the mean's error is at most
``c / (2 Q)`` per coordinate. A client's weight must not exceed ``max_weight`` (it is
refused otherwise): choose ``W`` as the largest weight expected (e.g. the largest local
example count), knowing that the error grows with it.

Which modulus: ``2^32`` halves the bytes sent and the keystream drawn, and with the
default ``bits=20`` holds the sum of up to 4,095 clients (``4095 * (2^19 - 1) < 2^31``);
use ``modulus_bits=64`` for more clients, more bits, or large distributed noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from redfl.core.arrays import Parameters

Layout = tuple[tuple[str, tuple[int, ...]], ...]
"""The names and shapes of the parameters, in the order they are laid out in the vector."""

NOISE_SIGMAS = 20.0
"""Room kept for distributed noise, in standard deviations of the summed noise (plus as
many integers): by Bernstein's inequality one coordinate's noise leaves it with
probability below ``e^-50``."""


def layout_of(parameters: Mapping[str, np.ndarray]) -> Layout:
    """The layout of ``parameters``: its names and shapes, in its order."""
    return tuple(
        (name, tuple(int(d) for d in np.shape(array))) for name, array in parameters.items()
    )


def layout_size(layout: Layout) -> int:
    """The number of coordinates of a layout (without the weight entry)."""
    return sum(math.prod(shape) for _, shape in layout)


@dataclass(frozen=True)
class Quantizer:
    """Fixed-point encoding of weighted updates for a sum of ``clients`` of them.

    Parameters
    ----------
    clients:
        n, the most vectors that will be summed (the round's clients), >= 1.
    clip:
        c > 0: each coordinate is clipped to ``[-c, c]``.
    bits:
        Bits of each entry, sign included, in ``[2, modulus_bits - 1]``: ``Q = 2^(bits-1)
        - 1``.
    modulus_bits:
        m, 32 or 64: entries are ``uint32`` or ``uint64`` modulo ``2^m``.
    max_weight:
        W > 0, the largest weight a client may have.
    noise_variance:
        The variance, in integer units, of the noise each client adds to each coordinate
        (0 without distributed noise); room is kept for the noise of ``clients`` of them.

    Raises
    ------
    ValueError
        If a setting is out of its bounds, or ``clients * Q`` plus the noise room does
        not fit the signed range of the modulus (the message names the settings).
    """

    clients: int
    clip: float = 1.0
    bits: int = 20
    modulus_bits: int = 32
    max_weight: float = 1.0
    noise_variance: float = 0.0

    def __post_init__(self) -> None:
        if self.modulus_bits not in (32, 64):
            raise ValueError(f"modulus_bits must be 32 or 64, got {self.modulus_bits}")
        if not 2 <= self.bits <= self.modulus_bits - 1:
            raise ValueError(f"bits must be in [2, {self.modulus_bits - 1}], got {self.bits}")
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if not 0 < self.clip < math.inf:
            raise ValueError(f"clip must be > 0 and finite, got {self.clip}")
        if not 0 < self.max_weight < math.inf:
            raise ValueError(f"max_weight must be > 0 and finite, got {self.max_weight}")
        if not 0 <= self.noise_variance < math.inf:
            raise ValueError(f"noise_variance must be >= 0, got {self.noise_variance}")
        largest = self.clients * self.levels + self.noise_margin
        limit = 2 ** (self.modulus_bits - 1) - 1
        if largest > limit:
            noise = f" + noise room {self.noise_margin}" if self.noise_margin else ""
            raise ValueError(
                f"the sum of {self.clients} clients can reach {self.clients} * (2^{self.bits - 1}"
                f" - 1){noise} = {largest}, beyond the signed range of modulus "
                f"2^{self.modulus_bits} ({limit}): lower bits ({self.bits}) or clients "
                f"({self.clients}), or set modulus_bits=64"
            )

    @property
    def levels(self) -> int:
        """Q, the largest magnitude of one encoded entry."""
        return (1 << (self.bits - 1)) - 1

    @property
    def scale(self) -> float:
        """Integers per unit of a coordinate: ``Q / c``."""
        return self.levels / self.clip

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        """The entries' type: ``np.uint32`` or ``np.uint64``."""
        return np.uint32 if self.modulus_bits == 32 else np.uint64

    @property
    def noise_margin(self) -> int:
        """Room kept for the summed noise of ``clients`` clients, in integers."""
        if self.noise_variance == 0:
            return 0
        return math.ceil(NOISE_SIGMAS * (math.sqrt(self.clients * self.noise_variance) + 1))

    def encode(
        self,
        parameters: Mapping[str, np.ndarray],
        weight: float,
        layout: Layout,
        l2_clip: float | None = None,
    ) -> np.ndarray:
        """The signed integer vector (``int64``) of ``weight * parameters`` and ``weight``.

        Each coordinate is clipped to ``[-clip, clip]``, then, with ``l2_clip``, the whole
        update is scaled down to L2 norm ``l2_clip`` if it is longer (distributed noise
        needs that bound).

        Raises
        ------
        ValueError
            If the parameters do not match ``layout``, hold NaN or infinity, or the
            weight is not in ``[0, max_weight]``.
        """
        if not 0 <= weight <= self.max_weight:
            raise ValueError(f"weight must be in [0, max_weight={self.max_weight}], got {weight}")
        flat = flatten(parameters, layout)
        if not np.isfinite(flat).all():
            raise ValueError("the update contains NaN or infinity")
        share = weight / self.max_weight
        np.clip(flat, -self.clip, self.clip, out=flat)
        if l2_clip is not None:
            norm = float(np.linalg.norm(flat))
            if norm > l2_clip:
                flat *= l2_clip / norm
        flat *= share * self.scale
        encoded = np.empty(flat.size + 1, np.int64)
        np.rint(flat, out=flat)
        encoded[:-1] = flat
        encoded[-1] = round(share * self.levels)
        return encoded

    def to_ring(self, encoded: np.ndarray) -> np.ndarray:
        """Signed integers as entries modulo ``2^m`` (two's complement, no copy for 64)."""
        return encoded.astype(self.dtype)

    def decode(self, total: np.ndarray, layout: Layout) -> tuple[Parameters, float]:
        """The weighted sum (float64 parameters) and total weight of an unmasked sum."""
        signed = total.view(np.int32 if self.modulus_bits == 32 else np.int64).astype(np.float64)
        values = signed[:-1] * (self.max_weight / self.scale)
        weight = float(signed[-1]) * (self.max_weight / self.levels)
        return unflatten(values, layout), weight


def flatten(parameters: Mapping[str, np.ndarray], layout: Layout) -> np.ndarray:
    """One float64 vector of ``parameters`` in the order of ``layout``.

    Raises
    ------
    ValueError
        If the names or shapes differ from ``layout``.
    """
    names = [name for name, _ in layout]
    if set(parameters) != set(names):
        missing = sorted(set(names) - set(parameters))
        extra = sorted(set(parameters) - set(names))
        raise ValueError(f"parameter names differ: missing {missing}, unexpected {extra}")
    flat = np.empty(layout_size(layout), np.float64)
    start = 0
    for name, shape in layout:
        array = np.asarray(parameters[name])
        if array.shape != shape:
            raise ValueError(f"parameter {name!r} has shape {array.shape}, expected {shape}")
        flat[start : start + array.size] = array.reshape(-1)
        start += array.size
    return flat


def unflatten(values: np.ndarray, layout: Layout) -> Parameters:
    """The arrays of ``layout`` cut out of ``values`` (views, in order)."""
    out: Parameters = {}
    start = 0
    for name, shape in layout:
        size = math.prod(shape)
        out[name] = values[start : start + size].reshape(shape)
        start += size
    return out


def ring_sum(vectors: Sequence[np.ndarray], dtype: type[np.unsignedinteger]) -> np.ndarray:
    """The entrywise sum modulo ``2^m`` of integer vectors (signed or not), as ``dtype``."""
    total = np.zeros(vectors[0].shape, dtype)
    for vector in vectors:
        total += vector.astype(dtype)
    return total
