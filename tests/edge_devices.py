"""Device classes a user could write for an edge job (the tests' own, outside redfl): a
linear model whose every update adds ``step``, and one whose training fails."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.core.result import EvaluateFn, FitResult
from redfl.nodes.client import Client


class StepOptions(BaseModel):
    """Options of :class:`StepDevice`."""

    model_config = {"extra": "forbid"}
    size: int = Field(default=3, ge=1)
    step: float = 0.5


class StepDevice(Client):
    """``w + step``: every update is ``step`` everywhere; its metrics name the round."""

    Options = StepOptions

    def __init__(self, **options: Any) -> None:
        self.options = StepOptions(**options)
        self.rounds: list[int] = []

    def fit(self, parameters: Parameters, config: Instructions) -> FitResult:
        self.rounds.append(int(config["round"]))
        scale = float(config.get("scale", 1.0))
        new = {"w": parameters["w"] + self.options.step * scale}
        return FitResult(new, 2, {"round": float(config["round"])})

    @staticmethod
    def initial_parameters(options: StepOptions) -> Parameters:
        return {"w": np.zeros(options.size, np.float32)}


def mean_of_w(options: StepOptions) -> EvaluateFn:
    """The mean of ``w`` as the metric ``mean``; the loss is its distance from 10."""

    def evaluate(parameters: Parameters) -> tuple[float, dict[str, float]]:
        mean = float(np.mean(parameters["w"]))
        return abs(10.0 - mean), {"mean": mean}

    return evaluate


class BrokenDevice(StepDevice):
    """Its training always fails."""

    def fit(self, parameters: Parameters, config: Instructions) -> FitResult:
        raise RuntimeError("the sensor is unplugged")
