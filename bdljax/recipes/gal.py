"""Gal & Ghahramani's MC dropout protocol: weight decay as a prior, τ in standardised units, their predictive.

The paper's objective (Gal & Ghahramani 2016, eq. 1; the appendix derives it
from the ELBO) is, with E = ½‖y − ŷ‖² and N training points,

    L_dropout = (1/N) Σ_i ½ (y_i − ŷ_i)² + Σ_k λ_k ‖M_k‖²,   λ_k = (1 − p_k) l² / (2 N τ),

where l is the prior length-scale (prior p(w) = N(0, l⁻² I)), τ the model
precision (Gaussian likelihood y ~ N(ŷ, τ⁻¹)) and p_k the drop rate of the
dropout feeding layer k. Multiplying by −N τ gives bdljax's (untempered) log
posterior with a Gaussian likelihood of scale τ^{-1/2} and a Gaussian prior of
scale s_k = 1 / (l √(1 − p_k)) on the kernels dropout feeds (:func:`gal_prior`).
In general a weight decay λ on a *mean* loss equals a Gaussian prior of
precision 2 N λ on the *summed* one; Gal's E_i is the negative log-likelihood
divided by τ, hence 2 N τ λ here.

Two differences from the authors' released Keras code (DropoutUncertaintyExps,
``net.py``), documented rather than copied: (1) it minimises the mean squared
error *without* the ½, which halves the prior precision the same λ stands for
(:func:`keras_prior_scale`); (2) it regularises kernels only and computes λ
with τ in *original* target units while training on standardised targets.
With Gal's l = 10⁻² all of these priors are weaker than 10⁻⁴ per weight and
change nothing measurable.

Units of τ: the paper's τ grid is in original units; the recipes take τ in
the units of the problem's targets; convert with :func:`tau_standardised`
(τ_std = τ_orig · y_std²), as :func:`protocol_grid` does.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.core import likelihoods, priors
from bdljax.nn.dropout import DropoutStructure, check_rate

Params = Any


def check_positive(name: str, value: float) -> None:
    """A positive finite number (a length-scale, a precision, a standard deviation)."""
    if not (isinstance(value, (int, float, np.floating)) and value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


GAL_LENGTH_SCALE = 1e-2  # the paper's prior length-scale l
GAL_BATCH_SIZE = 128  # the authors' UCI code's


def weight_decay(dropout_rate: float, length_scale: float, tau: float, num_data: int) -> float:
    """Gal & Ghahramani's weight decay λ = (1 − p) l² / (2 N τ) on the mean loss (1/N) Σ ½(y − ŷ)².

    ``tau`` and ``length_scale`` in the units the network is trained in.
    """
    check_rate(dropout_rate)
    check_positive("length_scale", length_scale)
    check_positive("tau", tau)
    if num_data < 1:
        raise ValueError(f"num_data must be a positive int, got {num_data}")
    return (1.0 - dropout_rate) * length_scale**2 / (2.0 * num_data * tau)


def prior_precision_from_weight_decay(weight_decay_value: float, tau: float, num_data: int) -> float:
    """The Gaussian prior precision 2 N τ λ that weight decay λ on Gal's mean loss stands for.

    bdljax's log posterior sums the log-likelihood; Gal's loss is its mean
    divided by τ, hence the factor N τ, and ‖M‖²·λ = ½·(2λ)·‖M‖², hence the 2.
    """
    return 2.0 * num_data * tau * weight_decay_value


def prior_scale(dropout_rate: float, length_scale: float) -> float:
    """Prior standard deviation 1 / (l √(1 − p)) on a kernel fed by dropout at rate p.

    Equal to (2 N τ λ)^{-1/2} with λ from :func:`weight_decay`, whatever N and τ.
    """
    check_rate(dropout_rate)
    check_positive("length_scale", length_scale)
    return 1.0 / (length_scale * math.sqrt(1.0 - dropout_rate))


def keras_prior_scale(dropout_rate: float, length_scale: float) -> float:
    """The prior scale √2 / (l √(1 − p)) that λ stands for in Gal's Keras code (MSE without the ½)."""
    return math.sqrt(2.0) * prior_scale(dropout_rate, length_scale)


def tau_standardised(tau_original: float, y_std: float) -> float:
    """Precision τ of targets in original units → precision of (y − ȳ)/y_std: τ · y_std²."""
    check_positive("tau", tau_original)
    check_positive("y_std", y_std)
    return tau_original * y_std**2


def tau_original(tau_std: float, y_std: float) -> float:
    """Inverse of :func:`tau_standardised`: τ_std / y_std²."""
    check_positive("tau", tau_std)
    check_positive("y_std", y_std)
    return tau_std / y_std**2


def gal_prior(params: Params, structure: DropoutStructure, length_scale: float) -> priors.Prior:
    """The Gaussian prior under which the shared log posterior is Gal's dropout objective.

    Kernels fed by dropout at rate p: scale 1/(l √(1 − p)); every other leaf
    (biases, layers without dropout): 1/l — precision (1 − p) l², the KL term
    of the dropout distribution to N(0, l⁻²).
    """
    check_positive("length_scale", length_scale)
    if structure.form == "per_point" and not structure.rates:
        # Dropout written inside the network (bdljax.nn.recurrent) is invisible to dropout_structure, so which
        # kernels it feeds is unknown; 1/l everywhere would silently not be Gal's objective.
        raise ValueError("gal_prior needs to know which kernels dropout feeds, but this network's dropout is its own "
                         "code (no flax nn.Dropout layers); leave length_scale=None and give the problem the prior "
                         "you want, or build the network with nn.Dropout.")
    leaves, treedef = jax.tree.flatten(params)
    scales = [1.0 / length_scale] * len(leaves)
    for leaf_index, dropout_index in structure.fed_kernels:
        scales[leaf_index] = prior_scale(structure.rates[dropout_index], length_scale)
    return priors.gaussian(jax.tree.unflatten(treedef, scales))


def precision_likelihood(likelihood: likelihoods.Likelihood, tau: float) -> likelihoods.Likelihood:
    """The paper's model precision τ as a likelihood: ``gaussian(τ^{-1/2})`` in place of a fixed-scale Gaussian
    ``likelihood`` (any other fails: τ has no meaning for it)."""
    check_positive("tau", tau)
    if likelihood.name != "gaussian":
        raise ValueError(f"tau sets the precision of a fixed-scale Gaussian likelihood, but the problem's likelihood "
                         f"is {likelihood.name!r}; leave tau=None to use that likelihood as it is.")
    return likelihoods.gaussian(float(tau) ** -0.5)


def noise_precision(likelihood: likelihoods.Likelihood) -> Optional[float]:
    """τ = 1/σ² of a fixed-scale Gaussian likelihood; ``None`` for any other likelihood."""
    if likelihood.name != "gaussian" or likelihood.mean_and_scale is None:
        return None
    with jax.ensure_compile_time_eval():  # a host number, also when the recipe is built inside a trace
        _, scale = likelihood.mean_and_scale(jnp.zeros((1, 1)))
        return float(1.0 / jnp.square(scale[0]))


class RegressionPredictive(NamedTuple):
    """Gal & Ghahramani's regression predictive, in original units.

    Attributes:
      mean: (N,) (1/T) Σ_t ŷ_t.
      variance: (N,) τ⁻¹ + (1/T) Σ_t ŷ_t² − mean².
      log_likelihood: (N,) log (1/T) Σ_t N(y | ŷ_t, τ⁻¹).
      rmse: RMSE of ``mean``.
      test_log_likelihood: mean of ``log_likelihood``.
    """

    mean: jax.Array
    variance: jax.Array
    log_likelihood: jax.Array
    rmse: jax.Array
    test_log_likelihood: jax.Array


@jax.jit
def regression_predictive(outputs, y, tau, y_mean=0.0, y_std=1.0) -> RegressionPredictive:
    """The MC dropout regression predictive of T passes, mapped to original units.

    With ŷ_t = y_mean + y_std·o_t and τ_o = τ/y_std² (τ is the precision of
    the standardised targets the network was trained on),

        E[y*]   ≈ (1/T) Σ_t ŷ_t,
        Var[y*] ≈ τ_o⁻¹ + (1/T) Σ_t ŷ_t² − E[y*]²,
        log p(y*) ≈ logsumexp_t(−½ τ_o (y* − ŷ_t)²) − log T − ½ log 2π + ½ log τ_o,

    eqs. (8)–(9) of Gal & Ghahramani (2016, appendix) and their UCI code.

    Args:
      outputs: ``(T, N)`` or ``(T, N, 1)`` network outputs of T passes, in the
        training units (e.g. from :func:`bdljax.run.predictive.predictive_outputs`).
      y: ``(N,)`` targets in the same (standardised) units.
      tau: model precision in those units.
      y_mean, y_std: the standardisation of the targets (0 and 1 for none).
    """
    outputs = jnp.asarray(outputs)
    if outputs.ndim == 3:
        if outputs.shape[-1] != 1:
            raise ValueError(f"regression outputs must have one column, got shape {outputs.shape}")
        outputs = outputs[..., 0]
    if outputs.ndim != 2 or outputs.shape[1:] != jnp.shape(y):
        raise ValueError(f"outputs must be (T, N) with y of shape (N,); got {outputs.shape} and {jnp.shape(y)}")
    predictions = y_mean + y_std * outputs
    targets = y_mean + y_std * jnp.asarray(y)
    tau_o = tau / jnp.square(y_std)
    num_passes = outputs.shape[0]
    mean = jnp.mean(predictions, axis=0)
    variance = 1.0 / tau_o + jnp.mean(jnp.square(predictions - mean), axis=0)  # centred: no cancellation
    log_likelihood = (jax.nn.logsumexp(-0.5 * tau_o * jnp.square(targets - predictions), axis=0) - jnp.log(num_passes)
                      - 0.5 * jnp.log(2 * jnp.pi) + 0.5 * jnp.log(tau_o))
    rmse = jnp.sqrt(jnp.mean(jnp.square(targets - mean)))
    return RegressionPredictive(mean, variance, log_likelihood, rmse, jnp.mean(log_likelihood))


def protocol_grid(dataset, y_std: float, *, epochs_multiplier: int = 1) -> List[Dict[str, Any]]:
    """The MC dropout paper's hyperparameter grid for a UCI dataset, as ``recipe`` keyword arguments.

    One dict per (dropout rate, τ) of ``dataset.dropout_rates`` ×
    ``dataset.tau_values`` (a :class:`bdljax.data.UCIDataset`), with τ
    converted to the standardised units of targets whose training std is
    ``y_std`` (recover the paper's τ with :func:`tau_original`), l = 10⁻²,
    batch 128 and ``dataset.n_epochs × epochs_multiplier`` epochs (the
    authors' follow-up used 10×). The protocol chooses the point with the
    best validation log-likelihood, then retrains on the whole training split.
    """
    check_positive("y_std", y_std)
    if not (isinstance(epochs_multiplier, int) and epochs_multiplier >= 1):
        raise ValueError(f"epochs_multiplier must be a positive int, got {epochs_multiplier!r}")
    if not dataset.dropout_rates or not dataset.tau_values:
        raise ValueError(f"{dataset.name}: empty dropout-rate or τ grid in {dataset.directory}")
    return [
        dict(dropout_rate=float(rate), tau=tau_standardised(float(tau), y_std), length_scale=GAL_LENGTH_SCALE,
             batch_size=GAL_BATCH_SIZE, num_epochs=dataset.n_epochs * epochs_multiplier)
        for rate in dataset.dropout_rates
        for tau in dataset.tau_values
    ]
