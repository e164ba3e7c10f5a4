"""Deep ensembles: K copies of any method as a leading axis, advanced together by ``jax.vmap``.

Lakshminarayanan, Pritzel & Blundell (2017), "Simple and Scalable Predictive
Uncertainty Estimation using Deep Ensembles": K networks with independent
random initialisations and data orders, predicting with the equal-weight
mixture p(y|x) = (1/K) Σ_k p(y|x, θ_k). Wilson & Izmailov (2020) read this as
Bayesian model averaging over K modes of the posterior.

``build(member, K)`` lifts any :class:`~bdljax.transform.Transform` — MAP
for a classic deep ensemble, MFVI or SG-MCMC for ensembles of posteriors —
into one whose state has a leading member axis. One compiled step advances
all K members; there is no Python loop over members. Each member gets its
own key, its own initialisation (``init`` draws one per member from an
initialiser function), and its own batch (``batch_streams = K``: the driver
feeds ``(K, B, ...)`` batches from K independent permutations).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import jax
import optax

from bdljax import map as map_method
from bdljax.methods import Fitted, Problem, fit_transform, make_optimizer
from bdljax.posterior import LogPosterior
from bdljax.transform import Transform

Params = Any


def build(member: Transform, num_members: int) -> Transform:
    """An ensemble of ``num_members`` independent copies of ``member``.

    ``init(key, params)``: ``params`` is an initialiser ``key -> pytree``
    (one independent draw per member) or a pytree whose leaves already have a
    leading axis of size ``num_members``.
    ``sample(state, key, num_samples)``: ``num_samples`` must be a multiple of
    K; each member contributes ``num_samples // K`` draws (one for MAP members),
    stacked member-major.
    """
    if num_members < 1:
        raise ValueError(f"an ensemble needs at least one member, got num_members={num_members}")
    if member.batch_streams:
        raise ValueError("ensemble members must take a single batch stream; nesting ensembles is not supported")

    def init(key, params):
        keys = jax.random.split(key, num_members)
        if callable(params):
            member_params = jax.vmap(params)(jax.random.split(jax.random.fold_in(key, 1), num_members))
        else:
            leading = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(params)}
            if leading != {num_members}:
                raise ValueError(
                    f"ensemble.init needs an initialiser function key -> params, or params stacked with a leading "
                    f"axis of {num_members} members; got leading sizes {sorted(map(str, leading))}."
                )
            member_params = params
        return jax.vmap(member.init)(keys, member_params)

    def update(state, batch, key):
        keys = jax.random.split(key, num_members)
        return jax.vmap(member.update)(state, batch, keys)

    def sample(state, key, num_samples: int = num_members):
        if num_samples % num_members:
            raise ValueError(f"num_samples={num_samples} must be a multiple of the {num_members} ensemble members")
        per_member = num_samples // num_members
        keys = jax.random.split(key, num_members)
        draws = jax.vmap(lambda s, k: member.sample(s, k, per_member))(state, keys)
        return jax.tree.map(lambda leaf: leaf.reshape((num_samples, *leaf.shape[2:])), draws)

    return Transform(init, update, sample, batch_streams=num_members, num_data=member.num_data)


def deep_ensemble(log_posterior: LogPosterior, optimizer: optax.GradientTransformation, num_members: int = 5) -> Transform:
    """The classic deep ensemble: ``num_members`` MAP estimates trained in parallel."""
    return build(map_method.build(log_posterior, optimizer), num_members)


def recipe(
    problem: Problem,
    key: jax.Array,
    *,
    num_members: int = 5,
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
    """Experiment recipe (:mod:`bdljax.methods`): Lakshminarayanan et al. (2017) defaults — 5 members,
    Adam, batch 100, 40 epochs — vmapped; each member is one sample."""
    method = deep_ensemble(problem.log_posterior(), make_optimizer(optimizer, learning_rate), num_members)
    return fit_transform(
        problem, method, key, init_params=problem.model.init, num_epochs=num_epochs,
        batch_size=map_method.batch_size_for(batch_size, problem.num_data), num_samples=num_members, eval_data=eval_data,
        eval_every=eval_every, logger=logger, log_fields=log_fields, progress=progress, description="ensemble",
        steps_per_call=steps_per_call,
    )
