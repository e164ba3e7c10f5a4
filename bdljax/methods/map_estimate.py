"""Maximum a posteriori estimation: an optax optimiser on −log p(θ|D).

    θ_MAP = argmax_θ [ log p(θ) + Σ_i log p(y_i | x_i, θ) ],

estimated on minibatches with the shared N/|B| scaling
(:mod:`bdljax.core.posterior`). A Gaussian prior of scale s is L2 weight decay
λ = 1/(2 s²) on the *summed* loss. The "posterior" is a point mass, so
``sample`` repeats θ_MAP.

A step whose loss or gradient is not finite leaves the parameters and the
optimiser state unchanged and is counted in ``state.num_nonfinite``, so a
divergence is reported rather than averaged into the weights.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from bdljax.recipes import Fitted, Problem, fit_transform, make_optimizer
from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform, initial_params, repeat_params

Params = Any


class MAPState(NamedTuple):
    params: Params
    opt_state: optax.OptState
    num_nonfinite: jax.Array  # steps skipped because the loss or gradient was not finite


class MAPInfo(NamedTuple):
    loss: jax.Array  # −log p_T(θ|D) estimate on the batch, before the step
    log_likelihood: jax.Array
    log_prior: jax.Array
    grad_norm: jax.Array


def tree_all_finite(tree) -> jax.Array:
    """True when every entry of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def select_tree(condition: jax.Array, on_true, on_false):
    """``on_true`` where ``condition`` else ``on_false``, leaf by leaf."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def build(log_posterior: LogPosterior, optimizer: optax.GradientTransformation) -> Transform:
    """MAP estimation of ``log_posterior`` with ``optimizer``.

    Args:
      log_posterior: the shared log posterior.
      optimizer: any optax transformation (it minimises the negative log posterior).
    """

    def init(key, params) -> MAPState:
        params = initial_params(key, params)
        return MAPState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def negative_log_posterior(params, batch, rng):
        value, terms = log_posterior.evaluate(params, batch, rng)
        return -value, terms

    def update(state: MAPState, batch, key):
        (loss, terms), grads = jax.value_and_grad(negative_log_posterior, has_aux=True)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & tree_all_finite(grads)
        new_state = MAPState(
            select_tree(finite, params, state.params),
            select_tree(finite, opt_state, state.opt_state),
            state.num_nonfinite + jnp.where(finite, 0, 1).astype(jnp.int32),
        )
        return new_state, MAPInfo(loss, terms.log_likelihood, terms.log_prior, optax.tree.norm(grads))

    def sample(state: MAPState, key, num_samples: int = 1):
        del key
        return repeat_params(state.params, num_samples)

    return Transform(init, update, sample, num_data=log_posterior.num_data)


def recipe(
    problem: Problem,
    key: jax.Array,
    *,
    num_epochs: int = 40,
    batch_size: Optional[int] = 100,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    eval_data: Optional[Tuple[Any, Any]] = None,
    eval_every: int = 0,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = False,
    steps_per_call: Optional[int] = None,
) -> Fitted:
    """Experiment recipe (:mod:`bdljax.recipes`): MAP with an optax optimiser; one sample, the estimate."""
    method = build(problem.log_posterior(), make_optimizer(optimizer, learning_rate))
    return fit_transform(
        problem, method, key, init_params=problem.model.init, num_epochs=num_epochs,
        batch_size=batch_size_for(batch_size, problem.num_data), num_samples=1, eval_data=eval_data, eval_every=eval_every,
        logger=logger, log_fields=log_fields, progress=progress, description="map", steps_per_call=steps_per_call,
    )


def batch_size_for(batch_size: Optional[int], num_data: int) -> int:
    """``None`` means full batch; a default batch larger than a small data set means full batch, not an error."""
    return num_data if batch_size is None else min(batch_size, num_data)
