"""Observation models p(y | f(x; θ)) on network outputs.

A :class:`Likelihood` turns the network output for a batch into per-example
log-probabilities, and into the predictive quantities the metrics need:

* regression likelihoods give ``mean_and_scale(output) -> (mean, scale)``,
  each of shape ``(B,)``, with targets ``y`` of shape ``(B,)``;
* classification likelihoods give ``probabilities(output) -> (B, C)``, with
  integer labels ``y`` of shape ``(B,)`` in ``[0, C)``.

``check_targets`` validates targets on the host before anything is compiled,
so bad labels fail loudly instead of being silently gathered out of range.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

LOG_2PI = float(np.log(2 * np.pi))


class Likelihood(NamedTuple):
    """An observation model.

    Attributes:
      name: for logs and error messages.
      kind: ``"regression"`` or ``"classification"``.
      log_prob: ``log_prob(output, y) -> (B,)`` per-example log p(y_i | f_i).
      check_targets: ``check_targets(y, output_shape)``; raises ``ValueError``
        naming the problem. Host-side, called before compilation.
      mean_and_scale: regression only; ``output -> (mean, scale)``.
      probabilities: classification only; ``output -> (B, C)`` probabilities.
    """

    name: str
    kind: str
    log_prob: Callable[[jax.Array, jax.Array], jax.Array]
    check_targets: Callable[[np.ndarray, tuple], None]
    mean_and_scale: Optional[Callable[[jax.Array], tuple]] = None
    probabilities: Optional[Callable[[jax.Array], jax.Array]] = None


def _gaussian_log_prob(y, mean, scale):
    return -0.5 * jnp.square((y - mean) / scale) - jnp.log(scale) - 0.5 * LOG_2PI


def _check_regression_targets(expected_output_dim: int, name: str):
    def check(y, output_shape):
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"{name}: targets must have shape (N,), got {y.shape}; flatten a (N, 1) column with y[:, 0].")
        _check_finite_targets(y, name)
        out_dim = output_shape[-1] if len(output_shape) > 1 else 1
        if out_dim != expected_output_dim:
            raise ValueError(
                f"{name}: the network outputs {out_dim} value(s) per example but this likelihood needs {expected_output_dim}; "
                f"build the model with output_dim={expected_output_dim}."
            )

    return check


def _check_finite_targets(y, name):
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)):
        bad = int(np.size(y) - np.count_nonzero(np.isfinite(y.astype(float)))) if np.issubdtype(y.dtype, np.number) else "?"
        raise ValueError(f"{name}: targets contain {bad} NaN/inf value(s); clean or drop those rows first.")


def _squeeze_column(output):
    return output[..., 0] if output.ndim > 1 and output.shape[-1] == 1 else output


def gaussian(scale: float) -> Likelihood:
    """Homoscedastic Gaussian, y ~ N(f(x), scale²), with a fixed noise scale.

    The network outputs one column, the mean. For a *learned* homoscedastic
    noise, wrap the model with :func:`bdljax.nn.models.with_learned_noise` and
    use :func:`heteroscedastic_gaussian`.
    """
    if not scale > 0:
        raise ValueError(f"gaussian likelihood: scale must be positive, got {scale}")

    def log_prob(output, y):
        return _gaussian_log_prob(y, _squeeze_column(output), scale)

    def mean_and_scale(output):
        mean = _squeeze_column(output)
        return mean, jnp.full_like(mean, scale)

    return Likelihood("gaussian", "regression", log_prob, _check_regression_targets(1, "gaussian likelihood"), mean_and_scale)


def heteroscedastic_gaussian(min_scale: float = 1e-3) -> Likelihood:
    """Gaussian with an input-dependent scale: y ~ N(μ(x), σ(x)²).

    The network outputs two columns ``[μ, s]`` and σ = softplus(s) + min_scale,
    as in Lakshminarayanan et al. (2017), "Simple and Scalable Predictive
    Uncertainty Estimation using Deep Ensembles"; ``min_scale`` keeps the
    likelihood bounded.
    """

    def mean_and_scale(output):
        return output[..., 0], jax.nn.softplus(output[..., 1]) + min_scale

    def log_prob(output, y):
        mean, scale = mean_and_scale(output)
        return _gaussian_log_prob(y, mean, scale)

    return Likelihood(
        "heteroscedastic_gaussian", "regression", log_prob,
        _check_regression_targets(2, "heteroscedastic_gaussian likelihood"), mean_and_scale,
    )


def _check_labels(name, binary=False):
    def check(y, output_shape):
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"{name}: labels must have shape (N,), got {y.shape}.")
        if not np.issubdtype(y.dtype, np.integer):
            if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError(f"{name}: labels must be integers, got dtype {y.dtype} with non-integer or non-finite values.")
        num_classes = 2 if binary else output_shape[-1]
        low, high = (int(y.min()), int(y.max())) if y.size else (0, 0)
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{name}: labels must lie in [0, {num_classes}) but range over [{low}, {high}]; "
                f"relabel the data or build the network with more outputs."
            )

    return check


def categorical() -> Likelihood:
    """Categorical over C classes with logits f(x) of shape (B, C)."""

    def log_prob(logits, y):
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return jnp.take_along_axis(log_p, y[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def probabilities(logits):
        return jax.nn.softmax(logits, axis=-1)

    return Likelihood("categorical", "classification", log_prob, _check_labels("categorical likelihood"), probabilities=probabilities)


def bernoulli() -> Likelihood:
    """Bernoulli with one logit per example (output (B,) or (B, 1)); labels in {0, 1}.

    ``probabilities`` returns the two-class table ``[1 − p, p]`` so that the
    classification metrics apply unchanged.
    """

    def log_prob(output, y):
        logit = _squeeze_column(output)
        # log σ(z) = −softplus(−z), log(1 − σ(z)) = −softplus(z): stable for large |z|.
        return -jnp.where(y > 0, jax.nn.softplus(-logit), jax.nn.softplus(logit))

    def probabilities(output):
        p = jax.nn.sigmoid(_squeeze_column(output))
        return jnp.stack([1 - p, p], axis=-1)

    return Likelihood("bernoulli", "classification", log_prob, _check_labels("bernoulli likelihood", binary=True),
                      probabilities=probabilities)


_BY_NAME = {
    "gaussian": gaussian,
    "heteroscedastic_gaussian": heteroscedastic_gaussian,
    "categorical": categorical,
    "bernoulli": bernoulli,
}


def get(name: str, **kwargs) -> Likelihood:
    """Build a likelihood by name (for command lines and configs)."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(_BY_NAME)}")
    return _BY_NAME[name](**kwargs)
