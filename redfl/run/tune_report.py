"""A trial's reports to Tune: each round's metrics with a checkpoint.

:class:`TuneReporter` is a run callback; :func:`save_checkpoint` and
:func:`load_checkpoint` are the one place that decides what a Tune checkpoint holds (for
now the round and the global parameters).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from redfl.core.arrays import Parameters
from redfl.core.config import ConfigError
from redfl.core.events import CheckpointSaved, Event, RoundFinished
from redfl.core.result import RoundRecord
from redfl.rundir import load_parameters, save_parameters
from redfl.schemas.callbacks import Callback

if TYPE_CHECKING:
    from redfl.runtime.tune import Reporter

CHECKPOINT_FILE = "model.safetensors"
"""The checkpoint's file: the global parameters, with the round in its metadata."""


def save_checkpoint(folder: Path, rnd: int, parameters: Parameters) -> None:
    """Write round ``rnd``'s global parameters into a checkpoint directory."""
    save_parameters(folder / CHECKPOINT_FILE, parameters, {"round": rnd})


def load_checkpoint(folder: Path) -> tuple[int, Parameters]:
    """(round, global parameters) of a checkpoint directory."""
    parameters, metadata = load_parameters(folder / CHECKPOINT_FILE)
    return int(metadata["round"]), parameters


class TuneReporter(Callback):
    """Reports each round's record to Tune, with a checkpoint.

    The checkpoint is the round's global parameters (:func:`save_checkpoint`); with
    ``state_checkpoints``, the round's metrics wait for the run's next
    :class:`~redfl.core.events.CheckpointSaved` and the saved folder (the server state,
    once the run saves one every round) becomes the Tune checkpoint. Rounds are numbered
    from ``done + 1`` (a run restored after ``done`` rounds).
    """

    def __init__(
        self, report: Reporter, metric: str, done: int = 0, state_checkpoints: bool = False
    ) -> None:
        self.report = report
        self.metric = metric
        self.done = done
        self.state_checkpoints = state_checkpoints
        self.parameters: Parameters | None = None
        self._pending: dict[str, float] | None = None

    def on_aggregate(self, rnd: int, parameters: Parameters) -> None:
        """Keep the round's global parameters for its checkpoint."""
        self.parameters = parameters

    def on_event(self, event: Event) -> bool | None:
        """Report a finished round (and its checkpoint)."""
        if isinstance(event, CheckpointSaved) and self._pending is not None:
            metrics, saved = self._pending, Path(event.path)
            self._pending = None
            self.report(metrics, lambda folder: _copy(saved, folder))
            return None
        if not isinstance(event, RoundFinished):
            return None
        rnd = self.done + event.record.round
        metrics = round_metrics(event.record, rnd)
        if self.metric not in metrics:
            raise ConfigError(
                f"metric: {self.metric!r} is not in round {rnd}'s record (for accuracy or "
                f"loss set strategy.fraction_evaluate > 0 or evaluation.central); "
                f"it has {sorted(metrics)}"
            )
        if self.state_checkpoints:
            self._pending = metrics  # reported with the server state saved next
            return None
        parameters = self.parameters
        writer = None if parameters is None else lambda f: save_checkpoint(f, rnd, parameters)
        self.report(metrics, writer)
        return None


def round_metrics(record: RoundRecord, rnd: int) -> dict[str, float]:
    """A round's numbers for Tune: the record's own and its ``metrics``, finite only."""
    values: dict[str, float] = {"round": float(rnd)}
    for key in ("accuracy", "loss", "train_loss", "seconds", "succeeded", "failed"):
        value = getattr(record, key)
        if value is not None:
            values[key] = float(value)
    for key, value in record.metrics.items():
        values.setdefault(key, float(value))
    return {k: v for k, v in values.items() if math.isfinite(v)}


def _copy(saved: Path, folder: Path) -> None:
    shutil.copytree(saved, folder, dirs_exist_ok=True)
