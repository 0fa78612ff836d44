"""FedAvg: the example-weighted mean of client models.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017.
"""

from __future__ import annotations

from redfl.algorithms.strategy import Strategy
from redfl.core.arrays import Parameters, WeightedSum


class FedAvg(Strategy):
    """Federated averaging weighted by each client's number of examples.

    Takes the sampling parameters of :class:`~redfl.algorithms.Strategy`.

    Examples
    --------
    >>> import numpy as np
    >>> from redfl.core.arrays import WeightedSum
    >>> total = WeightedSum()
    >>> total.add({"w": np.array([1.0], np.float32)}, 1.0)
    >>> total.add({"w": np.array([4.0], np.float32)}, 3.0)
    >>> FedAvg().aggregate(1, {"w": np.zeros(1, np.float32)}, total)["w"]
    array([3.25], dtype=float32)
    """

    weighted_sum = True

    def aggregate(self, rnd: int, current: Parameters, total: WeightedSum) -> Parameters:
        """Return ``sum(n_i * w_i) / sum(n_i)`` in the dtypes of ``current``."""
        return total.mean(current)
