"""A client that only reads the global parameters (broadcast benchmarks)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.nodes.client import Client


class ReaderOptions(BaseModel):
    """The reader takes no options (any key is refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ReaderClient(Client):
    """Evaluation touches one value per 4 KiB page of every array, like a model reading it."""

    Options = ReaderOptions

    def evaluate(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[float, int, dict[str, float]]:
        """Sum a strided view of each array (touches every page, copies nothing)."""
        total = sum(float(np.asarray(a).reshape(-1)[::1024].sum()) for a in parameters.values())
        return total, 1, {}
