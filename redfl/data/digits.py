"""Offline loader for scikit-learn's bundled handwritten digits, plus a seeded split.

The data set is the UCI "Optical Recognition of Handwritten Digits" test set shipped inside
scikit-learn (1797 grey-scale 8x8 images, ten classes, pixel values 0..16). It is read from the
scikit-learn package itself, so nothing is downloaded. The loader can tile the data set to
simulate larger federations without any network access.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["load_digits_arrays", "train_test_split"]

_MAX_PIXEL = 16.0


@lru_cache(maxsize=8)
def load_digits_arrays(tile: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load the bundled digits data set as flat, scaled, shuffled numpy arrays.

    Parameters
    ----------
    tile : int, default 1
        Number of copies of the 1797 images to stack (``np.tile`` on rows) before shuffling,
        giving ``1797 * tile`` samples. Must be >= 1.
    seed : int, default 0
        Seed of ``np.random.default_rng`` whose ``permutation`` shuffles the rows.

    Returns
    -------
    x : np.ndarray
        Read-only float32 array of shape ``(1797 * tile, 64)`` with values in ``[0, 1]``
        (pixels divided by 16).
    y : np.ndarray
        Read-only int64 array of shape ``(1797 * tile,)`` with labels in ``0..9``.

    Raises
    ------
    ValueError
        If ``tile < 1``.

    Notes
    -----
    Results are cached per ``(tile, seed)``; the arrays are marked read-only so that a caller
    cannot corrupt the cached copy. Use ``np.array(x)`` to get a writable copy.
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    data, target = _bundled_digits()
    x = data.astype(np.float32) / np.float32(_MAX_PIXEL)
    y = target
    if tile > 1:
        x = np.tile(x, (tile, 1))
        y = np.tile(y, tile)
    order = np.random.default_rng(seed).permutation(len(y))
    x = np.ascontiguousarray(x[order], dtype=np.float32)
    y = np.ascontiguousarray(y[order], dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """Read scikit-learn's bundled ``digits.csv.gz`` (pixels, then the label, per row)
    without importing scikit-learn, whose import costs about a second per process."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("scikit-learn is needed for its bundled digits data set")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(np.int64)


def train_test_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split samples into a training and a test set with a seeded random permutation.

    Parameters
    ----------
    x : np.ndarray
        Features, shape ``(n, ...)``.
    y : np.ndarray
        Labels, shape ``(n,)``.
    test_fraction : float
        Fraction of samples put in the test set, in ``[0, 1)``. The test set holds
        ``round(n * test_fraction)`` samples; 0 gives empty test arrays that keep the trailing
        shape of ``x`` (e.g. ``(0, 64)``).
    seed : int
        Seed of ``np.random.default_rng`` used to permute the samples.

    Returns
    -------
    x_train, y_train, x_test, y_test : np.ndarray
        New (writable) arrays; the inputs are not modified.

    Raises
    ------
    ValueError
        If ``test_fraction`` is outside ``[0, 1)`` or ``x`` and ``y`` disagree in length.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    n = len(y)
    n_test = round(n * test_fraction)
    order = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = order[:n_test], order[n_test:]
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]
