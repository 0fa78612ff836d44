"""FedProx: FedAvg whose clients add a proximal term ``mu / 2 * ||w - w_global||^2``.

Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020. The server math
is FedAvg's; the coefficient travels in the fit instructions as the typed field
``proximal_mu``, which the shipped models' local training honours.
"""

from __future__ import annotations

import math
from typing import Any

from redfl.algorithms.fedavg import FedAvg
from redfl.algorithms.strategy import require
from redfl.core.instructions import Instructions


class FedProx(FedAvg):
    """FedAvg plus ``proximal_mu`` in every client's fit instructions.

    Parameters
    ----------
    proximal_mu:
        The proximal coefficient mu, >= 0 (0 is FedAvg).
    **sampling:
        The sampling parameters of :class:`~redfl.algorithms.Strategy`.

    Examples
    --------
    >>> FedProx(proximal_mu=0.1).fit_config(3).proximal_mu
    0.1
    """

    def __init__(self, *, proximal_mu: float = 0.01, **sampling: Any) -> None:
        super().__init__(**sampling)
        require(0 <= proximal_mu < math.inf, "proximal_mu", f"must be >= 0, got {proximal_mu}")
        self.proximal_mu = proximal_mu

    def fit_config(self, rnd: int) -> Instructions:
        """The inherited instructions with ``proximal_mu`` set."""
        return Instructions.make(rnd, {**super().fit_config(rnd), "proximal_mu": self.proximal_mu})
