"""The strategy interface: the server-side math of a star round.

A strategy configures each round (which clients, with which config), aggregates the
clients' updates and, optionally, evaluates. Strategies whose aggregate is an
example-weighted sum set ``weighted_sum = True``: the runtime then lets every worker fold
its clients into one partial sum (:class:`~redfl.core.arrays.WeightedSum`) and hands the
strategy the total. Other strategies (median, Krum, ...) receive individual updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from redfl.core.arrays import Parameters, WeightedSum


@dataclass(frozen=True)
class ClientUpdate:
    """One client's reply to a fit request."""

    node_id: str
    parameters: Parameters
    num_examples: int
    metrics: Mapping[str, float]


def sample_clients(
    available: Sequence[str], fraction: float, minimum: int, rng: np.random.Generator
) -> list[str]:
    """Pick ``max(minimum, ceil(fraction * n))`` of ``available`` without replacement.

    The result keeps the order of ``available`` so that downstream folding is fixed.

    Raises
    ------
    ValueError
        If fewer than ``minimum`` clients are available.
    """
    n = len(available)
    if n < minimum:
        raise ValueError(f"{minimum} clients required but only {n} available")
    k = min(n, max(minimum, math.ceil(fraction * n - 1e-9)))
    if k == n:
        return list(available)
    picked = np.sort(rng.choice(n, size=k, replace=False))
    return [available[i] for i in picked]


class Strategy:
    """Base class for strategies.

    Subclasses override :meth:`aggregate` (weighted-sum strategies) or
    :meth:`aggregate_updates` (strategies that need every update).
    """

    weighted_sum: ClassVar[bool] = True
    """Whether the aggregate is a function of the example-weighted sum of updates."""

    def __init__(
        self,
        *,
        fraction_fit: float = 1.0,
        min_fit_clients: int = 1,
        fraction_evaluate: float = 0.0,
        min_evaluate_clients: int = 0,
    ) -> None:
        if not 0.0 <= fraction_fit <= 1.0:
            raise ValueError(f"fraction_fit must be in [0, 1], got {fraction_fit}")
        if not 0.0 <= fraction_evaluate <= 1.0:
            raise ValueError(f"fraction_evaluate must be in [0, 1], got {fraction_evaluate}")
        if min_fit_clients < 1:
            raise ValueError(f"min_fit_clients must be >= 1, got {min_fit_clients}")
        if min_evaluate_clients < 0:
            raise ValueError(f"min_evaluate_clients must be >= 0, got {min_evaluate_clients}")
        self.fraction_fit = fraction_fit
        self.min_fit_clients = min_fit_clients
        self.fraction_evaluate = fraction_evaluate
        self.min_evaluate_clients = min_evaluate_clients

    def configure_fit(
        self, rnd: int, available: Sequence[str], rng: np.random.Generator
    ) -> list[str]:
        """The clients that train in round ``rnd``."""
        return sample_clients(available, self.fraction_fit, self.min_fit_clients, rng)

    def configure_evaluate(
        self, rnd: int, available: Sequence[str], rng: np.random.Generator
    ) -> list[str]:
        """The clients that evaluate in round ``rnd`` (none by default)."""
        if self.fraction_evaluate == 0.0 and self.min_evaluate_clients == 0:
            return []
        return sample_clients(available, self.fraction_evaluate, self.min_evaluate_clients, rng)

    def fit_config(self, rnd: int) -> dict[str, Any]:
        """The config sent to every client of round ``rnd``."""
        return {"round": rnd}

    def aggregate(self, rnd: int, current: Parameters, total: WeightedSum) -> Parameters:
        """New global parameters from the example-weighted sum of the round's updates."""
        raise TypeError(f"{type(self).__name__} must override aggregate() or aggregate_updates()")

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """New global parameters from individual updates (folds them by default)."""
        total = WeightedSum()
        for update in updates:
            total.add(update.parameters, float(update.num_examples))
        return self.aggregate(rnd, current, total)
