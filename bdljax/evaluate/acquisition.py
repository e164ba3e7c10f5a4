"""Acquisition functions for Bayesian active learning on classification pools.

Gal, Islam & Ghahramani (2017), "Deep Bayesian Active Learning with Image
Data" (ICML): a model trained on a small labelled set scores every point x of
an unlabelled pool, and the highest-scoring points are sent to an oracle for
labels. Every score here is a pure ``jax.numpy`` function of the per-sample
class probabilities

    p_s(y = c | x) = p(y = c | x, θ_s),   ``sample_probs`` of shape (S, N, C),

for S posterior samples θ_s (MC dropout masks, ensemble members, SG-MCMC
draws, ...), N pool points and C classes; each returns ``(N,)`` scores, higher
meaning "acquire first". Write p̄_c = (1/S) Σ_s p_s(c) for the predictive
mean and H[p] = −Σ_c p_c log p_c (nats, 0 log 0 = 0).

* :func:`max_entropy` — H[p̄] (Shannon, 1948): total predictive uncertainty.
* :func:`bald` — I[y; θ | x, D] = H[p̄] − (1/S) Σ_s H[p_s] (Houlsby et al.,
  2011, "Bayesian Active Learning by Disagreement"): the information the label
  carries about the parameters; high only where samples disagree.
* :func:`variation_ratios` — 1 − max_c p̄_c (Freeman, 1965), as defined in
  Gal et al. (2017), on the predictive mean.
* :func:`mean_std` — (1/C) Σ_c sqrt(E_s[p_s(c)²] − p̄_c²) (Kampffmeyer et al.,
  2016; Kendall et al., 2015): the class-averaged standard deviation of the
  probabilities over samples.
* :func:`random` — uniform scores: the passive-learning baseline.

Every function is jit-able, vmap-able and needs no host round trip;
:func:`get` gives a uniform ``score(sample_probs, key) -> (N,)`` by name and
:func:`select_top` picks the best ``k`` of the points still available.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
from jax.scipy.special import entr

__all__ = [
    "entropy",
    "max_entropy",
    "bald",
    "variation_ratios",
    "mean_std",
    "random",
    "ACQUISITIONS",
    "names",
    "get",
    "select_top",
]


def _check_sample_probs(sample_probs) -> jax.Array:
    """Static (trace-time) shape check: acquisition needs an explicit sample axis."""
    sample_probs = jnp.asarray(sample_probs)
    if sample_probs.ndim != 3:
        raise ValueError(
            f"sample_probs must have shape (S, N, C) (samples, pool points, classes), got {sample_probs.shape}; "
            "add a leading axis of size 1 for a point estimate."
        )
    return sample_probs


def entropy(probs) -> jax.Array:
    """Shannon entropy H[p] = −Σ_c p_c log p_c in nats over the last axis, with 0 log 0 = 0."""
    return jnp.sum(entr(jnp.asarray(probs)), axis=-1)


def max_entropy(sample_probs) -> jax.Array:
    """Predictive entropy H[p̄(y|x)] = −Σ_c p̄_c log p̄_c, p̄ = (1/S) Σ_s p_s.

    Gal et al. (2017), "Max Entropy" (Shannon, 1948). ``(S, N, C) -> (N,)``.
    """
    sample_probs = _check_sample_probs(sample_probs)
    return entropy(jnp.mean(sample_probs, axis=0))


def bald(sample_probs) -> jax.Array:
    """BALD: mutual information between the label and the parameters.

        I[y; θ | x, D] = H[p̄] − (1/S) Σ_s H[p_s]

    (Houlsby, Huszár, Ghahramani & Lengyel, 2011; Gal et al., 2017, eq. 3 with
    the MC estimate over S samples). Non-negative by the concavity of H (up to
    round-off, which is left visible); zero when all samples agree, however
    uncertain each one is. ``(S, N, C) -> (N,)``.
    """
    sample_probs = _check_sample_probs(sample_probs)
    return entropy(jnp.mean(sample_probs, axis=0)) - jnp.mean(entropy(sample_probs), axis=0)


def variation_ratios(sample_probs) -> jax.Array:
    """Variation ratio on the predictive mean, 1 − max_c p̄_c (Freeman, 1965; Gal et al., 2017).

    Gal et al. define it on the approximate predictive p(y|x, D) ≈ p̄; the
    vote-counting variant 1 − f_mode/S is :func:`bdljax.evaluate.metrics.variation_ratio`
    (it takes only S + 1 distinct values, so it ties often for small S).
    ``(S, N, C) -> (N,)``.
    """
    sample_probs = _check_sample_probs(sample_probs)
    return 1.0 - jnp.max(jnp.mean(sample_probs, axis=0), axis=-1)


def mean_std(sample_probs) -> jax.Array:
    """Mean standard deviation σ(x) = (1/C) Σ_c sqrt(E_s[p_s(c)²] − (E_s[p_s(c)])²).

    Kampffmeyer, Salberg & Jenssen (2016); Kendall, Badrinarayanan & Cipolla
    (2015); "Mean STD" in Gal et al. (2017). The population (1/S) variance
    is used, clipped at zero against round-off. ``(S, N, C) -> (N,)``.
    """
    sample_probs = _check_sample_probs(sample_probs)
    mean = jnp.mean(sample_probs, axis=0)
    variance = jnp.maximum(jnp.mean(jnp.square(sample_probs), axis=0) - jnp.square(mean), 0.0)
    return jnp.mean(jnp.sqrt(variance), axis=-1)


def random(sample_probs, key: jax.Array) -> jax.Array:
    """Uniform random scores U(0, 1) per pool point: acquisition without a model.

    ``sample_probs`` only fixes N; ``key`` is required. ``(S, N, C) -> (N,)``.
    """
    sample_probs = _check_sample_probs(sample_probs)
    if key is None:
        raise ValueError("random acquisition needs a PRNG key: pass key=jax.random.key(seed).")
    return jax.random.uniform(key, sample_probs.shape[1:2], dtype=sample_probs.dtype)


def _ignore_key(score: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array, Optional[jax.Array]], jax.Array]:
    def keyed(sample_probs, key=None):
        del key  # deterministic score: the key only matters for random acquisition
        return score(sample_probs)

    keyed.__name__ = score.__name__
    keyed.__doc__ = score.__doc__
    return keyed


# name -> score(sample_probs, key) -> (N,); the names are the command-line spellings.
ACQUISITIONS: Dict[str, Callable[[jax.Array, Optional[jax.Array]], jax.Array]] = {
    "bald": _ignore_key(bald),
    "max_entropy": _ignore_key(max_entropy),
    "variation_ratios": _ignore_key(variation_ratios),
    "mean_std": _ignore_key(mean_std),
    "random": random,
}


def names():
    """Every acquisition function's name."""
    return list(ACQUISITIONS)


def get(name: str) -> Callable[[jax.Array, Optional[jax.Array]], jax.Array]:
    """``score(sample_probs, key) -> (N,)`` by name; unknown names fail listing the known ones."""
    if name not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition function {name!r}; choose one of {names()}")
    return ACQUISITIONS[name]


def select_top(scores: jax.Array, available: jax.Array, num: int) -> jax.Array:
    """Indices of the ``num`` highest ``scores`` among points with ``available`` True.

    Unavailable points get −inf, so they are only returned when fewer than
    ``num`` points are available (the caller checks pool sizes up front).
    Ties go to the lower index (``lax.top_k``); ``num`` is static.
    ``scores, available: (N,) -> (num,) int32``.
    """
    scores = jnp.where(available, scores, -jnp.inf)
    return jax.lax.top_k(scores, num)[1]
