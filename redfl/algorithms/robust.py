"""Byzantine-robust aggregation: coordinate-wise median and trimmed mean, Krum, Multi-Krum,
Bulyan. They need every update, so workers do not pre-aggregate (``weighted_sum = False``).

- Median and trimmed mean: Yin et al., "Byzantine-Robust Distributed Learning: Towards
  Optimal Statistical Rates", ICML 2018.
- Krum, Multi-Krum: Blanchard et al., "Machine Learning with Adversaries: Byzantine
  Tolerant Gradient Descent", NeurIPS 2017.
- Bulyan: El Mhamdi et al., "The Hidden Vulnerability of Distributed Learning in
  Byzantium", ICML 2018.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from redfl.algorithms.strategy import ClientUpdate, ParameterError, Strategy, require
from redfl.core.arrays import Parameters


def stacked(updates: Sequence[ClientUpdate], name: str) -> np.ndarray:
    """Array ``name`` of every update, stacked on a new first axis, in float64."""
    return np.stack([np.asarray(u.parameters[name], dtype=np.float64) for u in updates])


def squared_distances(vectors: np.ndarray) -> np.ndarray:
    """The matrix of squared L2 distances between the rows of ``vectors``."""
    squares = np.einsum("ij,ij->i", vectors, vectors)
    return np.asarray(
        np.maximum(squares[:, None] + squares[None, :] - 2 * vectors @ vectors.T, 0.0)
    )


def krum_scores(distances: np.ndarray, f: int) -> np.ndarray:
    """Each row's sum of squared distances to its ``n - f - 2`` nearest other rows."""
    closest = max(1, len(distances) - f - 2)
    ordered = np.sort(distances, axis=1)[:, 1 : closest + 1]  # column 0: the row itself
    return np.asarray(ordered.sum(axis=1))


def flatten(updates: Sequence[ClientUpdate], names: Sequence[str]) -> np.ndarray:
    """One row per update: its arrays ``names`` raveled and concatenated (float64)."""
    return np.stack(
        [
            np.concatenate([np.ravel(u.parameters[k]).astype(np.float64) for k in names])
            for u in updates
        ]
    )


class _Robust(Strategy):
    """Shared: no pre-aggregation, and a minimum round size ``needed(f)`` checked early."""

    weighted_sum = False

    def __init__(self, f: int, needed: int, rule: str, min_fit_clients: int | None, **rest: Any):
        require(f >= 0, "f", f"must be >= 0, got {f}")
        if min_fit_clients is not None and min_fit_clients < needed:
            raise ParameterError(
                "f",
                f"{type(self).__name__} needs {rule} = {needed} clients per round for f={f}, "
                f"but min_fit_clients is {min_fit_clients}",
            )
        super().__init__(min_fit_clients=min_fit_clients or needed, **rest)
        self.f, self.needed, self.rule = f, needed, rule

    def check_round_size(self, clients: int) -> None:
        """Raise :class:`ParameterError` naming ``f`` if rounds of ``clients`` are too small."""
        require(
            clients >= self.needed,
            "f",
            f"{type(self).__name__} needs {self.rule} = {self.needed} clients per round for "
            f"f={self.f}, but a round has {clients}",
        )

    def _cast(self, current: Parameters, arrays: dict[str, np.ndarray]) -> Parameters:
        return {k: arrays[k].astype(current[k].dtype) for k in current}


class FedMedian(_Robust):
    """Coordinate-wise median of the updates (unweighted)."""

    def __init__(self, **sampling: Any) -> None:
        super().__init__(0, 1, "1", sampling.pop("min_fit_clients", None), **sampling)

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """The median of each coordinate."""
        return self._cast(current, {k: np.median(stacked(updates, k), axis=0) for k in current})


class FedTrimmedAvg(_Robust):
    """Coordinate-wise mean after dropping the ``floor(beta * n)`` lowest and highest values.

    Parameters
    ----------
    beta:
        The fraction cut at each end, in [0, 0.5).
    """

    def __init__(self, *, beta: float = 0.2, **sampling: Any) -> None:
        require(0 <= beta < 0.5, "beta", f"must be in [0, 0.5), got {beta}")
        super().__init__(0, 1, "1", sampling.pop("min_fit_clients", None), **sampling)
        self.beta = beta

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """The trimmed mean of each coordinate."""
        cut = int(self.beta * len(updates))
        out = {}
        for name in current:
            ordered = np.sort(stacked(updates, name), axis=0)
            out[name] = ordered[cut : len(updates) - cut].mean(axis=0)
        return self._cast(current, out)


class Krum(_Robust):
    """The update with the smallest sum of squared distances to its n - f - 2 neighbours.

    Parameters
    ----------
    f:
        Byzantine clients tolerated; a round needs n >= 2f + 3 clients.
    """

    def __init__(self, *, f: int = 1, **sampling: Any) -> None:
        super().__init__(f, 2 * f + 3, "2f + 3", sampling.pop("min_fit_clients", None), **sampling)

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """The Krum-selected update."""
        self.check_round_size(len(updates))
        distances = squared_distances(flatten(updates, list(current)))
        best = int(np.argmin(krum_scores(distances, self.f)))
        return self._cast(current, dict(updates[best].parameters))


class MultiKrum(_Robust):
    """The plain mean of the ``m`` updates with the lowest Krum scores.

    Parameters
    ----------
    f:
        Byzantine clients tolerated; a round needs n >= 2f + 3 clients.
    m:
        Updates averaged, 1 <= m <= n - f.
    """

    def __init__(self, *, f: int = 1, m: int = 2, **sampling: Any) -> None:
        minimum = sampling.pop("min_fit_clients", None)
        require(m >= 1, "m", f"must be >= 1, got {m}")
        super().__init__(f, max(2 * f + 3, m + f), "max(2f + 3, m + f)", minimum, **sampling)
        self.m = m

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """The mean of the ``m`` best-scored updates."""
        self.check_round_size(len(updates))
        scores = krum_scores(squared_distances(flatten(updates, list(current))), self.f)
        best = [updates[i] for i in np.argsort(scores, kind="stable")[: self.m]]
        return self._cast(current, {k: stacked(best, k).mean(axis=0) for k in current})


class Bulyan(_Robust):
    """Iterated Krum picks ``theta = n - 2f`` updates; each coordinate is then the mean of the
    ``theta - 2f`` selected values closest to their median.

    Parameters
    ----------
    f:
        Byzantine clients tolerated; a round needs n >= 4f + 3 clients.
    """

    def __init__(self, *, f: int = 1, **sampling: Any) -> None:
        super().__init__(f, 4 * f + 3, "4f + 3", sampling.pop("min_fit_clients", None), **sampling)

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """The Bulyan aggregate."""
        self.check_round_size(len(updates))
        distances = squared_distances(flatten(updates, list(current)))
        remaining = list(range(len(updates)))
        selected: list[ClientUpdate] = []
        for _ in range(len(updates) - 2 * self.f):  # Krum on the updates not yet selected
            scores = krum_scores(distances[np.ix_(remaining, remaining)], self.f)
            selected.append(updates[remaining.pop(int(np.argmin(scores)))])
        keep = len(selected) - 2 * self.f
        out = {}
        for name in current:
            values = stacked(selected, name)
            distance = np.abs(values - np.median(values, axis=0))
            nearest = np.argsort(distance, axis=0, kind="stable")[:keep]
            out[name] = np.take_along_axis(values, nearest, axis=0).mean(axis=0)
        return self._cast(current, out)
