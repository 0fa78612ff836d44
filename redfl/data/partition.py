"""Seeded partitioners that split a labelled data set into disjoint parts, one per client.

* :class:`IidPartitioner`: uniform random split into near-equal parts.
* :class:`DirichletPartitioner`: label skew; each class is spread over the parts with
  proportions drawn from a symmetric Dirichlet(alpha) (Hsu, Qi & Brown, "Measuring the Effects
  of Non-Identical Data Distribution for Federated Visual Classification", arXiv:1909.06335,
  2019). Small ``alpha`` means strong skew.
* :class:`ShardPartitioner`: "pathological non-IID" label-sorted shards (McMahan et al.,
  "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

PARTITIONER_NAMES: tuple[str, ...] = ("iid", "dirichlet", "shard")
"""Names accepted by :func:`partition_by_name`."""

_DIRICHLET_ATTEMPTS = 10


class Partitioner(Protocol):
    """Splits sample indices into disjoint parts, one per client."""

    def partition(self, labels: np.ndarray, num_parts: int) -> list[np.ndarray]:
        """Return ``num_parts`` disjoint, sorted int64 index arrays into ``labels``."""
        ...


def _check(labels: np.ndarray, num_parts: int) -> int:
    """Validate the common ``partition`` arguments and return the number of samples."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    n = int(labels.shape[0])
    if not 1 <= num_parts <= n:
        raise ValueError(f"num_parts must be >= 1 and <= number of samples ({n}), got {num_parts}")
    return n


@dataclass(frozen=True)
class IidPartitioner:
    """Uniformly random split into near-equal parts (sizes differ by at most one).

    Parameters
    ----------
    seed : int, default 0
        Seed of the shuffle.
    """

    seed: int = 0

    def partition(self, labels: np.ndarray, num_parts: int) -> list[np.ndarray]:
        """Shuffle all indices and cut them into ``num_parts`` near-equal sorted parts."""
        n = _check(labels, num_parts)
        perm = np.random.default_rng(self.seed).permutation(n).astype(np.int64)
        return [np.sort(p) for p in np.array_split(perm, num_parts)]


@dataclass(frozen=True)
class DirichletPartitioner:
    """Label-skewed split with per-class Dirichlet(alpha) proportions (Hsu et al., 2019).

    Parameters
    ----------
    alpha : float
        Concentration of the symmetric Dirichlet over parts, > 0. Smaller is more skewed.
    min_size : int, default 1
        Minimum number of samples per part, >= 0.
    seed : int, default 0
        Seed of all random draws.

    Notes
    -----
    The proportions are redrawn up to 10 times until every part holds ``min_size`` samples.
    If no draw satisfies it, the last draw is repaired (deterministically, from the same seeded
    generator): each short part, in index order, receives randomly chosen samples from the
    currently largest part, which never drops below ``min_size``. This slightly weakens the skew
    but always terminates quickly.
    """

    alpha: float
    min_size: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be > 0 (and finite), got {self.alpha}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")

    def partition(self, labels: np.ndarray, num_parts: int) -> list[np.ndarray]:
        """Split ``labels`` into ``num_parts`` label-skewed parts of at least ``min_size``."""
        n = _check(labels, num_parts)
        if num_parts * self.min_size > n:
            raise ValueError(
                f"min_size {self.min_size} is impossible: num_parts * min_size = "
                f"{num_parts} * {self.min_size} = {num_parts * self.min_size} > {n} samples"
            )
        rng = np.random.default_rng(self.seed)
        _, inverse = np.unique(labels, return_inverse=True)
        by_class = [np.flatnonzero(inverse == c) for c in range(int(inverse.max()) + 1)]
        parts, conc = np.arange(num_parts, dtype=np.int64), np.full(num_parts, self.alpha)
        assign = np.empty(n, dtype=np.int64)
        for _ in range(_DIRICHLET_ATTEMPTS):
            for idx in by_class:  # spread each class over the parts with Dir(alpha) proportions
                cuts = np.floor(np.cumsum(rng.dirichlet(conc)) * len(idx)).astype(np.int64)
                cuts[-1] = len(idx)
                assign[rng.permutation(idx)] = np.repeat(parts, np.diff(cuts, prepend=0))
            sizes = np.bincount(assign, minlength=num_parts)
            if sizes.min() >= self.min_size:
                break
        else:  # Top up short parts from the largest one, which exceeds min_size while a
            # deficit remains (because num_parts * min_size <= n), so this terminates.
            for part in np.flatnonzero(sizes < self.min_size):
                while sizes[part] < self.min_size:
                    donor = int(np.argmax(sizes))
                    k = int(min(self.min_size - sizes[part], sizes[donor] - self.min_size))
                    moved = rng.choice(np.flatnonzero(assign == donor), size=k, replace=False)
                    assign[moved] = part
                    sizes[donor] -= k
                    sizes[part] += k
        order = np.argsort(assign, kind="stable").astype(np.int64)  # sorted within each part
        return np.split(order, np.cumsum(sizes)[:-1])


@dataclass(frozen=True)
class ShardPartitioner:
    """Pathological non-IID split by label-sorted shards (McMahan et al., 2017).

    Parameters
    ----------
    shards_per_client : int, default 2
        Shards dealt to each part, >= 1.
    seed : int, default 0
        Seed of the random draws.

    Notes
    -----
    ``S = num_parts * shards_per_client`` shards of ``n // S`` samples are formed, so every part
    gets ``shards_per_client * (n // S)`` samples; ``n % S`` randomly chosen samples are dropped
    (in no part). Kept samples are sorted by label (ties randomly), so a shard spans at most two
    labels when no class has fewer kept samples than a shard.
    """

    shards_per_client: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shards_per_client < 1:
            raise ValueError(f"shards_per_client must be >= 1, got {self.shards_per_client}")

    def partition(self, labels: np.ndarray, num_parts: int) -> list[np.ndarray]:
        """Deal ``shards_per_client`` random label-sorted shards to each of ``num_parts``."""
        n = _check(labels, num_parts)
        num_shards = num_parts * self.shards_per_client
        if num_shards > n:
            raise ValueError(f"num_parts * shards_per_client = {num_shards} exceeds {n} samples")
        shard_size = n // num_shards
        rng = np.random.default_rng(self.seed)
        kept = rng.permutation(n)[: num_shards * shard_size].astype(np.int64)
        ordered = kept[np.argsort(labels[kept], kind="stable")]
        shards = ordered.reshape(num_shards, shard_size)
        dealt = rng.permutation(num_shards).reshape(num_parts, self.shards_per_client)
        return [np.sort(shards[row].ravel()) for row in dealt]


def partition_by_name(
    name: str, *, alpha: float, min_size: int, shards_per_client: int, seed: int
) -> Partitioner:
    """Build the partitioner called ``name``, one of :data:`PARTITIONER_NAMES`.

    Parameters
    ----------
    name : str
        ``"iid"``, ``"dirichlet"`` or ``"shard"``.
    alpha, min_size : float, int
        Used by ``"dirichlet"`` only, see :class:`DirichletPartitioner`.
    shards_per_client : int
        Used by ``"shard"`` only, see :class:`ShardPartitioner`.
    seed : int
        Seed of the partitioner.

    Raises
    ------
    ValueError
        If ``name`` is unknown or a parameter the chosen partitioner uses is invalid.
    """
    if name == "iid":
        return IidPartitioner(seed=seed)
    if name == "dirichlet":
        return DirichletPartitioner(alpha=alpha, min_size=min_size, seed=seed)
    if name == "shard":
        return ShardPartitioner(shards_per_client=shards_per_client, seed=seed)
    allowed = ", ".join(repr(a) for a in PARTITIONER_NAMES)
    raise ValueError(f"unknown partitioner name {name!r}; allowed names: {allowed}")
