"""Deep ensembles: K copies of any method as a leading axis, advanced together by ``jax.vmap``.

Lakshminarayanan, Pritzel & Blundell (2017), "Simple and Scalable Predictive
Uncertainty Estimation using Deep Ensembles": K networks with independent
random initialisations and data orders, predicting with the equal-weight
mixture p(y|x) = (1/K) Σ_k p(y|x, θ_k). Wilson & Izmailov (2020) read this as
Bayesian model averaging over K modes of the posterior.

``build(member, K)`` lifts any :class:`~bdljax.core.transform.Transform` — MAP
for a classic deep ensemble, MFVI or SG-MCMC for ensembles of posteriors —
into one whose state has a leading member axis. One compiled step advances
all K members; there is no Python loop over members. Each member gets its
own key, its own initialisation (``init`` draws one per member from an
initialiser function), and its own batch (``batch_streams = K``: the runner
feeds ``(K, B, ...)`` batches from K independent permutations).

The transform keeps its ``member``, so a runner may instead train the members
one after another (:mod:`bdljax.run.execution`: on XLA:CPU a convolution
vmapped over weights becomes a slow grouped convolution). Both executions
stack samples on a leading member axis, so everything downstream is the same.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import optax

from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform
from bdljax.methods import map_estimate

Params = Any


def init(key: jax.Array, params: Any, member: Transform, num_members: int):
    """``params``: an initialiser ``key -> pytree`` (one independent draw per member) or a pytree whose leaves
    already have a leading axis of ``num_members``."""
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


def update(state, batch, key: jax.Array, member: Transform, num_members: int):
    """Every member's step on its own batch (``batch`` is ``(K, B, ...)``) with its own key."""
    return jax.vmap(member.update)(state, batch, jax.random.split(key, num_members))


def sample(state, key: jax.Array, num_samples: int, member: Transform, num_members: int) -> Params:
    """``num_samples // K`` draws from each member, stacked member-major (one per member for MAP)."""
    if num_samples % num_members:
        raise ValueError(f"num_samples={num_samples} must be a multiple of the {num_members} ensemble members")
    per_member = num_samples // num_members
    draws = jax.vmap(lambda s, k: member.sample(s, k, per_member))(state, jax.random.split(key, num_members))
    return jax.tree.map(lambda leaf: leaf.reshape((num_samples, *leaf.shape[2:])), draws)


def build(member: Transform, num_members: int) -> Transform:
    """An ensemble of ``num_members`` independent copies of ``member`` (a one-stream transform)."""
    if not (isinstance(num_members, int) and num_members >= 1):
        raise ValueError(f"an ensemble needs at least one member, got num_members={num_members!r}")
    if member.batch_streams:
        raise ValueError("ensemble members must take a single batch stream; nesting ensembles is not supported")
    settings = dict(member=member, num_members=num_members)

    def sample_members(state, key, num_samples: int = num_members):
        return sample(state, key, num_samples, **settings)

    return Transform(partial(init, **settings), partial(update, **settings), sample_members,
                     batch_streams=num_members, member=member)


def deep_ensemble(log_posterior: LogPosterior, optimizer: optax.GradientTransformation, num_members: int = 5) -> Transform:
    """The classic deep ensemble: ``num_members`` MAP estimates trained in parallel."""
    return build(map_estimate.build(log_posterior, optimizer), num_members)
