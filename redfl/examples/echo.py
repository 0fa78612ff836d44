"""The echo task: clients return the global parameters unchanged (orchestration cost only),
or with a little seeded noise (:class:`JitterClient`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.core.seeding import client_rng
from redfl.nodes.client import Client


class EchoOptions(BaseModel):
    """Options of the echo task: the length of the one parameter vector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(default=650, ge=1, le=1_000_000_000)


class EchoClient(Client):
    """Returns the parameters it was sent, with one example and no metrics."""

    Options = EchoOptions

    def __init__(self, size: int = 650) -> None:
        self.size = size

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Echo ``parameters``."""
        return parameters, 1, {}

    @staticmethod
    def initial_parameters(size: int | EchoOptions | Mapping[str, Any] = 650) -> Parameters:
        """One float32 vector of ``size`` zeros (``size`` may be a config's client options)."""
        if isinstance(size, EchoOptions):
            size = size.size
        elif isinstance(size, Mapping):
            size = int(size.get("size", 650))
        return {"w": np.zeros(size, np.float32)}


class JitterClient(EchoClient):
    """Returns the parameters it was sent plus small Gaussian noise, with 1 to
    ``max_examples - 1`` examples; both drawn from (seed, round, node id), so every run
    of the same federation gets the same updates (an echo whose updates differ: for sums
    that can be checked, at almost no compute)."""

    def __init__(self, size: int = 650, scale: float = 0.01, max_examples: int = 50) -> None:
        super().__init__(size)
        self.scale = scale
        self.max_examples = max_examples

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """The parameters plus noise of std ``scale``, and a drawn number of examples."""
        rng = client_rng(self.context.seed, config.round, self.context.node_id)
        new = {
            name: (array + rng.normal(0.0, self.scale, array.shape)).astype(array.dtype)
            for name, array in parameters.items()
        }
        return new, int(rng.integers(1, max(2, self.max_examples))), {}
