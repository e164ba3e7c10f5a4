"""The inference-method protocol.

Every inference method in bdljax is a builder function returning a
:class:`Transform`, a NamedTuple of three pure functions, in the style of
optax's ``GradientTransformation`` and BlackJAX's ``SamplingAlgorithm``::

    method = bdljax.methods.map_estimate.build(log_posterior, optax.adam(1e-3))   # or mfvi, ensemble, sgld, ...
    state = method.init(key, params)                # params: a pytree, or init(key) -> pytree
    state, info = method.update(state, batch, key)  # one step on batch = (x, y)
    samples = method.sample(state, key, num_samples)  # pytree, leading axis = samples

* ``init(key, params)``: ``params`` is an initial parameter pytree or a
  function ``key -> pytree`` (methods with several members or chains draw
  one initialisation per member from it).
* ``update(state, batch, key) -> (state, info)``: one step. ``info`` is a
  NamedTuple of arrays (losses, acceptance, ...) that the training driver
  summarises per epoch; fields whose values are non-finite are counted, not
  averaged in.
* ``sample(state, key, num_samples)``: posterior samples as a stacked pytree
  whose leaves have a leading axis of size ``num_samples`` (the predictive
  evaluates them vmapped). Point estimates repeat themselves.

States are pytrees (NamedTuples of arrays and optax states), so ``jax.vmap``
over ``init`` and ``update`` runs independent copies, and ``lax.scan`` runs
many steps in one compiled call. Nothing here calls ``jit``: the caller
decides (see :func:`bdljax.run.training.fit`).

``batch_streams``: 0 when ``update`` takes one batch ``(B, ...)``; K when it
takes K independent batches stacked ``(K, B, ...)``, one per member or chain,
so that each member sees its own data order (deep ensembles).
``member``: for an ensemble of K copies of one transform
(:func:`bdljax.methods.ensemble.build`), that one copy, so that a runner can
train the members one after another instead of vmapped; ``None`` otherwise.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax

Params = Any
State = Any
Info = Any


class Transform(NamedTuple):
    """An inference method: ``init``, ``update`` and ``sample``, pure and un-jitted."""

    init: Callable[[jax.Array, Any], State]
    update: Callable[[State, Any, jax.Array], tuple]
    sample: Callable[[State, jax.Array, int], Params]
    batch_streams: int = 0
    member: Optional["Transform"] = None
