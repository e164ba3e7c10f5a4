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
from typing import Any, Dict, List, Mapping, Optional

import blackjax.diagnostics as bjd
import jax.numpy as jnp
import numpy as np

RHAT_THRESHOLD = 1.05
MIN_ESS_PER_CHAIN = 100


class ConvergenceWarning(UserWarning):
    """R̂ too large, ESS too small, or divergent transitions: the draws may not represent the posterior."""


def _traces(draws) -> jnp.ndarray:
    draws = jnp.asarray(draws)
    if draws.ndim < 2:
        raise ValueError(f"traces must have shape (chains, draws, ...), got {draws.shape}")
    if draws.shape[1] < 4:
        raise ValueError(f"split-chain diagnostics need at least 4 draws per chain, got {draws.shape[1]}")
    return draws


def rhat(draws) -> np.ndarray:
    """Rank-normalised split-R̂ (Vehtari et al. 2021) of ``draws`` ``(C, S, ...)``: shape ``(...)``."""
    return np.asarray(bjd.rhat(_traces(draws), chain_axis=0, sample_axis=1))


def ess_bulk(draws) -> np.ndarray:
    """Bulk effective sample size (Vehtari et al. 2021) of ``draws`` ``(C, S, ...)``: shape ``(...)``."""
    return np.asarray(bjd.ess_bulk(_traces(draws), chain_axis=0, sample_axis=1))


def effective_sample_size(draws) -> np.ndarray:
    """Split-chain ESS of the raw values (Geyer's initial monotone sequence): shape ``(...)``.

    Chains are split in half first (Gelman et al., BDA3 §11.5), so a slow
    drift within one chain lowers the ESS as a between-chain difference would.
    """
    draws = _traces(draws)
    half = draws.shape[1] // 2
    split = jnp.concatenate([draws[:, :half], draws[:, half:2 * half]], axis=0)
    return np.asarray(bjd.effective_sample_size(split, chain_axis=0, sample_axis=1))


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
    summary: Dict[str, float] = {}
    worst_rhat, least_ess = [], []
    for name, values in traces.items():
        values = np.asarray(values, dtype=np.float64)
        values = values.reshape(values.shape[:2] + (-1,))
        varies = np.ptp(values.reshape(-1, values.shape[-1]), axis=0) > 0
        if not varies.any():
            summary[f"rhat_{name}"], summary[f"ess_{name}"] = float("nan"), 0.0
            continue
        group_rhat = rhat(values[..., varies])
        group_ess = ess_bulk(values[..., varies])
        summary[f"rhat_{name}"] = float(np.max(group_rhat))
        summary[f"ess_{name}"] = float(np.min(group_ess))
        worst_rhat.append(summary[f"rhat_{name}"])
        least_ess.append(summary[f"ess_{name}"])
    summary["rhat_max"] = float(max(worst_rhat)) if worst_rhat else float("nan")
    summary["ess_min"] = float(min(least_ess)) if least_ess else 0.0
    return summary


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
        "num_integration_steps": float(np.mean(num_integration_steps)) if np.size(num_integration_steps) else float("nan"),
    }
    if warmup_divergent is not None:
        summary["warmup_divergences"] = int(np.asarray(warmup_divergent, dtype=bool).sum())
    return summary


def check(summary: Mapping[str, Any], num_chains: int, *, rhat_threshold: float = RHAT_THRESHOLD,
          min_ess_per_chain: float = MIN_ESS_PER_CHAIN, warn: bool = True) -> List[str]:
    """Problems found in a diagnostics summary, one sentence each; warned as :class:`ConvergenceWarning`.

    Flags every ``rhat_<group>`` above ``rhat_threshold``, every ``ess_<group>``
    below ``min_ess_per_chain · num_chains``, and any divergence after warm-up.
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
    if warn:
        for problem in problems:
            warnings.warn(problem, ConvergenceWarning, stacklevel=2)
    return problems
