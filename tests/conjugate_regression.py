"""The conjugate Bayesian linear regression that the samplers' tests check against, with its exact posterior.

Two correlated inputs (correlation 0.8) and a bias, y = x·(1, −0.5) + 0.3 + N(0, noise²), prior N(0, prior_scale²)
on every weight: the posterior is Gaussian with covariance (XᵀX/σ² + I/s²)⁻¹ and mean Σ Xᵀy/σ².
"""

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.nn import models


def linear_problem(seed=0, num_data=100, noise=0.5, prior_scale=1.0):
    """``(x, y, model, exact_mean, exact_covariance)``; the posterior is over ``(w₀, w₁, b)``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(num_data, 2))
    x = np.c_[z[:, 0], 0.8 * z[:, 0] + 0.6 * z[:, 1]].astype(np.float32)
    y = (x @ np.array([1.0, -0.5]) + 0.3 + noise * rng.normal(size=num_data)).astype(np.float32)
    design = np.c_[x, np.ones(num_data)].astype(np.float64)
    covariance = np.linalg.inv(design.T @ design / noise**2 + np.eye(3) / prior_scale**2)
    mean = covariance @ design.T @ y.astype(np.float64) / noise**2
    model = models.from_functions(lambda key: {"w": jax.random.normal(key, (2,)), "b": jnp.zeros(())},
                                  lambda params, x: x @ params["w"] + params["b"])
    return x, y, model, mean, covariance
