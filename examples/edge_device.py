"""A device class of your own for an edge job: linear regression in numpy on each device's
own data (here synthetic: every device draws its samples from one true line, seeded by its
place in the fleet), with a server-side evaluation on held-out data.

The job (``examples/edge_job.json``) names ``edge_device:LinearDevice``; the server and every
device import it, so this folder must be on their ``PYTHONPATH``::

    PYTHONPATH=examples redfl edge up --tree TREE --job examples/edge_job.json
    PYTHONPATH=examples redfl edge simulate --proxy http://127.0.0.1:8000 --tree TREE \\
        --job linear --client edge_device:LinearDevice --devices 1000

or one real device (a token issued by ``redfl edge devices issue``, or a secret to enrol)::

    PYTHONPATH=examples redfl edge device --proxy http://127.0.0.1:8000 \\
        --credentials me.json --client edge_device:LinearDevice --job linear
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.core.result import EvaluateFn, FitResult
from redfl.nodes.client import Client


class LinearOptions(BaseModel):
    """The job's ``options`` (a device may override some with ``--options``)."""

    model_config = ConfigDict(extra="forbid")
    features: int = Field(default=20, ge=1)
    samples: int = Field(default=64, ge=1)
    """Samples on each device."""
    epochs: int = Field(default=2, ge=1)
    lr: float = Field(default=0.05, gt=0)
    noise: float = Field(default=0.1, ge=0)
    data_seed: int = 0


def _line(options: LinearOptions) -> np.ndarray:
    """The true weights every device's data follows."""
    return np.random.default_rng(options.data_seed).normal(size=options.features)


def _data(options: LinearOptions, stream: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([options.data_seed, stream])
    x = rng.normal(size=(options.samples, options.features))
    y = x @ _line(options) + options.noise * rng.normal(size=options.samples)
    return x.astype(np.float32), y.astype(np.float32)


class LinearDevice(Client):
    """``fit`` runs on the device: a few epochs of gradient descent from the task's model."""

    Options = LinearOptions

    def __init__(self, **options: Any) -> None:
        self.options = LinearOptions(**options)
        self.x = self.y = np.zeros(0, np.float32)

    def setup(self) -> None:
        """Load this device's data (its index in the fleet picks it)."""
        self.x, self.y = _data(self.options, 1 + self.context.index)

    def fit(self, parameters: Parameters, config: Instructions) -> FitResult:
        """``epochs`` full-batch gradient steps on the squared error."""
        w, b = parameters["w"].copy(), parameters["b"].copy()
        lr = float(config.get("lr", self.options.lr))
        for _ in range(self.options.epochs):
            error = self.x @ w + b - self.y
            w -= lr * self.x.T @ error / len(self.y)
            b -= lr * error.mean(keepdims=True)
        loss = float(np.mean((self.x @ w + b - self.y) ** 2))
        return FitResult({"w": w, "b": b}, len(self.y), {"train_mse": loss})

    @staticmethod
    def initial_parameters(options: LinearOptions) -> Parameters:
        """Version 0: zeros."""
        return {"w": np.zeros(options.features, np.float32), "b": np.zeros(1, np.float32)}


def held_out_mse(options: LinearOptions) -> EvaluateFn:
    """The server-side evaluation (``evaluate`` in the job): mean squared error on data no
    device holds, run on every new version."""
    x, y = _data(options, 0)

    def evaluate(parameters: Parameters) -> tuple[float, dict[str, float]]:
        mse = float(np.mean((x @ parameters["w"] + parameters["b"] - y) ** 2))
        return mse, {"mse": mse}

    return evaluate
