"""Per-point uncertainty of a classifier's posterior predictive, and the acquisition functions built on it.

Every score is a function of the per-sample class probabilities

    p_s(y = c | x) = p(y = c | x, θ_s),   ``sample_probs`` of shape (S, N, C),

for S posterior samples θ_s (MC dropout masks, ensemble members, SG-MCMC
draws, ...), N points and C classes, or of the predictive mean
p̄_c = (1/S) Σ_s p_s(c), ``mean_probs`` of shape (N, C); each returns ``(N,)``.
H[p] = −Σ_c p_c log p_c (nats, 0 log 0 = 0).

* :func:`predictive_entropy` — H[p̄] (Shannon, 1948): total uncertainty.
* :func:`expected_entropy` — (1/S) Σ_s H[p_s]: the aleatoric part.
* :func:`mutual_information` — BALD, I[y; θ | x, D] = H[p̄] − (1/S) Σ_s H[p_s]
  (Houlsby et al., 2011): the epistemic part; :func:`mutual_information_from_logits`
  is the same quantity in float64 on the host, for OOD scores of confident points.
* :func:`max_probability` — max_c p̄_c.
* :func:`variation_ratio` — 1 − max_c (1/S) Σ_s 1[argmax_c' p_s(c') = c]
  (Freeman, 1965): the share of samples that disagree with the modal vote.
* :func:`mean_std` — (1/C) Σ_c sqrt(E_s[p_s(c)²] − p̄_c²) (Kampffmeyer et al.,
  2016; Kendall et al., 2015).

Acquisition functions for Bayesian active learning (Gal, Islam & Ghahramani
(2017), "Deep Bayesian Active Learning with Image Data", ICML): a model trained
on a small labelled set scores every point of an unlabelled pool, and the
highest-scoring points are sent to an oracle for labels. :func:`get` gives a
uniform ``score(sample_probs, key) -> (N,)`` by name (:data:`ACQUISITIONS`:
BALD, max entropy, Gal et al.'s variation ratios, mean std, random) and
:func:`select_top` picks the best ``k`` of the points still available.

Array functions are pure ``jax.numpy``, jit-able and vmap-able; the shape check
of the sample axis is static, so it runs under ``jit`` too.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.scipy.special import entr

__all__ = [
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "mutual_information_from_logits",
    "max_probability",
    "variation_ratio",
    "mean_std",
    "max_entropy",
    "least_confidence",
    "random",
    "ACQUISITIONS",
    "names",
    "get",
    "select_top",
]


def _check_sample_probs(sample_probs) -> jax.Array:
    """Static (trace-time) shape check: these scores need an explicit sample axis."""
    sample_probs = jnp.asarray(sample_probs)
    if sample_probs.ndim != 3:
        raise ValueError(
            f"sample_probs must have shape (S, N, C) (samples, points, classes), got {sample_probs.shape}; "
            "add a leading axis of size 1 for a point estimate."
        )
    return sample_probs


# ---------------------------------------------------------------------------
# Uncertainty decompositions (per point)
# ---------------------------------------------------------------------------


@jax.jit
def predictive_entropy(mean_probs):
    """Entropy of the predictive mean, ``H[p̄] = -sum_c p̄_c log p̄_c`` (nats).

    Uses ``0 log 0 = 0``. ``mean_probs``: ``(..., C)``; returns ``(...)``,
    e.g. ``(N,)`` for ``(N, C)`` input. Total uncertainty.
    """
    return jnp.sum(entr(jnp.asarray(mean_probs)), axis=-1)


@jax.jit
def expected_entropy(sample_probs):
    """Mean over samples of the per-sample entropy, ``E_s H[p_s]`` (nats).

    ``sample_probs``: ``(S, N, C)``; returns ``(N,)``. The aleatoric part of
    the decomposition ``H[p̄] = E_s H[p_s] + I`` (Depeweg et al., 2018).
    """
    sample_probs = _check_sample_probs(sample_probs)
    return jnp.mean(predictive_entropy(sample_probs), axis=0)


@jax.jit
def mutual_information(sample_probs):
    """BALD mutual information between label and parameters (Houlsby et al., 2011).

    ``I[y; theta] = H[mean_s p_s] - mean_s H[p_s]`` (nats), the epistemic
    part of the predictive entropy (Gal et al., 2017, eq. 3 with the MC
    estimate over S samples). Zero when all samples agree, however uncertain
    each one is. Non-negative by Jensen's inequality up to float round-off
    (not clipped, so round-off stays visible). In float32 the two entropies
    carry absolute errors of about 1e-7, more than the whole MI of a confident
    point: fine for ranking a pool by BALD, not for telling confident points
    apart; score OOD detection with :func:`mutual_information_from_logits`
    (float64, host-side).

    ``sample_probs``: ``(S, N, C)``; returns ``(N,)``.
    """
    sample_probs = _check_sample_probs(sample_probs)
    return predictive_entropy(jnp.mean(sample_probs, axis=0)) - expected_entropy(sample_probs)


def mutual_information_from_logits(sample_logits) -> np.ndarray:
    """:func:`mutual_information` in float64 on the host, from per-sample logits ``(S, N, C)``; returns ``(N,)``.

    For OOD scores, evaluated once at the end: the MI of confidently classified points is 1e-8 to 1e-6 nats,
    below float32's resolution of the two entropies it is the difference of (on such points the float32 form
    is negative a third of the time and reorders the points). Computing the log-softmax from the logits in
    float64 keeps the small probabilities exact, so the difference is resolved. Logits, not probabilities:
    float32 probabilities near 1 have already lost what the difference needs.
    """
    logits = np.asarray(sample_logits, dtype=np.float64)
    if logits.ndim != 3:
        raise ValueError(f"sample_logits must have shape (S, N, C), got {logits.shape}")
    probs = np.exp(logits - scipy.special.logsumexp(logits, axis=-1, keepdims=True))
    # Both entropies through the same xlogy, so that one sample (or identical ones) gives exactly 0.
    expected_entropy_ = -np.mean(np.sum(scipy.special.xlogy(probs, probs), axis=-1), axis=0)
    mean_probs = np.mean(probs, axis=0)
    entropy_of_mean = -np.sum(scipy.special.xlogy(mean_probs, mean_probs), axis=-1)
    return entropy_of_mean - expected_entropy_


@jax.jit
def max_probability(mean_probs):
    """Top-class predictive probability ``max_c p̄_c``; ``(..., C) -> (...)``."""
    return jnp.max(jnp.asarray(mean_probs), axis=-1)


@jax.jit
def variation_ratio(sample_probs):
    """Variation ratio over posterior samples (Freeman, 1965; Gal, 2016).

    ``VR = 1 - f_mode / S`` where ``f_mode`` is how many of the S samples
    predict the most frequent arg-max class. 0 when all samples agree. It
    takes only S + 1 distinct values, so it ties often for small S.

    ``sample_probs``: ``(S, N, C)``; returns ``(N,)``.
    """
    sample_probs = _check_sample_probs(sample_probs)
    num_classes = sample_probs.shape[-1]
    votes = jax.nn.one_hot(jnp.argmax(sample_probs, axis=-1), num_classes)
    return 1.0 - jnp.max(jnp.mean(votes, axis=0), axis=-1)


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


# ---------------------------------------------------------------------------
# Acquisition functions (Gal, Islam & Ghahramani, 2017): higher = acquire first
# ---------------------------------------------------------------------------


def max_entropy(sample_probs) -> jax.Array:
    """Predictive entropy H[p̄(y|x)] of the mean of the samples, p̄ = (1/S) Σ_s p_s.

    Gal et al. (2017), "Max Entropy" (Shannon, 1948). ``(S, N, C) -> (N,)``.
    """
    sample_probs = _check_sample_probs(sample_probs)
    return predictive_entropy(jnp.mean(sample_probs, axis=0))


def least_confidence(sample_probs) -> jax.Array:
    """1 − max_c p̄_c on the predictive mean p̄ = (1/S) Σ_s p_s.

    What Gal et al. (2017) call "variation ratios": Freeman's (1965) statistic
    with the vote shares replaced by the approximate predictive p(y|x, D) ≈ p̄
    (continuous, so it rarely ties, unlike the vote-counting
    :func:`variation_ratio`). ``(S, N, C) -> (N,)``.
    """
    sample_probs = _check_sample_probs(sample_probs)
    return 1.0 - max_probability(jnp.mean(sample_probs, axis=0))


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


# name -> score(sample_probs, key) -> (N,); the names are the command-line spellings (Gal et al.'s), so
# "variation_ratios" is their predictive-mean form, least_confidence.
ACQUISITIONS: Dict[str, Callable[[jax.Array, Optional[jax.Array]], jax.Array]] = {
    "bald": _ignore_key(mutual_information),
    "max_entropy": _ignore_key(max_entropy),
    "variation_ratios": _ignore_key(least_confidence),
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
