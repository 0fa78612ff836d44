"""The echo task: clients return the global parameters unchanged (orchestration cost only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
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
