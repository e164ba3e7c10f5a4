"""Concrete dropout: MC dropout whose dropout rates are learned through a relaxed Bernoulli.

Gal, Hron & Kendall (2017), "Concrete Dropout" (NeurIPS). MC dropout
(:mod:`bdljax.methods.mcdropout`) fixes the drop rate p of every dropout layer and
chooses it on a validation grid. Concrete dropout makes each layer's p a
variational parameter, optimised with the weights on the same evidence lower
bound, by replacing the discrete Bernoulli mask with its continuous (concrete)
relaxation so that the mask is differentiable in p.

The variational family
----------------------
Dropout layer k masks the D_k input rows of the kernel K_k it feeds. With
inverted dropout (Flax, Keras) a draw of the weights is
W_k = diag(z_k / (1 − p_k))·K_k, z_kj ~ Bernoulli(1 − p_k), i.e. the paper's
W = diag(z)·M with M_k = K_k / (1 − p_k). The KL divergence of q to the prior
N(0, s_k²) (s_k = 1/l in the papers' length-scale notation) is, up to a
constant (Gal 2016, thesis §3.2.3; Gal, Hron & Kendall 2017, eq. 3),

    KL_k ≈ (1 − p_k) ‖M_k‖² / (2 s_k²) − D_k H(p_k)
         = ‖K_k‖² / (2 s_k² (1 − p_k)) − D_k H(p_k),   H(p) = −p log p − (1 − p) log(1 − p).

The first term pushes p down (a large rate inflates the weights it rescales),
the entropy term pushes p towards ½; the data term decides in between, so
with more data the learned rate falls (the paper's Figure 2).

In bdljax's terms
-----------------
The objective is the shared :class:`~bdljax.core.posterior.LogPosterior`, with

* ``apply``: the network with every ``nn.Dropout`` replaced by a relaxed mask
  of the learned rate (training), or without dropout (``train=False``, the
  mode in which weight samples are evaluated), and
* ``prior``: :func:`kl_prior`, whose ``log_prob`` is −Σ_k KL_k minus the
  Gaussian prior's energy on every parameter not fed by dropout: the "prior"
  term of the ELBO of a variational family is its negative KL.

So the value maximised is the ELBO estimate (N/|B|) Σ_B log p(y | x, W̃) − KL,
nothing rescaled by the method (the shared log posterior scales the
likelihood). Parameters are the network's Flax variables plus one logit per
dropout layer: ``{"params": ..., "dropout_logit": (num_dropouts,)}``;
p_k = sigmoid(logit_k).

The relaxed mask (the paper's eq. 5, their code's ``concrete_dropout``):
with u ~ U(0, 1) and temperature t (0.1 in the paper),

    z̃ = 1 − sigmoid((log p − log(1 − p) + log u − log(1 − u)) / t),   input ← input · z̃ / (1 − p),

one independent z̃ per unit and per example. log u − log(1 − u) is a standard
logistic variable; as t → 0, z̃ → Bernoulli(1 − p).

Prediction uses the variational distribution itself: a sample is a parameter
pytree with *hard* Bernoulli(1 − p_k) masks folded into the kernel rows
(:func:`bdljax.nn.dropout.fold_masks`), evaluated with ``train=False`` —
T of them vmapped in one compiled call, as for MC dropout. (The authors' Keras
layer keeps the relaxed mask at test time too; at t = 0.1 the two differ
little, and the Bernoulli one is the distribution the KL above is of.)

Only networks whose every Dropout feeds a ``nn.Dense`` directly (the
``"weight_sample"`` form of :func:`bdljax.nn.dropout.dropout_structure`, e.g.
:func:`bdljax.nn.models.mlp`) and Gaussian priors (closed-form KL) are supported;
anything else fails when the transform is built.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from bdljax.core import priors
from bdljax.core.posterior import Apply, LogPosterior
from bdljax.core.transform import Transform
from bdljax.methods import map_estimate
from bdljax.nn import dropout

Params = Any

LOGIT_KEY = "dropout_logit"
DEFAULT_TEMPERATURE = 0.1  # the paper's and its code's


def _check_structure(structure: dropout.DropoutStructure) -> None:
    if not structure.rates:
        raise ValueError("concrete dropout needs a network with nn.Dropout layers; build the model with "
                         "dropout (e.g. models.mlp(...).with_dropout(0.1)).")
    if structure.form != "weight_sample" or len(structure.folded) != len(structure.fed_kernels):
        raise ValueError(
            "concrete dropout supports networks whose every Dropout feeds a Dense layer with (B, D) inputs "
            f"(the MLP); this one has form {structure.form!r}: "
            f"{structure.reason or 'a Dropout feeds a non-Dense layer'}"
        )


def network_params(params: Params) -> Params:
    """The network's Flax variables without the dropout logits."""
    return {k: v for k, v in params.items() if k != LOGIT_KEY}


def dropout_rates(params: Params) -> jax.Array:
    """The learned drop rates p_k = sigmoid(logit_k), shape (num_dropouts,)."""
    return jax.nn.sigmoid(params[LOGIT_KEY])


def init_params(net_params: Params, structure: dropout.DropoutStructure, initial_rate: float) -> Params:
    """``{**net_params, "dropout_logit": logit(initial_rate) per dropout layer}``."""
    _check_structure(structure)
    if not 0.0 < initial_rate < 1.0:
        raise ValueError(f"initial_rate must lie in (0, 1), got {initial_rate}")
    if LOGIT_KEY in net_params:
        raise ValueError(f"the network's variables already have a {LOGIT_KEY!r} collection")
    logit = jnp.log(initial_rate) - jnp.log1p(-initial_rate)
    return {**net_params, LOGIT_KEY: jnp.full((len(structure.rates),), logit, jnp.float32)}


def relaxed_keep_mask(key: jax.Array, logit: jax.Array, shape, temperature: float = DEFAULT_TEMPERATURE) -> jax.Array:
    """z̃ = 1 − sigmoid((logit p + logistic noise)/t), in (0, 1); → Bernoulli(1 − p) as t → 0.

    Not rescaled by 1/(1 − p) (the caller does, as inverted dropout).
    """
    noise = jax.random.logistic(key, shape)
    return 1.0 - jax.nn.sigmoid((logit + noise) / temperature)


@functools.lru_cache(maxsize=64)
def concrete_apply(apply: Apply, structure: dropout.DropoutStructure,
                   temperature: float = DEFAULT_TEMPERATURE) -> Apply:
    """``apply(params, x, rng=None, train=False)`` of the concrete-dropout network.

    Cached per ``(apply, structure, temperature)``, so that the jitted
    predictive (static in ``apply``) compiles once per network.

    ``train=True`` with an ``rng``: every ``nn.Dropout`` call k is replaced by
    ``input · z̃ / (1 − p_k)`` with an independent relaxed mask per example and
    unit (keys ``fold_in(rng, k)``). Otherwise the network runs without
    dropout (weight samples carry their masks in the kernels).
    """
    _check_structure(structure)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")

    def run(params, x, rng=None, train=False):
        variables = network_params(params)
        if not train or rng is None:
            return apply(variables, x, rng=None, train=False)
        logits = params[LOGIT_KEY]

        def replace(index, inputs):
            keep = relaxed_keep_mask(jax.random.fold_in(rng, index), logits[index], inputs.shape, temperature)
            rate = jax.nn.sigmoid(logits[index])
            return inputs * (keep / (1.0 - rate)).astype(inputs.dtype)

        # The network runs in its training mode (any other train-time behaviour stays on); its Dropout
        # calls never reach Flax's own dropout, the interceptor answers them.
        return dropout.call_replacing_dropout(lambda: apply(variables, x, rng=rng, train=True), replace,
                                                len(structure.rates))

    return run


def binary_entropy(logit: jax.Array) -> jax.Array:
    """H(p) = −p log p − (1 − p) log(1 − p) of p = sigmoid(logit), computed from the logit (stable)."""
    p = jax.nn.sigmoid(logit)
    return -(p * jax.nn.log_sigmoid(logit) + (1.0 - p) * jax.nn.log_sigmoid(-logit))


def kl_prior(base_prior: priors.Prior, structure: dropout.DropoutStructure) -> priors.Prior:
    """The ELBO's "prior" term −KL(q‖p) of the concrete-dropout family, as a :class:`bdljax.core.priors.Prior`.

    ``log_prob(params) = base.log_prob(θ̃) + Σ_k D_k H(p_k)``, where θ̃ is the
    network's parameters with every dropout-fed kernel divided by √(1 − p_k):
    for a Gaussian base prior of scale s that is −Σ_k ‖K_k‖²/(2 s² (1 − p_k))
    − Σ_other ‖θ‖²/(2 s²) + Σ_k D_k H(p_k) + const, the negative KL of the
    module docstring. ``base_prior`` must be Gaussian (its ``scales`` defined).
    """
    _check_structure(structure)
    if base_prior.scales is None:
        raise ValueError(f"concrete dropout's KL is closed-form for Gaussian priors only; the prior "
                         f"{base_prior.name!r} has no scales. Use bdljax.core.priors.gaussian(...).")
    units = [math.prod(shape) for shape in structure.mask_shapes]

    def log_prob(params):
        logits = params[LOGIT_KEY]
        rates = jax.nn.sigmoid(logits)
        leaves, treedef = jax.tree.flatten(network_params(params))
        for leaf_index, dropout_index in structure.fed_kernels:
            leaves[leaf_index] = leaves[leaf_index] * jax.lax.rsqrt(1.0 - rates[dropout_index])
        entropy = sum(units[k] * binary_entropy(logits[k]) for k in range(len(units)))
        return base_prior.log_prob(jax.tree.unflatten(treedef, leaves)) + entropy

    return priors.Prior(f"concrete_dropout_kl({base_prior.name})", log_prob, None, None)


def weight_sample(params: Params, key: jax.Array, structure: dropout.DropoutStructure) -> Params:
    """One draw of q: Bernoulli(1 − p_k) masks of the *learned* rates folded into the kernel rows."""
    masks = dropout.dropout_masks(key, structure, rates=dropout_rates(params))
    folded = dropout.fold_masks(network_params(params), masks, structure)
    return {**folded, LOGIT_KEY: params[LOGIT_KEY]}


def sample(state: map_estimate.MAPState, key: jax.Array, num_samples: int,
           structure: dropout.DropoutStructure) -> Params:
    """T = ``num_samples`` draws of q around the trained weights and rates (:func:`weight_sample`), stacked."""
    return jax.vmap(lambda k: weight_sample(state.params, k, structure))(jax.random.split(key, num_samples))


def build(log_posterior: LogPosterior, optimizer: optax.GradientTransformation,
          structure: dropout.DropoutStructure) -> Transform:
    """Concrete dropout on the shared log posterior.

    ``log_posterior`` must be built on :func:`concrete_apply` and
    :func:`kl_prior` (then its value is the ELBO estimate); ``init``/``update``
    are MAP steps (:mod:`bdljax.methods.map_estimate`) on it, weights and
    dropout logits together, per-example relaxed masks from each step's key;
    ``sample(state, key, T)`` returns T parameter pytrees with hard masks of the
    learned rates folded in (:func:`sample`), evaluated by :func:`concrete_apply`
    with ``train=False``.
    """
    _check_structure(structure)
    return Transform(functools.partial(map_estimate.init, optimizer=optimizer),
                     functools.partial(map_estimate.update, log_posterior=log_posterior, optimizer=optimizer),
                     functools.partial(sample, structure=structure))


def learned_rates(fitted_state) -> Optional[list]:
    """The learned drop rates of a fitted state (host list), for diagnostics."""
    params = getattr(fitted_state, "params", None)
    if params is None or LOGIT_KEY not in params:
        return None
    return [float(r) for r in jax.device_get(dropout_rates(params))]
