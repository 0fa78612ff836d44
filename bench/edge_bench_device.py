"""The bench's own device class for an edge job: a numpy model of ``size`` float32
parameters; each device pulls it a step toward its own target (seeded by its place in the
fleet), as a user's training code would, at numpy's cost."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.core.result import EvaluateFn, FitResult
from redfl.nodes.client import Client


class DenseOptions(BaseModel):
    """Options of :class:`DenseDevice`."""

    model_config = ConfigDict(extra="forbid")
    size: int = Field(default=100_000, ge=1)
    lr: float = Field(default=0.5, gt=0)


def _target(size: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=size).astype(np.float32)


class DenseDevice(Client):
    """``w + lr * (target_device - w)``, where each device's target is the shared one plus
    its own noise."""

    Options = DenseOptions

    def __init__(self, **options: Any) -> None:
        self.options = DenseOptions(**options)
        self.noise = np.zeros(0, np.float32)

    def setup(self) -> None:
        rng = np.random.default_rng(1 + self.context.index)
        self.noise = rng.normal(scale=0.1, size=self.options.size).astype(np.float32)

    def fit(self, parameters: Parameters, config: Instructions) -> FitResult:
        w = parameters["w"]
        target = _target(self.options.size) + self.noise
        return FitResult({"w": w + self.options.lr * (target - w)}, 1)

    @staticmethod
    def initial_parameters(options: DenseOptions) -> Parameters:
        return {"w": np.zeros(options.size, np.float32)}


def distance(options: DenseOptions) -> EvaluateFn:
    """The RMS distance of the model to the shared target (the loss)."""
    target = _target(options.size)

    def evaluate(parameters: Parameters) -> tuple[float, dict[str, float]]:
        return float(np.sqrt(np.mean((parameters["w"] - target) ** 2))), {}

    return evaluate
