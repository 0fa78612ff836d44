"""Registers every strategy by name, with its paper, its parameters and their defaults.

The config (``[strategy] name = "fedadam"``) and ``redfl strategies`` read
:data:`STRATEGIES` (the registry of :mod:`redfl.core.registries`, filled here).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from redfl.algorithms.fedavg import FedAvg
from redfl.algorithms.fedavgm import FedAvgM
from redfl.algorithms.fedopt import FedAdagrad, FedAdam, FedYogi
from redfl.algorithms.fedprox import FedProx
from redfl.algorithms.qfedavg import QFedAvg
from redfl.algorithms.robust import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from redfl.algorithms.strategy import ParameterError, Strategy
from redfl.core.registries import STRATEGIES

__all__ = ["SAMPLING", "STRATEGIES", "StrategySpec", "make_strategy"]

SAMPLING = ("fraction_fit", "min_fit_clients", "fraction_evaluate", "min_evaluate_clients")
"""Parameters every strategy takes (see :class:`~redfl.algorithms.Strategy`)."""


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its class and the paper it implements."""

    name: str
    cls: type[Strategy]
    paper: str

    @property
    def pre_aggregates(self) -> bool:
        """Whether workers fold their clients into one partial sum for it."""
        return self.cls.weighted_sum

    def parameters(self) -> dict[str, Any]:
        """The strategy's own parameters and their defaults (sampling ones excluded)."""
        found: dict[str, Any] = {}
        for cls in type.mro(self.cls):
            if cls is Strategy:
                break
            init = cls.__dict__.get("__init__")
            if init is None:
                continue
            for param in inspect.signature(init).parameters.values():
                if param.kind is param.KEYWORD_ONLY and param.name not in found:
                    found[param.name] = param.default
        return found

    def build(self, **params: Any) -> Strategy:
        """The strategy with ``params``; an unknown name is a :class:`ParameterError`."""
        allowed = set(self.parameters()) | set(SAMPLING) | {"max_update_norm"}
        for key in params:
            if key not in allowed:
                raise ParameterError(
                    key, f"not a parameter of {self.name}; it takes {sorted(self.parameters())}"
                )
        defaults = self.parameters()
        for key, value in params.items():
            _check_type(key, value, defaults.get(key))
        return self.cls(**params)


def _check_type(key: str, value: Any, default: Any) -> None:
    """Refuse a value whose type cannot be the parameter's (judged by its default)."""
    if isinstance(default, bool) or default is None:
        return
    if isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
        raise ParameterError(key, f"must be an integer, got {value!r}")
    if isinstance(default, float) and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise ParameterError(key, f"must be a number, got {value!r}")
    if isinstance(default, str) and not isinstance(value, str):
        raise ParameterError(key, f"must be a string, got {value!r}")


for _spec in (
    StrategySpec("fedavg", FedAvg, "McMahan et al., AISTATS 2017"),
    StrategySpec("fedavgm", FedAvgM, "Hsu et al., arXiv 1909.06335, 2019"),
    StrategySpec("fedprox", FedProx, "Li et al., MLSys 2020"),
    StrategySpec("fedadam", FedAdam, "Reddi et al., ICLR 2021"),
    StrategySpec("fedyogi", FedYogi, "Reddi et al., ICLR 2021"),
    StrategySpec("fedadagrad", FedAdagrad, "Reddi et al., ICLR 2021"),
    StrategySpec("fedmedian", FedMedian, "Yin et al., ICML 2018"),
    StrategySpec("fedtrimmedavg", FedTrimmedAvg, "Yin et al., ICML 2018"),
    StrategySpec("krum", Krum, "Blanchard et al., NeurIPS 2017"),
    StrategySpec("multikrum", MultiKrum, "Blanchard et al., NeurIPS 2017"),
    StrategySpec("bulyan", Bulyan, "El Mhamdi et al., ICML 2018"),
    StrategySpec("qfedavg", QFedAvg, "Li et al., ICLR 2020"),
):
    STRATEGIES.register(_spec.name, _spec, paper=_spec.paper)


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build the strategy registered as ``name`` with ``params``.

    Raises
    ------
    ParameterError
        For an unknown name (parameter ``name``) or a bad parameter (naming it).

    Examples
    --------
    >>> make_strategy("krum", f=2).min_fit_clients
    7
    >>> make_strategy("fedtrimmedavg", beta=0.5)
    Traceback (most recent call last):
    ...
    redfl.algorithms.strategy.ParameterError: beta: must be in [0, 0.5), got 0.5
    """
    if name not in STRATEGIES:
        raise ParameterError(
            "name", f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}"
        )
    return STRATEGIES.get(name).build(**params)
