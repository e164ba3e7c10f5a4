"""Contextual bandit environments as pure JAX functions: the wheel and the mushroom bandit.

``bandit.sample(tables, key, horizon)`` draws a whole :class:`BanditData`
(contexts, every arm's reward, expected rewards) up front, as the reference
implementation of Riquelme, Tucker & Snoek (2018) does; an agent only ever
sees the reward of the arm it plays.

* :func:`wheel_bandit`: the wheel of Riquelme et al. (2018, §4), whose large
  rewards hide in an outer ring of probability 1 − δ².
* :func:`mushroom_bandit`: UCI Mushroom (Blundell et al. 2015), eat or leave.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class BanditData(NamedTuple):
    """One bandit episode drawn up front.

    Attributes:
      contexts: ``(T, d)`` the context of every step.
      rewards: ``(T, A)`` the reward every arm *would* pay at that step; an
        agent only sees the entry of the arm it plays.
      expected_rewards: ``(T, A)`` E[r | x_t, a], for the regret.
    """

    contexts: jax.Array
    rewards: jax.Array
    expected_rewards: jax.Array


class Bandit(NamedTuple):
    """A contextual bandit as pure functions.

    Attributes:
      name: for logs.
      num_arms: A.
      context_dim: d.
      sample: ``sample(tables, key, horizon) -> BanditData``, pure and jittable.
      tables: the arrays ``sample`` reads (the mushroom table, the wheel's δ).
        They are arguments of the compiled run, not constants in it, so a new
        δ or data table does not recompile.
    """

    name: str
    num_arms: int
    context_dim: int
    sample: Callable[[Any, jax.Array, int], BanditData]
    tables: Any


# ----------------------------------------------------------------------------- wheel

WHEEL_MEANS = (1.0, 1.0, 1.0, 1.0, 1.2)  # arm 4 is the safe arm
WHEEL_LARGE_MEAN = 50.0
WHEEL_STD = 0.01
WHEEL_LARGE_STD = 0.01
WHEEL_SAFE_ARM = 4
WHEEL_DELTAS = (0.5, 0.7, 0.9, 0.95, 0.99)


def wheel_contexts(key: jax.Array, num: int) -> jax.Array:
    """``num`` contexts uniform on the unit disc, ``(num, 2)``.

    Radius √U and angle 2πV (U, V uniform) give the uniform density on the
    disc exactly, with no rejection, so the shape is static.
    """
    radius_key, angle_key = jax.random.split(key)
    radius = jnp.sqrt(jax.random.uniform(radius_key, (num,)))
    angle = 2.0 * jnp.pi * jax.random.uniform(angle_key, (num,))
    return jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)


def wheel_quadrant_arm(contexts: jax.Array) -> jax.Array:
    """The arm that owns the quadrant of each context, ``(n,)`` int32.

    As in Riquelme et al.'s reference code: x₀ > 0, x₁ > 0 → 0; x₀ > 0, x₁ ≤ 0
    → 1; x₀ ≤ 0, x₁ > 0 → 2; x₀ ≤ 0, x₁ ≤ 0 → 3.
    """
    right, up = contexts[..., 0] > 0, contexts[..., 1] > 0
    return jnp.where(right, jnp.where(up, 0, 1), jnp.where(up, 2, 3)).astype(jnp.int32)


def wheel_outside(contexts: jax.Array, delta) -> jax.Array:
    """‖x‖ > δ: the context lies in the outer ring, where its quadrant's arm pays the large reward."""
    return jnp.linalg.norm(contexts, axis=-1) > delta


def wheel_expected_rewards(contexts: jax.Array, delta) -> jax.Array:
    """E[r | x, a], ``(n, 5)``: μ = (1, 1, 1, 1, 1.2); in the outer ring (‖x‖ > δ) the
    quadrant's arm pays 50 instead."""
    large = jax.nn.one_hot(wheel_quadrant_arm(contexts), 5, dtype=bool) & wheel_outside(contexts, delta)[..., None]
    return jnp.where(large, WHEEL_LARGE_MEAN, jnp.asarray(WHEEL_MEANS, jnp.float32))


def wheel_rewards(key: jax.Array, contexts: jax.Array, delta) -> jax.Array:
    """Sampled rewards of every arm, ``(n, 5)``: N(μ_a, 0.01²), the quadrant arm N(50, 0.01²) outside δ."""
    large = jax.nn.one_hot(wheel_quadrant_arm(contexts), 5, dtype=bool) & wheel_outside(contexts, delta)[..., None]
    std = jnp.where(large, WHEEL_LARGE_STD, WHEEL_STD)
    return wheel_expected_rewards(contexts, delta) + std * jax.random.normal(key, large.shape)


def wheel_optimal_arm(contexts: jax.Array, delta) -> jax.Array:
    """The optimal arm: the quadrant's arm outside δ, the safe arm 4 inside."""
    return jnp.where(wheel_outside(contexts, delta), wheel_quadrant_arm(contexts), WHEEL_SAFE_ARM).astype(jnp.int32)


def _sample_wheel(tables, key, horizon: int) -> BanditData:
    context_key, reward_key = jax.random.split(key)
    contexts = wheel_contexts(context_key, horizon)
    delta = tables["delta"]
    return BanditData(contexts, wheel_rewards(reward_key, contexts, delta), wheel_expected_rewards(contexts, delta))


def wheel_bandit(delta: float) -> Bandit:
    """The wheel bandit (Riquelme et al. 2018, §4) with exploration parameter δ ∈ (0, 1).

    Contexts uniform on the unit disc; 5 arms. Inside radius δ arm a pays
    N(μ_a, 0.01²) with μ = (1, 1, 1, 1, 1.2), so the safe arm 4 is optimal;
    outside, the arm of x's quadrant pays N(50, 0.01²). The outer ring has
    probability 1 − δ², so a large δ hides the big rewards and punishes
    agents that stop exploring.
    """
    if not 0.0 < float(delta) < 1.0:
        raise ValueError(f"wheel bandit: delta must lie in (0, 1), got {delta}; the paper uses {WHEEL_DELTAS}.")
    return Bandit(f"wheel(delta={float(delta)})", 5, 2, _sample_wheel, {"delta": jnp.asarray(delta, jnp.float32)})


# ----------------------------------------------------------------------------- mushroom

MUSHROOM_LEAVE, MUSHROOM_EAT = 0, 1
MUSHROOM_REWARD_LEAVE = 0.0
MUSHROOM_REWARD_EDIBLE = 5.0
MUSHROOM_REWARD_POISON_GOOD = 5.0
MUSHROOM_REWARD_POISON_BAD = -35.0
MUSHROOM_PROB_POISON_BAD = 0.5


def mushroom_expected_rewards(edible: jax.Array) -> jax.Array:
    """E[r | mushroom, a], ``(n, 2)``: leaving pays 0; eating pays 5 if edible, else
    ½·5 + ½·(−35) = −15."""
    bad = MUSHROOM_PROB_POISON_BAD
    poison = bad * MUSHROOM_REWARD_POISON_BAD + (1 - bad) * MUSHROOM_REWARD_POISON_GOOD
    eat = jnp.where(edible, MUSHROOM_REWARD_EDIBLE, poison)
    return jnp.stack([jnp.full_like(eat, MUSHROOM_REWARD_LEAVE), eat], axis=-1)


def mushroom_rewards(key: jax.Array, edible: jax.Array) -> jax.Array:
    """Sampled rewards, ``(n, 2)``: leave → 0; eat → +5 if edible, else +5 or −35 with probability ½ each."""
    bad = jax.random.bernoulli(key, MUSHROOM_PROB_POISON_BAD, edible.shape)
    poison = jnp.where(bad, MUSHROOM_REWARD_POISON_BAD, MUSHROOM_REWARD_POISON_GOOD)
    eat = jnp.where(edible, MUSHROOM_REWARD_EDIBLE, poison)
    return jnp.stack([jnp.full_like(eat, MUSHROOM_REWARD_LEAVE), eat], axis=-1)


def _sample_mushroom(tables, key, horizon: int) -> BanditData:
    index_key, reward_key = jax.random.split(key)
    # Mushrooms are drawn with replacement, as in Riquelme et al.'s sample_mushroom_data.
    index = jax.random.randint(index_key, (horizon,), 0, tables["contexts"].shape[0])
    edible = tables["edible"][index]
    return BanditData(tables["contexts"][index], mushroom_rewards(reward_key, edible), mushroom_expected_rewards(edible))


def mushroom_bandit(contexts, edible) -> Bandit:
    """The mushroom bandit (Blundell et al. 2015; Riquelme et al. 2018): eat (arm 1) or leave (arm 0).

    Args:
      contexts: ``(N, F)`` one-hot features (:func:`bdljax.data.mushroom.load_mushroom`).
      edible: ``(N,)`` bool.
    """
    contexts, edible = np.asarray(contexts, np.float32), np.asarray(edible)
    if contexts.ndim != 2 or edible.shape != (contexts.shape[0],):
        raise ValueError(f"mushroom bandit: need contexts (N, F) and edible (N,), got {contexts.shape} and {edible.shape}.")
    if edible.dtype != bool:
        raise ValueError(f"mushroom bandit: edible must be a bool array, got dtype {edible.dtype}.")
    if not np.all(np.isfinite(contexts)):
        raise ValueError("mushroom bandit: contexts contain NaN/inf.")
    return Bandit("mushroom", 2, contexts.shape[1], _sample_mushroom,
                  {"contexts": jnp.asarray(contexts), "edible": jnp.asarray(edible)})
