"""MC dropout: dropout at training and at prediction time as approximate variational inference.

Gal & Ghahramani (2016), "Dropout as a Bayesian Approximation: Representing
Model Uncertainty in Deep Learning" (ICML). A network trained with dropout
before every weight layer, with weight decay, maximises (up to a constant)
the evidence lower bound of a variational distribution q_M(W) whose draws are
W = diag(z)·M, z_j ~ Bernoulli(1 − p): the rows of each weight matrix M are
dropped together. Predicting with T stochastic passes then averages T draws
of that distribution, which approximates the posterior predictive.

Training
--------
Training is MAP on the shared :class:`~bdljax.core.posterior.LogPosterior` of the
*dropout* network (``model.with_dropout(p)``), with dropout switched on: each
step passes its key as ``rng``, so every example of a batch gets its own mask
(Gal's stochastic estimate of the expected log-likelihood). Nothing rescales
the prior here; the relation below makes the shared log posterior equal, up
to a positive factor and a constant, to the paper's objective.

Weight decay, length-scale, precision and N
-------------------------------------------
The paper's objective (eq. 1; the appendix derives it from the ELBO) is, with
E = ½‖y − ŷ‖² and N training points,

    L_dropout = (1/N) Σ_i ½ (y_i − ŷ_i)² + Σ_k λ_k ‖M_k‖²,   λ_k = (1 − p_k) l² / (2 N τ),

where l is the prior length-scale (prior p(w) = N(0, l⁻² I)), τ the model
precision (Gaussian likelihood y ~ N(ŷ, τ⁻¹)) and p_k the drop rate of the
dropout feeding layer k (p_k = 0 for biases and for layers without dropout;
the (1 − p_k) comes from the KL of the dropout distribution to the prior,
KL ≈ Σ_k (1 − p_k) l²/2 ‖M_k‖² + const). Multiplying by −N τ:

    −N τ · L_dropout = Σ_i log N(y_i | ŷ_i, τ⁻¹) − Σ_k ½ (1 − p_k) l² ‖M_k‖² + const
                     = [summed log-likelihood] + [log N(M_k | 0, ((1 − p_k) l²)⁻¹)] + const,

which is exactly bdljax's (untempered) log posterior with

* likelihood :func:`bdljax.core.likelihoods.gaussian` with scale τ^{-1/2}, and
* a Gaussian prior on M_k of precision 2 N τ λ_k = (1 − p_k) l², i.e. scale
  s_k = 1 / (l √(1 − p_k)) (:func:`prior_scale`, :func:`gal_prior`).

In general a weight decay λ on a *mean* loss (1/N) Σ_i E_i equals a Gaussian
prior of precision 2 N λ on the *summed* one; Gal's E_i is the negative
log-likelihood divided by τ, hence 2 N τ λ here. Because the optimum only
depends on the ratio of the two terms, the mapping is exact for any
optimiser (Adam is also invariant to the factor N τ up to its ε).

Two differences from the authors' released Keras code (DropoutUncertaintyExps,
``net.py``), documented rather than copied: (1) it minimises the mean squared
error *without* the ½, which halves the prior precision the same λ stands for
(precision (1 − p) l² / 2, :func:`keras_prior_scale`); (2) it regularises
kernels only (biases free) and computes λ with τ in *original* target units
while training on standardised targets. With Gal's l = 10⁻² all of these
priors are weaker than 10⁻⁴ per weight and change nothing measurable.

Units of τ: the recipe's ``tau`` is the precision in the units of the
problem's targets (standardised units when the experiment standardised y).
The MC dropout paper's τ grid is in original units; convert with
:func:`tau_standardised` (τ_std = τ_orig · y_std²), as :func:`protocol_grid`
does.

Prediction: one mask per pass, as a weight sample
-------------------------------------------------
A dropout mask z drawn once and shared by every test point is one draw of
q_M(W): W = diag(z/(1 − p))·M (inverted dropout, rows scaled as Flax and
Keras do). For a Dropout whose output is the input of a ``nn.Dense`` layer,
``Dense(x ∘ m) = x · (diag(m) K) + b``, so the mask is folded into the rows of
the kernel K and an MC dropout sample is a plain parameter pytree, evaluated
by the dropout network with ``train=False`` — like any other method's sample,
and T of them vmapped in one compiled call (:func:`bdljax.run.predictive.predictive_outputs`).

:func:`dropout_structure` finds, once and on the host, which kernel rows each
Dropout feeds: it traces the network abstractly, intercepting every Flax
module call, and links a ``nn.Dropout`` to a ``nn.Dense`` whose input is that
Dropout's output (the bdljax :class:`~bdljax.nn.models.MLP` puts one before every
Dense, the input layer's when ``dropout_input``). It then checks numerically
that the folded weights reproduce the network run with the same shared masks;
a dropout output used elsewhere too (a skip connection) fails this check.

Sample forms (``DropoutStructure.form``):

* ``"weight_sample"`` (default when every Dropout feeds a Dense directly, e.g.
  the MLP): samples are parameter pytrees W·diag(mask).
* ``"shared_mask"`` (automatic fallback, e.g. the CNN, whose dropout feeds a
  convolution, where a position-dependent mask is not a kernel mask): samples
  are :class:`MCDropoutSample` ``(params, key)`` and the apply runs the network
  with every Dropout replaced by a mask drawn from ``key`` and shared by all
  test points — the same masks the weight-sample form folds.
* ``"per_point"`` (``per_point_masks=True``, or a model with its own dropout
  code and no ``nn.Dropout``, such as :mod:`bdljax.nn.recurrent`): samples are
  ``(params, key)`` and the apply runs the dropout network with ``train=True``
  and ``rng=key``: an independent mask for every activation of every test
  point, as in Gal's code. Marginally the same predictive per point, but about
  ten times the cost (``scripts/bench_mcdropout.py``).

Regression predictive (the paper's section 4 / appendix): with outputs ŷ_t of
T passes, mean (1/T) Σ_t ŷ_t, variance τ⁻¹ + (1/T) Σ_t ŷ_t² − mean², and test
log-likelihood log (1/T) Σ_t N(y | ŷ_t, τ⁻¹), a log-sum-exp over T Gaussians,
in original units (:func:`regression_predictive`).

Concrete dropout (Gal, Hron & Kendall 2017), which learns p through a
relaxed Bernoulli, is :mod:`bdljax.methods.concrete_dropout`; ``recipe(...,
concrete=True)`` runs it. Its KL term, −Σ_k [‖K_k‖²/(2 s²(1 − p_k)) − D_k H(p_k)],
enters the shared log posterior as the prior term of the ELBO.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bdljax.core import likelihoods, priors
from bdljax.methods import map_estimate as map_method
from bdljax.recipes import Fitted, Problem, fit_transform, make_optimizer
from bdljax.nn.models import Apply, Model
from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform
from bdljax.core.tree import repeat as repeat_params

Params = Any

FORMS = ("weight_sample", "shared_mask", "per_point")

# Gal & Ghahramani's UCI protocol (DropoutUncertaintyExps): prior length-scale and batch size.
GAL_LENGTH_SCALE = 1e-2
GAL_BATCH_SIZE = 128


# ---------------------------------------------------------------------------
# Weight decay ↔ prior ↔ likelihood
# ---------------------------------------------------------------------------


def _check_rate(dropout_rate: float) -> None:
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must lie in [0, 1) (the probability of dropping a unit), got {dropout_rate}")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def weight_decay(dropout_rate: float, length_scale: float, tau: float, num_data: int) -> float:
    """Gal & Ghahramani's weight decay λ = (1 − p) l² / (2 N τ) on the mean loss (1/N) Σ ½(y − ŷ)².

    ``tau`` and ``length_scale`` in the units the network is trained in.
    """
    _check_rate(dropout_rate)
    _check_positive("length_scale", length_scale)
    _check_positive("tau", tau)
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
    _check_rate(dropout_rate)
    _check_positive("length_scale", length_scale)
    return 1.0 / (length_scale * math.sqrt(1.0 - dropout_rate))


def keras_prior_scale(dropout_rate: float, length_scale: float) -> float:
    """The prior scale √2 / (l √(1 − p)) that λ stands for in Gal's Keras code (MSE without the ½)."""
    return math.sqrt(2.0) * prior_scale(dropout_rate, length_scale)


def tau_standardised(tau_original: float, y_std: float) -> float:
    """Precision τ of targets in original units → precision of (y − ȳ)/y_std: τ · y_std²."""
    _check_positive("tau", tau_original)
    _check_positive("y_std", y_std)
    return tau_original * y_std**2


def tau_original(tau_std: float, y_std: float) -> float:
    """Inverse of :func:`tau_standardised`: τ_std / y_std²."""
    _check_positive("tau", tau_std)
    _check_positive("y_std", y_std)
    return tau_std / y_std**2


# ---------------------------------------------------------------------------
# Which kernel rows each Dropout feeds
# ---------------------------------------------------------------------------


class DropoutStructure(NamedTuple):
    """Where the dropout masks of a network act, found by :func:`dropout_structure`.

    Attributes:
      rates: drop rate of each ``nn.Dropout`` call, in call order.
      mask_shapes: per Dropout, the shape of a mask shared by all examples
        (the input's per-example shape, 1 along ``broadcast_dims``).
      folded: ``(leaf_index, dropout_index)`` for each ``nn.Dense`` kernel
        (index into ``jax.tree.leaves(params)``) whose input rows that
        Dropout masks.
      fed_kernels: ``(leaf_index, dropout_index)`` for every kernel (Dense,
        Conv, ...) whose layer input is a Dropout output; sets the
        (1 − p) of :func:`gal_prior`.
      num_leaves: number of parameter leaves (checked against the params).
      form: ``"weight_sample"``, ``"shared_mask"`` or ``"per_point"`` (module docstring).
      reason: why the form is not ``"weight_sample"`` ("" when it is).
    """

    rates: Tuple[float, ...]
    mask_shapes: Tuple[Tuple[int, ...], ...]
    folded: Tuple[Tuple[int, int], ...]
    fed_kernels: Tuple[Tuple[int, int], ...]
    num_leaves: int
    form: str
    reason: str = ""


class MCDropoutSample(NamedTuple):
    """A sample that carries its own dropout key (``shared_mask`` and ``per_point`` forms)."""

    params: Params
    key: jax.Array


def _first_input(args, kwargs):
    if args:
        return args[0]
    return next(iter(kwargs.values()), None)


def _shared_mask_shape(inputs_shape: Tuple[int, ...], broadcast_dims: Sequence[int]) -> Tuple[int, ...]:
    ndim = len(inputs_shape)
    shape = list(inputs_shape)
    for dim in broadcast_dims:
        shape[dim % ndim] = 1
    return tuple(shape[1:])  # the batch axis is shared by construction


def dropout_masks(key: jax.Array, structure: DropoutStructure) -> List[jax.Array]:
    """One inverted-dropout mask per Dropout, shared by all examples: entries 0 or 1/(1 − p).

    Mask ``i`` is Bernoulli(1 − p_i)/(1 − p_i) drawn from ``fold_in(key, i)``,
    of shape ``structure.mask_shapes[i]``. Jit- and vmap-able.
    """
    masks = []
    for index, (rate, shape) in enumerate(zip(structure.rates, structure.mask_shapes)):
        keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - rate, shape)
        masks.append(keep.astype(jnp.float32) / (1.0 - rate))
    return masks


def fold_masks(params: Params, masks: Sequence[jax.Array], structure: DropoutStructure) -> Params:
    """Scale the input rows of every folded Dense kernel by its Dropout's mask: K ← diag(m)·K."""
    leaves, treedef = jax.tree.flatten(params)
    if len(leaves) != structure.num_leaves:
        raise ValueError(
            f"params have {len(leaves)} leaves but the dropout structure was found for {structure.num_leaves}; "
            "call dropout_structure with these parameters' model."
        )
    for leaf_index, dropout_index in structure.folded:
        kernel = leaves[leaf_index]
        leaves[leaf_index] = kernel * jnp.asarray(masks[dropout_index], kernel.dtype)[:, None]
    return jax.tree.unflatten(treedef, leaves)


def weight_sample(params: Params, key: jax.Array, structure: DropoutStructure) -> Params:
    """One draw W = diag(m)·K of the dropout variational distribution, as a parameter pytree.

    Each folded Dense kernel K (shape ``(D_in, D_out)``) has its input rows
    scaled by the shared mask m (:func:`dropout_masks`) of the Dropout before
    it. Evaluated by the dropout network in ``train=False`` mode it equals
    that network run with the same mask for every test point.
    """
    return fold_masks(params, dropout_masks(key, structure), structure)


def apply_with_masks(apply: Apply, params: Params, x: jax.Array, masks: Sequence[jax.Array]) -> jax.Array:
    """Run the network with the i-th ``nn.Dropout`` call replaced by ``input * masks[i]``.

    A Flax method interceptor catches every Dropout call in call order,
    whatever its ``deterministic`` flag; the masks broadcast over the batch,
    so every example gets the same one.
    """
    def replace(index, inputs):
        if index >= len(masks):
            raise RuntimeError(
                f"the network called nn.Dropout {index + 1} times but {len(masks)} masks were given; "
                "rebuild the structure with dropout_structure for this model."
            )
        return inputs * jnp.asarray(masks[index], inputs.dtype)

    return call_replacing_dropout(lambda: apply(params, x, rng=None, train=False), replace, len(masks))


def call_replacing_dropout(call: Callable[[], jax.Array], replace: Callable[[int, jax.Array], jax.Array],
                           expected_calls: int) -> jax.Array:
    """``call()`` with the k-th ``nn.Dropout`` call answered by ``replace(k, input)`` (Flax method interception).

    Fails when the network calls Dropout a number of times other than
    ``expected_calls`` (the structure was built for another model).
    """
    calls = [0]

    def interceptor(next_fun, args, kwargs, context):
        if not (isinstance(context.module, nn.Dropout) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        index = calls[0]
        calls[0] += 1
        return replace(index, _first_input(args, kwargs))

    with nn.intercept_methods(interceptor):
        output = call()
    if calls[0] != expected_calls:
        raise RuntimeError(f"the network called nn.Dropout {calls[0]} times but its dropout structure has "
                           f"{expected_calls}; rebuild the structure (dropout_structure) for this model.")
    return output


def shared_mask_apply(apply: Apply, structure: DropoutStructure) -> Apply:
    """``apply(sample: MCDropoutSample, x) ->`` the network with one mask per Dropout, shared by all test points.

    The masks are :func:`dropout_masks` of ``sample.key`` — the ones
    :func:`weight_sample` folds — applied by :func:`apply_with_masks`. The
    ``rng`` and ``train`` arguments are ignored: the masks come from the sample.
    """

    def run(sample, x, rng=None, train=False):
        del rng, train
        return apply_with_masks(apply, sample.params, x, dropout_masks(sample.key, structure))

    return run


def per_point_apply(apply: Apply) -> Apply:
    """``apply(sample: MCDropoutSample, x, rng=None) ->`` the dropout network in training mode.

    Every activation of every test point gets its own mask from
    ``sample.key``; a given ``rng`` (e.g. the per-chunk keys of
    :func:`bdljax.run.predictive.predictive_outputs`) is folded into it, so
    that chunks of test points do not repeat each other's masks.
    """

    def run(sample, x, rng=None, train=False):
        del train
        key = sample.key
        if rng is not None:
            key = jax.random.fold_in(key, jax.random.bits(rng, (), jnp.uint32))
        return apply(sample.params, x, rng=key, train=True)

    return run


_STRUCTURES: Dict[Any, DropoutStructure] = {}


def dropout_structure(apply: Apply, params: Params, example_input, *, per_point_masks: bool = False,
                      check_seed: int = 0) -> DropoutStructure:
    """Find which kernel rows each ``nn.Dropout`` of ``apply``'s network masks (host side, once).

    The structure is a property of the architecture: it is found once per
    ``(apply, parameter shapes, input shape, per_point_masks, check_seed)``
    and then served from a cache (a benchmark calls the recipe hundreds of
    times; each search compiles a small check).

    Traces ``apply(params, x, train=False)`` abstractly (``jax.eval_shape``,
    nothing compiled) under a Flax method interceptor, recording every
    Dropout call and every layer whose input *is* a Dropout's output. Assumes
    the network is built from Flax linen modules and its kernels are leaves
    of ``params`` (true for :func:`bdljax.nn.models.from_flax` models and the
    wrappers in :mod:`bdljax.nn.models`).

    The form is ``"weight_sample"`` when every Dropout feeds ``nn.Dense``
    layers with ``(B, D)`` inputs *and* the folded weights reproduce the
    shared-mask network on ``example_input`` at rate ½ (which catches a
    Dropout output that is also used elsewhere); ``"shared_mask"`` otherwise;
    ``"per_point"`` when asked, or when the network has no ``nn.Dropout``
    (its dropout, if any, is its own code and is run in training mode).

    Args:
      apply: the dropout network, ``apply(params, x, rng=None, train=False)``.
      params: concrete parameters of that network (e.g. ``model.init(key)``).
      example_input: a batch of inputs; its first two rows are used.
      per_point_masks: force the ``"per_point"`` form.
      check_seed: seed of the numerical check's masks.
    """
    leaves, treedef = jax.tree.flatten(params)
    cache_key = (apply, treedef, tuple((tuple(np.shape(leaf)), str(jnp.result_type(leaf))) for leaf in leaves),
                 tuple(np.shape(example_input)[1:]), bool(per_point_masks), int(check_seed))
    if cache_key not in _STRUCTURES:
        if len(_STRUCTURES) > 256:
            _STRUCTURES.clear()
        _STRUCTURES[cache_key] = _find_dropout_structure(apply, params, example_input, per_point_masks, check_seed)
    return _STRUCTURES[cache_key]


def _training_mode_reads_key(apply: Apply, params: Params, example) -> bool:
    """Whether ``apply(params, x, rng=key, train=True)`` uses ``key`` (traced abstractly, nothing compiled)."""
    jaxpr = jax.make_jaxpr(lambda key: apply(params, example, rng=key, train=True))(jax.random.key(0)).jaxpr
    (key_var,) = jaxpr.invars
    return any(var is key_var for eqn in jaxpr.eqns for var in eqn.invars) or any(
        var is key_var for var in jaxpr.outvars)


def _find_dropout_structure(apply: Apply, params: Params, example_input, per_point_masks: bool,
                            check_seed: int) -> DropoutStructure:
    leaves = jax.tree.leaves(params)
    example = jnp.asarray(example_input[:2])  # slice first: the whole training set need not reach the device
    dropouts: List[Tuple[float, Tuple[int, ...]]] = []
    fed: List[Tuple[int, int, bool]] = []

    def traced(abstract_params):
        leaf_index = {id(leaf): i for i, leaf in enumerate(jax.tree.leaves(abstract_params))}
        outputs: List[Any] = []  # kept alive so that identity comparisons stay valid

        def interceptor(next_fun, args, kwargs, context):
            output = next_fun(*args, **kwargs)
            if context.method_name != "__call__":
                return output
            module = context.module
            inputs = _first_input(args, kwargs)
            if isinstance(module, nn.Dropout):
                dropouts.append((float(module.rate), _shared_mask_shape(tuple(inputs.shape), module.broadcast_dims)))
                outputs.append(output)
                return output
            feeding = [i for i, out in enumerate(outputs) if out is inputs]
            layer_params = module.variables.get("params", {}) if module.scope is not None else {}
            kernel = layer_params.get("kernel") if hasattr(layer_params, "get") else None
            if feeding and kernel is not None and id(kernel) in leaf_index:
                foldable = isinstance(module, nn.Dense) and inputs.ndim == 2
                fed.append((leaf_index[id(kernel)], feeding[-1], foldable))
            return output

        with nn.intercept_methods(interceptor):
            return apply(abstract_params, example, rng=None, train=False)

    jax.eval_shape(traced, params)
    rates = tuple(rate for rate, _ in dropouts)
    shapes = tuple(shape for _, shape in dropouts)
    folded = tuple((leaf, d) for leaf, d, foldable in fed if foldable)
    fed_kernels = tuple((leaf, d) for leaf, d, _ in fed)
    base = dict(rates=rates, mask_shapes=shapes, folded=folded, fed_kernels=fed_kernels, num_leaves=len(leaves))

    if per_point_masks:
        return DropoutStructure(**base, form="per_point", reason="per_point_masks=True")
    if not dropouts:
        # No Flax Dropout: a deterministic network (p = 0), whose one "sample" is its parameters, or dropout
        # written by hand (bdljax.nn.recurrent), which only the network itself can draw. Tell them apart by whether
        # the training mode reads its key at all; comparing two keys' outputs would call a small rate (p = 0.01
        # on a few units drops nothing under two fixed keys) deterministic and silently turn MC dropout into MAP.
        if not _training_mode_reads_key(apply, params, example):
            return DropoutStructure(**base, form="weight_sample")
        return DropoutStructure(**base, form="per_point", reason="no nn.Dropout layer but a stochastic training "
                                "mode: the network's own dropout runs with one key per pass")
    unfolded = sorted(set(range(len(dropouts))) - {d for _, d in folded})
    if unfolded:
        return DropoutStructure(**base, form="shared_mask",
                                reason=f"Dropout call(s) {unfolded} do not feed a Dense layer with (B, D) inputs")
    structure = DropoutStructure(**base, form="weight_sample")
    # Masks at rate ½ drawn on the host (no RNG to compile), the same for both forms.
    rng = np.random.default_rng(check_seed)
    masks = [2.0 * rng.integers(0, 2, shape).astype(np.float32) for shape in shapes]

    @jax.jit
    def both_forms(p, x, masks):
        return apply(fold_masks(p, masks, structure), x), apply_with_masks(apply, p, x, masks)

    folded_output, masked_output = both_forms(params, example, masks)
    scale = float(jnp.max(jnp.abs(masked_output))) + 1e-6
    if not float(jnp.max(jnp.abs(folded_output - masked_output))) <= 1e-4 * scale:
        return structure._replace(form="shared_mask", reason="the folded kernels do not reproduce the shared-mask "
                                  "network (a Dropout output is used by more than one layer?)")
    return structure


@functools.lru_cache(maxsize=64)
def sample_apply(apply: Apply, structure: DropoutStructure) -> Apply:
    """The ``apply(sample, x, rng=None, train=False)`` that evaluates one sample of :func:`build`'s ``sample``.

    Cached per ``(apply, structure)``: the same function comes back, so the
    jitted predictive (static in ``apply``) compiles once per network.
    """
    if structure.form == "weight_sample":
        def deterministic(params, x, rng=None, train=False):
            del rng, train  # the mask is in the weights; dropping again would apply it twice
            return apply(params, x, rng=None, train=False)

        return deterministic
    if structure.form == "shared_mask":
        return shared_mask_apply(apply, structure)
    if structure.form == "per_point":
        return per_point_apply(apply)
    raise ValueError(f"unknown MC dropout form {structure.form!r}; choose one of {FORMS}")


# ---------------------------------------------------------------------------
# The transform
# ---------------------------------------------------------------------------


def build(log_posterior: LogPosterior, optimizer: optax.GradientTransformation,
          structure: DropoutStructure, draw: Optional[Callable[[Params, jax.Array], Params]] = None) -> Transform:
    """MC dropout on the shared log posterior of a dropout network.

    ``init``/``update``: MAP steps (:func:`bdljax.methods.map_estimate.build`) with dropout on,
    per-example masks from each step's key. ``sample(state, key, T)``: T
    draws of the dropout variational distribution, stacked — parameter
    pytrees W·diag(mask) for the ``"weight_sample"`` form, otherwise
    :class:`MCDropoutSample` ``(params, keys)``; evaluate them with
    :func:`sample_apply` ``(log_posterior.apply, structure)``.

    Args:
      log_posterior: built on the dropout network's apply (``model.with_dropout(p)``).
      optimizer: any optax transformation.
      structure: from :func:`dropout_structure` for that network.
      draw: ``draw(params, key) -> parameter pytree``, one draw of another
        variational family over the same trained weights (concrete dropout's
        learned rates, a bandit's per-arm masks); default :func:`weight_sample`.
        Needs the ``"weight_sample"`` form.
    """
    if structure.form not in FORMS:
        raise ValueError(f"unknown MC dropout form {structure.form!r}; choose one of {FORMS}")
    if draw is not None and structure.form != "weight_sample":
        raise ValueError(f"a custom draw needs the 'weight_sample' form; this network's is {structure.form!r}")
    if draw is None and structure.form == "weight_sample":
        draw = functools.partial(weight_sample, structure=structure)
    trainer = map_method.build(log_posterior, optimizer)

    def sample(state, key, num_samples: int = 100):
        keys = jax.random.split(key, num_samples)
        if draw is not None:
            return jax.vmap(lambda k: draw(state.params, k))(keys)
        return MCDropoutSample(repeat_params(state.params, num_samples), keys)

    return trainer._replace(sample=sample)


def sample_chunk_for(num_points: int, activations_per_point: int, budget_bytes: int = 2**20) -> int:
    """How many passes to vmap at once so that one layer's float32 activations fit ``budget_bytes``.

    Pass it as ``predictive_outputs(..., sample_chunk=...)``. Vmapping all T
    passes at once materialises T·N·width activations per layer; on CPU,
    keeping a chunk near cache size was 10–30× faster for T = 100, N = 1000,
    width 50 (``scripts/bench_mcdropout.py``), and large T (Gal's code uses
    10 000 passes) needs chunks anyway to fit in memory.

    Args:
      num_points: test points N evaluated together.
      activations_per_point: the widest layer's activations per point (e.g.
        the hidden width of an MLP).
      budget_bytes: memory for one layer's activations of one chunk.
    """
    if num_points < 1 or activations_per_point < 1:
        raise ValueError(f"num_points and activations_per_point must be positive, got {num_points} and "
                         f"{activations_per_point}")
    return max(1, budget_bytes // (4 * num_points * activations_per_point))


def dropout_model(model: Model, dropout_rate: float) -> Model:
    """``model.with_dropout(dropout_rate)``, failing clearly when the model cannot rebuild itself."""
    _check_rate(dropout_rate)
    if model.with_dropout is None:
        raise ValueError(
            "MC dropout needs a model that can rebuild itself with dropout (Model.with_dropout); build it with "
            "bdljax.nn.models.mlp / cnn, or from_flax(module, x, rebuild=lambda rate: ...)."
        )
    return _rebuild_with_dropout(model.with_dropout, float(dropout_rate))


@functools.lru_cache(maxsize=128)
def _rebuild_with_dropout(with_dropout, dropout_rate: float) -> Model:
    # One Model per (network, rate): its apply is then the same function for every run of a rate, so the
    # jitted predictive and initialiser (static in it) compile once, not once per recipe call.
    return with_dropout(dropout_rate)


def gal_prior(params: Params, structure: DropoutStructure, length_scale: float) -> priors.Prior:
    """The Gaussian prior under which the shared log posterior is Gal's dropout objective.

    Kernels fed by dropout at rate p: scale 1/(l √(1 − p)); every other leaf
    (biases, layers without dropout): 1/l — precision (1 − p) l², the KL term
    of the dropout distribution to N(0, l⁻²).
    """
    _check_positive("length_scale", length_scale)
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


def noise_precision(likelihood: likelihoods.Likelihood) -> Optional[float]:
    """τ = 1/σ² of a fixed-scale Gaussian likelihood; ``None`` for any other likelihood."""
    if likelihood.name != "gaussian" or likelihood.mean_and_scale is None:
        return None
    _, scale = likelihood.mean_and_scale(jnp.zeros((1, 1)))
    return float(1.0 / jnp.square(scale[0]))


# ---------------------------------------------------------------------------
# The regression predictive of the paper
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Gal's UCI protocol
# ---------------------------------------------------------------------------


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
    _check_positive("y_std", y_std)
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


# ---------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------


def recipe(
    problem: Problem,
    key: jax.Array,
    *,
    dropout_rate: float = 0.05,
    tau: Optional[float] = None,
    length_scale: Optional[float] = None,
    num_epochs: int = 40,
    batch_size: Optional[int] = GAL_BATCH_SIZE,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    num_samples: int = 100,
    per_point_masks: bool = False,
    concrete: bool = False,
    concrete_temperature: float = 0.1,
    eval_data: Optional[Tuple[Any, Any]] = None,
    eval_every: int = 0,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = False,
    steps_per_call: Optional[int] = None,
) -> Fitted:
    """Experiment recipe (:mod:`bdljax.recipes`): MC dropout, Gal & Ghahramani (2016).

    Trains ``problem.model.with_dropout(dropout_rate)`` on the shared log
    posterior with dropout on, then draws ``num_samples`` = T dropout samples
    (one mask per pass, shared by all test points; ``per_point_masks=True``
    for independent masks per test point).

    Hyperparameters:
      tau: model precision τ in the units of ``problem.y_train``. ``None``
        keeps the problem's likelihood (any likelihood; classification always
        does); a value replaces a fixed-scale Gaussian likelihood by
        ``gaussian(tau ** -0.5)`` and fails for any other.
      length_scale: prior length-scale l. ``None`` keeps the problem's prior;
        a value uses :func:`gal_prior` (scale 1/(l √(1 − p)) on dropout-fed
        kernels, 1/l elsewhere), which makes the objective Gal's, with
        weight decay λ = (1 − p) l²/(2 N τ) on the mean loss.

      concrete: learn the drop rate of every dropout layer, concrete dropout
        (Gal, Hron & Kendall 2017; :mod:`bdljax.methods.concrete_dropout`);
        ``dropout_rate`` is then the initial rate and ``length_scale`` (or
        the problem's Gaussian prior) the prior N(0, l⁻²) of the KL term.
      concrete_temperature: temperature of the relaxed Bernoulli masks (0.1).

    ``Fitted.diagnostics`` holds ``tau`` (the noise precision used, or
    ``None``), ``dropout_rate``, ``length_scale``, ``form`` and
    ``form_reason``; feed ``tau`` to :func:`regression_predictive`. With
    ``concrete=True`` also ``learned_dropout_rates`` (one per dropout layer).
    """
    _check_rate(dropout_rate)
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive int (the number T of MC dropout passes), got {num_samples!r}")
    if length_scale is not None:
        _check_positive("length_scale", length_scale)
    likelihood = problem.likelihood
    if tau is not None:
        _check_positive("tau", tau)
        if problem.likelihood.name != "gaussian":
            raise ValueError(
                f"tau sets the precision of a fixed-scale Gaussian likelihood, but the problem's likelihood is "
                f"{problem.likelihood.name!r}; leave tau=None to use that likelihood as it is."
            )
        likelihood = likelihoods.gaussian(float(tau) ** -0.5)

    if concrete and not 0.0 < dropout_rate:
        raise ValueError("with concrete=True, dropout_rate is the initial rate of the learned ones; give one in (0, 1)")
    if concrete and per_point_masks:
        raise ValueError("concrete=True draws weight samples of the learned rates; per_point_masks is not supported")
    model = dropout_model(problem.model, dropout_rate)
    init_key, fit_key = jax.random.split(key)
    params = jax.jit(model.init)(init_key)  # the initialisation, also used to find the dropout structure
    structure = dropout_structure(model.apply, params, problem.x_train, per_point_masks=per_point_masks)
    if concrete:
        from bdljax.methods import concrete_dropout  # it builds on this module

        if not structure.rates:
            raise ValueError("concrete=True learns the rates of the network's flax nn.Dropout layers, and this network "
                             "has none (its dropout, if any, is its own code, e.g. bdljax.nn.recurrent); use concrete=False.")

        base_prior = problem.prior if length_scale is None else priors.gaussian(1.0 / length_scale)
        apply = concrete_dropout.concrete_apply(model.apply, structure, concrete_temperature)
        dropout_problem = problem._replace(model=Model(model.init, apply, None), likelihood=likelihood,
                                           prior=concrete_dropout.kl_prior(base_prior, structure))
        method = concrete_dropout.build(dropout_problem.log_posterior(), make_optimizer(optimizer, learning_rate),
                                        structure)
        params = concrete_dropout.init_params(params, structure, dropout_rate)
        sample_evaluator = apply
    else:
        prior = problem.prior if length_scale is None else gal_prior(params, structure, length_scale)
        dropout_problem = problem._replace(model=model, likelihood=likelihood, prior=prior)
        method = build(dropout_problem.log_posterior(), make_optimizer(optimizer, learning_rate), structure)
        sample_evaluator = sample_apply(model.apply, structure)
    fitted = fit_transform(
        dropout_problem, method, fit_key, init_params=params, num_epochs=num_epochs,
        batch_size=map_method.batch_size_for(batch_size, problem.num_data), num_samples=num_samples,
        apply=sample_evaluator, eval_data=eval_data, eval_every=eval_every, logger=logger,
        log_fields=log_fields, progress=progress, description="concrete_dropout" if concrete else "mcdropout",
        steps_per_call=steps_per_call,
    )
    diagnostics = {
        **fitted.diagnostics,
        "tau": noise_precision(likelihood),
        "dropout_rate": float(dropout_rate),
        "length_scale": None if length_scale is None else float(length_scale),
        "form": structure.form,
        "form_reason": structure.reason,
    }
    if concrete:
        from bdljax.methods import concrete_dropout

        diagnostics["learned_dropout_rates"] = concrete_dropout.learned_rates(fitted.state)
    return fitted._replace(diagnostics=diagnostics)
