"""Bayesian linear regression with a Normal–Inverse-Gamma prior, one model per arm, updated exactly.

Riquelme, Tucker & Snoek (2018), their ``LinearFullPosteriorSampling``: each
arm a has its own regression r = φᵀβ_a + ε, ε ~ N(0, σ_a²), with the conjugate
prior σ² ~ InvGamma(a₀, b₀), β | σ² ~ N(0, (σ²/λ) I). The exact sufficient
statistics (:class:`LinearStats`) give the closed-form posterior
(:func:`nig_posterior`) and one joint draw of (σ², β) per arm
(:func:`nig_sample`). Linear Thompson sampling regresses on the raw context
[x, 1]; NeuralLinear on a network's last hidden layer [φ(x), 1]
(:mod:`experiments.bandits.agents`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class NIGPrior(NamedTuple):
    """σ² ~ InvGamma(a₀, b₀), β | σ² ~ N(0, (σ²/λ) I): Riquelme et al.'s defaults a₀ = b₀ = 6, λ = 0.25."""

    a0: float = 6.0
    b0: float = 6.0
    precision: float = 0.25


def check_nig_prior(prior: NIGPrior) -> None:
    """a₀, b₀ and λ must be positive and finite: a NaN posterior would make argmax play arm 0 forever."""
    for name, value in prior._asdict().items():
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"NIGPrior.{name} must be positive and finite, got {value}")


class LinearStats(NamedTuple):
    """Sufficient statistics of each arm's data, ``(A, ...)``: Σφφᵀ, Σφr, Σr², n."""

    gram: jax.Array  # (A, p, p)
    moment: jax.Array  # (A, p)
    sum_sq: jax.Array  # (A,)
    count: jax.Array  # (A,)


class NIGPosterior(NamedTuple):
    """The Normal–Inverse-Gamma posterior of each arm, ``(A, ...)``."""

    mean: jax.Array  # μ_n (A, p)
    precision_cholesky: jax.Array  # L with L Lᵀ = Λ_n (A, p, p)
    a: jax.Array  # a_n (A,)
    b: jax.Array  # b_n (A,)


def linear_stats_init(num_arms: int, dim: int) -> LinearStats:
    """Statistics of no data."""
    return LinearStats(jnp.zeros((num_arms, dim, dim)), jnp.zeros((num_arms, dim)), jnp.zeros(num_arms), jnp.zeros(num_arms))


def linear_stats_add(stats: LinearStats, arm: jax.Array, phi: jax.Array, reward: jax.Array) -> LinearStats:
    """Add one observation (features ``phi (p,)``, ``reward``) to arm ``arm``: a rank-one update."""
    one_hot = jax.nn.one_hot(arm, stats.count.shape[0], dtype=stats.gram.dtype)
    return LinearStats(
        stats.gram + one_hot[:, None, None] * jnp.outer(phi, phi),
        stats.moment + one_hot[:, None] * (reward * phi),
        stats.sum_sq + one_hot * jnp.square(reward),
        stats.count + one_hot,
    )


def linear_stats_from_data(features: jax.Array, actions: jax.Array, rewards: jax.Array, mask: jax.Array,
                           num_arms: int) -> LinearStats:
    """Statistics of the rows of ``features (T, p)`` where ``mask`` holds, split by ``actions``."""
    weights = jax.nn.one_hot(actions, num_arms, dtype=features.dtype) * mask[:, None]  # (T, A)
    return LinearStats(
        jnp.einsum("ta,ti,tj->aij", weights, features, features),
        jnp.einsum("ta,ti,t->ai", weights, features, rewards),
        jnp.einsum("ta,t->a", weights, jnp.square(rewards)),
        jnp.sum(weights, axis=0),
    )


def nig_posterior(stats: LinearStats, prior: NIGPrior) -> NIGPosterior:
    """Closed-form posterior of each arm's Bayesian linear regression r = φᵀβ + ε, ε ~ N(0, σ²):

        Λ_n = Σφφᵀ + λI,   μ_n = Λ_n⁻¹ Σφr,
        a_n = a₀ + n/2,    b_n = b₀ + ½ (Σr² − μ_nᵀ Λ_n μ_n),

    so that β | σ², D ~ N(μ_n, σ² Λ_n⁻¹) and σ² | D ~ InvGamma(a_n, b_n)
    (Riquelme et al. 2018, eqs. 1–2). Σr² − μ_nᵀΛ_nμ_n = min_β ‖r − Φβ‖² + λ‖β‖²
    is non-negative; it is clipped at 0 against float32 cancellation.
    """
    dim = stats.gram.shape[-1]
    precision = stats.gram + prior.precision * jnp.eye(dim, dtype=stats.gram.dtype)
    cholesky = jnp.linalg.cholesky(precision)
    mean = jax.vmap(lambda c, m: jax.scipy.linalg.cho_solve((c, True), m))(cholesky, stats.moment)
    residual = jnp.maximum(stats.sum_sq - jnp.sum(mean * stats.moment, axis=-1), 0.0)
    return NIGPosterior(mean, cholesky, prior.a0 + 0.5 * stats.count, prior.b0 + 0.5 * residual)


def nig_sample(key: jax.Array, post: NIGPosterior):
    """One joint draw per arm: σ² ~ InvGamma(a_n, b_n), then β ~ N(μ_n, σ² Λ_n⁻¹). Returns ``(β (A, p), σ² (A,))``.

    With Λ_n = L Lᵀ, β = μ_n + σ L⁻ᵀ z has covariance σ² L⁻ᵀL⁻¹ = σ² Λ_n⁻¹.
    """
    gamma_key, normal_key = jax.random.split(key)
    variance = post.b / jax.random.gamma(gamma_key, post.a)
    noise = jax.random.normal(normal_key, post.mean.shape)
    solve = jax.vmap(lambda c, z: jax.scipy.linalg.solve_triangular(c, z, lower=True, trans="T"))
    whitened = solve(post.precision_cholesky, noise)  # L⁻ᵀ z
    return post.mean + jnp.sqrt(variance)[:, None] * whitened, variance


def with_intercept(x: jax.Array) -> jax.Array:
    """Append a constant feature 1 (the regression's bias)."""
    return jnp.concatenate([x, jnp.ones((*x.shape[:-1], 1), x.dtype)], axis=-1)
