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
initialiser function), and its own batch (``batch_streams = K``: the driver
feeds ``(K, B, ...)`` batches from K independent permutations).

:func:`fit_sequential` is the other execution of the same estimator: the K
members trained one after another by one compiled MAP epoch. On XLA:CPU a
convolution vmapped over weights becomes a grouped convolution, and the
vmapped 5-member CNN ensemble's epoch cost ~15x a single MAP epoch instead of
5x (RESULTS.md, issue 7); the sequential loop costs K MAP epochs. Both return
samples stacked on a leading member axis, so everything downstream is the same.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from bdljax.methods import map_estimate as map_method
from bdljax.recipes import Fitted, Problem, fit_transform, make_optimizer, nonfinite_diagnostics
from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform

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


MEMBER_EXECUTIONS = ("vmap", "sequential")


def member_keys(key: jax.Array, num_members: int) -> jax.Array:
    """The K member keys of :func:`fit_sequential`: member k is trained exactly as ``map.recipe(problem, keys[k])``."""
    return jax.random.split(key, num_members)


def fit_sequential(
    problem: Problem,
    member: Transform,
    key: jax.Array,
    num_members: int,
    *,
    init_params: Any,
    num_epochs: int,
    batch_size: int,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = False,
    description: str = "ensemble",
    steps_per_call: Optional[int] = None,
) -> Fitted:
    """Train ``num_members`` copies of a one-stream ``member`` one after another; stack them like :func:`build`.

    Member k uses ``member_keys(key, K)[k]`` split into (init, data order, sample) keys exactly as
    :func:`bdljax.recipes.fit_transform` splits a key, so member k equals an independent fit of ``member`` with
    that key (a MAP member: ``map.recipe(problem, member_keys(key, K)[k])``): each member *is* a
    :func:`bdljax.recipes.fit_transform` call. The member transform is built once and its init and training
    epoch are compiled once per transform (:func:`bdljax.recipes.initial_state`,
    :func:`bdljax.run.training.build_epoch`), so all K members run the same compiled programs: one compilation.

    Returns:
      ``Fitted`` whose samples and state are the K members' stacked on a leading axis (one sample per MAP
      member, S = K), as the vmapped ensemble returns them; history records carry ``member``.
    """
    if num_members < 1:
        raise ValueError(f"an ensemble needs at least one member, got num_members={num_members}")
    if member.batch_streams:
        raise ValueError("fit_sequential trains one-stream members; got a member with batch_streams set "
                         "(an ensemble of ensembles is not supported)")
    # The same member transform for every member: its init and epoch compile once (cached per transform).
    fits = [fit_transform(problem, member, member_key, init_params=init_params, num_epochs=num_epochs,
                          batch_size=batch_size, num_samples=1, logger=logger,
                          log_fields={**(log_fields or {}), "member": index}, progress=progress,
                          description=f"{description}[{index}]", steps_per_call=steps_per_call)
            for index, member_key in enumerate(member_keys(key, num_members))]
    stacked_samples = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *[f.samples for f in fits])
    stacked_state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[f.state for f in fits])
    history = [record for f in fits for record in f.history]
    diagnostics = {"member_execution": "sequential", **nonfinite_diagnostics(stacked_state)}
    return Fitted(stacked_samples, problem.model.apply, history, diagnostics, stacked_state, problem.likelihood)


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
    member_execution: str = "vmap",
) -> Fitted:
    """Experiment recipe (:mod:`bdljax.recipes`): Lakshminarayanan et al. (2017) defaults — 5 members,
    Adam, batch 100, 40 epochs; each member is one sample.

    ``member_execution``: ``"vmap"`` (default) advances all members in one vmapped step (:func:`build`);
    ``"sequential"`` trains them one after another with one compiled MAP epoch (:func:`fit_sequential`), the
    faster choice for conv nets on XLA:CPU, where a conv vmapped over weights runs as a slow grouped
    convolution. The two draw members from different keys, so their numbers differ; their distributions agree.
    """
    if member_execution not in MEMBER_EXECUTIONS:
        raise ValueError(f"member_execution={member_execution!r}; choose one of {MEMBER_EXECUTIONS}")
    if member_execution == "sequential":
        if eval_data is not None and eval_every:
            raise ValueError("eval_every is not supported with member_execution='sequential' (the ensemble exists "
                             "only after its last member is trained); evaluate the returned Fitted instead, or use "
                             "member_execution='vmap'")
        member = map_method.build(problem.log_posterior(), make_optimizer(optimizer, learning_rate))
        return fit_sequential(
            problem, member, key, num_members, init_params=problem.model.init, num_epochs=num_epochs,
            batch_size=map_method.batch_size_for(batch_size, problem.num_data), logger=logger, log_fields=log_fields,
            progress=progress, description="ensemble", steps_per_call=steps_per_call,
        )
    method = deep_ensemble(problem.log_posterior(), make_optimizer(optimizer, learning_rate), num_members)
    return fit_transform(
        problem, method, key, init_params=problem.model.init, num_epochs=num_epochs,
        batch_size=map_method.batch_size_for(batch_size, problem.num_data), num_samples=num_members, eval_data=eval_data,
        eval_every=eval_every, logger=logger, log_fields=log_fields, progress=progress, description="ensemble",
        steps_per_call=steps_per_call,
    )
