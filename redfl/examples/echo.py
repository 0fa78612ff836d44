"""The echo task: clients return the global parameters unchanged (orchestration cost only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.nodes.client import Client


class EchoClient(Client):
    """Returns the parameters it was sent, with one example and no metrics."""

    def __init__(self, size: int = 650) -> None:
        self.size = size

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Echo ``parameters``."""
        return parameters, 1, {}

    @staticmethod
    def initial_parameters(size: int | Mapping[str, Any] = 650) -> Parameters:
        """One float32 vector of ``size`` zeros (``size`` may be a config's client options)."""
        if isinstance(size, Mapping):
            size = int(size.get("size", 650))
        return {"w": np.zeros(size, np.float32)}
