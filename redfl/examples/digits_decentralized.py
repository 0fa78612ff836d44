"""The digits task for decentralised schemas: DSGD and ring-sequential softmax regression.

Each node trains on its own part of the digits training split (as the star clients of
:mod:`redfl.examples.digits` do) and evaluates its own model on the shared held-out test
split, so a round's ``accuracy`` is the mean node test accuracy.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from redfl.core.arrays import Parameters
from redfl.core.seeding import client_rng
from redfl.examples.digits import DigitsOptions, _split, client_data
from redfl.models.softmax import Prepared
from redfl.nodes.decentralized import DSGDNode, RingSequentialNode


class DecentralizedDigitsOptions(DigitsOptions):
    """Digits options plus the node's message timeout and mixing weights."""

    timeout: float = Field(default=120.0, gt=0.0, le=86_400.0)
    mixing: Literal["auto", "metropolis", "uniform", "weights"] = "auto"
    start: str | None = None


class _DigitsTask:
    """Data and model of one node (shared by both node kinds)."""

    def load(self, options: DecentralizedDigitsOptions, index: int, num_nodes: int) -> None:
        self.task_options = options
        self.model = options.model()
        x, y = client_data(options, index, num_nodes)
        self.train_size = len(y)
        self.train_data: Prepared = self.model.prepare(x, y)
        self.x_test, self.y_test = _split(options)[2:]

    def fit(self, node_id: str, seed: int, parameters: Parameters, rnd: int) -> Any:
        rng = client_rng(seed, rnd, node_id)
        new, loss = self.model.fit_prepared(parameters, self.train_data, rng)
        return new, {"loss": loss}

    def score(self, parameters: Parameters) -> dict[str, Any]:
        if len(self.y_test) == 0:
            return {}
        loss, accuracy = self.model.evaluate(parameters, self.x_test, self.y_test)
        return {"test_loss": loss, "accuracy": accuracy}


class DigitsDSGDNode(DSGDNode):
    """Decentralised SGD on digits: local SGD epochs, then averaging with neighbours."""

    Options = DecentralizedDigitsOptions

    def __init__(self, **options: Any) -> None:
        self.options = DecentralizedDigitsOptions(**options)
        super().__init__(self.options.timeout, self.options.mixing)
        self.task = _DigitsTask()

    def setup(self) -> None:
        """Load this node's part of the training data and the shared test split."""
        self.task.load(self.options, self.context.index, self.context.num_nodes)

    def initial_parameters(self) -> Parameters:
        """Zero weights and biases (the same on every node)."""
        return self.options.model().init_parameters()

    def local_step(self, parameters: Parameters, rnd: int) -> tuple[Parameters, dict[str, Any]]:
        """Local SGD epochs; randomness is a function of (seed, round, node id)."""
        new, metrics = self.task.fit(self.node_id, self.context.seed, parameters, rnd)
        return new, metrics

    def evaluate(self, parameters: Parameters, rnd: int) -> dict[str, Any]:
        """Test loss and accuracy of the node's model on the held-out split."""
        return self.task.score(parameters)


class DigitsRingNode(RingSequentialNode):
    """Ring sequential training on digits: the model visits every node once per round."""

    Options = DecentralizedDigitsOptions

    def __init__(self, **options: Any) -> None:
        self.options = DecentralizedDigitsOptions(**options)
        super().__init__(self.options.start, self.options.timeout)
        self.task = _DigitsTask()

    def setup(self) -> None:
        """Load this node's part of the training data and the shared test split."""
        self.task.load(self.options, self.context.index, self.context.num_nodes)

    def initial_parameters(self) -> Parameters:
        """Zero weights and biases."""
        return self.options.model().init_parameters()

    def local_step(self, parameters: Parameters, rnd: int) -> tuple[Parameters, dict[str, Any]]:
        """Local SGD epochs on this node's part."""
        new, metrics = self.task.fit(self.node_id, self.context.seed, parameters, rnd)
        return new, metrics

    def evaluate(self, parameters: Parameters, rnd: int) -> dict[str, Any]:
        """Test loss and accuracy of the lap's model."""
        return self.task.score(parameters)


def initial_parameters(options: DecentralizedDigitsOptions) -> Parameters:
    """Zero weights and biases (what the CLI saves when no node published a model)."""
    return options.model().init_parameters()


__all__ = ["DecentralizedDigitsOptions", "DigitsDSGDNode", "DigitsRingNode", "initial_parameters"]
