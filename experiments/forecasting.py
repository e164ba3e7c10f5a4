"""Iterated multi-step forecasts of a univariate series from posterior samples, for the ``co2`` task of
``experiments/sequences.py``: a one-step forecaster p(z_{t+1} | z_{t−T+1..t}, θ) becomes an h-step one by feeding
its own sampled values back into the window (:func:`autoregressive_forecast`)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bdljax.core.likelihoods import Likelihood
from bdljax.core.posterior import Apply
from bdljax.run import predictive

Params = Any


class Forecast(NamedTuple):
    """Sampled multi-step forecasts, each field ``(P, N, horizon)`` with P = S·M trajectories.

    Attributes:
      means, scales: the Gaussian p(z_{t+h} | trajectory up to t+h−1, θ_s) of
        each step, in the model's (standardised) units; the h-step predictive
        is the equal-weight mixture of these P Gaussians (a Rao–Blackwellised
        estimate: the last step's noise is integrated exactly).
      draws: the values sampled from them and fed back into the window.
    """

    means: jax.Array
    scales: jax.Array
    draws: jax.Array


@functools.partial(jax.jit, static_argnames=("apply", "likelihood", "horizon", "paths_per_sample", "train"))
def autoregressive_forecast(apply: Apply, likelihood: Likelihood, samples: Params, windows: jax.Array, key: jax.Array,
                            *, horizon: int, paths_per_sample: int = 1, train: bool = False) -> Forecast:
    """Iterated multi-step forecasts, feeding sampled values back in, for every posterior sample.

    For each posterior sample θ_s and each of M trajectories, starting from
    the observed ``windows`` ``(N, T)`` of a univariate series,

        z_{t+h} ~ N(μ_θs(w_h), σ_θs(w_h)²),   w_{h+1} = (w_h[1:], z_{t+h}),

    for h = 1..horizon, so the spread of the trajectories carries both the
    weight uncertainty (across s) and the noise propagated through the
    recursion (across m). ``apply`` gets the same ``rng`` at every step of a
    sample's trajectories, so a stochastic-forward method (MC dropout with
    ``train=True``) keeps one weight draw per trajectory, as a Bayesian
    forecast must. Samples and trajectories are vmapped; the horizon is a
    ``lax.scan``.

    Args:
      apply: ``apply(params, windows, rng, train) -> (N, out)`` regression outputs.
      likelihood: a regression likelihood (``mean_and_scale``) on those outputs.
      samples: stacked parameter pytree, leading axis S.
      windows: ``(N, T)`` the last T observed values before each forecast origin.
      key: PRNG key.
      horizon: number of steps H.
      paths_per_sample: trajectories M per posterior sample.
      train: passed to ``apply``.

    Returns:
      :class:`Forecast` with fields ``(S·M, N, H)``, sample-major.
    """
    if likelihood.mean_and_scale is None:
        raise ValueError(f"autoregressive_forecast needs a regression likelihood, got {likelihood.name!r}")
    if windows.ndim != 2:
        raise ValueError(f"windows must be (N, T) values of a univariate series, got shape {windows.shape}")
    if horizon < 1 or paths_per_sample < 1:
        raise ValueError(f"horizon and paths_per_sample must be at least 1, got {horizon} and {paths_per_sample}")
    num_samples = predictive.num_samples_of(samples)
    sample_keys = jax.random.split(key, num_samples)

    def one_path(params, apply_key, noise_key):
        def step(window, step_key):
            mean, scale = likelihood.mean_and_scale(apply(params, window, rng=apply_key, train=train))
            draw = mean + scale * jax.random.normal(step_key, mean.shape, mean.dtype)
            return jnp.concatenate([window[:, 1:], draw[:, None]], axis=1), (mean, scale, draw)

        _, outputs = jax.lax.scan(step, windows, jax.random.split(noise_key, horizon))
        return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1), outputs)  # (N, H) each

    def one_sample(params, sample_key):
        apply_key, noise_key = jax.random.split(sample_key)
        noise_keys = jax.random.split(noise_key, paths_per_sample)
        return jax.vmap(one_path, in_axes=(None, None, 0))(params, apply_key, noise_keys)

    means, scales, draws = jax.vmap(one_sample)(samples, sample_keys)  # (S, M, N, H)
    flat = lambda a: a.reshape((num_samples * paths_per_sample, *a.shape[2:]))  # noqa: E731
    return Forecast(flat(means), flat(scales), flat(draws))
