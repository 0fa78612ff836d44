"""Clients and nodes that misbehave on purpose: kill their own worker process once, hang."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.examples.digits_decentralized import DigitsDSGDNode
from redfl.nodes.client import Client


class NoisyClient(Client):
    """Adds seeded noise to the parameters (a function of seed, round and id only)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """``w + noise``, weighted by a per-client count."""
        noise = self.rng(config).normal(size=self.size).astype(np.float32)
        count = 1 + int(self.node_id.rsplit("-", 1)[-1]) % 5
        return {"w": parameters["w"] + noise}, count, {"loss": float(noise[0] ** 2)}

    def evaluate(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[float, int, dict[str, float]]:
        """The squared norm of ``w`` as a loss."""
        return float(np.sum(parameters["w"] ** 2)), 1, {}

    @staticmethod
    def initial_parameters(size: int | Mapping[str, Any] = 16) -> Parameters:
        """Zeros (``size`` may be a config's client options)."""
        if isinstance(size, Mapping):
            size = int(size.get("size", 16))
        return {"w": np.zeros(size, np.float32)}


class KillOnceClient(NoisyClient):
    """``victim`` SIGKILLs its own worker process in round ``when``, once (``marker``)."""

    def __init__(self, marker: str, victim: str, when: int = 2, size: int = 16) -> None:
        super().__init__(size)
        self.marker, self.victim, self.when = Path(marker), victim, when

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Kill the worker once, then behave as :class:`NoisyClient`."""
        if self.node_id == self.victim and config.round == self.when and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(parameters, config)


class HangClient(NoisyClient):
    """``victim`` sleeps ``seconds`` in round ``when``; every client notes its round."""

    def __init__(self, victim: str, when: int = 2, seconds: float = 60.0, size: int = 16):
        super().__init__(size)
        self.victim, self.when, self.seconds = victim, when, seconds

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Hang once, then behave as :class:`NoisyClient`."""
        if self.node_id == self.victim and config.round == self.when:
            time.sleep(self.seconds)
        return super().fit(parameters, config)


class KillOnceDSGD(DigitsDSGDNode):
    """A digits DSGD node; ``victim`` SIGKILLs its own worker in round ``when``, once.

    Every round takes ``pause`` seconds more (so that the driver has seen earlier rounds
    complete, and rolls back to one of them rather than to the start).
    """

    def __init__(
        self, marker: str, victim: str, when: int = 3, pause: float = 0.0, **options: Any
    ) -> None:
        super().__init__(**options)
        self.marker, self.victim, self.when = Path(marker), victim, when
        self.pause = pause

    def local_step(self, parameters: Parameters, rnd: int) -> tuple[Parameters, dict[str, Any]]:
        """Take ``pause`` s, kill the worker once, then train as a digits DSGD node."""
        time.sleep(self.pause)  # a slower round: the driver sees rounds complete before the kill
        if self.node_id == self.victim and rnd == self.when and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().local_step(parameters, rnd)


class StatefulKillOnceClient(KillOnceClient):
    """Counts its fits in its client state; kills its worker once as :class:`KillOnceClient`."""

    stateful = True

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Count, then fit (the count is the ``fits`` metric)."""
        fits = self.state.get("fits", np.zeros(1)) + 1
        self.state = {"fits": fits}
        new, count, metrics = super().fit(parameters, config)
        return new, count, {**metrics, "fits": float(fits[0])}
