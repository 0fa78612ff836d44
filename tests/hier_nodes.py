"""Clients for the hierarchy tests (a module Ray workers can import)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from redfl.nodes.client import Client


class Noisy(Client):
    """Moves the model by seeded noise; its example count and loss are seeded too."""

    def fit(self, parameters: Any, config: Any) -> tuple[Any, int, dict[str, float]]:
        rng = self.rng(config)
        new = {k: (v + rng.normal(0, 1, v.shape)).astype(v.dtype) for k, v in parameters.items()}
        return new, int(rng.integers(1, 50)), {"loss": float(rng.random())}

    def evaluate(self, parameters: Any, config: Any) -> tuple[float, int, dict[str, float]]:
        return float(np.abs(parameters["w"]).mean()), 1, {"accuracy": 0.5}


class Failing(Noisy):
    """Raises in ``fit`` when its id is in ``bad`` (in round ``when`` only, if given)."""

    def __init__(self, bad: tuple[str, ...] = (), when: int | None = None) -> None:
        self.bad, self.when = tuple(bad), when

    def fit(self, parameters: Any, config: Any) -> tuple[Any, int, dict[str, float]]:
        if self.node_id in self.bad and self.when in (None, config.round):
            raise RuntimeError(f"{self.node_id} is broken")
        return super().fit(parameters, config)


class WorkerKiller(Noisy):
    """In round ``kill_round``, the client ``killer`` kills its own worker process."""

    def __init__(self, killer: str = "", kill_round: int = 2) -> None:
        self.killer = killer
        self.kill_round = kill_round

    def fit(self, parameters: Any, config: Any) -> tuple[Any, int, dict[str, float]]:
        if self.node_id == self.killer and config.round == self.kill_round:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(parameters, config)


class KillOnce(Noisy):
    """In round ``kill_round``, the client ``killer`` kills its own worker process once (the
    ``marker`` file remembers it), then behaves as :class:`Noisy`."""

    def __init__(self, marker: str = "", killer: str = "", kill_round: int = 2) -> None:
        self.marker, self.killer, self.kill_round = Path(marker), killer, kill_round

    def fit(self, parameters: Any, config: Any) -> tuple[Any, int, dict[str, float]]:
        mine = self.node_id == self.killer and config.round == self.kill_round
        if mine and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(parameters, config)


class Stalling(Noisy):
    """In round ``when``, client ``culprit`` sleeps ``hang`` seconds (with ``hang=0`` it
    raises instead); every client in ``slow`` sleeps ``pause`` seconds in every round."""

    def __init__(
        self,
        culprit: str = "",
        when: int = 2,
        hang: float = 0.0,
        slow: tuple[str, ...] = (),
        pause: float = 0.0,
    ) -> None:
        self.culprit, self.when, self.hang = culprit, when, hang
        self.slow, self.pause = tuple(slow), pause

    def fit(self, parameters: Any, config: Any) -> tuple[Any, int, dict[str, float]]:
        if self.node_id == self.culprit and config.round == self.when:
            if self.hang <= 0:
                raise RuntimeError(f"{self.node_id} stalls")
            time.sleep(self.hang)
        if self.node_id in self.slow:
            time.sleep(self.pause)
        return super().fit(parameters, config)
