"""The posterior predictive p(y*|x*, D) ≈ (1/S) Σ_s p(y*|x*, θ_s), for any method.

:func:`predictive_outputs` evaluates the network at every posterior sample
θ_s (a stacked pytree from ``method.sample``) on every test input in one
compiled, vmapped call, returning per-sample outputs ``(S, N, ...)``. Memory
stays bounded with ``sample_chunk`` (samples vmapped in chunks, the chunks
looped by ``lax.map``) and ``data_chunk`` (test points in chunks).

Reducers turn per-sample outputs into the predictive distribution:

* :func:`log_predictive_density`: log (1/S) Σ_s p(y|θ_s), a log-mean-exp;
* :func:`regression_moments` and :func:`mixture_moments`: the equal-weight
  Gaussian mixture's per-sample means and scales, and its mean and variance;
* :func:`sample_probabilities` / :func:`mean_probabilities` for classification.

For MCMC, where storing every draw may not fit, :class:`RunningPredictive`
accumulates the same quantities one draw (or a chunk of draws) at a time,
as Izmailov et al. (2021, bnn_hmc) do for their running ensemble average.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.evaluate import classification, regression
from bdljax.core.likelihoods import Likelihood
from bdljax.nn.models import Apply

Params = Any


def num_samples_of(samples: Params) -> int:
    """The size of the leading (sample) axis of a stacked pytree."""
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(samples)}
    if len(sizes) != 1:
        raise ValueError(f"posterior samples must share one leading sample axis, got sizes {sorted(sizes)}")
    return sizes.pop()


def _apply_in_chunks(apply, params, x, key, train, data_chunk):
    num_points = x.shape[0]
    if data_chunk is None or data_chunk >= num_points:
        return apply(params, x, rng=key, train=train)
    num_chunks = -(-num_points // data_chunk)
    padded = jnp.concatenate([x, jnp.repeat(x[-1:], num_chunks * data_chunk - num_points, axis=0)])
    chunks = padded.reshape((num_chunks, data_chunk, *x.shape[1:]))

    def one_chunk(inputs):
        index, x_chunk = inputs
        chunk_key = None if key is None else jax.random.fold_in(key, index)
        return apply(params, x_chunk, rng=chunk_key, train=train)

    outputs = jax.lax.map(one_chunk, (jnp.arange(num_chunks), chunks))
    return outputs.reshape((num_chunks * data_chunk, *outputs.shape[2:]))[:num_points]


@functools.partial(jax.jit, static_argnames=("apply", "sample_chunk", "data_chunk", "train"))
def predictive_outputs(
    apply: Apply,
    samples: Params,
    x: jax.Array,
    rng: Optional[jax.Array] = None,
    *,
    sample_chunk: Optional[int] = None,
    data_chunk: Optional[int] = None,
    train: bool = False,
) -> jax.Array:
    """Network outputs at every posterior sample: ``(S, N, ...)``.

    Args:
      apply: the network, ``apply(params, x, rng=None, train=False)``.
      samples: stacked parameter pytree, leading axis S.
      x: test inputs ``(N, ...)``.
      rng: optional key; when given, sample s gets its own key so stochastic
        layers (dropout with ``train=True``) draw fresh masks per sample.
      sample_chunk: vmap at most this many samples at once (``None``: all).
      data_chunk: evaluate at most this many test points at once (``None``: all).
      train: passed to ``apply`` (``True`` for per-pass dropout masks).
    """
    num_samples = num_samples_of(samples)
    keys = None if rng is None else jax.random.split(rng, num_samples)

    def one_sample(inputs):
        params, key = inputs
        return _apply_in_chunks(apply, params, x, key, train, data_chunk)

    if sample_chunk is None or sample_chunk >= num_samples:
        return jax.vmap(one_sample)((samples, keys))
    return jax.lax.map(one_sample, (samples, keys), batch_size=sample_chunk)


def per_sample_log_prob(likelihood: Likelihood, outputs: jax.Array, y: jax.Array) -> jax.Array:
    """log p(y_i | θ_s) for every sample and point: ``(S, N)``."""
    return jax.vmap(likelihood.log_prob, in_axes=(0, None))(outputs, y)


def _check_concrete_targets(likelihood: Likelihood, y, outputs) -> None:
    """The likelihood's target check when ``y`` is concrete (a label −1 would otherwise be gathered as the last
    class, 0.9 as class 0); skipped while tracing, where values are unknown."""
    if not isinstance(y, jax.core.Tracer):
        likelihood.check_targets(np.asarray(y), tuple(outputs.shape[1:]))


def log_predictive_density(likelihood: Likelihood, outputs: jax.Array, y: jax.Array) -> jax.Array:
    """log p(y_i|x_i, D) ≈ log (1/S) Σ_s p(y_i|x_i, θ_s) per point: ``(N,)``."""
    _check_concrete_targets(likelihood, y, outputs)
    log_probs = per_sample_log_prob(likelihood, outputs, y)
    return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(log_probs.shape[0])


def regression_moments(likelihood: Likelihood, outputs: jax.Array):
    """Per-sample Gaussian means and scales, each ``(S, N)``."""
    if likelihood.mean_and_scale is None:
        raise ValueError(f"{likelihood.name} is not a regression likelihood")
    return jax.vmap(likelihood.mean_and_scale)(outputs)


def mixture_moments(likelihood: Likelihood, outputs: jax.Array):
    """Mean and variance of the equal-weight predictive mixture, each ``(N,)``.

    Var = E_s[σ_s²] + Var_s[μ_s] (aleatoric + epistemic, the law of total variance).
    """
    means, scales = regression_moments(likelihood, outputs)
    return regression.mixture_mean_variance(means, scales)


def sample_probabilities(likelihood: Likelihood, outputs: jax.Array) -> jax.Array:
    """Per-sample class probabilities ``(S, N, C)``."""
    if likelihood.probabilities is None:
        raise ValueError(f"{likelihood.name} is not a classification likelihood")
    return jax.vmap(likelihood.probabilities)(outputs)


def mean_probabilities(likelihood: Likelihood, outputs: jax.Array) -> jax.Array:
    """Predictive class probabilities (1/S) Σ_s p(y|x, θ_s): ``(N, C)``."""
    return jnp.mean(sample_probabilities(likelihood, outputs), axis=0)


def evaluate(likelihood: Likelihood, outputs: jax.Array, y: jax.Array, *, y_mean: float = 0.0, y_std: float = 1.0,
             num_bins: int = 15, binning: str = "equal_width") -> Dict[str, jax.Array]:
    """All predictive metrics for per-sample ``outputs`` against targets ``y``.

    Regression targets standardised as (y − y_mean)/y_std are scored in
    original units: means and scales are mapped back before RMSE,
    log-likelihood and coverage. Classification returns accuracy, NLL,
    Brier, ECE (``binning`` with ``num_bins`` bins), entropy and mutual
    information; its NLL is −(1/N) Σ_i log (1/S) Σ_s p(y_i|θ_s) from the
    per-sample log probabilities (log-sum-exp), not clipped, so it is the same
    number the streaming predictive and the experiments report.
    """
    if likelihood.kind == "regression":
        means, scales = regression_moments(likelihood, outputs)
        return regression.regression_metrics(means * y_std + y_mean, scales * y_std, y * y_std + y_mean)
    scores = classification.classification_metrics(sample_probabilities(likelihood, outputs), y, num_bins=num_bins,
                                            binning=binning)
    scores["nll"] = -jnp.mean(log_predictive_density(likelihood, outputs, jnp.asarray(y)))
    return scores


class RunningPredictive(NamedTuple):
    """Streaming accumulators of the predictive over posterior draws.

    Attributes:
      num_samples: draws accumulated so far.
      log_density: (N,) log Σ_s p(y_i|θ_s) (log-sum-exp, so no underflow).
      first_moment: Σ_s E[y|θ_s] — the regression mean ``(N,)``, or class
        probabilities ``(N, C)``.
      second_moment: for regression Σ_s σ_s² + Σ_s (μ_s − μ̄)², the sum of the
        samples' variances and of their means' squared deviations from the
        running mean μ̄ (merged chunk by chunk as Chan et al. 1979 do, because
        E[y²] − μ̄² cancels catastrophically in float32 when |μ̄| ≫ the spread);
        zeros for classification.
    """

    num_samples: jax.Array
    log_density: jax.Array
    first_moment: jax.Array
    second_moment: jax.Array


def running_init(likelihood: Likelihood, num_points: int, num_classes: int = 0) -> RunningPredictive:
    """Empty accumulators for ``num_points`` test points."""
    shape = (num_points, num_classes) if likelihood.kind == "classification" else (num_points,)
    return RunningPredictive(jnp.zeros((), jnp.int32), jnp.full((num_points,), -jnp.inf), jnp.zeros(shape), jnp.zeros((num_points,)))


def running_update(likelihood: Likelihood, running: RunningPredictive, outputs: jax.Array, y: jax.Array) -> RunningPredictive:
    """Add a chunk of per-sample ``outputs`` ``(S, N, ...)`` to the accumulators (jit-able)."""
    _check_concrete_targets(likelihood, y, outputs)
    log_probs = per_sample_log_prob(likelihood, outputs, y)
    log_density = jnp.logaddexp(running.log_density, jax.nn.logsumexp(log_probs, axis=0))
    if likelihood.kind == "classification":
        first = running.first_moment + jnp.sum(sample_probabilities(likelihood, outputs), axis=0)
        second = running.second_moment
    else:
        means, scales = regression_moments(likelihood, outputs)
        first = running.first_moment + jnp.sum(means, axis=0)
        count, chunk = running.num_samples, outputs.shape[0]
        chunk_mean = jnp.mean(means, axis=0)
        chunk_spread = jnp.sum(jnp.square(means - chunk_mean), axis=0) + jnp.sum(jnp.square(scales), axis=0)
        # Chan et al.'s pairwise merge: the between-chunk term δ²·n_a·n_b/(n_a + n_b), zero for the first chunk.
        delta = chunk_mean - running.first_moment / jnp.maximum(count, 1)
        between = jnp.where(count > 0, jnp.square(delta) * count * chunk / (count + chunk), 0.0)
        second = running.second_moment + chunk_spread + between
    return RunningPredictive(running.num_samples + outputs.shape[0], log_density, first, second)


def running_log_predictive_density(running: RunningPredictive) -> jax.Array:
    """log (1/S) Σ_s p(y_i|θ_s) per point from the accumulators."""
    return running.log_density - jnp.log(running.num_samples)


def running_moments(running: RunningPredictive):
    """``(mean, variance)`` of the regression mixture, or ``(probabilities, None)``."""
    mean = running.first_moment / running.num_samples
    if mean.ndim == 2:
        return mean, None
    return mean, running.second_moment / running.num_samples
