"""``Checkpoint``: a callback that saves the global model every few rounds."""

from __future__ import annotations

from pathlib import Path

from redfl.core.arrays import Parameters
from redfl.rundir import save_parameters
from redfl.schemas.callbacks import Callback


class Checkpoint(Callback):
    """Write ``round-<n>.safetensors`` into ``directory`` every ``every`` rounds.

    Parameters
    ----------
    directory:
        Folder for the files (created on first save).
    every:
        Save after rounds ``every``, ``2 * every``, ... (>= 1).
    """

    def __init__(self, directory: str | Path, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.directory = Path(directory)
        self.every = every
        self.saved: list[Path] = []

    def on_aggregate(self, rnd: int, parameters: Parameters) -> None:
        """Save the new global parameters when ``rnd`` is a multiple of ``every``."""
        if rnd % self.every:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"round-{rnd}.safetensors"
        save_parameters(path, parameters, {"round": rnd})
        self.saved.append(path)
