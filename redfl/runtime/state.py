"""``StateStore``: per-client state kept on the worker that hosts the client.

Stateful algorithms (control variates, personalised layers, local momentum) keep arrays per
client from one round to the next. A worker keeps them in memory up to a byte bound; past
it, the least recently used states are spilled to disk as safetensors files (never pickle)
and read back on next use, so 100,000 stateful clients fit on one machine.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

ClientState = dict[str, np.ndarray]
"""One client's state: named numpy arrays."""

DEFAULT_MEMORY_BYTES = 256 * 2**20
"""Default bound on the bytes of client state a worker keeps in memory (256 MiB)."""


class StateStore:
    """Client states in memory up to ``memory_bytes``, the least recently used spilled to disk.

    Parameters
    ----------
    memory_bytes:
        Bound on the bytes of state held in memory, >= 0 (0 spills every state at once).
    spill_dir:
        Where spilled states go; by default a fresh temporary folder removed by
        :meth:`close`.

    Examples
    --------
    >>> store = StateStore(memory_bytes=0)
    >>> store.put("a", {"c": np.ones(3, np.float32)})
    >>> store.spilled, store.get("a")["c"].tolist()
    (1, [1.0, 1.0, 1.0])
    >>> store.close()
    """

    def __init__(self, memory_bytes: int = DEFAULT_MEMORY_BYTES, spill_dir: str | None = None):
        if memory_bytes < 0:
            raise ValueError(f"memory_bytes must be >= 0, got {memory_bytes}")
        self.memory_bytes = memory_bytes
        self._own_dir = spill_dir is None
        self._spill_dir = spill_dir
        self._dir: Path | None = None  # made on the first spill
        self._memory: OrderedDict[str, ClientState] = OrderedDict()
        self._on_disk: set[str] = set()
        self.resident_bytes = 0

    @property
    def spilled(self) -> int:
        """How many client states are on disk now."""
        return len(self._on_disk)

    def __len__(self) -> int:
        return len(self._memory) + len(self._on_disk)

    def ids(self) -> list[str]:
        """The ids of every client with a kept state (in memory or spilled), sorted."""
        return sorted(set(self._memory) | self._on_disk)

    def get(self, node_id: str) -> ClientState:
        """The state of ``node_id`` (an empty dict if it has none); reads a spill back."""
        state = self._memory.get(node_id)
        if state is not None:
            self._memory.move_to_end(node_id)
            return state
        if node_id in self._on_disk:
            path = self._path(node_id)
            loaded = load_file(str(path))
            self._on_disk.discard(node_id)
            path.unlink()
            self._remember(node_id, loaded)
            return loaded
        return {}

    def put(self, node_id: str, state: Mapping[str, np.ndarray]) -> None:
        """Keep ``state`` for ``node_id`` (replacing any older one); spill past the bound."""
        self._forget(node_id)
        arrays = {name: np.asarray(value) for name, value in state.items()}
        for name, array in arrays.items():
            if not isinstance(name, str) or array.dtype.kind not in "biufc":
                raise TypeError(
                    f"client state of {node_id!r}: {name!r} must be a numeric array named "
                    f"by a string, got {array.dtype}"
                )
        if arrays:
            self._remember(node_id, arrays)

    def close(self) -> None:
        """Drop every state and remove the spill folder if this store made it."""
        self._memory.clear()
        self._on_disk.clear()
        self.resident_bytes = 0
        if self._own_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _remember(self, node_id: str, state: ClientState) -> None:
        self._memory[node_id] = state
        self.resident_bytes += _nbytes(state)
        while self.resident_bytes > self.memory_bytes and self._memory:
            oldest, spilled = self._memory.popitem(last=False)
            self.resident_bytes -= _nbytes(spilled)
            save_file({k: np.ascontiguousarray(v) for k, v in spilled.items()}, self._path(oldest))
            self._on_disk.add(oldest)

    def _forget(self, node_id: str) -> None:
        old = self._memory.pop(node_id, None)
        if old is not None:
            self.resident_bytes -= _nbytes(old)
        if node_id in self._on_disk:
            self._on_disk.discard(node_id)
            self._path(node_id).unlink(missing_ok=True)

    def _path(self, node_id: str) -> Path:
        if self._dir is None:
            self._dir = Path(self._spill_dir or tempfile.mkdtemp(prefix="redfl-state-"))
            self._dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(node_id.encode(), usedforsecurity=False).hexdigest()
        return self._dir / f"{digest}.safetensors"


def _nbytes(state: Mapping[str, np.ndarray]) -> int:
    return sum(int(array.nbytes) for array in state.values())
