"""Maximum a posteriori estimation: an optax optimiser on −log p(θ|D).

    θ_MAP = argmax_θ [ log p(θ) + Σ_i log p(y_i | x_i, θ) ],

estimated on minibatches with the shared N/|B| scaling
(:mod:`bdljax.core.posterior`). A Gaussian prior of scale s is L2 weight decay
λ = 1/(2 s²) on the *summed* loss. The "posterior" is a point mass, so
``sample`` repeats θ_MAP. Wrap the transform in
:func:`bdljax.methods.wrappers.skip_nonfinite` to undo and count diverging steps
(the recipes do).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import optax

from bdljax.core import tree
from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform

Params = Any


class MAPState(NamedTuple):
    params: Params
    opt_state: optax.OptState


class MAPInfo(NamedTuple):
    loss: jax.Array  # −log p_T(θ|D) estimate on the batch, before the step
    log_likelihood: jax.Array
    log_prior: jax.Array
    grad_norm: jax.Array


def init(key: jax.Array, params: Any, optimizer: optax.GradientTransformation) -> MAPState:
    """``params``: a pytree or an initialiser ``key -> pytree``."""
    params = tree.initial_params(key, params)
    return MAPState(params, optimizer.init(params))


def negative_log_posterior(params: Params, batch, rng, log_posterior: LogPosterior):
    value, terms = log_posterior.evaluate(params, batch, rng)
    return -value, terms


def update(state: MAPState, batch, key: jax.Array, log_posterior: LogPosterior,
           optimizer: optax.GradientTransformation):
    """One optimiser step on the batch's −log p_T(θ|D) estimate; ``key`` feeds stochastic layers."""
    (loss, terms), grads = jax.value_and_grad(negative_log_posterior, has_aux=True)(
        state.params, batch, key, log_posterior)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return MAPState(params, opt_state), MAPInfo(loss, terms.log_likelihood, terms.log_prior, optax.tree.norm(grads))


def sample(state: MAPState, key: jax.Array, num_samples: int = 1) -> Params:
    """θ_MAP repeated ``num_samples`` times (a point mass)."""
    del key
    return tree.repeat(state.params, num_samples)


def build(log_posterior: LogPosterior, optimizer: optax.GradientTransformation) -> Transform:
    """MAP estimation of ``log_posterior`` with any optax ``optimizer`` (it minimises −log p_T(θ|D))."""
    return Transform(partial(init, optimizer=optimizer),
                     partial(update, log_posterior=log_posterior, optimizer=optimizer),
                     sample)
