"""A synthetic 1-D regression problem with a gap between two clusters of inputs.

`make_regression_1d` draws the standard picture of "in-between" uncertainty (Foong et al., 2019): a good
posterior predictive is confident on the clusters and uncertain in the gap and beyond them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Regression1D", "make_regression_1d", "regression_1d_function"]


class Regression1D(NamedTuple):
    """Toy 1-D regression data.

    Attributes:
      x_train: (N, 1) float32 inputs from two clusters with a gap between them.
      y_train: (N,) float32 noisy targets.
      x_test: (M, 1) float32 evenly spaced grid covering both clusters, the gap
        and beyond.
      y_test: (M,) float32 noisy targets on the grid (same noise level).
      f_test: (M,) float32 noise-free function values on the grid.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    f_test: np.ndarray


def regression_1d_function(x: np.ndarray) -> np.ndarray:
    """The noise-free function of `make_regression_1d`: sin(3x) + 0.3 cos(9x)."""
    return np.sin(3.0 * x) + 0.3 * np.cos(9.0 * x)


def make_regression_1d(
    seed: int,
    num_train: int = 40,
    num_test: int = 400,
    noise: float = 0.1,
    clusters: tuple[tuple[float, float], tuple[float, float]] = ((-1.0, -0.3), (0.3, 1.0)),
    test_range: tuple[float, float] = (-2.0, 2.0),
) -> Regression1D:
    """The "in-between uncertainty" toy problem (after Foong et al., 2019, Fig. 1).

    Training inputs are uniform on two intervals (default [-1, -0.3] and
    [0.3, 1], half the points in each) so that there is no data in (-0.3, 0.3);
    y = sin(3x) + 0.3 cos(9x) + ε with ε ~ N(0, noise²). A good posterior
    predictive is confident on the clusters and uncertain in the gap and
    outside [-1, 1]; mean-field VI is known to stay overconfident in the gap.

    Args:
      seed: the same seed always gives the same data.
      num_train: training points N (ceil(N/2) in the left cluster).
      num_test: grid points M over `test_range`.
      noise: standard deviation of the Gaussian observation noise.
      clusters: the two (low, high) input intervals of the training data.
      test_range: (low, high) of the test grid.
    """
    rng = np.random.default_rng(seed)
    (left_low, left_high), (right_low, right_high) = clusters
    num_left = (num_train + 1) // 2
    x_train = np.concatenate([
        rng.uniform(left_low, left_high, size=num_left),
        rng.uniform(right_low, right_high, size=num_train - num_left),
    ])
    y_train = regression_1d_function(x_train) + noise * rng.standard_normal(num_train)
    x_test = np.linspace(test_range[0], test_range[1], num_test)
    f_test = regression_1d_function(x_test)
    y_test = f_test + noise * rng.standard_normal(num_test)
    return Regression1D(
        x_train=x_train[:, None].astype(np.float32),
        y_train=y_train.astype(np.float32),
        x_test=x_test[:, None].astype(np.float32),
        y_test=y_test.astype(np.float32),
        f_test=f_test.astype(np.float32),
    )
