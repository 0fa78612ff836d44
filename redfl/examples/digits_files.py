"""The digits task with each client's data in a file of its own, as at real sites.

:class:`FileDigitsClient` trains the digits softmax regression on the arrays of one ``.npz``
file (``x``: float32 rows of 64 pixels, ``y``: labels 0-9), read where the client runs. Its
``data`` option may hold ``{node_id}``, replaced by the client's node id, so one config
simulates every client from one folder (``data = "sites/{node_id}/data.npz"``) while each
site runs the same class with its own file (``data = "data.npz"`` in its own folder).

``python -m redfl.examples.digits_files OUT NAME ...`` writes ``OUT/NAME/data.npz`` for each
name: the training split of the bundled digits, cut among the names (iid, seeded).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from redfl.core.arrays import Parameters
from redfl.data.digits import load_digits_arrays, train_test_split
from redfl.data.partition import IidPartitioner
from redfl.examples.digits import DigitsClient
from redfl.models.softmax import SoftmaxRegression


class FileDigitsOptions(BaseModel):
    """Options of :class:`FileDigitsClient`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field(default="data.npz", min_length=1)
    """The ``.npz`` file with ``x`` and ``y`` (``{node_id}`` is the client's node id)."""
    lr: float = Field(default=0.1, gt=0.0, le=10.0)
    epochs: int = Field(default=5, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=100_000)

    def model(self) -> SoftmaxRegression:
        """The softmax-regression model these options describe."""
        return SoftmaxRegression(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size)


class FileDigitsClient(DigitsClient):
    """A digits client whose examples are the arrays of its own file."""

    Options = FileDigitsOptions  # type: ignore[assignment]

    def __init__(self, **options: Any) -> None:
        self.file_options = FileDigitsOptions(**options)
        self.model = self.file_options.model()
        self.x = np.empty((0, 64), np.float32)
        self.y = np.empty(0, np.int64)
        self.train_data = None

    def setup(self) -> None:
        """Read this client's file (its path relative to where the client runs).

        Raises
        ------
        ValueError
            If the file lacks ``x`` or ``y``, or their shapes do not fit the model.
        """
        path = Path(self.file_options.data.format(node_id=self.node_id))
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise ValueError(f"{path} must hold arrays x and y, has {sorted(arrays)}")
            x, y = np.asarray(arrays["x"], np.float32), np.asarray(arrays["y"], np.int64)
        if x.ndim != 2 or x.shape[1] != 64 or y.shape != (x.shape[0],):
            raise ValueError(f"{path}: x must be (n, 64) and y (n,), got {x.shape}, {y.shape}")
        self.x, self.y = x, y
        self.train_data = self.model.prepare(x, y)

    @staticmethod
    def initial_parameters(options: Any) -> Parameters:
        """Zero weights and biases."""
        return FileDigitsOptions.model_validate(options).model().init_parameters()


def write_site_data(
    out: str | Path, names: Sequence[str], seed: int = 0, test_fraction: float = 0.2
) -> list[Path]:
    """Write ``out/<name>/data.npz`` for each name: the digits' training split cut among
    the names (iid, by ``seed``); the written files, in order."""
    x, y = load_digits_arrays(seed=seed)
    x_train, y_train = train_test_split(x, y, test_fraction, seed)[:2]
    parts = IidPartitioner(seed=seed).partition(y_train, len(names))
    written = []
    for name, part in zip(names, parts, strict=True):
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "data.npz", x=x_train[part], y=y_train[part])
        written.append(folder / "data.npz")
    return written


def main(argv: Sequence[str]) -> int:
    """``python -m redfl.examples.digits_files OUT NAME ...``."""
    if len(argv) < 2:
        print("usage: python -m redfl.examples.digits_files OUT NAME ...", file=sys.stderr)
        return 2
    for path in write_site_data(argv[0], argv[1:]):
        with np.load(path) as arrays:
            print(f"wrote {path}: {len(arrays['y'])} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
