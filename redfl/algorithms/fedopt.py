"""FedAdam, FedYogi, FedAdagrad: adaptive server optimizers on the FedAvg pseudo-gradient.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (Algorithm 2). With
``d_t = mean_t - x_t``: ``m_t = beta_1 m_{t-1} + (1 - beta_1) d_t``; then

- Adagrad: ``v_t = v_{t-1} + d_t^2``
- Yogi: ``v_t = v_{t-1} - (1 - beta_2) d_t^2 sign(v_{t-1} - d_t^2)``
- Adam: ``v_t = beta_2 v_{t-1} + (1 - beta_2) d_t^2``

and ``x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau)``; ``m`` and ``v`` start at 0. The
client learning rate ``eta_l``, when given, is sent in the fit instructions as the typed
field ``learning_rate``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from redfl.algorithms.fedavg import FedAvg
from redfl.algorithms.strategy import require
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.instructions import Instructions


class FedOpt(FedAvg):
    """Base of the adaptive server optimizers; subclasses define :meth:`second_moment`.

    Parameters
    ----------
    eta:
        Server learning rate, > 0.
    eta_l:
        Client learning rate sent as ``learning_rate`` in the fit instructions (``None``:
        not sent).
    beta_1, beta_2:
        Moment decay rates in [0, 1).
    tau:
        Adaptivity (denominator offset), > 0.
    **sampling:
        The sampling parameters of :class:`~redfl.algorithms.Strategy`.
    """

    rule: ClassVar[str] = ""

    def __init__(
        self,
        *,
        eta: float = 0.1,
        eta_l: float | None = None,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-9,
        **sampling: Any,
    ) -> None:
        super().__init__(**sampling)
        require(0 < eta < math.inf, "eta", f"must be > 0, got {eta}")
        require(eta_l is None or 0 < eta_l < math.inf, "eta_l", f"must be > 0, got {eta_l}")
        require(0 <= beta_1 < 1, "beta_1", f"must be in [0, 1), got {beta_1}")
        require(0 <= beta_2 < 1, "beta_2", f"must be in [0, 1), got {beta_2}")
        require(0 < tau < math.inf, "tau", f"must be > 0, got {tau}")
        self.eta, self.eta_l, self.tau = eta, eta_l, tau
        self.beta_1, self.beta_2 = beta_1, beta_2
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def fit_config(self, rnd: int) -> Mapping[str, Any]:
        """The inherited instructions and, when set, ``learning_rate = eta_l``."""
        config = super().fit_config(rnd)
        if self.eta_l is None:
            return config
        return Instructions.make(rnd, {**config, "learning_rate": self.eta_l})

    def state(self) -> dict[str, Any]:
        """``{"m": {name: array}, "v": {name: array}}``."""
        return {
            "m": {k: np.array(v) for k, v in self.m.items()},
            "v": {k: v.copy() for k, v in self.v.items()},
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore both moments."""
        self.m = {k: np.array(v, np.float64) for k, v in state["m"].items()}
        self.v = {k: np.array(v, np.float64) for k, v in state["v"].items()}

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        """``v_t`` from ``v_{t-1}`` and the squared pseudo-gradient."""
        raise TypeError(f"{type(self).__name__} must define second_moment()")

    def aggregate(self, rnd: int, current: Parameters, total: WeightedSum) -> Parameters:
        """One adaptive step from the FedAvg mean."""
        new = {}
        for name, x in current.items():
            d = total.sums[name] / total.weight - x.astype(np.float64)
            m = self.beta_1 * self.m.get(name, 0.0) + (1 - self.beta_1) * d
            v = self.second_moment(self.v.get(name, np.zeros_like(d)), d * d)
            self.m[name], self.v[name] = m, v
            new[name] = (x + self.eta * m / (np.sqrt(v) + self.tau)).astype(x.dtype)
        return new


class FedAdam(FedOpt):
    """FedOpt with Adam's second moment (defaults as Reddi et al.'s tuned ranges)."""

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        """``beta_2 v + (1 - beta_2) d^2``."""
        return np.asarray(self.beta_2 * v + (1 - self.beta_2) * d2)


class FedYogi(FedOpt):
    """FedOpt with Yogi's second moment."""

    def __init__(self, *, eta: float = 0.01, tau: float = 1e-3, **rest: Any) -> None:
        super().__init__(eta=eta, tau=tau, **rest)

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        """``v - (1 - beta_2) d^2 sign(v - d^2)``."""
        return np.asarray(v - (1 - self.beta_2) * d2 * np.sign(v - d2))


class FedAdagrad(FedOpt):
    """FedOpt with Adagrad's second moment (``beta_2`` unused)."""

    def __init__(self, *, beta_1: float = 0.0, **rest: Any) -> None:
        super().__init__(beta_1=beta_1, **rest)

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        """``v + d^2``."""
        return np.asarray(v + d2)
