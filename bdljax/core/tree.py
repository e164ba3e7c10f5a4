"""Pytree helpers every method shares."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Params = Any


def all_finite(tree) -> jax.Array:
    """True when every entry of every floating leaf is finite (integer leaves always are)."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def select(condition: jax.Array, on_true, on_false):
    """``on_true`` where ``condition`` else ``on_false``, leaf by leaf (both trees of one structure)."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def initial_params(key: jax.Array, params: Any) -> Params:
    """Resolve the ``params`` argument of ``init``: a pytree, or a function of a key."""
    return params(key) if callable(params) else params


def repeat(params: Params, num_samples: int) -> Params:
    """Stack ``num_samples`` copies of a point estimate along a new leading axis."""
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (num_samples, *jnp.shape(leaf))), params)


def leading_size(tree) -> int:
    """The common leading-axis size of a stacked pytree (samples, members, chains)."""
    sizes = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"leaves of a stacked pytree must share their leading axis, got sizes {sorted(sizes)}")
    return sizes.pop()


def cast_floats(tree, dtype):
    """Every floating leaf cast to ``dtype`` (float64 chains, float32 draws); other leaves unchanged."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)
