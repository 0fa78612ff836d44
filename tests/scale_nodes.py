"""Client classes for the scale, stealing and state tests (importable by Ray workers)."""

from __future__ import annotations

import time

import numpy as np

from redfl import Client
from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions

SIZE = 1000
SLOW_SECONDS = 0.2


def drift_update(seed: int, rnd: int, index: int, w: np.ndarray) -> tuple[np.ndarray, int]:
    """What client ``index`` returns in round ``rnd``: a test can recompute it alone."""
    rng = np.random.default_rng([seed, rnd, index])
    return (0.5 * w + rng.normal(size=w.shape)).astype(np.float32), 1 + index % 7


class Drift(Client):
    """Returns half the global model plus seeded noise, with 1 to 7 examples."""

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        new, count = drift_update(
            self.context.seed, int(config["round"]), self.context.index, parameters["w"]
        )
        return {"w": new}, count, {}


class SlowEven(Drift):
    """:class:`Drift`, but clients with an even index take ``SLOW_SECONDS`` each."""

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        if self.context.index % 2 == 0:
            time.sleep(SLOW_SECONDS)
        return super().fit(parameters, config)


class Tally(Client):
    """A stateful client: counts its fits in ``state`` and returns the count as its model.

    ``state["history"]`` holds the rounds it trained in, so a test can check the state
    survived exactly.
    """

    stateful = True

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        count = int(self.state.get("count", np.zeros(1))[0]) + 1
        history = self.state.get("history", np.zeros(0, np.int64))
        self.state = {
            "count": np.array([count], np.int64),
            "history": np.append(history, int(config["round"])),
            "pad": np.zeros(256, np.float32),
        }
        return {"w": np.full_like(parameters["w"], count)}, 1, {}

    def evaluate(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[float, int, dict[str, float]]:
        rounds = self.state.get("history", np.zeros(0, np.int64))
        return float(len(rounds)), 1, {"last_round": float(rounds[-1]) if len(rounds) else 0.0}
