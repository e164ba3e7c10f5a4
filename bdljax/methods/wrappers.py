"""Behaviour every method shares, written once as wrappers around any :class:`~bdljax.core.transform.Transform`.

In the style of optax's ``apply_if_finite``: a wrapper takes a transform and
returns a transform whose state holds the inner state plus its own small
state, so it composes with every method and with :func:`bdljax.methods.ensemble.build`
(wrap the member, and each member counts for itself).

* :func:`skip_nonfinite`: a step whose result is not finite is undone and
  counted, so a divergence is reported instead of averaged into the weights.
* :func:`keep_draws`: a ring buffer of the last ``num_kept`` states' draws,
  after burn-in, every ``thinning``-th step: what turns a Markov chain's
  transitions into posterior samples (SG-MCMC, HMC).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from bdljax.core import tree
from bdljax.core.transform import Transform


class SkipNonfiniteState(NamedTuple):
    inner: Any
    num_nonfinite: jax.Array  # steps undone because their state or info was not finite


def skip_nonfinite(transform: Transform) -> Transform:
    """Undo and count every ``update`` whose new state or info holds NaN or inf.

    The check covers the whole new state (parameters and optimiser moments,
    which a non-finite gradient poisons) and the step's info (the loss): a
    step that is kept changed nothing but finite numbers. ``state.num_nonfinite``
    counts the undone steps; :func:`bdljax.run.runner.execute` reports it.
    """

    def init(key, params) -> SkipNonfiniteState:
        return SkipNonfiniteState(transform.init(key, params), jnp.zeros((), jnp.int32))

    def update(state: SkipNonfiniteState, batch, key):
        inner, info = transform.update(state.inner, batch, key)
        finite = tree.all_finite(inner) & tree.all_finite(info)
        kept = tree.select(finite, inner, state.inner)
        return SkipNonfiniteState(kept, state.num_nonfinite + (~finite).astype(jnp.int32)), info

    def sample(state: SkipNonfiniteState, key, num_samples: int = 1):
        return transform.sample(state.inner, key, num_samples)

    return transform._replace(init=init, update=update, sample=sample, member=None)


class KeepDrawsState(NamedTuple):
    inner: Any
    step: jax.Array  # updates so far
    num_eligible: jax.Array  # steps after burn-in outside exploration (what thinning counts)
    draws: Any  # ring buffer: the last num_kept kept draws, leading axis num_kept
    num_stored: jax.Array  # draws kept so far (the buffer's write position modulo num_kept)


def _check_draw_settings(num_kept: int, thinning: int, num_burnin: int) -> None:
    for name, value, low in (("num_kept", num_kept, 1), ("thinning", thinning, 1), ("num_burnin", num_burnin, 0)):
        if not (isinstance(value, int) and value >= low):
            raise ValueError(f"keep_draws: {name} must be an int >= {low}, got {value!r}")


def keep_draws(transform: Transform, num_kept: int, *, thinning: int = 1, num_burnin: int = 0,
               exploring: Optional[Callable[[jax.Array], jax.Array]] = None, dtype=None) -> Transform:
    """Keep the inner chain's current draw after every ``thinning``-th eligible step, in a ring buffer.

    A step t (counted from 0) is eligible when ``t >= num_burnin`` and not
    ``exploring(t)`` (the optimisation stage of a cyclical schedule). The
    current draw is ``transform.sample(state, key, 1)`` (a Markov chain's
    position). ``sample(state, key, n)`` returns the last ``n <= num_kept``
    kept draws, oldest first; before ``num_kept`` draws exist, unfilled slots
    hold the initial draw. ``dtype`` casts floating draws (a float64 chain kept
    in float32).
    """
    _check_draw_settings(num_kept, thinning, num_burnin)

    def current(state, key):
        draw = jax.tree.map(lambda leaf: leaf[0], transform.sample(state, key, 1))
        if dtype is None:
            return draw
        return jax.tree.map(lambda leaf: leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf,
                            draw)

    def init(key, params) -> KeepDrawsState:
        inner = transform.init(key, params)
        draws = tree.repeat(current(inner, key), num_kept)
        zero = jnp.zeros((), jnp.int32)
        return KeepDrawsState(inner, zero, zero, jax.tree.map(jnp.array, draws), zero)

    def update(state: KeepDrawsState, batch, key):
        inner, info = transform.update(state.inner, batch, key)
        eligible = state.step >= num_burnin
        if exploring is not None:
            eligible = eligible & ~exploring(state.step)
        keep = eligible & (state.num_eligible % thinning == thinning - 1)
        slot = state.num_stored % num_kept
        draws = jax.tree.map(lambda buffer, p: buffer.at[slot].set(jnp.where(keep, p, buffer[slot])),
                             state.draws, current(inner, key))
        return KeepDrawsState(inner, state.step + 1, state.num_eligible + eligible.astype(jnp.int32), draws,
                              state.num_stored + keep.astype(jnp.int32)), info

    def sample(state: KeepDrawsState, key, num_samples: int = num_kept):
        del key
        if not 1 <= num_samples <= num_kept:
            raise ValueError(f"num_samples={num_samples} must lie in [1, num_kept={num_kept}]")
        index = (state.num_stored - num_samples + jnp.arange(num_samples)) % num_kept
        return jax.tree.map(lambda buffer: buffer[index], state.draws)

    return transform._replace(init=init, update=update, sample=sample, member=None)


def num_nonfinite(state) -> Optional[int]:
    """Undone steps counted by a :func:`skip_nonfinite` anywhere in a (possibly nested, stacked) state, or None."""
    counts = []

    def visit(node):
        if isinstance(node, SkipNonfiniteState):
            counts.append(int(jnp.sum(node.num_nonfinite)))
            visit(node.inner)
        elif isinstance(node, tuple) and hasattr(node, "_fields"):
            for child in node:
                visit(child)

    visit(state)
    return sum(counts) if counts else None
