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


class _DigitsModel:
    """Data, model and the three model hooks shared by both digits node kinds."""

    options: DecentralizedDigitsOptions
    node_id: str
    context: Any

    def setup(self) -> None:
        """Load this node's part of the training data and the shared test split."""
        options = self.options
        self.model = options.model()
        x, y = client_data(options, self.context.index, self.context.num_nodes)
        self.train_data: Prepared = self.model.prepare(x, y)
        self.x_test, self.y_test = _split(options)[2:]

    def initial_parameters(self) -> Parameters:
        """Zero weights and biases (the same on every node)."""
        return self.options.model().init_parameters()

    def local_step(self, parameters: Parameters, rnd: int) -> tuple[Parameters, dict[str, Any]]:
        """Local SGD epochs; randomness is a function of (seed, round, node id)."""
        rng = client_rng(self.context.seed, rnd, self.node_id)
        new, loss = self.model.fit_prepared(parameters, self.train_data, rng)
        return new, {"loss": loss}

    def evaluate(self, parameters: Parameters, rnd: int) -> dict[str, Any]:
        """Test loss and accuracy of the node's model on the held-out split."""
        if len(self.y_test) == 0:
            return {}
        loss, accuracy = self.model.evaluate(parameters, self.x_test, self.y_test)
        return {"test_loss": loss, "accuracy": accuracy}


class DigitsDSGDNode(_DigitsModel, DSGDNode):
    """Decentralised SGD on digits: local SGD epochs, then averaging with neighbours."""

    Options = DecentralizedDigitsOptions

    def __init__(self, **options: Any) -> None:
        self.options = DecentralizedDigitsOptions(**options)
        super().__init__(self.options.timeout, self.options.mixing)


class DigitsRingNode(_DigitsModel, RingSequentialNode):
    """Ring sequential training on digits: the model visits every node once per round."""

    Options = DecentralizedDigitsOptions

    def __init__(self, **options: Any) -> None:
        self.options = DecentralizedDigitsOptions(**options)
        super().__init__(self.options.start, self.options.timeout)


def initial_parameters(options: DecentralizedDigitsOptions) -> Parameters:
    """Zero weights and biases (what the CLI saves when no node published a model)."""
    return options.model().init_parameters()


__all__ = ["DecentralizedDigitsOptions", "DigitsDSGDNode", "DigitsRingNode", "initial_parameters"]
