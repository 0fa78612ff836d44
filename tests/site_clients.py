"""Clients for site processes in tests: each marks the start of a fit in its folder
(``started-<round>``, so a test can act in the middle of a round) and pauses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.examples.digits_files import FileDigitsClient, FileDigitsOptions
from redfl.examples.echo import EchoClient


def mark_and_pause(config: Instructions, pause: float) -> None:
    """Touch ``started-<round>`` in the working folder, then sleep ``pause`` seconds."""
    Path(f"started-{config.round}").touch()
    time.sleep(pause)


class PausingEcho(EchoClient):
    """Echo, ``pause`` seconds per fit."""

    def __init__(self, size: int = 16, pause: float = 0.0) -> None:
        super().__init__(size)
        self.pause = pause

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        mark_and_pause(config, self.pause)
        return super().fit(parameters, config)


class PausingDigitsOptions(FileDigitsOptions):
    """:class:`FileDigitsOptions` and the pause."""

    pause: float = 0.0


class PausingDigits(FileDigitsClient):
    """The digits client of a file, ``pause`` seconds per fit."""

    Options = PausingDigitsOptions

    def __init__(self, pause: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.pause = pause

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        mark_and_pause(config, self.pause)
        return super().fit(parameters, config)
