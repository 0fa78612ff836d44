"""Edge jobs: the job file's fields and the two tasks a simulated device can run.

* ``digits``: softmax regression on scikit-learn's digits (:mod:`redfl.models.softmax`). The
  server holds out 20 % of the images (split with ``seed=0``) and reports accuracy on them
  after every version; the devices share the other 80 % (tiled so each device has about
  ``samples_per_device`` of them) through a Dirichlet split (:class:`DigitsShards`).
* ``numeric``: a vector of ``num_parameters`` floats; a device returns ``value + 1`` after a
  random delay, so every update is a vector of ones (a pure orchestration load).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from redfl.data import DirichletPartitioner, load_digits_arrays, train_test_split
from redfl.edge.fedbuff import FedBuffConfig
from redfl.edge.protocol import ConfigValue, Name
from redfl.edge.selection import SelectionConfig
from redfl.edge.wire import Limits
from redfl.models.softmax import SoftmaxRegression

__all__ = [
    "DigitsShards",
    "JobSpec",
    "digits_test_set",
    "evaluate",
    "evaluate_digits",
    "initial_parameters",
    "train_digits",
]

Arrays = dict[str, np.ndarray]


class JobSpec(BaseModel):
    """An edge job (read from a JSON file by ``redfl edge server --job``).

    FedBuff's and selection's fields are documented on :class:`FedBuffConfig` and
    :class:`SelectionConfig`; ``local_*`` go to devices in each task's config. Against
    poisoning, every update is weighted by at most ``max_samples_per_update`` samples (one
    device claiming ``num_samples = 2**31`` counts as that many) and, with ``clip_norm``,
    scaled down to that L2 norm before its LCP folds it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = "edge-job"
    task: Literal["digits", "numeric"] = "digits"
    num_parameters: int = Field(10_000, ge=1, le=100_000_000)
    num_updates_for_model: int = Field(50, ge=1)
    max_model_version: int = Field(20, ge=1)
    max_model_history: int = Field(3, ge=0)
    global_lr: float = Field(1.0, gt=0)
    staleness_weight: bool = True
    device_selection_size: int = Field(50, ge=1)
    min_hole_to_fill: int = Field(1, ge=1)
    device_reuse: bool = True
    device_timeout: float = Field(30.0, gt=0)
    selection_method: Literal["balanced", "random"] = "balanced"
    seed: int = 0
    local_epochs: int = Field(5, ge=1)
    local_lr: float = Field(0.1, gt=0)
    local_batch_size: int = Field(32, ge=1)
    max_delay: float = Field(0.0, ge=0)
    max_samples_per_update: int = Field(1_000, ge=1, le=2**31)
    """The weight one update can carry: a larger ``num_samples`` counts as this many."""
    clip_norm: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Each update is scaled down to this L2 norm (over all its arrays) at the LCP."""

    def limits(self) -> Limits:
        """What LCPs enforce on each device update."""
        return Limits(max_samples_per_update=self.max_samples_per_update, clip_norm=self.clip_norm)

    def fedbuff(self) -> FedBuffConfig:
        """FedBuff's parameters."""
        return FedBuffConfig(
            self.num_updates_for_model,
            self.max_model_version,
            self.max_model_history,
            self.global_lr,
            self.staleness_weight,
        )

    def selection(self) -> SelectionConfig:
        """Selection's parameters."""
        return SelectionConfig(
            self.device_selection_size,
            self.min_hole_to_fill,
            self.device_reuse,
            self.device_timeout,
            self.selection_method,
            self.seed,
        )

    def device_config(self) -> dict[str, ConfigValue]:
        """What a device needs to run a task."""
        return {
            "task": self.task,
            "epochs": self.local_epochs,
            "lr": self.local_lr,
            "batch_size": self.local_batch_size,
            "max_delay": self.max_delay,
            "max_model_version": self.max_model_version,
        }


def initial_parameters(spec: JobSpec) -> Arrays:
    """Version 0 of the job's model (zeros)."""
    if spec.task == "digits":
        return SoftmaxRegression().init_parameters()
    return {"value": np.zeros(spec.num_parameters, np.float32)}


@lru_cache(maxsize=1)
def digits_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The held-out 20 % of the digits (split with ``seed=0``)."""
    x, y = load_digits_arrays()
    return train_test_split(x, y, 0.2, seed=0)[2:]


def evaluate_digits(parameters: Arrays) -> float:
    """Held-out digits accuracy of softmax-regression parameters."""
    return SoftmaxRegression().evaluate(parameters, *digits_test_set())[1]


def evaluate(spec: JobSpec, parameters: Arrays) -> dict[str, float]:
    """Held-out accuracy and loss (digits) or the mean value (numeric)."""
    if spec.task == "digits":
        loss, accuracy = SoftmaxRegression().evaluate(parameters, *digits_test_set())
        return {"accuracy": accuracy, "loss": loss}
    return {"mean_value": float(np.mean(parameters["value"]))}


class DigitsShards:
    """Each simulated device's own Dirichlet shard of the digits training split.

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
        x, y = load_digits_arrays()
        x_train, y_train = train_test_split(x, y, 0.2, seed=0)[:2]
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


def train_digits(
    parameters: Arrays, x: np.ndarray, y: np.ndarray, config: dict[str, ConfigValue], seed: int
) -> Arrays:
    """Train softmax regression locally and return the delta ``local - parameters``."""
    model = SoftmaxRegression(
        lr=float(config.get("lr", 0.1)),
        epochs=int(config.get("epochs", 5)),
        batch_size=int(config.get("batch_size", 32)),
    )
    local, _ = model.fit(parameters, x, y, np.random.default_rng(seed))
    return {k: local[k] - parameters[k] for k in parameters}
