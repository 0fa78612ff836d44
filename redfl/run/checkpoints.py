"""Checkpoints in a run folder: the server state every few rounds and when the run ends.

``checkpoints/round-000004/`` holds the state after round 4 (``state.json`` and
``state.safetensors``, written atomically: :func:`redfl.core.server_state.save_state`);
each checkpoint has its own folder, so an interrupted save never spoils the previous
one, and only the newest :data:`KEEP` are kept. The state at the end of a run (finished,
cancelled or failed after a round) is a checkpoint like the others.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from redfl.core.events import CheckpointSaved, Event, RoundFinished
from redfl.core.server_state import STATE_JSON, CheckpointError, ServerState, load_state, save_state
from redfl.schemas.callbacks import Callback, emit

CHECKPOINTS = "checkpoints"
"""The folder of checkpoints inside a run folder."""
KEEP = 2
"""How many checkpoints a run folder keeps (the newest)."""


class Stateful(Protocol):
    """A federation whose server state can be taken and loaded."""

    round: int
    """Rounds completed."""

    def server_state(self, config_digest: str = "") -> ServerState:
        """The state now, between rounds."""
        ...

    def load_server_state(self, state: ServerState) -> None:
        """Continue from ``state``."""
        ...


def checkpoint_path(folder: Path, rnd: int) -> Path:
    """Where the state after round ``rnd`` goes."""
    return folder / CHECKPOINTS / f"round-{rnd:06d}"


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint of a run folder (``None`` if there is none)."""
    root = folder / CHECKPOINTS
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("round-*") if (p / STATE_JSON).is_file())
    return done[-1] if done else None


def load_latest(folder: Path) -> ServerState:
    """The newest loadable checkpoint's state (an older one if the newest is damaged).

    Raises
    ------
    CheckpointError
        If the folder has no loadable checkpoint.
    """
    root = folder / CHECKPOINTS
    candidates = sorted(root.glob("round-*"), reverse=True) if root.is_dir() else []
    errors = []
    for path in candidates:
        try:
            return load_state(path)
        except CheckpointError as error:
            errors.append(str(error))
    detail = f" ({errors[0]})" if errors else ""
    raise CheckpointError(f"{folder} has no loadable checkpoint in {CHECKPOINTS}/{detail}")


class Checkpointer(Callback):
    """Saves the federation's state every ``every`` rounds (0: never during the run).

    :meth:`save` also serves the end of a run; each save emits :class:`CheckpointSaved`
    to ``sinks``.
    """

    def __init__(
        self, federation: Stateful, folder: Path, every: int, digest: str, sinks: Sequence[Callback]
    ) -> None:
        self.federation, self.folder, self.every, self.digest = federation, folder, every, digest
        self.sinks = sinks
        self.saved_round = -1

    def on_event(self, event: Event) -> bool | None:
        """Save after every ``every``-th round."""
        if isinstance(event, RoundFinished) and self.every and event.record.round % self.every == 0:
            self.save()
        return None

    def save(self) -> Path:
        """Save the state now (once per round), keep the newest :data:`KEEP`."""
        path = checkpoint_path(self.folder, self.federation.round)
        if self.federation.round != self.saved_round:
            state = self.federation.server_state(self.digest)
            save_state(state, path)
            self.saved_round = state.round
            for old in sorted((self.folder / CHECKPOINTS).glob("round-*"))[:-KEEP]:
                shutil.rmtree(old, ignore_errors=True)
            emit(self.sinks, CheckpointSaved(state.round, str(path)))
        return path
