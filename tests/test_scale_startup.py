"""Worker start-up stays cheap: the digits data loads without importing scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from sklearn.datasets import load_digits

from redfl.data.digits import load_digits_arrays


def test_the_bundled_digits_read_directly_equal_scikit_learns_loader():
    x, y = load_digits_arrays(tile=2, seed=3)
    bunch = load_digits()
    expected_x = np.tile(bunch.data / 16.0, (2, 1))
    expected_y = np.tile(bunch.target, 2)
    order = np.random.default_rng(3).permutation(len(expected_y))
    np.testing.assert_array_equal(y, expected_y[order])
    np.testing.assert_allclose(x, expected_x[order], rtol=0, atol=1e-7)


def test_loading_the_digits_does_not_import_scikit_learn():
    code = (
        "import sys; from redfl.data.digits import load_digits_arrays; load_digits_arrays(); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
