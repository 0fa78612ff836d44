"""Clients for site processes in tests: each marks the start of a fit in its folder
(``started-<round>``, so a test can act in the middle of a round) and pauses, or records
its plain update there (to check that the server never saw it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from redfl import Client
from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.examples.digits_files import FileDigitsClient, FileDigitsOptions
from redfl.examples.echo import EchoClient, EchoOptions, JitterClient


class Pausing(Client):
    """Touches ``started-<round>`` in the working folder, sleeps ``pause`` seconds, then
    fits as the next class of the subclass does."""

    pause: float = 0.0

    def fit(self, parameters: Parameters, config: Instructions) -> Any:
        Path(f"started-{config.round}").touch()
        time.sleep(self.pause)
        return super().fit(parameters, config)


class PausingEchoOptions(EchoOptions):
    """:class:`EchoOptions` and the pause."""

    pause: float = 0.0


class PausingEcho(Pausing, EchoClient):
    """Echo, ``pause`` seconds per fit."""

    Options = PausingEchoOptions

    def __init__(self, size: int = 16, pause: float = 0.0) -> None:
        super().__init__(size)
        self.pause = pause


class PausingDigitsOptions(FileDigitsOptions):
    """:class:`FileDigitsOptions` and the pause."""

    pause: float = 0.0


class PausingDigits(Pausing, FileDigitsClient):
    """The digits client of a file, ``pause`` seconds per fit."""

    Options = PausingDigitsOptions

    def __init__(self, pause: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.pause = pause


class RecordingJitter(JitterClient):
    """:class:`JitterClient` that writes each fit's plain result to ``update-<round>.npz``
    in the working folder (``w`` and ``examples``): what the server must never see."""

    def fit(self, parameters: Parameters, config: Instructions) -> Any:
        new, examples, metrics = super().fit(parameters, config)
        np.savez(f"update-{config.round}.npz", w=new["w"], examples=examples)
        return new, examples, metrics
