"""The predict hook: how a trained model answers inputs, found on its client class.

A client class offers ``predict(parameters, inputs) -> outputs`` on numpy arrays, itself or
through its ``model`` attribute (the built-in digits clients do: their
:class:`~redfl.models.softmax.SoftmaxRegression` and
:class:`~redfl.models.torch_cnn.DigitsCNN` have it). ``inputs`` holds one example per row
and the outputs one row per example. The holder of ``predict`` may declare
``input_shape``, the shape of one example (``(64,)`` for the digits); a server then checks
requests against it before they reach the model.

:func:`find_predictor` builds the client with its options, as a worker does (without
``setup()``, so no data is loaded), and returns its hook as a :class:`Predictor`.

Examples
--------
>>> import numpy as np
>>> class Scaler:  # a client class with the hook on itself
...     input_shape = (2,)
...     def predict(self, parameters, inputs):
...         return inputs * parameters["w"]
>>> predictor = find_predictor(Scaler, {})
>>> predictor.input_shape
(2,)
>>> predictor({"w": np.array([2.0, 3.0])}, np.ones((1, 2))).tolist()
[[2.0, 3.0]]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from redfl.core.arrays import Parameters

__all__ = ["PredictFn", "Predicts", "Predictor", "find_predictor"]

PredictFn = Callable[[Parameters, np.ndarray], Any]
"""``predict(parameters, inputs) -> outputs`` (array-like, one row per input row)."""


@runtime_checkable
class Predicts(Protocol):
    """What offers the hook: a client class, or the model a client holds in ``model``."""

    def predict(self, parameters: Parameters, inputs: np.ndarray) -> np.ndarray:
        """One output row per row of ``inputs`` (numpy arrays)."""
        ...


@dataclass(frozen=True)
class Predictor:
    """A client class's predict hook, ready to call.

    Attributes
    ----------
    predict:
        The hook, bound to a client built with its options (or to that client's model).
    input_shape:
        The shape of one example, when the hook's holder declares ``input_shape``.
    source:
        Where the hook was found (``module:Class`` or ``module:Class.model``).
    """

    predict: PredictFn
    input_shape: tuple[int, ...] | None
    source: str

    def __call__(self, parameters: Parameters, inputs: np.ndarray) -> np.ndarray:
        """The outputs of ``predict`` for ``inputs``, as an array of one row per input row.

        Raises
        ------
        ValueError
            When the hook refuses the inputs (its own ``ValueError``, for instance a wrong
            shape).
        TypeError
            When the hook returns something that is not one output row per input row.
        """
        outputs = np.asarray(self.predict(parameters, inputs))
        rows = len(inputs)
        if outputs.ndim == 0 or outputs.shape[0] != rows:
            raise TypeError(
                f"{self.source}.predict returned shape {outputs.shape} for {rows} input rows; "
                f"it must return one row per input row"
            )
        return outputs


def find_predictor(cls: type[Any], options: Mapping[str, Any]) -> Predictor:
    """The predict hook of client class ``cls`` built with ``options`` (``cls(**options)``).

    The client's own ``predict`` comes first, then that of its ``model`` attribute.

    Raises
    ------
    ValueError
        If neither offers ``predict``, or ``input_shape`` is not a tuple of positive ints.
    """
    name = f"{cls.__module__}:{cls.__qualname__}"
    node = cls(**options)
    for holder, source in ((node, name), (getattr(node, "model", None), f"{name}.model")):
        method = getattr(holder, "predict", None)
        if holder is not None and callable(method):
            return Predictor(method, _input_shape(holder, source), source)
    raise ValueError(
        f"{name} offers no predict(parameters, inputs): give the client class, or the model "
        f"it keeps in its 'model' attribute, a predict method on numpy arrays"
    )


def _input_shape(holder: object, source: str) -> tuple[int, ...] | None:
    shape = getattr(holder, "input_shape", None)
    if shape is None:
        return None
    if not (
        isinstance(shape, tuple)
        and shape
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise ValueError(f"{source}.input_shape must be a tuple of positive ints, got {shape!r}")
    return shape
