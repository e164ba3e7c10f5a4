"""Convergence diagnostics for MCMC: split-R̂, effective sample size and sampler health.

Every figure here takes traces shaped ``(chains, draws, ...)`` and returns
per-quantity statistics computed with BlackJAX's diagnostics
(:mod:`blackjax.diagnostics`):

* :func:`rhat`: the rank-normalised split-R̂ of Vehtari, Gelman, Simpson,
  Carpenter & Bürkner (2021), "Rank-normalization, folding, and localization:
  an improved R̂ for assessing convergence of MCMC". Each chain is split in
  half (so one chain still gives a figure), draws are rank-normalised over
  the pool, and R̂ = √(V̂/W) compares the pooled variance V̂ with the mean
  within-chain variance W; the larger of the bulk and folded (tail) values
  is returned. R̂ → 1 as chains agree.
* :func:`ess_bulk`: the bulk effective sample size of the same paper
  (Geyer's initial monotone sequence on rank-normalised split chains).
* :func:`effective_sample_size`: the classic split-chain ESS
  S_eff = C·S / (1 + 2 Σ_t ρ_t) of the raw values, the one that sets the
  Monte Carlo standard error of a posterior mean,
  MCSE = sd / √S_eff (:func:`monte_carlo_standard_error`).

Bayesian neural network weights are not identifiable across chains (hidden
units permute), so R̂ of raw weights measures nothing useful: the samplers
trace permutation-invariant summaries instead — the log posterior, the norm
of every parameter leaf and the predictions at a few test points — and
:func:`summarise` reduces them to the worst R̂ and the smallest ESS per group.

:func:`sampler_summary` reports acceptance, divergences (counted, never mixed
into the draws silently), step size and trajectory length;
:func:`check` turns all of it into warnings: R̂ above 1.05, or an ESS below
100 per chain (the floor Vehtari et al. recommend for reliable R̂ and MCSE).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional

import blackjax.diagnostics as bjd
import jax
import jax.numpy as jnp
import numpy as np

RHAT_THRESHOLD = 1.05
MIN_ESS_PER_CHAIN = 100
# A kept draw whose total parameter norm exceeds this multiple of the draws' lower quartile has left the posterior.
EXPLODED_NORM_FACTOR = 10.0


class ConvergenceWarning(UserWarning):
    """R̂ too large, ESS too small, or divergent transitions: the draws may not represent the posterior."""


def _traces(draws) -> jnp.ndarray:
    draws = jnp.asarray(draws)
    if draws.ndim < 2:
        raise ValueError(f"traces must have shape (chains, draws, ...), got {draws.shape}")
    if draws.shape[1] < 4:
        raise ValueError(f"split-chain diagnostics need at least 4 draws per chain, got {draws.shape[1]}")
    return draws


@jax.jit
def _rhat_and_ess_bulk(draws):
    # One compiled program per trace shape: BlackJAX's diagnostics run op by op otherwise, and their
    # sorting-based rank normalisation then costs seconds of dispatch per call.
    return bjd.rhat(draws, chain_axis=0, sample_axis=1), bjd.ess_bulk(draws, chain_axis=0, sample_axis=1)


@jax.jit
def _split_ess(draws):
    half = draws.shape[1] // 2
    split = jnp.concatenate([draws[:, :half], draws[:, half:2 * half]], axis=0)
    return bjd.effective_sample_size(split, chain_axis=0, sample_axis=1)


def rhat(draws) -> np.ndarray:
    """Rank-normalised split-R̂ (Vehtari et al. 2021) of ``draws`` ``(C, S, ...)``: shape ``(...)``."""
    return np.asarray(_rhat_and_ess_bulk(_traces(draws))[0])


def ess_bulk(draws) -> np.ndarray:
    """Bulk effective sample size (Vehtari et al. 2021) of ``draws`` ``(C, S, ...)``: shape ``(...)``."""
    return np.asarray(_rhat_and_ess_bulk(_traces(draws))[1])


def effective_sample_size(draws) -> np.ndarray:
    """Split-chain ESS of the raw values (Geyer's initial monotone sequence): shape ``(...)``.

    Chains are split in half first (Gelman et al., BDA3 §11.5), so a slow
    drift within one chain lowers the ESS as a between-chain difference would.
    """
    return np.asarray(_split_ess(_traces(draws)))


def monte_carlo_standard_error(draws) -> np.ndarray:
    """MCSE of the posterior mean of each quantity: sd / √ESS, shape ``(...)``."""
    draws = np.asarray(draws, dtype=np.float64)
    pooled = draws.reshape((-1, *draws.shape[2:]))
    return pooled.std(axis=0, ddof=1) / np.sqrt(effective_sample_size(draws))


def summarise(traces: Mapping[str, Any]) -> Dict[str, float]:
    """Worst R̂ and smallest bulk ESS of each group of traces.

    Args:
      traces: name → array ``(C, S)`` or ``(C, S, K)`` (K quantities per draw,
        e.g. parameter-leaf norms or predictions at K test points).

    Returns:
      ``{"rhat_<name>": max R̂, "ess_<name>": min bulk ESS}`` per group, plus
      ``rhat_max`` and ``ess_min`` over all groups. Quantities that are
      constant over every draw (an ESS of 0 and an undefined R̂) are skipped:
      they carry no information about mixing.
    """
    groups = {name: np.asarray(values, dtype=np.float32) for name, values in traces.items()}
    groups = {name: values.reshape(values.shape[:2] + (-1,)) for name, values in groups.items()}
    # All groups in one array: one compiled diagnostic per run instead of one per group.
    joined = np.concatenate(list(groups.values()), axis=-1)
    all_rhat, all_ess = (np.asarray(v) for v in _rhat_and_ess_bulk(_traces(joined)))
    varies = np.ptp(joined.reshape(-1, joined.shape[-1]), axis=0) > 0
    summary: Dict[str, float] = {}
    offset = 0
    for name, values in groups.items():
        columns = slice(offset, offset + values.shape[-1])
        offset += values.shape[-1]
        mask = varies[columns]
        if not mask.any():
            summary[f"rhat_{name}"], summary[f"ess_{name}"] = float("nan"), 0.0
            continue
        summary[f"rhat_{name}"] = float(np.max(all_rhat[columns][mask]))
        summary[f"ess_{name}"] = float(np.min(all_ess[columns][mask]))
    informative = varies.any() and np.isfinite(all_rhat[varies]).any()
    summary["rhat_max"] = float(np.nanmax(all_rhat[varies])) if informative else float("nan")
    summary["ess_min"] = float(np.min(all_ess[varies])) if varies.any() else 0.0
    return summary


def draw_summaries(apply: Optional[Callable], likelihood, params, points) -> Dict[str, jax.Array]:
    """Permutation-invariant quantities of one draw, for R̂ and ESS (jit-able).

    ``param_norms``: the L2 norm of every parameter leaf (unchanged when hidden
    units are permuted). ``predictions`` (when ``points`` is given): the
    predictive mean at each point for regression, class probabilities for
    classification, the raw output otherwise — flattened.
    """
    norms = jnp.stack([jnp.sqrt(jnp.sum(jnp.square(leaf.astype(jnp.float32)))) for leaf in jax.tree.leaves(params)])
    summaries = {"param_norms": norms}
    if points is not None:
        output = apply(params, points)
        if likelihood is not None and likelihood.kind == "regression":
            output = likelihood.mean_and_scale(output)[0]
        elif likelihood is not None:
            output = likelihood.probabilities(output)
        summaries["predictions"] = output.reshape(-1)
    return summaries


def draw_traces(log_posterior, data, samples, apply: Optional[Callable], likelihood, points) -> Dict[str, np.ndarray]:
    """Traces of kept draws ``samples`` (leaves ``(C, S, ...)``) for :func:`summarise`: ``log_density``, the exact
    full-data log p_T(θ|D) (``log_posterior.full_data`` over ``data = (x, y)``), and :func:`draw_summaries` at
    ``points``; every trace shaped ``(C, S, ...)``."""
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    num_chains, num_draws = jax.tree.leaves(samples)[0].shape[:2]
    flat = jax.tree.map(lambda leaf: jnp.reshape(jnp.asarray(leaf), (-1, *leaf.shape[2:])), samples)

    @jax.jit
    def trace(flat, x, y, points):
        def one(params):
            # Draws one at a time and the data in chunks: memory stays at one chunk's activations (vmapping 20
            # CNN draws over 60 000 MNIST images at once asked for 120 GB).
            return {"log_density": log_posterior.full_data(params, (x, y)),
                    **draw_summaries(apply, likelihood, params, points)}

        return jax.lax.map(one, flat)

    traces = jax.tree.map(np.asarray, trace(flat, x, y, jnp.asarray(points)))
    return {name: value.reshape((num_chains, num_draws, *value.shape[1:])) for name, value in traces.items()}


def exploded_draws(traces: Mapping[str, Any], factor: float = EXPLODED_NORM_FACTOR) -> int:
    """Kept draws that left the posterior without a non-finite step.

    A draw counts when its full-data log density (``traces["log_density"]``) is
    not finite, or when its total parameter norm sqrt(Σ_leaves ‖θ_leaf‖²) exceeds
    ``factor`` × the lower quartile of all draws' norms. A step size too large for
    the posterior's curvature can blow a stochastic-gradient chain up while every
    value stays finite (cyclical SGLD restarting its step size in a sharp mode:
    log prior −2·10⁵ → −1.6·10¹¹, RESULTS.md, session 4); the non-finite step
    counter misses it and the predictive would average those draws in. Draws of
    one posterior have norms within a few per cent of one another; the lower
    quartile is the reference so that up to three quarters of the draws may have
    exploded and still be counted.

    Args:
      traces: :func:`draw_summaries`-style traces, ``param_norms`` ``(C, S, L)``.
    """
    norms = np.asarray(traces["param_norms"], dtype=np.float64)
    total = np.sqrt(np.sum(np.square(norms), axis=-1))
    bad = ~np.isfinite(total)
    if "log_density" in traces:
        bad |= ~np.isfinite(np.asarray(traces["log_density"], dtype=np.float64))
    finite = total[np.isfinite(total)]
    if finite.size:
        bad |= total > factor * np.quantile(finite, 0.25)
    return int(np.sum(bad))


def sampler_summary(acceptance_rate, is_divergent, step_size, num_integration_steps,
                    warmup_divergent: Optional[Any] = None) -> Dict[str, Any]:
    """Health of an HMC-family run from its per-transition infos.

    Args:
      acceptance_rate, is_divergent, num_integration_steps: ``(C, T)`` over the
        kept phase (after warm-up).
      step_size: ``(C,)`` or ``(C, T)`` step sizes in force after warm-up.
      warmup_divergent: optional ``(C, T_warmup)`` divergence flags of warm-up,
        reported separately (divergences while adapting are expected).

    Returns:
      ``acceptance`` (mean), ``divergences`` (total count after warm-up),
      ``divergences_per_chain``, ``step_size`` (mean over chains),
      ``step_size_per_chain``, ``num_integration_steps`` (mean leapfrog steps
      per transition) and ``warmup_divergences``.
    """
    is_divergent = np.asarray(is_divergent, dtype=bool)
    step_size = np.asarray(step_size, dtype=np.float64)
    per_chain_step = step_size if step_size.ndim == 1 else step_size.mean(axis=-1)
    summary: Dict[str, Any] = {
        "acceptance": float(np.mean(acceptance_rate)) if np.size(acceptance_rate) else float("nan"),
        "divergences": int(is_divergent.sum()),
        "divergences_per_chain": is_divergent.reshape(is_divergent.shape[0], -1).sum(axis=1).tolist(),
        "step_size": float(per_chain_step.mean()),
        "step_size_per_chain": per_chain_step.tolist(),
        "num_integration_steps": (float(np.mean(num_integration_steps)) if np.size(num_integration_steps)
                                  else float("nan")),
    }
    if warmup_divergent is not None:
        summary["warmup_divergences"] = int(np.asarray(warmup_divergent, dtype=bool).sum())
    return summary


def check(summary: Mapping[str, Any], num_chains: int, *, rhat_threshold: float = RHAT_THRESHOLD,
          min_ess_per_chain: float = MIN_ESS_PER_CHAIN, warn: bool = True) -> List[str]:
    """Problems found in a diagnostics summary, one sentence each; warned as :class:`ConvergenceWarning`.

    Flags every ``rhat_<group>`` above ``rhat_threshold``, every ``ess_<group>``
    below ``min_ess_per_chain · num_chains``, any divergence after warm-up, any exploded kept draw (:func:`exploded_draws`)
    and any skipped non-finite step (``nonfinite_steps``).
    """
    problems = []
    min_ess = min_ess_per_chain * num_chains
    for key, value in summary.items():
        if key in ("rhat_max", "ess_min") or not isinstance(value, (int, float)):
            continue
        if key.startswith("rhat_") and np.isfinite(value) and value > rhat_threshold:
            problems.append(f"R̂ of {key[5:]} is {value:.3f} > {rhat_threshold}: the chains disagree; run longer or "
                            "check the warm-up")
        if key.startswith("ess_") and value < min_ess:
            problems.append(f"ESS of {key[4:]} is {value:.0f} < {min_ess:.0f} ({min_ess_per_chain:g} per chain): "
                            "estimates are noisy; draw more or thin less")
    if summary.get("divergences", 0):
        problems.append(f"{summary['divergences']} divergent transition(s) after warm-up: the step size is too "
                        "large for the posterior's curvature; lower it or raise the target acceptance")
    if summary.get("exploded_draws", 0):
        problems.append(f"{summary['exploded_draws']} kept draw(s) left the posterior (a non-finite log density, or a "
                        f"parameter norm above {EXPLODED_NORM_FACTOR:g}x the draws' lower quartile): the step size is "
                        "too large for the posterior's curvature; lower it (for a cyclical schedule, its restart value)")
    if summary.get("nonfinite_steps", 0):
        problems.append(f"{summary['nonfinite_steps']} step(s) skipped for a non-finite loss or gradient: the chain "
                        "stood still there; lower the step size, or check the data and the model for NaN/inf")
    if warn:
        for problem in problems:
            warnings.warn(problem, ConvergenceWarning, stacklevel=2)
    return problems
