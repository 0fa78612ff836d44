"""``Client``: a node driven round by round by the star schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.core.result import EvaluateResult, FitResult
from redfl.core.seeding import client_rng
from redfl.nodes.node import FederatedNode


class Client(FederatedNode):
    """A star-federation client: override :meth:`fit` and, optionally, :meth:`evaluate`.

    ``config`` is the round's :class:`~redfl.core.instructions.Instructions`: typed fields
    (``config.round``, ``config.phase``, ``config.learning_rate`` ...) that are also a
    read-only mapping (``config["round"]``, ``config.get("lr")``), with the strategy's own
    keys. :meth:`rng` gives the client's generator for that round, a function of (seed,
    round, node id) only, which keeps runs reproducible.

    A client class with ``stateful = True`` keeps named arrays in ``self.state`` from one
    round to the next: its worker loads them before :meth:`fit` and :meth:`evaluate` and
    keeps them after a successful :meth:`fit`, in memory up to a bound and spilled to disk
    past it (:class:`~redfl.runtime.state.StateStore`). Such clients always run on their
    own worker (never taken by another one).
    """

    stateful: ClassVar[bool] = False
    state: dict[str, np.ndarray] = {}  # noqa: RUF012 - replaced per call by the worker

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> FitResult | tuple[Parameters, int, Mapping[str, float]]:
        """Train from ``parameters``; return a :class:`~redfl.core.result.FitResult` (new
        parameters, examples used, metrics) or the same as a plain tuple."""
        raise TypeError(f"{type(self).__name__} must override fit()")

    def evaluate(
        self, parameters: Parameters, config: Instructions
    ) -> EvaluateResult | tuple[float, int, Mapping[str, float]]:
        """Evaluate ``parameters`` locally; return an
        :class:`~redfl.core.result.EvaluateResult` (loss, examples, metrics) or the same as
        a plain tuple."""
        raise TypeError(f"{type(self).__name__} does not implement evaluate()")

    def rng(self, config: Instructions | Mapping[str, Any]) -> np.random.Generator:
        """This client's random generator for the round of ``config``.

        ``config`` is the round's :class:`~redfl.core.instructions.Instructions` or a plain
        mapping with a ``"round"`` key.

        Raises
        ------
        KeyError
            If a plain mapping has no ``"round"``.
        """
        rnd = config.round if isinstance(config, Instructions) else int(config["round"])
        return client_rng(self.context.seed, rnd, self.node_id)
