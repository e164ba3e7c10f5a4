"""Mean-field Gaussian variational inference (Bayes by Backprop) over any parameter pytree.

Blundell, Cornebise, Kavukcuoglu & Wierstra (2015), "Weight Uncertainty in
Neural Networks"; Graves (2011); Kingma & Welling (2014) for the
reparameterisation trick. The variational family is a fully factorised
Gaussian over every scalar of the parameter pytree,

    q_φ(θ) = Π_j N(θ_j | μ_j, σ_j²),   σ_j = softplus(ρ_j)  (or exp(ρ_j)),   φ = (μ, ρ),

with μ initialised from given parameters (a random initialisation or a MAP
solution) and σ from a small ``init_scale``.

The objective and the temperature
---------------------------------
:class:`~bdljax.core.posterior.LogPosterior` defines the target of every method:
p_T(θ|D) ∝ [p(D|θ) p(θ)]^{1/T}. MFVI minimises KL(q ‖ p_T(θ|D)), i.e. maximises

    L_T(φ) = E_q[(1/T)(log p(D|θ) + log p(θ))] + H[q]  =  log Z_T − KL(q ‖ p_T(θ|D)),

with Z_T = ∫ [p(D|θ) p(θ)]^{1/T} dθ. Since E_q[log p(θ)] + H[q] = −KL(q ‖ p),

    L_T(φ) = (1/T) (E_q[log p(D|θ)] − KL(q ‖ p)) + (1 − 1/T) H[q].

At T = 1 this is the ELBO, E_q[log p(D|θ)] − KL(q ‖ p), a lower bound on
the log marginal likelihood log p(D). For T ≠ 1 the entropy carries the
weight (1 − 1/T): tempering the whole posterior (the prior included, as
the shared log posterior does) is not the same as down-weighting the KL
alone ("KL annealing"); for a Gaussian target with precision Λ the optimum
has variances T/Λ_jj (tested).

Estimators
----------
* E_q[log p(D|θ)]: S reparameterised draws θ^(s) = μ + σ ∘ ε^(s), ε ~ N(0, I),
  vmapped; each evaluated by :meth:`LogPosterior.log_likelihood`, which
  scales the minibatch sum by N/|B|, so the KL below is counted once per
  epoch's worth of data — never divided by the batch size.
* KL(q ‖ p) in closed form when the prior reports Gaussian ``scales`` s:

      KL = Σ_j [log(s_j/σ_j) + (σ_j² + μ_j²)/(2 s_j²) − 1/2];

  otherwise (``prior.scales is None``) by Monte Carlo with the entropy in
  closed form (as ADVI does, Kucukelbir et al. 2017): KL ≈ −H[q] − (1/S) Σ_s
  log p(θ^(s)), H[q] = Σ_j [½ log(2πe) + log σ_j]. Then L_T is simply
  E_q[log p_T(θ|D)] + H[q], the shared log posterior's value plus the entropy.
* Optionally ``variational_apply``: a lower-variance estimator of the same
  E_q[log p(D|θ)] for networks built from :mod:`bdljax.nn.bayesian_layers`
  (local reparameterisation, Flipout). Same q, same KL, same objective.

Wrap the transform in :func:`bdljax.methods.wrappers.skip_nonfinite` to undo
and count a step whose objective or gradient is not finite (the recipes do).

Usage::

    method = bdljax.methods.mfvi.build(log_posterior, optax.adam(1e-3), num_mc_samples=4)
    state = method.init(key, model.init)            # or a MAP solution
    state, info = method.update(state, batch, key)  # info.elbo, info.expected_log_likelihood, info.kl
    samples = method.sample(state, key, 100)        # → bdljax.run.predictive
    point = bdljax.methods.mfvi.mean_params(state)  # predict with the mean weights
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform
from bdljax.core.tree import initial_params
from bdljax.nn import bayesian_layers

Params = Any
VariationalApply = Callable[..., jax.Array]  # (mean, scale, theta, x, rng, train) -> output

KL_MODES = ("auto", "closed_form", "monte_carlo")
ESTIMATORS = ("reparameterization",) + bayesian_layers.ESTIMATORS


def inverse_softplus(scale: jax.Array) -> jax.Array:
    """ρ with softplus(ρ) = σ: log(e^σ − 1), written to stay finite for small σ."""
    return scale + jnp.log(-jnp.expm1(-scale))


SCALE_TRANSFORMS: Dict[str, Tuple[Callable, Callable]] = {
    "softplus": (jax.nn.softplus, inverse_softplus),
    "exp": (jnp.exp, jnp.log),
}


class VariationalParams(NamedTuple):
    """The parameters φ of q that the optimiser updates."""

    mean: Params
    raw_scale: Params  # ρ, unconstrained; σ = softplus(ρ) or exp(ρ)


class MFVIState(NamedTuple):
    mean: Params  # μ, same pytree as the network's parameters
    raw_scale: Params  # ρ, same pytree
    opt_state: optax.OptState


class ELBOTerms(NamedTuple):
    expected_log_likelihood: jax.Array  # E_q[log p(D|θ)] estimate, scaled to the full data set, untempered
    kl: jax.Array  # KL(q ‖ p) (closed form or Monte Carlo), untempered
    entropy: jax.Array  # H[q], closed form


class MFVIInfo(NamedTuple):
    elbo: jax.Array  # L_T on the batch before the step (the ELBO at T = 1)
    expected_log_likelihood: jax.Array
    kl: jax.Array
    grad_norm: jax.Array


def _check_scale_transform(scale_transform: str) -> Tuple[Callable, Callable]:
    if scale_transform not in SCALE_TRANSFORMS:
        raise ValueError(f"unknown scale_transform {scale_transform!r}; choose one of {sorted(SCALE_TRANSFORMS)}")
    return SCALE_TRANSFORMS[scale_transform]


def constrain_scale(raw_scale: Params, scale_transform: str = "softplus") -> Params:
    """σ from ρ, leaf by leaf."""
    forward, _ = _check_scale_transform(scale_transform)
    return jax.tree.map(forward, raw_scale)


def unconstrain_scale(scale: Params, scale_transform: str = "softplus") -> Params:
    """ρ from σ > 0, leaf by leaf (the inverse of :func:`constrain_scale`)."""
    _, inverse = _check_scale_transform(scale_transform)
    return jax.tree.map(inverse, scale)


def mean_params(state: MFVIState) -> Params:
    """The variational mean μ: the parameters for predicting with the mean weights only."""
    return state.mean


def variational_scales(state: MFVIState, scale_transform: str = "softplus") -> Params:
    """The variational standard deviations σ (pass the ``scale_transform`` the method was built with)."""
    return constrain_scale(state.raw_scale, scale_transform)


def gaussian_noise(key: jax.Array, like: Params, num_draws: Optional[int] = None) -> Params:
    """Independent standard normal draws shaped like every leaf of ``like`` (leading axis ``num_draws`` if given).

    One draw of the total size, cut into leaves: a single random-number
    call however many leaves the network has (per-leaf calls multiply
    compile time).
    """
    leaves, treedef = jax.tree.flatten(like)
    dtype = jnp.result_type(*leaves)
    batch = () if num_draws is None else (num_draws,)
    flat = jax.random.normal(key, (*batch, sum(leaf.size for leaf in leaves)), dtype)
    noise, start = [], 0
    for leaf in leaves:
        noise.append(flat[..., start:start + leaf.size].reshape(*batch, *leaf.shape).astype(leaf.dtype))
        start += leaf.size
    return jax.tree.unflatten(treedef, noise)


def reparameterize(key: jax.Array, mean: Params, scale: Params) -> Params:
    """θ = μ + σ ∘ ε, ε ~ N(0, I): one draw from q, differentiable in (μ, σ)."""
    return jax.tree.map(lambda m, s, e: m + s * e, mean, scale, gaussian_noise(key, mean))


def _tree_sum(tree) -> jax.Array:
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree))


def gaussian_entropy(scale: Params) -> jax.Array:
    """H[q] = Σ_j [½ log(2πe) + log σ_j] of a diagonal Gaussian."""
    half_log_2pi_e = 0.5 * math.log(2 * math.pi * math.e)
    return _tree_sum(jax.tree.map(lambda s: half_log_2pi_e + jnp.log(s), scale))


def gaussian_kl(mean: Params, scale: Params, prior_scale: Params) -> jax.Array:
    """KL(N(μ, diag σ²) ‖ N(0, diag s²)) = Σ_j [log(s_j/σ_j) + (σ_j² + μ_j²)/(2 s_j²) − ½]."""
    terms = jax.tree.map(
        lambda m, s, p: jnp.log(p) - jnp.log(s) + (jnp.square(s) + jnp.square(m)) / (2 * jnp.square(p)) - 0.5,
        mean, scale, prior_scale,
    )
    return _tree_sum(terms)


def _resolve_kl(kl: str, log_posterior: LogPosterior) -> bool:
    """True for the closed-form KL; fails naming the fix when it is asked for but impossible."""
    if kl not in KL_MODES:
        raise ValueError(f"unknown kl {kl!r}; choose one of {KL_MODES}")
    has_closed_form = log_posterior.prior.scales is not None
    if kl == "closed_form" and not has_closed_form:
        raise ValueError(
            f"kl='closed_form' needs a Gaussian prior reporting its scales, but prior {log_posterior.prior.name!r} "
            "has scales=None; use kl='monte_carlo' (or 'auto')."
        )
    return has_closed_form if kl == "auto" else kl == "closed_form"


def _draw_log_densities(noise, key, mean, scale, batch, log_posterior: LogPosterior, closed_form_kl: bool,
                        variational_apply: Optional[VariationalApply]):
    """log p(D|θ) (N/|B|-scaled) and log p(θ) (0 when the KL is closed form) for one draw θ = μ + σ ∘ ε."""
    theta = jax.tree.map(lambda m, s, e: m + s * e, mean, scale, noise)
    if variational_apply is None:
        log_likelihood = log_posterior.log_likelihood(theta, batch, key)
    else:
        # The same LogPosterior (same N/|B| scaling, likelihood and checks), with the network replaced by the
        # output-sampling estimator; its "params" are (μ, σ, θ ~ q).
        outputs = log_posterior._replace(
            apply=lambda q, x, rng=None, train=False: variational_apply(q[0], q[1], q[2], x, rng, train))
        log_likelihood = outputs.log_likelihood((mean, scale, theta), batch, key)
    log_prior = jnp.zeros_like(log_likelihood) if closed_form_kl else log_posterior.log_prior(theta)
    return log_likelihood, log_prior


def elbo(
    variational: VariationalParams,
    batch,
    key: jax.Array,
    log_posterior: LogPosterior,
    num_mc_samples: int = 1,
    scale_transform: str = "softplus",
    kl: str = "auto",
    variational_apply: Optional[VariationalApply] = None,
) -> Tuple[jax.Array, ELBOTerms]:
    """An unbiased estimate of the tempered ELBO L_T(φ) on one minibatch, and its terms.

    L_T(φ) = (1/T) (E_q[log p(D|θ)] − KL(q ‖ p)) + (1 − 1/T) H[q] (module
    docstring), E_q by ``num_mc_samples`` reparameterised draws θ = μ + σ ∘ ε
    (vmapped), the likelihood scaled by N/|B| so that the KL is counted once.
    Differentiate it in ``variational`` for the Bayes-by-Backprop gradient
    (:func:`update` does). The other arguments are those of :func:`elbo_objective`.

    Returns:
      ``(L_T, ELBOTerms(expected_log_likelihood, kl, entropy))``, the terms untempered.
    """
    forward, _ = _check_scale_transform(scale_transform)
    closed_form_kl = _resolve_kl(kl, log_posterior)
    mean, raw_scale = variational
    scale = jax.tree.map(forward, raw_scale)
    noise_key, likelihood_key = jax.random.split(key)
    # All S weight draws from one random-number call: each separate call site costs compile time.
    # (Draws nobody reads — those of Bayesian layers that sample their outputs — are compiled away.)
    noise = gaussian_noise(noise_key, mean, num_mc_samples)
    draw = partial(_draw_log_densities, mean=mean, scale=scale, batch=batch, log_posterior=log_posterior,
                   closed_form_kl=closed_form_kl, variational_apply=variational_apply)
    if num_mc_samples == 1:
        # No vmap of size one: unbatched matmuls are faster on CPU.
        log_likelihood, log_prior = draw(jax.tree.map(lambda e: e[0], noise), likelihood_key)
    else:
        draws = jax.vmap(draw)(noise, jax.random.split(likelihood_key, num_mc_samples))
        log_likelihood, log_prior = (jnp.mean(d) for d in draws)
    entropy = gaussian_entropy(scale)
    kl_value = gaussian_kl(mean, scale, log_posterior.prior.scales(mean)) if closed_form_kl else -entropy - log_prior
    inverse_temperature = 1.0 / log_posterior.temperature
    value = inverse_temperature * (log_likelihood - kl_value) + (1.0 - inverse_temperature) * entropy
    return value, ELBOTerms(log_likelihood, kl_value, entropy)


def elbo_objective(
    log_posterior: LogPosterior,
    *,
    num_mc_samples: int = 1,
    scale_transform: str = "softplus",
    kl: str = "auto",
    variational_apply: Optional[VariationalApply] = None,
) -> Callable[[VariationalParams, Any, jax.Array], Tuple[jax.Array, ELBOTerms]]:
    """:func:`elbo` with its settings checked and fixed: ``objective(variational, batch, key) -> (L_T, ELBOTerms)``.

    Args:
      log_posterior: the shared log posterior (likelihood, prior, N, T).
      num_mc_samples: S ≥ 1 draws per estimate.
      scale_transform: ``"softplus"`` or ``"exp"``, σ as a function of ρ.
      kl: ``"auto"`` (closed form when ``prior.scales`` exists, else Monte
        Carlo), ``"closed_form"`` or ``"monte_carlo"``.
      variational_apply: ``(mean, scale, theta, x, rng, train) -> output``,
        one draw of the network's output for every example under q (``theta``
        a weight draw for any parameter it does not sample itself), from
        :func:`bdljax.nn.bayesian_layers.variational_apply`; ``None`` samples
        whole weight pytrees (works for any network).
    """
    if not isinstance(num_mc_samples, int) or num_mc_samples < 1:
        raise ValueError(f"num_mc_samples must be a positive int, got {num_mc_samples!r}")
    _check_scale_transform(scale_transform)
    _resolve_kl(kl, log_posterior)  # fails here, at build time, rather than while tracing
    return partial(elbo, log_posterior=log_posterior, num_mc_samples=num_mc_samples, scale_transform=scale_transform,
                   kl=kl, variational_apply=variational_apply)


def init(key: jax.Array, params: Any, optimizer: optax.GradientTransformation, init_scale: Any = 1e-2,
         scale_transform: str = "softplus") -> MFVIState:
    """q's mean μ from ``params`` (a pytree or ``key -> pytree``), its scales σ from ``init_scale``."""
    _, inverse = _check_scale_transform(scale_transform)
    mean = initial_params(key, params)
    if isinstance(init_scale, (int, float)):
        raw_scale = jax.tree.map(lambda leaf: jnp.full(leaf.shape, inverse(jnp.asarray(init_scale, leaf.dtype))), mean)
    else:
        try:
            raw_scale = jax.tree.map(
                lambda s, leaf: jnp.broadcast_to(inverse(jnp.asarray(s, leaf.dtype)), leaf.shape), init_scale, mean
            )
        except ValueError as error:
            raise ValueError(f"mfvi: the init_scale pytree does not match the parameter pytree: {error}") from error
    return MFVIState(mean, raw_scale, optimizer.init(VariationalParams(mean, raw_scale)))


def _negative_objective(variational, batch, key, objective):
    value, terms = objective(variational, batch, key)
    return -value, (value, terms)


def update(state: MFVIState, batch, key: jax.Array, objective: Callable, optimizer: optax.GradientTransformation):
    """One optimiser step on −L_T (``objective`` from :func:`elbo_objective`) over φ = (μ, ρ)."""
    variational = VariationalParams(state.mean, state.raw_scale)
    loss_and_grad = jax.value_and_grad(_negative_objective, has_aux=True)
    (_, (value, terms)), grads = loss_and_grad(variational, batch, key, objective)
    updates, opt_state = optimizer.update(grads, state.opt_state, variational)
    new = optax.apply_updates(variational, updates)
    return MFVIState(new.mean, new.raw_scale, opt_state), MFVIInfo(value, terms.expected_log_likelihood, terms.kl,
                                                                    optax.tree.norm(grads))


def sample(state: MFVIState, key: jax.Array, num_samples: int = 1, scale_transform: str = "softplus") -> Params:
    """θ ~ q, ``num_samples`` draws stacked on a leading axis."""
    forward, _ = _check_scale_transform(scale_transform)
    scale = jax.tree.map(forward, state.raw_scale)
    noise = gaussian_noise(key, state.mean, num_samples)
    return jax.tree.map(lambda m, s, e: m + s * e, state.mean, scale, noise)


def build(
    log_posterior: LogPosterior,
    optimizer: optax.GradientTransformation,
    *,
    num_mc_samples: int = 1,
    init_scale: Any = 1e-2,
    scale_transform: str = "softplus",
    kl: str = "auto",
    variational_apply: Optional[VariationalApply] = None,
) -> Transform:
    """Mean-field Gaussian VI of ``log_posterior``, maximising L_T with ``optimizer``.

    Args:
      log_posterior: the shared log posterior.
      optimizer: any optax transformation; it minimises −L_T over φ = (μ, ρ).
      num_mc_samples: S reparameterised draws per step (vmapped).
      init_scale: initial σ, a positive float or a pytree matching the
        parameters. Small, so training starts near the initial weights.
      scale_transform: ``"softplus"`` (default) or ``"exp"``.
      kl: see :func:`elbo_objective`.
      variational_apply: see :func:`elbo_objective`; ``None`` (default) is
        the generic pytree estimator.

    Returns:
      A :class:`~bdljax.core.transform.Transform`. ``init(key, params)`` takes
      the initial mean (a pytree or ``key -> pytree``); ``update`` returns
      :class:`MFVIInfo`; ``sample`` draws θ ~ q, leading axis S.
    """
    objective = elbo_objective(
        log_posterior, num_mc_samples=num_mc_samples, scale_transform=scale_transform, kl=kl,
        variational_apply=variational_apply,
    )
    _check_init_scale(init_scale)
    return Transform(partial(init, optimizer=optimizer, init_scale=init_scale, scale_transform=scale_transform),
                     partial(update, objective=objective, optimizer=optimizer),
                     partial(sample, scale_transform=scale_transform))


def _check_init_scale(init_scale) -> None:
    if isinstance(init_scale, (int, float)):
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        return
    leaves = jax.tree.leaves(init_scale)
    if not leaves:
        raise ValueError("init_scale must be a positive float or a pytree of positive scales matching the parameters")
    if not all(np.all(np.asarray(leaf) > 0) for leaf in leaves):  # build time, on the host
        raise ValueError("init_scale: every scale in the pytree must be positive")
