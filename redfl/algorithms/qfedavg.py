"""q-FedAvg: fair resource allocation, weighting clients with high loss more.

Li, Sanjabi, Beirami, Smith, "Fair Resource Allocation in Federated Learning", ICLR 2020
(Algorithm 2). With ``L = 1 / learning_rate``, client k's loss ``F_k`` at the global model
and ``dw_k = L (w - w_k)``: ``delta_k = F_k^q dw_k``,
``h_k = q F_k^(q-1) ||dw_k||^2 + L F_k^q`` and ``w' = w - sum(delta_k) / sum(h_k)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from redfl.algorithms.strategy import ClientUpdate, Strategy, require
from redfl.core.arrays import Parameters

LOSS_FLOOR = 1e-10
"""Added to every loss so that ``F^(q - 1)`` stays finite (as Flower does)."""


class QFedAvg(Strategy):
    """q-fair federated averaging.

    Parameters
    ----------
    q:
        Fairness exponent, >= 0 (0 gives an unweighted FedAvg-like step).
    learning_rate:
        The clients' learning rate (L = 1 / learning_rate), > 0.
    loss_key:
        The fit metric holding the client's loss at the global model.
    **sampling:
        The sampling parameters of :class:`~redfl.algorithms.Strategy`.
    """

    weighted_sum = False

    def __init__(
        self, *, q: float = 0.2, learning_rate: float = 0.1, loss_key: str = "loss", **sampling: Any
    ) -> None:
        super().__init__(**sampling)
        require(0 <= q < math.inf, "q", f"must be >= 0, got {q}")
        require(0 < learning_rate < math.inf, "learning_rate", f"must be > 0, got {learning_rate}")
        self.q, self.learning_rate, self.loss_key = q, learning_rate, loss_key

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """One q-FedAvg step; a client without ``loss_key`` in its metrics is an error."""
        lipschitz = 1.0 / self.learning_rate
        step = {k: np.zeros(v.shape, np.float64) for k, v in current.items()}
        h_total = 0.0
        for update in updates:
            if self.loss_key not in update.metrics:
                raise ValueError(f"QFedAvg: client {update.node_id} reported no {self.loss_key!r}")
            loss = float(update.metrics[self.loss_key]) + LOSS_FLOOR
            grads = {
                k: lipschitz * (v - np.asarray(update.parameters[k], np.float64))
                for k, v in current.items()
            }
            squared = sum(float(np.vdot(g, g)) for g in grads.values())
            for name, grad in grads.items():
                step[name] += loss**self.q * grad
            h_total += self.q * loss ** (self.q - 1) * squared + lipschitz * loss**self.q
        return {k: (v - step[k] / h_total).astype(v.dtype) for k, v in current.items()}
