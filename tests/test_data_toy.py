"""Tests of bdljax.data.toy: the 1-D regression problem with a gap."""

import numpy as np

from bdljax import data


def test_regression_1d_is_deterministic_with_a_gap():
    toy = data.make_regression_1d(seed=0, num_train=40, num_test=300, noise=0.1)
    again = data.make_regression_1d(seed=0, num_train=40, num_test=300, noise=0.1)
    other = data.make_regression_1d(seed=1, num_train=40, num_test=300, noise=0.1)
    for a, b in zip(toy, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(toy.x_train, other.x_train)

    assert toy.x_train.shape == (40, 1) and toy.y_train.shape == (40,)
    assert toy.x_test.shape == (300, 1) and toy.f_test.shape == toy.y_test.shape == (300,)
    assert all(array.dtype == np.float32 for array in toy)
    x = toy.x_train[:, 0]
    assert np.all((x >= -1.0) & (x <= 1.0)) and not np.any((x > -0.3) & (x < 0.3))
    assert np.sum(x < 0) == 20
    # The test grid spans the gap and beyond the data on both sides.
    grid = toy.x_test[:, 0]
    assert grid.min() < -1.0 and grid.max() > 1.0 and np.sum(np.abs(grid) < 0.3) > 10
    np.testing.assert_allclose(toy.f_test, data.regression_1d_function(grid), atol=1e-6)
    residual_std = np.std(toy.y_test - toy.f_test)
    assert 0.08 < residual_std < 0.12
