"""Results: what a client's ``fit`` and ``evaluate`` return, and what a run returns (per-round
history, final parameters, failures)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import numpy as np

from redfl.core.arrays import Parameters

NO_METRICS: Mapping[str, float] = MappingProxyType({})
"""An empty, read-only metrics mapping (the default of :class:`FitResult` and
:class:`EvaluateResult`)."""

EvaluateFn = Callable[[Parameters], tuple[float, Mapping[str, float]]]
"""A central evaluation run on the driver: parameters -> (loss, metrics such as
``accuracy``)."""

Phase = Literal["fit", "evaluate", "train"]
"""Where a failure happened: a client's ``fit`` or ``evaluate``, a node's ``train``."""


class FitResult(NamedTuple):
    """What :meth:`~redfl.nodes.Client.fit` returns: the new parameters, how many examples
    they were trained on (the client's weight in a weighted mean) and metrics.

    A plain tuple ``(parameters, num_examples, metrics)`` works the same (this is one).

    Examples
    --------
    >>> import numpy as np
    >>> parameters, num_examples, metrics = FitResult({"w": np.ones(2)}, 10, {"loss": 0.5})
    >>> num_examples, metrics["loss"], FitResult({}, 1).metrics
    (10, 0.5, mappingproxy({}))
    """

    parameters: Parameters
    num_examples: int
    metrics: Mapping[str, float] = NO_METRICS


class EvaluateResult(NamedTuple):
    """What :meth:`~redfl.nodes.Client.evaluate` returns: the loss, how many examples it was
    measured on and metrics (such as ``accuracy``).

    A plain tuple ``(loss, num_examples, metrics)`` works the same (this is one).
    """

    loss: float
    num_examples: int
    metrics: Mapping[str, float] = NO_METRICS


@dataclass(frozen=True)
class Failure:
    """A node that failed in a round, and why."""

    node_id: str
    round: int
    phase: Phase
    reason: str


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one round.

    ``loss`` and ``accuracy`` come from the central evaluation when there is one, else from
    the federated evaluation, else they are ``None``; ``train_loss`` is the
    example-weighted mean of the clients' reported training loss.
    """

    round: int
    sampled: int
    succeeded: int
    failed: int
    seconds: float
    train_loss: float | None = None
    loss: float | None = None
    accuracy: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the record."""
        return asdict(self)


class FederationError(RuntimeError):
    """A federation could not go on; the message names the round and the reasons."""

    def __init__(self, message: str, failures: list[Failure] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


@dataclass
class FederationResult:
    """One result object per run.

    Attributes
    ----------
    history:
        One :class:`RoundRecord` per completed round (empty for message-driven runs).
    parameters:
        The final global parameters (star) or ``None``.
    failures:
        Every recorded failure, with its round and reason.
    outputs:
        For message-driven federations: what each node's ``train()`` returned.
    """

    history: list[RoundRecord] = field(default_factory=list)
    parameters: Parameters | None = None
    failures: list[Failure] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> RoundRecord | None:
        """The last round's record, if any round ran."""
        return self.history[-1] if self.history else None

    def parameters_equal(self, other: FederationResult) -> bool:
        """True when both results hold bit-identical final parameters."""
        a, b = self.parameters, other.parameters
        if a is None or b is None:
            return a is b
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
