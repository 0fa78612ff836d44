"""Clients for the resume tests (importable by the driver and the workers)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from redfl import Client, Instructions


class MomentumClient(Client):
    """A stateful client: its own running momentum, kept on its worker between rounds."""

    stateful = True

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def fit(self, parameters: Any, config: Instructions) -> tuple[Any, int, dict[str, float]]:
        time.sleep(self.delay)
        noise = self.rng(config).normal(size=parameters["w"].shape)
        velocity = 0.9 * self.state.get("v", np.zeros_like(parameters["w"])) + noise
        self.state = {"v": velocity}
        return {"w": parameters["w"] + 0.1 * velocity}, 1 + self.context.index, {"loss": 1.0}

    @staticmethod
    def initial_parameters(options: Any) -> dict[str, np.ndarray]:
        return {"w": np.zeros(5)}
