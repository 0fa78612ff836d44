"""The digits task: scikit-learn's bundled 8x8 digits, a numpy softmax-regression client.

Data is loaded where each client runs (in ``setup()``, cached per process), never pickled
into the config: a client gets its own part by its index in the federation.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import Field

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.core.result import EvaluateFn
from redfl.data.digits import load_digits_arrays, train_test_split
from redfl.data.partition import partition_by_name
from redfl.models.softmax import Prepared, SgdOptions
from redfl.nodes.client import Client


class DigitsOptions(SgdOptions):
    """Options of the digits task (the ``[client.options]`` table of a config)."""

    partition: Literal["iid", "dirichlet", "shard"] = "iid"
    alpha: float = Field(default=0.5, gt=0.0, le=1000.0)
    min_size: int = Field(default=1, ge=1)
    shards_per_client: int = Field(default=2, ge=1)
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    tile: int = Field(default=1, ge=1, le=100)


@lru_cache(maxsize=4)
def _split(options: DigitsOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits_arrays(tile=options.tile, seed=options.data_seed)
    return train_test_split(x, y, options.test_fraction, options.data_seed)


@lru_cache(maxsize=4)
def _parts(options: DigitsOptions, num_parts: int) -> list[np.ndarray]:
    labels = _split(options)[1]
    partitioner = partition_by_name(
        options.partition,
        alpha=options.alpha,
        min_size=options.min_size,
        shards_per_client=options.shards_per_client,
        seed=options.data_seed,
    )
    return partitioner.partition(labels, num_parts)


def client_data(options: DigitsOptions, index: int, num_clients: int) -> tuple[np.ndarray, ...]:
    """The training examples of client ``index`` of ``num_clients``."""
    x, y = _split(options)[:2]
    part = _parts(options, num_clients)[index]
    return np.ascontiguousarray(x[part]), np.ascontiguousarray(y[part])


class DigitsClient(Client):
    """A client training softmax regression on its part of the digits data set."""

    Options = DigitsOptions

    def __init__(self, **options: Any) -> None:
        self.options = DigitsOptions(**options)
        self.model = self.options.model()
        self.x = np.empty((0, 64), np.float32)
        self.y = np.empty(0, np.int64)
        self.train_data: Prepared | None = None

    def setup(self) -> None:
        """Load this client's part of the data (where the client runs) and prepare it."""
        self.x, self.y = client_data(self.options, self.context.index, self.context.num_nodes)
        self.train_data = self.model.prepare(self.x, self.y)

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Local SGD epochs from the global parameters.

        Honours the typed instructions ``proximal_mu`` (FedProx) and ``learning_rate`` (a
        strategy's client learning rate), and the extra key ``label_flip`` (attack
        simulation); ``config`` may be :class:`Instructions` or a plain mapping.
        """
        if self.train_data is None:
            raise RuntimeError("setup() has not run")
        instructions = Instructions.of(config)
        model = self.model
        if instructions.learning_rate is not None:
            model = replace(model, lr=float(instructions.learning_rate))
        flip = instructions.get("label_flip")
        if flip is not None and int(flip) != model.num_classes:
            raise ValueError(f"label_flip must be num_classes={model.num_classes}, got {flip}")
        new, loss = model.fit_prepared(
            parameters,
            self.train_data,
            self.rng(config),
            proximal_mu=float(instructions.proximal_mu or 0.0),
            label_flip=flip is not None,
        )
        return new, len(self.y), {"loss": loss}

    def evaluate(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[float, int, dict[str, float]]:
        """Loss and accuracy of ``parameters`` on this client's examples."""
        loss, accuracy = self.model.evaluate(parameters, self.x, self.y)
        return loss, len(self.y), {"accuracy": accuracy}

    @staticmethod
    def initial_parameters(options: DigitsOptions) -> Parameters:
        """Zero weights and biases."""
        return options.model().init_parameters()


def central_evaluation(options: DigitsOptions) -> EvaluateFn:
    """Evaluate global parameters on the held-out test split (on the driver)."""
    if options.test_fraction == 0:
        raise ValueError("central evaluation needs client.options.test_fraction > 0")
    x_test, y_test = _split(options)[2:]
    model = options.model()

    def evaluate(parameters: Parameters) -> tuple[float, dict[str, float]]:
        loss, accuracy = model.evaluate(parameters, x_test, y_test)
        return loss, {"accuracy": accuracy}

    return evaluate
