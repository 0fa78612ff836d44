"""Distributed differential privacy under secure aggregation: Skellam noise from each client.

The server only sees the sum, so the noise that protects it can come from the clients:
each adds integer noise to its quantised update, and the sum carries the noise of all
survivors. The noise here is Skellam (the difference of two Poisson variables), after
Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private Federated
Learning", NeurIPS 2021: a sum of independent Skellam variables is Skellam again, so
``h`` clients adding variance ``V / h`` each give exactly the Skellam noise of variance
``V`` on the sum, on the integers the masks work on (no rounding after the noise), and
numpy's Poisson sampler draws it.

Assumption: at least ``honest_clients`` clients that do not collude with the server have
their noise in every sum that is unmasked. Colluding clients know their own noise and can
subtract it, and dropped clients add none, so set ``honest_clients`` to the round's
``min_survivors`` minus the colluders assumed (:class:`~redfl.privacy.secagg.config.SecAggConfig`
refuses a larger value). Each client's update must be bounded in L2 norm by ``l2_clip``
(the client clips it when noise is on). The weight entry gets no noise: with noise, give
every client the same weight (the server knows who survived, hence the count).

Accounting. For integer L2 and L1 sensitivities ``D2``, ``D1`` and total variance ``V``,
the Skellam mechanism is ``(alpha, eps(alpha))``-RDP with (Agarwal et al., Corollary 3.6,
written with the variance)

    eps(alpha) <= alpha D2^2 / (2 V) + min(((2 alpha - 1) D2^2 + 6 D1) / (4 V^2), 3 D1 / (2 V)).

Adding a client (add/remove adjacency) adds its quantised update, whose L2 norm is at
most ``D2 = C s + sqrt(d) / 2`` (``C`` the L2 clip, ``s`` the quantiser's scale, ``d``
the coordinates; rounding moves each coordinate by at most 1/2), and ``D1 = min(sqrt(d)
D2, D2^2)`` (an integer vector's L1 norm is at most its squared L2 norm). For
``alpha >= 2`` the bound is at most ``alpha B`` with ``B = D2^2 / (2 V) + min((2 D2^2 +
3 D1) / (4 V^2), 3 D1 / (4 V))``, the RDP of a Gaussian of noise multiplier ``1 /
sqrt(2 B)``: :meth:`DistributedSkellam.accountant_noise_multiplier` returns it, for
:class:`~redfl.privacy.RdpAccountant`. It is a valid bound without sampling; with client
sampling, feeding it to the sampled Gaussian formula is the same approximation as
elsewhere in :mod:`redfl.privacy` (the analysis assumes Gaussian noise and Poisson
sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_VARIANCE = 2e12
"""The largest Skellam variance drawn: numpy's Poisson sampler is exact up to a mean of
about ``10^14`` and measurably off beyond (about 6 % too wide at ``9 * 10^14``); ``10^12``
per side keeps a margin. Lower the quantiser's bits if a noise needs more."""


def skellam(variance: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of symmetric Skellam noise of ``variance`` (``int64``):
    ``Poisson(variance / 2) - Poisson(variance / 2)``.

    Raises
    ------
    ValueError
        For a negative variance, or one above :data:`MAX_VARIANCE`.
    """
    if not 0 <= variance <= MAX_VARIANCE:
        raise ValueError(f"variance must be in [0, {MAX_VARIANCE:g}], got {variance:g}")
    if variance == 0:
        return np.zeros(size, np.int64)
    return rng.poisson(variance / 2, size).astype(np.int64) - rng.poisson(variance / 2, size)


def skellam_rdp(
    order: float, variance: float, l2_sensitivity: float, l1_sensitivity: float
) -> float:
    """The RDP bound of the Skellam mechanism at ``order`` > 1 (Agarwal et al., Corollary
    3.6), for noise of ``variance`` and integer sensitivities.

    Examples
    --------
    >>> round(skellam_rdp(2, 1e6, 1000, 1000), 6)  # the Gaussian term alpha D2^2 / (2 V) is 1
    1.000001
    """
    if order <= 1:
        raise ValueError(f"order must be > 1, got {order}")
    if variance <= 0:
        raise ValueError(f"variance must be > 0, got {variance}")
    d2, d1 = l2_sensitivity, l1_sensitivity
    return order * d2**2 / (2 * variance) + min(
        ((2 * order - 1) * d2**2 + 6 * d1) / (4 * variance**2), 3 * d1 / (2 * variance)
    )


def quantized_sensitivity(l2_clip: float, scale: float, dimension: int) -> tuple[float, float]:
    """``(D2, D1)``: the L2 and L1 norm bounds of one quantised update of L2 norm at most
    ``l2_clip`` over ``dimension`` coordinates, at ``scale`` integers per unit."""
    d2 = l2_clip * scale + math.sqrt(dimension) / 2
    return d2, min(math.sqrt(dimension) * d2, d2 * d2)


@dataclass(frozen=True)
class DistributedSkellam:
    """The distributed noise of a round: what each client adds, and what to account.

    Parameters
    ----------
    noise_multiplier:
        z > 0: the summed noise has standard deviation ``z * l2_clip`` per coordinate (in
        the units of the updates), as the server-side Gaussian of DP-FedAvg.
    l2_clip:
        C > 0: the L2 norm bound of each client's update (times ``weight / max_weight``).
    honest_clients:
        h >= 1: the fewest non-colluding clients whose noise is in any unmasked sum.
    """

    noise_multiplier: float
    l2_clip: float
    honest_clients: int

    def __post_init__(self) -> None:
        if not 0 < self.noise_multiplier < math.inf:
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.l2_clip < math.inf:
            raise ValueError(f"l2_clip must be > 0, got {self.l2_clip}")
        if self.honest_clients < 1:
            raise ValueError(f"honest_clients must be >= 1, got {self.honest_clients}")

    def total_variance(self, scale: float) -> float:
        """V: the variance of the summed noise per coordinate, in integers: ``(z C s)^2``."""
        return (self.noise_multiplier * self.l2_clip * scale) ** 2

    def client_variance(self, scale: float) -> float:
        """The variance each client adds per coordinate, in integers: ``V / h``."""
        return self.total_variance(scale) / self.honest_clients

    def accountant_noise_multiplier(self, scale: float, dimension: int) -> float:
        """The Gaussian noise multiplier whose RDP bounds this noise's at every order >= 2
        (see the module docstring); feed it to :meth:`~redfl.privacy.RdpAccountant.step`.

        It is below :attr:`noise_multiplier` (rounding widens the sensitivity, Skellam
        adds a small term) and tends to it as the scale grows.

        Examples
        --------
        >>> noise = DistributedSkellam(noise_multiplier=1.0, l2_clip=1.0, honest_clients=10)
        >>> round(noise.accountant_noise_multiplier(scale=2.0**16, dimension=10_000), 4)
        0.9992
        """
        variance = self.total_variance(scale)
        d2, d1 = quantized_sensitivity(self.l2_clip, scale, dimension)
        per_order = d2**2 / (2 * variance) + min(
            (2 * d2**2 + 3 * d1) / (4 * variance**2), 3 * d1 / (4 * variance)
        )
        return 1 / math.sqrt(2 * per_order)
