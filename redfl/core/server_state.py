"""``ServerState``: everything a run needs to continue, saved atomically, loaded bit-exact.

A checkpoint is a folder with two files:

- ``state.safetensors``: every array (the parameters, and every array inside the strategy
  state and ``extra``), under stable path keys (:mod:`redfl.core.state_codec`);
- ``state.json``: everything else, the array index, and the SHA-256 of the safetensors
  file.

Each file is written to a temporary name, flushed to disk (fsync), renamed over the final
name, and the folder is fsynced; ``state.json`` goes last, so a checkpoint whose JSON is
present has its arrays on disk. :func:`load_state` checks the digest, so a folder caught
between the two renames (an overwrite interrupted) is refused, never half-loaded; write
each checkpoint to its own folder to always keep the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from redfl.core.arrays import Parameters
from redfl.core.result import Failure, RoundRecord
from redfl.core.state_codec import decode, encode

STATE_JSON = "state.json"
"""The checkpoint's JSON file (written last)."""
STATE_ARRAYS = "state.safetensors"
"""The checkpoint's arrays."""
FORMAT = 1
"""Version of the checkpoint layout, stored in ``state.json``."""


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message says which file and why."""


@dataclass
class ServerState:
    """The server side of a run at a round boundary.

    Attributes
    ----------
    round:
        Rounds completed.
    parameters:
        The global parameters after that round.
    strategy_state:
        ``Strategy.state()`` (wrappers included: DP clipping norm and accountant, ...).
    history, failures:
        The run's records so far.
    seed:
        The run's seed (every random draw is a function of seed, round and node id).
    config_digest:
        :func:`redfl.core.digest.config_digest` of the run's config.
    extra:
        Schema-specific state (decentralised node models, client states, ...).
    """

    round: int
    parameters: Parameters
    strategy_state: dict[str, Any]
    history: list[RoundRecord]
    failures: list[Failure]
    seed: int
    config_digest: str
    extra: dict[str, Any] = field(default_factory=dict)


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file: fsync, then rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_state(state: ServerState, directory: str | Path) -> Path:
    """Save ``state`` into ``directory`` (created if needed) atomically; return the folder.

    Raises
    ------
    TypeError
        If a value cannot be stored (an object or complex array, a non-string dict key,
        ...); the message names its path. Nothing is written then.
    """
    arrays: dict[str, np.ndarray] = {}
    tree = {
        "format": FORMAT,
        "round": state.round,
        "seed": state.seed,
        "config_digest": state.config_digest,
        "parameters": encode(dict(state.parameters), "parameters", arrays),
        "strategy_state": encode(state.strategy_state, "strategy_state", arrays),
        "extra": encode(state.extra, "extra", arrays),
        "history": encode([asdict(r) for r in state.history], "history", arrays),
        "failures": encode([asdict(f) for f in state.failures], "failures", arrays),
    }
    blob = save(arrays) if arrays else b""
    tree["arrays"] = {
        "file": STATE_ARRAYS,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "index": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()},
    }
    text = json.dumps(tree, allow_nan=False, indent=1) + "\n"  # key order kept
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / STATE_ARRAYS, blob)
    _sync_folder(folder)
    _write(folder / STATE_JSON, text.encode("utf-8"))
    _sync_folder(folder)
    return folder


def load_state(directory: str | Path) -> ServerState:
    """Load what :func:`save_state` wrote: same dtypes, shapes and bits.

    Raises
    ------
    CheckpointError
        If a file is missing, unreadable, of another format, or the arrays do not match
        the JSON's digest (an interrupted overwrite).
    """
    folder = Path(directory)
    try:
        tree = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        blob = (folder / STATE_ARRAYS).read_bytes()
    except FileNotFoundError as error:
        raise CheckpointError(f"checkpoint {folder}: missing {Path(error.filename).name}") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {folder}: cannot read: {error}") from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {folder}: {STATE_JSON} is not format {FORMAT}")
    if hashlib.sha256(blob).hexdigest() != tree["arrays"]["sha256"]:
        raise CheckpointError(
            f"checkpoint {folder}: {STATE_ARRAYS} does not match {STATE_JSON} (an interrupted "
            "save); use an earlier checkpoint"
        )
    arrays = load(blob) if blob else {}
    return ServerState(
        round=int(tree["round"]),
        parameters=decode(tree["parameters"], arrays),
        strategy_state=decode(tree["strategy_state"], arrays),
        history=[RoundRecord(**r) for r in decode(tree["history"], arrays)],
        failures=[Failure(**f) for f in decode(tree["failures"], arrays)],
        seed=int(tree["seed"]),
        config_digest=str(tree["config_digest"]),
        extra=decode(tree["extra"], arrays),
    )
