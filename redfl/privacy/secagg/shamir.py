"""Shamir secret sharing of byte strings over the prime field of ``2^127 - 1``.

Shamir, "How to Share a Secret", CACM 1979. A secret is cut into chunks of
:data:`CHUNK_BYTES` bytes, each read as one field element; every chunk gets its own random
polynomial of degree ``threshold - 1`` whose constant term is the chunk, and the share of
holder ``x`` is the value of every polynomial at ``x``. Any ``threshold`` shares give the
polynomials back (Lagrange interpolation at 0); fewer are consistent with every possible
secret, so they say nothing about it. A 32-byte secret takes three field elements.

The coefficients come from :mod:`secrets` (the operating system's random source).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PRIME = 2**127 - 1
"""The field modulus: the Mersenne prime ``2^127 - 1``."""

CHUNK_BYTES = 15
"""Bytes of secret per field element (120 bits, below the 127 bits of the field)."""

ELEMENT_BYTES = 16
"""Bytes of one field element on the wire (big-endian)."""


@dataclass(frozen=True)
class Share:
    """One holder's share of a secret.

    Attributes
    ----------
    x:
        The holder's evaluation point, in ``[1, PRIME)``.
    values:
        One field element per chunk of the secret.
    length:
        The secret's length in bytes.
    """

    x: int
    values: tuple[int, ...]
    length: int

    def to_bytes(self) -> bytes:
        """The values, :data:`ELEMENT_BYTES` big-endian bytes each (``x`` and ``length``
        travel separately)."""
        return b"".join(value.to_bytes(ELEMENT_BYTES, "big") for value in self.values)

    @classmethod
    def from_bytes(cls, x: int, data: bytes, length: int) -> Share:
        """The share of holder ``x`` of a ``length``-byte secret, read from :meth:`to_bytes`.

        Raises
        ------
        ValueError
            If ``data`` does not hold one element per chunk of such a secret, or an
            element is not below :data:`PRIME`.
        """
        chunks = chunk_count(length)
        if len(data) != chunks * ELEMENT_BYTES:
            raise ValueError(
                f"a share of a {length}-byte secret has {chunks * ELEMENT_BYTES} bytes, "
                f"got {len(data)}"
            )
        values = tuple(
            int.from_bytes(data[i : i + ELEMENT_BYTES], "big")
            for i in range(0, len(data), ELEMENT_BYTES)
        )
        if any(value >= PRIME for value in values):
            raise ValueError("a share value is not an element of the field")
        return cls(x, values, length)


def chunk_count(length: int) -> int:
    """How many field elements hold a secret of ``length`` bytes."""
    return -(-length // CHUNK_BYTES)


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Share ``secret`` among the holders ``xs`` so that any ``threshold`` of them recover it.

    Parameters
    ----------
    secret:
        The bytes to share (at least one; 32 in secure aggregation).
    threshold:
        t, in ``[1, len(xs)]``: how many shares reconstruct the secret.
    xs:
        The holders' evaluation points: distinct integers in ``[1, PRIME)``.

    Returns
    -------
    list of Share
        One share per holder, in the order of ``xs``.

    Raises
    ------
    ValueError
        If the threshold or the points are out of bounds.

    Examples
    --------
    >>> shares = split(b"0123456789abcdef0123456789abcdef", 3, [1, 2, 3, 4, 5])
    >>> reconstruct([shares[4], shares[0], shares[2]], 3)
    b'0123456789abcdef0123456789abcdef'
    """
    points = list(xs)
    if not secret:
        raise ValueError("the secret to share is empty")
    if len(set(points)) != len(points):
        raise ValueError(f"share points must be distinct, got {points}")
    if any(not 0 < x < PRIME for x in points):
        raise ValueError("share points must be in [1, 2^127 - 1)")
    if not 1 <= threshold <= len(points):
        raise ValueError(
            f"threshold must be in [1, {len(points)}] (the number of holders), got {threshold}"
        )
    chunks = [
        int.from_bytes(secret[i : i + CHUNK_BYTES], "big")
        for i in range(0, len(secret), CHUNK_BYTES)
    ]
    polynomials = [
        [chunk, *(secrets.randbelow(PRIME) for _ in range(threshold - 1))] for chunk in chunks
    ]
    shares = []
    for x in points:
        values = []
        for coefficients in polynomials:
            value = 0
            for coefficient in reversed(coefficients):
                value = (value * x + coefficient) % PRIME
            values.append(value)
        shares.append(Share(x, tuple(values), len(secret)))
    return shares


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """The Lagrange coefficients that interpolate a polynomial through ``xs`` at 0.

    ``f(0) = sum_j coefficient_j * f(x_j)`` for any polynomial of degree below
    ``len(xs)``. One modular inverse in all (the denominators are inverted together).

    Examples
    --------
    >>> c = lagrange_at_zero([1, 2])  # f(0) = 2 f(1) - f(2) for a line
    >>> [value if value < PRIME // 2 else value - PRIME for value in c]
    [2, -1]
    """
    numerators = []
    denominators = []
    for j, xj in enumerate(xs):
        numerator = denominator = 1
        for m, xm in enumerate(xs):
            if m != j:
                numerator = numerator * xm % PRIME
                denominator = denominator * (xm - xj) % PRIME
        numerators.append(numerator)
        denominators.append(denominator)
    # Montgomery's trick: invert the product once, then peel off each denominator.
    prefix = [1]
    for denominator in denominators:
        prefix.append(prefix[-1] * denominator % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    inverses = [0] * len(denominators)
    for j in range(len(denominators) - 1, -1, -1):
        inverses[j] = inverse * prefix[j] % PRIME
        inverse = inverse * denominators[j] % PRIME
    return [n * i % PRIME for n, i in zip(numerators, inverses, strict=True)]


def reconstruct(shares: Iterable[Share], threshold: int) -> bytes:
    """The secret behind ``threshold`` or more shares (the ``threshold`` of lowest ``x``).

    Raises
    ------
    ValueError
        With fewer than ``threshold`` shares (the secret is then undetermined), or shares
        that do not belong together (repeated points, different lengths).
    """
    return reconstruct_many([shares], threshold)[0]


def reconstruct_many(groups: Iterable[Iterable[Share]], threshold: int) -> list[bytes]:
    """:func:`reconstruct` for several secrets; groups held at the same points share one
    set of Lagrange coefficients (computed once)."""
    coefficients: dict[tuple[int, ...], list[int]] = {}
    secrets_out = []
    for group in groups:
        chosen = _choose(list(group), threshold)
        xs = tuple(share.x for share in chosen)
        if xs not in coefficients:
            coefficients[xs] = lagrange_at_zero(xs)
        weights = coefficients[xs]
        length = chosen[0].length
        chunks = []
        for index in range(chunk_count(length)):
            value = sum(w * share.values[index] for w, share in zip(weights, chosen, strict=True))
            chunks.append(value % PRIME)
        secrets_out.append(_join(chunks, length))
    return secrets_out


def _choose(shares: list[Share], threshold: int) -> list[Share]:
    """The ``threshold`` shares of lowest point, after checking that they belong together."""
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    if len(shares) < threshold:
        raise ValueError(
            f"{len(shares)} shares cannot reconstruct a secret of threshold {threshold}: "
            f"{threshold} are needed"
        )
    if len({share.x for share in shares}) != len(shares):
        raise ValueError("two shares have the same point")
    lengths = {share.length for share in shares}
    if len(lengths) != 1:
        raise ValueError(f"the shares belong to secrets of different lengths {sorted(lengths)}")
    chunks = chunk_count(shares[0].length)
    if any(len(share.values) != chunks for share in shares):
        raise ValueError(f"a share of a {shares[0].length}-byte secret needs {chunks} values")
    return sorted(shares, key=lambda share: share.x)[:threshold]


def _join(chunks: list[int], length: int) -> bytes:
    """The secret's bytes from its chunks (the last chunk may be shorter)."""
    out = bytearray()
    for index, chunk in enumerate(chunks):
        size = min(CHUNK_BYTES, length - index * CHUNK_BYTES)
        if size <= 0 or chunk >= 1 << (8 * size):
            raise ValueError("the shares do not interpolate to a secret of this length")
        out += chunk.to_bytes(size, "big")
    return bytes(out)
