"""The shared log posterior of a bandit network, on a data set that grows during the run.

A network has one output per arm, but only the played arm's reward is
observed: the likelihood of observation i is N(r_i | f_{a_i}(x_i; θ), σ²)
(:func:`played_arm_apply` picks the played output from ``[x, one_hot(a)]``
inputs, so a batch stays the usual ``(x, y)`` pair).

A growing data set and the static ``num_data``: the shared log posterior
(:mod:`bdljax.core.posterior`) scales a minibatch B by N/|B| with N static. A
bandit's data set grows, so the log posterior is built with N = capacity (the
horizon) and every observation carries a weight n_t/capacity (times its
bootstrap inclusion, :func:`experiments.bandits.agents.transform_agent`) in
the target array, ``y = [reward, weight]``, which the likelihood multiplies
into the per-example log-density: the estimate is then (n_t/|B|) Σ_B w_i
log p(r_i | x_i, a_i, θ), unbiased for the log-likelihood of the n_t points
seen so far when B is drawn uniformly from them. The prior is counted once,
unscaled.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from bdljax.core import posterior
from bdljax.core.likelihoods import LOG_2PI, Likelihood
from bdljax.core.priors import Prior
from bdljax.nn import models

from experiments.bandits.networks import learned_noise_scale


def _check_weighted_targets(y, output_shape) -> None:
    """Targets must be finite ``[reward, weight]`` rows ``(B, 2)``."""
    del output_shape
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] != 2 or not np.all(np.isfinite(y)):
        raise ValueError(f"bandit likelihood: targets must be finite [reward, weight] rows (B, 2), got shape {y.shape}.")


def observed_reward_likelihood(noise_scale: float) -> Likelihood:
    """Gaussian on the played arm's reward, r ~ N(f_a(x; θ), σ²), with a per-observation weight.

    Targets are ``y = [reward, weight]`` of shape ``(B, 2)``; the weight
    multiplies the log-density (the module docstring: it carries the
    growing data-set size n_t/capacity and the bootstrap inclusion).
    """
    if not noise_scale > 0:
        raise ValueError(f"observed_reward_likelihood: noise_scale must be positive, got {noise_scale}")

    def log_prob(output, y):
        reward, weight = y[..., 0], y[..., 1]
        return weight * (-0.5 * jnp.square((reward - output) / noise_scale) - math.log(noise_scale) - 0.5 * LOG_2PI)

    def mean_and_scale(output):
        return output, jnp.full_like(output, noise_scale)

    return Likelihood("bandit_gaussian", "regression", log_prob, _check_weighted_targets, mean_and_scale)


def observed_reward_likelihood_learned(noise_multiplier: float = 1.0) -> Likelihood:
    """Gaussian on the played arm's reward with a learned σ: r ~ N(f_a(x; θ), (c·e^ρ)²), weighted.

    The output is ``(B, 2)`` rows ``[f_a(x; θ), ρ]`` (:func:`bandit_log_posterior` with
    ``learned_noise=True`` builds them); targets ``[reward, weight]`` as in
    :func:`observed_reward_likelihood`. The weight multiplies the whole log-density, −log σ included, so
    ρ sees the data count n_t. ``noise_multiplier`` c is ``sgmcmc_scale``'s tempering (1 otherwise).
    """
    if not noise_multiplier > 0:
        raise ValueError(f"observed_reward_likelihood_learned: noise_multiplier must be positive, got {noise_multiplier}")
    log_c = math.log(noise_multiplier)

    def log_prob(output, y):
        reward, weight = y[..., 0], y[..., 1]
        mean, log_scale = output[..., 0], output[..., 1] + log_c
        return weight * (-0.5 * jnp.square((reward - mean) * jnp.exp(-log_scale)) - log_scale - 0.5 * LOG_2PI)

    def mean_and_scale(output):
        return output[..., 0], noise_multiplier * jnp.exp(output[..., 1])

    return Likelihood("bandit_gaussian_learned_noise", "regression", log_prob, _check_weighted_targets, mean_and_scale)


def played_arm_apply(apply: models.Apply, context_dim: int) -> models.Apply:
    """The network's prediction for the arm that was played.

    Inputs are ``[context, one_hot(arm)]`` rows, ``(B, d + A)``, so that the
    log posterior's batch stays the usual ``(x, y)`` pair.
    """

    def apply_played(params, x, rng=None, train=False):
        contexts, played = x[:, :context_dim], x[:, context_dim:]
        return jnp.sum(apply(params, contexts, rng=rng, train=train) * played, axis=-1)

    return apply_played


def bandit_log_posterior(model: models.Model, context_dim: int, noise_scale: float, prior: Prior,
                         capacity: int, temperature: float = 1.0, learned_noise: bool = False) -> posterior.LogPosterior:
    """The shared log posterior of a bandit network on up to ``capacity`` observations.

    log p(θ | D_t) = log p(θ) + Σ_{i ≤ n_t} log N(r_i | f_{a_i}(x_i; θ), σ²) + const,
    with N = capacity and the n_t/capacity weights in the targets (module docstring).

    ``learned_noise``: ``model`` is a :func:`~experiments.bandits.networks.learned_noise_model` (possibly
    inside :func:`~experiments.bandits.networks.randomized_prior_model`) and σ = ``noise_scale``·e^ρ with ρ one
    of the parameters, so the log posterior is over (θ, ρ); ``noise_scale`` is then a fixed multiplier
    (``sgmcmc_scale``'s tempering, or 1).
    """
    if not learned_noise:
        return posterior.log_posterior(played_arm_apply(model.apply, context_dim),
                                       observed_reward_likelihood(noise_scale), prior, capacity, temperature)
    played = played_arm_apply(model.apply, context_dim)

    def apply_with_noise(params, x, rng=None, train=False):
        mean = played(params, x, rng=rng, train=train)
        return jnp.stack([mean, jnp.broadcast_to(jnp.log(learned_noise_scale(params)), mean.shape)], axis=-1)

    return posterior.log_posterior(apply_with_noise, observed_reward_likelihood_learned(noise_scale), prior, capacity,
                                   temperature)
