"""Two device classes for edge jobs, written against the same ``Client`` interface as any
client, and their server-side evaluations.

* :class:`DigitsDevice`: softmax regression on scikit-learn's digits. The server holds out
  20 % of the images (split with ``seed=0``) and :func:`digits_evaluation` reports accuracy
  and loss on them; the devices share the other 80 % (tiled so each device has about
  ``samples_per_device`` of them) through a Dirichlet split (:class:`DigitsShards`), each
  device taking the shard of its index in the fleet.
* :class:`NumericDevice`: a vector of ``num_parameters`` floats; a device returns
  ``value + 1``, so every update is a vector of ones (a pure orchestration load);
  :func:`numeric_evaluation` reports the mean value.

A job names one of them (``client = "redfl.examples.edge:DigitsDevice"``) and its
evaluation (``evaluate = "redfl.examples.edge:digits_evaluation"``); a device runs it with
``redfl edge device`` or ``redfl edge simulate``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import Field

from redfl.core.arrays import Parameters
from redfl.core.config import Strict
from redfl.core.instructions import Instructions
from redfl.core.result import EvaluateFn, FitResult
from redfl.data import DirichletPartitioner, load_digits_arrays, train_test_split
from redfl.models.softmax import Prepared, SoftmaxRegression
from redfl.nodes.client import Client

__all__ = [
    "DigitsDevice",
    "DigitsDeviceOptions",
    "DigitsShards",
    "NumericDevice",
    "NumericOptions",
    "digits_evaluation",
    "numeric_evaluation",
]


class DigitsDeviceOptions(Strict):
    """Options of :class:`DigitsDevice` (a job's ``options``)."""

    alpha: float = Field(default=1.0, gt=0.0, le=1000.0)
    """Dirichlet concentration of the split across devices (smaller: more label skew)."""
    samples_per_device: int = Field(default=20, ge=1, le=10_000)
    """The training split is tiled so that there are about this many samples per device."""
    data_seed: int = 0
    """Seed of the split."""
    epochs: int = Field(default=5, ge=1, le=1_000)
    lr: float = Field(default=0.1, gt=0.0, le=100.0)
    batch_size: int = Field(default=32, ge=1)


@lru_cache(maxsize=1)
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits, 80 % for the devices and 20 % held out (split with ``seed=0``)."""
    x, y = load_digits_arrays()
    return train_test_split(x, y, 0.2, seed=0)


class DigitsShards:
    """Each device's own Dirichlet shard of the digits training split.

    Parameters
    ----------
    num_devices : int
        Number of devices, >= 1.
    alpha : float, default 1.0
        Dirichlet concentration (smaller is more label skew).
    samples_per_device : int, default 20
        The training split is tiled so that there are about this many samples per device.
    seed : int, default 0
        Seed of the split.
    """

    def __init__(
        self, num_devices: int, alpha: float = 1.0, samples_per_device: int = 20, seed: int = 0
    ) -> None:
        x_train, y_train = _digits_split()[:2]
        tile = max(1, math.ceil(num_devices * samples_per_device / len(y_train)))
        self.x = np.tile(x_train, (tile, 1))
        self.y = np.tile(y_train, tile)
        self.parts = DirichletPartitioner(alpha, min_size=1, seed=seed).partition(
            self.y, num_devices
        )

    def shard(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of device number ``device``."""
        idx = self.parts[device]
        return self.x[idx], self.y[idx]


@lru_cache(maxsize=4)
def _shards(num_devices: int, alpha: float, samples: int, seed: int) -> DigitsShards:
    return DigitsShards(num_devices, alpha, samples, seed)


class DigitsDevice(Client):
    """A device training softmax regression on its shard of the digits (its index in the
    fleet picks the shard)."""

    Options = DigitsDeviceOptions

    def __init__(self, **options: Any) -> None:
        self.options = o = DigitsDeviceOptions(**options)
        self.model = SoftmaxRegression(lr=o.lr, epochs=o.epochs, batch_size=o.batch_size)
        self.data: Prepared | None = None

    def setup(self) -> None:
        """Take this device's shard."""
        o, context = self.options, self.context
        shards = _shards(context.num_nodes, o.alpha, o.samples_per_device, o.data_seed)
        self.data = self.model.prepare(*shards.shard(context.index))

    def fit(self, parameters: Parameters, config: Instructions) -> FitResult:
        """``epochs`` of mini-batch SGD from the task's model."""
        if self.data is None:
            raise RuntimeError("setup() has not run")
        local, loss = self.model.fit_prepared(parameters, self.data, self.rng(config))
        return FitResult(local, len(self.data), {"loss": loss})

    @staticmethod
    def initial_parameters(options: DigitsDeviceOptions) -> Parameters:
        """Zero weights and biases."""
        return SoftmaxRegression().init_parameters()


def digits_evaluation(options: DigitsDeviceOptions) -> EvaluateFn:
    """Loss and accuracy on the held-out 20 % of the digits (run on the server)."""
    x_test, y_test = _digits_split()[2:]
    model = SoftmaxRegression()

    def evaluate(parameters: Parameters) -> tuple[float, dict[str, float]]:
        loss, accuracy = model.evaluate(parameters, x_test, y_test)
        return loss, {"accuracy": accuracy}

    return evaluate


class NumericOptions(Strict):
    """Options of :class:`NumericDevice`."""

    num_parameters: int = Field(default=10_000, ge=1, le=100_000_000)


class NumericDevice(Client):
    """A device whose update is always a vector of ones (``value + 1``)."""

    Options = NumericOptions

    def __init__(self, **options: Any) -> None:
        self.options = NumericOptions(**options)

    def fit(self, parameters: Parameters, config: Instructions) -> FitResult:
        """``value + 1``, one sample."""
        return FitResult({k: v + 1 for k, v in parameters.items()}, 1)

    @staticmethod
    def initial_parameters(options: NumericOptions) -> Parameters:
        """``num_parameters`` zeros."""
        return {"value": np.zeros(options.num_parameters, np.float32)}


def numeric_evaluation(options: NumericOptions) -> EvaluateFn:
    """The mean of the vector (its ``loss`` is 0)."""

    def evaluate(parameters: Parameters) -> tuple[float, dict[str, float]]:
        return 0.0, {"mean_value": float(np.mean(parameters["value"]))}

    return evaluate
