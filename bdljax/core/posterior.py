"""The one log posterior every inference method uses.

For parameters θ, a likelihood p(y|f(x;θ)), a prior p(θ), a training set of
``num_data`` = N points and a temperature T, the tempered log posterior on a
minibatch B is

    log p_T(θ | D) ≈ (1/T) · [ log p(θ) + (N/|B|) Σ_{i∈B} log p(y_i | x_i, θ) ],

an unbiased estimate of the full-batch (1/T)·[log p(θ) + Σ_i log p(y_i|x_i,θ)]
when B is drawn uniformly (tested). With |B| = N it is exact. T = 1 is the
Bayes posterior; T < 1 sharpens it (the "cold posterior" of Wenzel et al.
2020, "How good is the Bayes posterior in deep neural networks really?").

No method rescales the prior or a KL on its own: variational methods use
``log_likelihood`` (already scaled by N/|B|) and subtract the KL once, which
is the KL "counted once per epoch" — never divided by the batch size.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.core.likelihoods import Likelihood
from bdljax.core.priors import Prior

Params = Any
# A network: apply(params, x, rng=None, train=False) -> output (see bdljax.nn.models).
Apply = Callable[..., jax.Array]
Batch = Tuple[jax.Array, jax.Array]


class LogPosteriorTerms(NamedTuple):
    """The parts of one evaluation, for logging: both already scaled to the full data set."""

    log_likelihood: jax.Array
    log_prior: jax.Array


def _per_example_log_prob(likelihood: Likelihood, output, y, batch_size: int) -> jax.Array:
    """``likelihood.log_prob(output, y)``, which must be one value per example: targets of shape (B, 1) against
    a (B,) mean broadcast to (B, B) and summed every pair, silently. Shapes are static: this fires while tracing."""
    per_example = likelihood.log_prob(output, y)
    if per_example.shape != (batch_size,):
        raise ValueError(f"{likelihood.name} log-likelihood of a batch of {batch_size} has shape {per_example.shape}, "
                         f"not ({batch_size},): targets of shape {tuple(jnp.shape(y))} do not fit network outputs of "
                         f"shape {tuple(jnp.shape(output))} (flatten a (N, 1) target column with y[:, 0]).")
    return per_example


class LogPosterior(NamedTuple):
    """Tempered log posterior of a network, likelihood and prior on N data points.

    Attributes:
      apply: the network, ``apply(params, x, rng=None, train=False)``.
      likelihood: observation model on the network's outputs.
      prior: prior over the parameter pytree.
      num_data: N, the size of the whole training set (not of a batch): a
        Python int, or a scalar array when the data set grows inside a
        compiled program (active learning, bandits), e.g.
        ``log_posterior._replace(num_data=n)`` with ``n`` traced, so that one
        compilation serves every data-set size.
      temperature: T > 0.
    """

    apply: Apply
    likelihood: Likelihood
    prior: Prior
    num_data: Union[int, jax.Array]
    temperature: float = 1.0

    def log_likelihood(self, params: Params, batch: Batch, rng: Optional[jax.Array] = None, train: bool = True) -> jax.Array:
        """(N/|B|) Σ_{i∈B} log p(y_i | x_i, θ): the full-data log-likelihood estimated on a batch.

        ``rng`` feeds stochastic layers (dropout) in training mode.
        """
        x, y = batch
        batch_size = x.shape[0]
        if isinstance(self.num_data, (int, np.integer)) and batch_size > self.num_data:
            # Shapes are static, so this fires while tracing, before compilation (a traced N is the caller's).
            raise ValueError(
                f"batch of {batch_size} examples but num_data={self.num_data}; num_data must be the size of the "
                "whole training set (at least the batch size)."
            )
        output = self.apply(params, x, rng=rng, train=train)
        per_example = _per_example_log_prob(self.likelihood, output, y, batch_size)
        return (self.num_data / batch_size) * jnp.sum(per_example)

    def log_prior(self, params: Params) -> jax.Array:
        """log p(θ)."""
        return self.prior.log_prob(params)

    def evaluate(self, params: Params, batch: Batch, rng: Optional[jax.Array] = None) -> Tuple[jax.Array, LogPosteriorTerms]:
        """``(log p_T(θ|D) estimate, LogPosteriorTerms)`` on one batch."""
        log_likelihood = self.log_likelihood(params, batch, rng)
        log_prior = self.log_prior(params)
        return (log_prior + log_likelihood) / self.temperature, LogPosteriorTerms(log_likelihood, log_prior)

    def __call__(self, params: Params, batch: Batch, rng: Optional[jax.Array] = None) -> jax.Array:
        """log p_T(θ|D) estimated on ``batch``."""
        return self.evaluate(params, batch, rng)[0]

    def full_data(self, params: Params, data: Batch, chunk_size: int = 1000) -> jax.Array:
        """The exact log p_T(θ|D) = (1/T)·[log p(θ) + Σ_i log p(y_i|x_i,θ)] over the whole data set, in chunks.

        The network runs on ``chunk_size`` rows at a time (a ``lax.scan`` over chunks, then the remainder), so
        memory is bounded by one chunk's activations whatever N is: evaluating a CNN on 60 000 images at once
        needs tens of GB. Deterministic (``train=False``). The data must have ``num_data`` rows.
        """
        x, y = data
        num_points = x.shape[0]
        if isinstance(self.num_data, (int, np.integer)) and num_points != self.num_data:
            raise ValueError(f"full_data needs the whole training set: got {num_points} rows but num_data="
                             f"{self.num_data}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")

        def summed(x_part, y_part):
            output = self.apply(params, x_part, rng=None, train=False)
            return jnp.sum(_per_example_log_prob(self.likelihood, output, y_part, x_part.shape[0]))

        chunk_size = min(chunk_size, num_points)
        num_chunks = num_points // chunk_size
        whole = num_chunks * chunk_size
        chunks = jax.tree.map(lambda a: a[:whole].reshape((num_chunks, chunk_size, *a.shape[1:])), (x, y))
        total, _ = jax.lax.scan(lambda acc, part: (acc + summed(*part), None), jnp.zeros(()), chunks)
        if whole < num_points:
            total = total + summed(x[whole:], y[whole:])
        return (self.log_prior(params) + total) / self.temperature


def log_posterior(apply: Apply, likelihood: Likelihood, prior: Prior, num_data: int, temperature: float = 1.0) -> LogPosterior:
    """Build a :class:`LogPosterior`, validating its scalars."""
    if not isinstance(num_data, int) or num_data < 1:
        raise ValueError(f"num_data must be a positive int (the training set size), got {num_data!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return LogPosterior(apply, likelihood, prior, num_data, float(temperature))
