"""FedAvgM: FedAvg with server momentum.

Hsu et al., "Measuring the Effects of Non-Identical Data Distribution for Federated
Visual Classification", 2019. With the pseudo-gradient ``g_t = x_t - mean_t``:
``v_t = beta * v_{t-1} + g_t`` (``v_0 = 0``) and ``x_{t+1} = x_t - eta * v_t``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from redfl.algorithms.fedavg import FedAvg
from redfl.algorithms.strategy import require
from redfl.core.arrays import Parameters, WeightedSum


class FedAvgM(FedAvg):
    """Server momentum over the FedAvg pseudo-gradient.

    Parameters
    ----------
    server_learning_rate:
        eta, > 0.
    server_momentum:
        beta, in [0, 1).
    **sampling:
        The sampling parameters of :class:`~redfl.algorithms.Strategy`.
    """

    def __init__(
        self, *, server_learning_rate: float = 1.0, server_momentum: float = 0.9, **sampling: Any
    ) -> None:
        super().__init__(**sampling)
        require(
            0 < server_learning_rate < math.inf,
            "server_learning_rate",
            f"must be > 0, got {server_learning_rate}",
        )
        require(
            0 <= server_momentum < 1,
            "server_momentum",
            f"must be in [0, 1), got {server_momentum}",
        )
        self.server_learning_rate = server_learning_rate
        self.server_momentum = server_momentum
        self.momentum: dict[str, np.ndarray] = {}

    def state(self) -> dict[str, Any]:
        """``{"momentum": {name: array}}``."""
        return {"momentum": {k: v.copy() for k, v in self.momentum.items()}}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore the momentum."""
        self.momentum = {k: np.array(v, np.float64) for k, v in state["momentum"].items()}

    def aggregate(self, rnd: int, current: Parameters, total: WeightedSum) -> Parameters:
        """``x - eta * v`` with ``v`` the momentum of the pseudo-gradients."""
        new = {}
        for name, x in current.items():
            gradient = x.astype(np.float64) - total.sums[name] / total.weight
            previous = self.momentum.get(name)
            velocity = gradient if previous is None else self.server_momentum * previous + gradient
            self.momentum[name] = velocity
            new[name] = (x - self.server_learning_rate * velocity).astype(x.dtype)
        return new
