""" "A little is enough" (ALIE): colluding attackers hide inside the benign spread.

Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
Learning", NeurIPS 2019. The attackers estimate the coordinate-wise mean ``mu`` and
standard deviation ``sigma`` of benign updates from their own honest updates and all send
``mu - z * sigma``, with ``z`` the largest value that still lets them pass for the median:
``s = floor(n / 2 + 1) - m`` and ``z = Phi^-1((n - s) / n)`` (n clients, m attackers).

The attackers collude, so their replies meet where the simulation sees them all: the
server. :class:`LittleIsEnough` wraps the strategy and replaces, each round, the sampled
attackers' updates before the real aggregation; workers do not pre-aggregate under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from redfl.algorithms.strategy import ClientUpdate, Strategy
from redfl.algorithms.wrapper import StrategyWrapper
from redfl.core.arrays import Parameters, WeightedSum


def alie_z(num_clients: int, num_attackers: int) -> float:
    """Baruch et al.'s ``z_max`` for ``n`` clients of which ``m`` attack.

    Examples
    --------
    >>> round(alie_z(50, 10), 4)  # s = 16, Phi^-1(34 / 50)
    0.4677
    """
    s = math.floor(num_clients / 2 + 1) - num_attackers
    return NormalDist().inv_cdf((num_clients - s) / num_clients)


class LittleIsEnough(StrategyWrapper):
    """Replace the attackers' updates by ``mu - z sigma`` of their honest ones.

    Parameters
    ----------
    inner:
        The attacked strategy.
    attackers:
        The malicious client ids.
    z:
        The deviation in standard deviations; ``None``: :func:`alie_z` of each round.
    """

    def __init__(self, inner: Strategy, attackers: Sequence[str], z: float | None = None) -> None:
        super().__init__(inner)
        self.attackers = frozenset(attackers)
        self.z = z
        self.weighted_sum = False

    def aggregate(self, rnd: int, current: Parameters, total: WeightedSum) -> Parameters:
        """Not used: updates always arrive one by one under this attack."""
        return self.inner.aggregate(rnd, current, total)

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """The inner aggregate of the updates, attackers' replaced."""
        bad = [u for u in updates if u.node_id in self.attackers]
        if not bad:
            return self.inner.aggregate_updates(rnd, current, updates)
        z = alie_z(len(updates), len(bad)) if self.z is None else self.z
        forged = {}
        for name, ref in current.items():
            values = np.stack([np.asarray(u.parameters[name], np.float64) for u in bad])
            forged[name] = (values.mean(axis=0) - z * values.std(axis=0)).astype(ref.dtype)
        replaced = [
            ClientUpdate(u.node_id, forged, u.num_examples, u.metrics)
            if u.node_id in self.attackers
            else u
            for u in updates
        ]
        return self.inner.aggregate_updates(rnd, current, replaced)
