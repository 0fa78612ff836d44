"""Digits clients whose data is generated lazily per client (population benchmarks).

Client ``i`` draws its label mix from Dirichlet(alpha) seeded by (data_seed, i), then
``size`` examples of those labels from the bundled digits, in :meth:`setup`: no partition
of the whole data set is ever computed, so 100,000 registered clients cost nothing until
sampled.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import Field

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.data.digits import load_digits_arrays
from redfl.models.softmax import Prepared, SgdOptions
from redfl.nodes.client import Client


class LazyDigitsOptions(SgdOptions):
    """Label skew, examples per client and local training of :class:`LazyDigitsClient`."""

    alpha: float = Field(default=0.5, gt=0.0, le=1000.0)
    size: int = Field(default=20, ge=1, le=10_000)


@lru_cache(maxsize=1)
def _by_label() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits pixels, row indices sorted by label, and each label's start and count there."""
    x, y = load_digits_arrays()
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y, minlength=10)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return x, order, starts, counts


def lazy_client_data(options: LazyDigitsOptions, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The examples of client ``index``: a function of (data_seed, index) only.

    Labels follow Dirichlet(alpha) proportions; each example is a uniform draw among the
    digits of its label (one vectorised draw, so building a client stays cheap).
    """
    x, order, starts, counts = _by_label()
    rng = np.random.default_rng([options.data_seed, index])
    labels = rng.choice(10, size=options.size, p=rng.dirichlet(np.full(10, options.alpha)))
    picks = (rng.random(options.size) * counts[labels]).astype(np.int64)
    rows = order[starts[labels] + picks]
    return np.ascontiguousarray(x[rows]), labels.astype(np.int64)


class LazyDigitsClient(Client):
    """Softmax regression on examples generated for this client when it is first used."""

    Options = LazyDigitsOptions

    def __init__(self, **options: Any) -> None:
        self.options = LazyDigitsOptions(**options)
        self.model = self.options.model()
        self.data: Prepared | None = None

    def setup(self) -> None:
        """Generate this client's examples."""
        x, y = lazy_client_data(self.options, self.context.index)
        self.data = self.model.prepare(x, y)

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Local SGD from the global parameters."""
        if self.data is None:
            raise RuntimeError("setup() has not run")
        new, loss = self.model.fit_prepared(parameters, self.data, self.rng(config))
        return new, len(self.data), {"loss": loss}
