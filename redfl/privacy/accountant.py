"""Privacy accounting: Rényi DP of the sampled Gaussian mechanism.

Mironov, Talwar, Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism",
2019. For an integer order ``alpha >= 2``, sampling rate ``q`` and noise multiplier
``sigma`` (noise std over L2 sensitivity), one step costs ``log(A_alpha) / (alpha - 1)``
with

    A_alpha = sum_{k=0}^{alpha} C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 sigma^2)).

RDP adds up over steps, and ``epsilon(delta) = min_alpha rdp(alpha) + log(1 / delta) /
(alpha - 1)`` (Mironov, "Rényi Differential Privacy", CSF 2017, Proposition 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_ORDERS: tuple[int, ...] = (*range(2, 65), 80, 96, 128, 192, 256, 384, 512)
"""Integer Rényi orders the accountant tracks."""


def sampled_gaussian_rdp(q: float, sigma: float, alpha: int) -> float:
    """RDP at integer order ``alpha`` of one step of the sampled Gaussian mechanism.

    Examples
    --------
    >>> round(sampled_gaussian_rdp(1.0, 2.0, 4), 6)  # without sampling: alpha / (2 sigma^2)
    0.5
    """
    if not 0 <= q <= 1:
        raise ValueError(f"sample rate q must be in [0, 1], got {q}")
    if sigma <= 0:
        raise ValueError(f"noise multiplier must be > 0, got {sigma}")
    if alpha < 2 or int(alpha) != alpha:
        raise ValueError(f"order alpha must be an integer >= 2, got {alpha}")
    if q == 0:
        return 0.0
    if q == 1:
        return alpha / (2 * sigma**2)
    k = np.arange(alpha + 1, dtype=np.float64)
    log_binom = math.lgamma(alpha + 1) - np.array(
        [math.lgamma(i + 1) + math.lgamma(alpha - i + 1) for i in range(alpha + 1)]
    )
    terms = (
        log_binom + (alpha - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * sigma**2)
    )
    top = float(terms.max())
    log_a = top + math.log(float(np.exp(terms - top).sum()))
    return max(0.0, log_a / (alpha - 1))


class RdpAccountant:
    """Adds up the RDP of Gaussian steps and converts it to (epsilon, delta).

    Examples
    --------
    >>> accountant = RdpAccountant()
    >>> accountant.step(noise_multiplier=1.0, sample_rate=0.1, steps=100)
    >>> 0 < accountant.epsilon(1e-5) < 10
    True
    """

    def __init__(self, orders: Sequence[int] = DEFAULT_ORDERS) -> None:
        self.orders = tuple(orders)
        self.rdp = np.zeros(len(self.orders))
        self.steps = 0

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Account for ``steps`` rounds at this noise multiplier and sampling rate."""
        self.rdp += steps * np.array(
            [sampled_gaussian_rdp(sample_rate, noise_multiplier, a) for a in self.orders]
        )
        self.steps += steps

    def epsilon(self, delta: float) -> float:
        """The smallest epsilon over the tracked orders for this ``delta`` (in (0, 1))."""
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if self.steps == 0:
            return 0.0
        orders = np.array(self.orders, dtype=np.float64)
        return float(np.min(self.rdp + math.log(1 / delta) / (orders - 1)))
