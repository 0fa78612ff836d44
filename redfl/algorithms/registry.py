"""The strategies by name (:data:`STRATEGIES`) and the ``[strategy]`` table that chooses one.

Each entry is a :class:`StrategySpec`: the class, the paper it implements, and a pydantic
model of its parameters made from the class's keyword-only ``__init__`` parameters (their
annotations and defaults), so that ``[strategy] name = "krum"`` with ``f = "two"`` is refused
with the field named, before anything is built. ``redfl strategies`` and the platform's
catalog list the same entries.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from redfl.algorithms.fedavg import FedAvg
from redfl.algorithms.fedavgm import FedAvgM
from redfl.algorithms.fedopt import FedAdagrad, FedAdam, FedYogi
from redfl.algorithms.fedprox import FedProx
from redfl.algorithms.qfedavg import QFedAvg
from redfl.algorithms.robust import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from redfl.algorithms.strategy import ParameterError, Strategy
from redfl.core.config import IMPORT_TARGET, TARGET_PATTERN, Strict
from redfl.core.registry import Registry

__all__ = [
    "SAMPLING",
    "STRATEGIES",
    "StrategyConfig",
    "StrategyParam",
    "StrategySpec",
    "make_strategy",
    "parameters_model",
]

SAMPLING = (
    "fraction_fit",
    "min_fit_clients",
    "fraction_evaluate",
    "min_evaluate_clients",
    "max_update_norm",
)
"""Parameters every strategy takes (see :class:`~redfl.algorithms.Strategy`)."""

StrategyParam = bool | int | float | str
"""The type of a strategy's own parameter in the ``[strategy]`` table."""


def parameters_model(cls: type[Strategy]) -> type[BaseModel]:
    """A pydantic model of the keyword-only parameters ``cls`` takes (through its bases).

    Each field has the parameter's annotation and default; values are checked strictly
    (``True`` is not an int, ``"1"`` not a number); unknown keys are refused.
    """
    fields: dict[str, Any] = {}
    for klass in type.mro(cls):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        hints = typing.get_type_hints(init)
        for param in inspect.signature(init).parameters.values():
            if param.kind is not param.KEYWORD_ONLY or param.name in fields:
                continue
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints.get(param.name, Any), default)
        if klass is Strategy:
            break
    config = ConfigDict(extra="forbid", strict=True)
    model: type[BaseModel] = create_model(f"{cls.__name__}Parameters", __config__=config, **fields)
    return model


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its class, the paper it implements, its parameters' model."""

    name: str
    cls: type[Strategy]
    paper: str
    model: type[BaseModel] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", parameters_model(self.cls))

    @property
    def pre_aggregates(self) -> bool:
        """Whether workers fold their clients into one partial sum for it."""
        return self.cls.weighted_sum

    def parameters(self) -> dict[str, Any]:
        """The strategy's own parameters and their defaults (the sampling ones excluded)."""
        return {
            name: info.get_default()
            for name, info in self.model.model_fields.items()
            if name not in SAMPLING and not info.is_required()
        }

    def check(self, params: dict[str, Any]) -> None:
        """Check ``params`` against the parameters' model (types, unknown names).

        Raises
        ------
        ParameterError
            Naming the first bad parameter: unknown (listing what it takes) or of the
            wrong type.
        """
        try:
            self.model.model_validate(params)
        except ValidationError as error:
            first = error.errors()[0]
            key = str(first["loc"][0]) if first["loc"] else "strategy"
            if first["type"] == "extra_forbidden":
                taken = sorted(self.parameters())
                message = f"not a parameter of {self.name}; it takes {taken}"
                raise ParameterError(key, message) from None
            raise ParameterError(key, f"{first['msg']}, got {first.get('input')!r}") from None

    def build(self, **params: Any) -> Strategy:
        """The strategy with ``params`` (checked first, see :meth:`check`)."""
        self.check(params)
        return self.cls(**params)


STRATEGIES: Registry[StrategySpec] = Registry("strategy")
"""Server strategies by ``strategy.name``."""

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


class StrategyConfig(Strict):
    """The ``[strategy]`` table: the strategy (by registered ``name``, or a class by
    ``target``), its sampling of clients and its own parameters.

    Keys other than the declared ones (``f = 2``, ``eta = 0.01``, ...) are the strategy's
    parameters, checked when the strategy is built: a registered strategy's against its
    parameters' model (``redfl strategies`` lists them), a ``target`` class's against its
    ``__init__``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, AfterValidator(STRATEGIES.validator())] = "fedavg"
    target: str | None = Field(
        default=None, pattern=TARGET_PATTERN, json_schema_extra=IMPORT_TARGET
    )
    fraction_fit: float = Field(default=1.0, ge=0.0, le=1.0)
    min_fit_clients: int | None = Field(default=None, ge=1)
    fraction_evaluate: float = Field(default=0.0, ge=0.0, le=1.0)
    min_evaluate_clients: int = Field(default=0, ge=0)
    max_update_norm: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _scalar_params(self) -> StrategyConfig:
        if self.target is not None and "name" in self.model_fields_set:
            raise ValueError("give 'name' (a registered strategy) or 'target', not both")
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, StrategyParam):
                raise ValueError(f"strategy.{key} must be a number, string or boolean")
        return self

    def params(self) -> dict[str, StrategyParam]:
        """The strategy's own parameters (the undeclared keys)."""
        return dict(self.model_extra or {})

    def sampling(self) -> dict[str, Any]:
        """The sampling keys as a strategy takes them (``min_fit_clients`` only when set)."""
        chosen = {
            "fraction_fit": self.fraction_fit,
            "fraction_evaluate": self.fraction_evaluate,
            "min_evaluate_clients": self.min_evaluate_clients,
            "max_update_norm": self.max_update_norm,
        }
        if self.min_fit_clients is not None:
            chosen["min_fit_clients"] = self.min_fit_clients
        return chosen
