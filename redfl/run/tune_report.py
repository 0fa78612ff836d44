"""A trial's reports to Tune: each round's metrics with the server state as its checkpoint.

A Tune checkpoint is the run folder's checkpoint of that round (``state.json`` and
``state.safetensors``: the whole :class:`~redfl.core.server_state.ServerState`) plus the
``config.json`` of the run that saved it. :class:`TuneReporter` writes it;
:func:`load_checkpoint` reads it back for a trial that starts from it (a PBT exploit, a
retried or restored trial) and checks that the trial's config differs from the one that
made the state only in the values PBT mutates.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from redfl.core.config import ConfigError
from redfl.core.events import CheckpointSaved, Event, RoundFinished
from redfl.core.result import RoundRecord
from redfl.core.server_state import CheckpointError, ServerState, load_state
from redfl.run.config import FederationConfig, parse_config
from redfl.run.digest import config_diff, config_digest
from redfl.schemas.callbacks import Callback

if TYPE_CHECKING:
    from redfl.runtime.tune import Reporter

CONFIG_FILE = "config.json"
"""The checkpoint's copy of the config of the run that saved it."""


class TuneReporter(Callback):
    """Reports each round's record to Tune, with the server state saved after it.

    The run must save its state every round (``federation.checkpoint_every = 1``): a
    round's metrics wait for the run's next :class:`~redfl.core.events.CheckpointSaved`,
    and that saved folder, with ``config_file`` (the run folder's ``config.json``), becomes
    the Tune checkpoint.
    """

    def __init__(self, report: Reporter, metric: str, config_file: Path) -> None:
        self.report = report
        self.metric = metric
        self.config_file = config_file
        self._pending: dict[str, float] | None = None

    def on_event(self, event: Event) -> bool | None:
        """Keep a finished round's metrics; report them with the state saved next."""
        if isinstance(event, CheckpointSaved) and self._pending is not None:
            metrics, saved = self._pending, Path(event.path)
            self._pending = None
            self.report(metrics, lambda folder: self._copy(saved, folder))
            return None
        if not isinstance(event, RoundFinished):
            return None
        rnd = event.record.round
        metrics = round_metrics(event.record, rnd)
        if self.metric not in metrics:
            raise ConfigError(
                f"metric: {self.metric!r} is not in round {rnd}'s record (for accuracy or "
                f"loss set strategy.fraction_evaluate > 0 or evaluation.central); "
                f"it has {sorted(metrics)}"
            )
        self._pending = metrics  # reported with the server state saved next
        return None

    def _copy(self, saved: Path, folder: Path) -> None:
        shutil.copytree(saved, folder, dirs_exist_ok=True)
        shutil.copyfile(self.config_file, folder / CONFIG_FILE)


def load_checkpoint(
    folder: Path, config: FederationConfig, mutable: Collection[str] = ()
) -> ServerState:
    """The server state of a Tune checkpoint, for a trial whose config is ``config``.

    ``config`` may differ from the config that saved the state only in the fields named
    in ``mutable`` (the dotted paths PBT mutates) and in those that do not change results
    (:data:`redfl.core.digest.NOT_IN_DIGEST`).

    Raises
    ------
    CheckpointError
        If the checkpoint cannot be loaded, or its config is not the one its state was
        saved with.
    ConfigError
        If ``config`` differs in another field; the message names every such field.
    """
    state = load_state(folder)
    try:
        saved = parse_config(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {folder}: cannot read {CONFIG_FILE}: {error}") from None
    if config_digest(saved) != state.config_digest:
        raise CheckpointError(f"checkpoint {folder}: {CONFIG_FILE} is not the config of its state")
    refused = [name for name in config_diff(saved, config) if not _mutable(name, mutable)]
    if refused:
        searched = ", ".join(sorted(mutable)) or "none"
        raise ConfigError(
            f"checkpoint {folder}: the trial's config differs from the one that saved the "
            f"state in {', '.join(refused)}; only the mutated values may differ ({searched})"
        )
    return state


def _mutable(name: str, mutable: Collection[str]) -> bool:
    # An empty table on one side ("client.options" = {}) differs as a whole; the values
    # the other side has there are fields of their own, checked one by one.
    return any(m == name or m.startswith(f"{name}.") for m in mutable)


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
