"""Dropout structure: where a network's dropout masks act, and masks as weight samples.

A dropout mask z drawn once and shared by every test point is one draw of
Gal & Ghahramani's variational distribution q_M(W): W = diag(z/(1 − p))·M
(inverted dropout, rows scaled as Flax and Keras do). For a Dropout whose
output is the input of a ``nn.Dense`` layer, ``Dense(x ∘ m) = x · (diag(m) K) + b``,
so the mask is folded into the rows of the kernel K and an MC dropout sample
is a plain parameter pytree, evaluated by the dropout network with
``train=False`` — like any other method's sample, and T of them vmapped in one
compiled call (:func:`bdljax.run.predictive.predictive_outputs`).

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
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bdljax.core.posterior import Apply
from bdljax.nn.models import Model

Params = Any


def check_rate(dropout_rate: float) -> None:
    """A drop probability in [0, 1)."""
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must lie in [0, 1) (the probability of dropping a unit), got {dropout_rate}")


FORMS = ("weight_sample", "shared_mask", "per_point")


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
        (1 − p) of :func:`bdljax.recipes.gal.gal_prior`.
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


def dropout_masks(key: jax.Array, structure: DropoutStructure,
                  rates: Optional[jax.Array] = None) -> List[jax.Array]:
    """One inverted-dropout mask per Dropout, shared by all examples: entries 0 or 1/(1 − p).

    Mask ``i`` is Bernoulli(1 − p_i)/(1 − p_i) drawn from ``fold_in(key, i)``,
    of shape ``structure.mask_shapes[i]``, with p_i from ``rates`` (an array,
    e.g. concrete dropout's learned rates) or else ``structure.rates``.
    Jit- and vmap-able.
    """
    rates = structure.rates if rates is None else rates
    masks = []
    for index, shape in enumerate(structure.mask_shapes):
        rate = rates[index]
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
    """The ``apply(sample, x, rng=None, train=False)`` that evaluates one sample of
    :func:`bdljax.methods.mcdropout.sample` for this structure's form.

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
    check_rate(dropout_rate)
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
