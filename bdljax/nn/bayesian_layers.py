"""Bayesian dense and convolutional layers: lower-variance estimators of the same mean-field ELBO.

Why
---
The generic MFVI estimator (:mod:`bdljax.methods.mfvi`) draws one weight sample θ
per Monte Carlo sample and shares it across the whole minibatch, so the
per-example log-likelihood terms are correlated and the variance of the
gradient does not fall as 1/|B| (Kingma, Salimans & Welling 2015,
"Variational Dropout and the Local Reparameterization Trick"). For layers
whose weights are independent Gaussians under q two estimators restore that:

* **local reparameterisation** (Kingma et al. 2015). For a dense layer
  y = x W + b with W_kj ~ N(μ_kj, σ_kj²) and b_j ~ N(μ_j, σ_j²), each
  pre-activation of example i is exactly Gaussian,

      y_ij ~ N(Σ_k x_ik μ_kj + μ_j,  Σ_k x_ik² σ_kj² + σ_j²),

  so it is sampled per example, at the cost of a second matmul.
* **Flipout** (Wen, Vicol, Ba, Tran & Grosse 2018). One shared perturbation
  ΔW = σ ∘ ε is decorrelated across examples by random signs s_i, r_i ∈ {±1}:

      y_i = x_i μ_W + ((x_i ∘ s_i) ΔW) ∘ r_i + b_i.

  The effective weights μ + ΔW ∘ (s_i r_iᵀ) have exactly q's distribution for
  every example, because sign flips leave a zero-mean Gaussian unchanged.
  It works for convolutions, where the signs are per example and channel
  and shared over positions (the kernel is shared over positions too).

Both give every example exactly the distribution of its outputs under q,
layer after layer (each layer's weights are independent of its input), so
E_q[Σ_i log p(y_i | x_i, θ)] — the expected log-likelihood — is unchanged:
the same objective as the generic estimator, with a lower-variance
gradient. Local reparameterisation with independent noise per *position*
would change the model of a convolution (or of a dense layer applied to
(B, T, features)), so there these layers use Flipout even when local
reparameterisation is asked for (:data:`ESTIMATORS`).

How they plug in
----------------
The layers hold ordinary parameters, with the names and shapes of
``flax.linen.Dense`` and ``flax.linen.Conv`` (``kernel``, ``bias``), so
:func:`mlp` and :func:`cnn` have exactly the parameter pytrees of
:func:`bdljax.nn.models.mlp` and :func:`bdljax.nn.models.cnn`: a MAP solution of
one initialises MFVI on the other, and the weight samples of
``method.sample`` feed :mod:`bdljax.run.predictive` unchanged. q, its
closed-form KL and the optimiser stay in :mod:`bdljax.methods.mfvi`, over that
same pytree; layers never return KL terms (which would break composition).

A layer reads three variable collections:

* ``"params"``: a point or a weight sample → the plain deterministic layer;
* ``"weight_mean"`` and ``"weight_scale"`` (μ and σ of q for that layer,
  present only in :func:`variational_apply`) → it samples its outputs with
  the estimator named by the PRNG stream it is given
  (``"local_reparameterization"`` or ``"flipout"``).

Other layers of the network (layer norms, plain ``nn.Dense``, a learned
noise scale) read ``"params"``, which :func:`variational_apply` fills with
the reparameterised draw θ ~ q that MFVI passes it, so every parameter is
still sampled from q.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from bdljax.nn.models import Model, get_activation

Params = Any

MEAN_COLLECTION = "weight_mean"
SCALE_COLLECTION = "weight_scale"
LOCAL_REPARAMETERIZATION = "local_reparameterization"
FLIPOUT = "flipout"
ESTIMATORS: Tuple[str, ...] = (LOCAL_REPARAMETERIZATION, FLIPOUT)

# sqrt'(v) at v = 0 is infinite; a dead input (all x = 0, no bias) must give a zero gradient, not NaN.
_MIN_VARIANCE = 1e-30


def _is_variational(module: nn.Module) -> bool:
    return module.has_variable(MEAN_COLLECTION, "kernel")


def _noise_key(module: nn.Module) -> Tuple[str, jax.Array]:
    """The estimator named by the PRNG stream present, and a key from it."""
    for estimator in ESTIMATORS:
        if module.has_rng(estimator):
            return estimator, module.make_rng(estimator)
    raise ValueError(
        f"{type(module).__name__}: variational weights were given but no PRNG stream named one of {ESTIMATORS}; "
        "call the network through bdljax.nn.bayesian_layers.variational_apply."
    )


def _variational_weights(module: nn.Module, use_bias: bool):
    mean_kernel = module.get_variable(MEAN_COLLECTION, "kernel")
    scale_kernel = module.get_variable(SCALE_COLLECTION, "kernel")
    if use_bias:
        mean_bias, scale_bias = module.get_variable(MEAN_COLLECTION, "bias"), module.get_variable(SCALE_COLLECTION, "bias")
        return mean_kernel, scale_kernel, mean_bias, scale_bias
    return mean_kernel, scale_kernel, None, None


def _per_example_shape(x: jax.Array, features: int) -> Tuple[int, ...]:
    """(B, 1, ..., 1, features): noise per example, shared over every position within it."""
    return (x.shape[0],) + (1,) * (x.ndim - 2) + (features,)


def _flipout_noise(key: jax.Array, x: jax.Array, kernel: jax.Array, features: int):
    """Signs s (B,1..,in), r (B,1..,out), kernel noise ε_W, per-example bias noise (B,1..,out).

    Two random-number calls in all (each call site costs compile time).
    """
    sign_key, normal_key = jax.random.split(key)
    num_in = x.shape[-1]
    signs = jax.random.rademacher(sign_key, _per_example_shape(x, num_in + features), x.dtype)
    normals = jax.random.normal(normal_key, (kernel.size + x.shape[0] * features,), kernel.dtype)
    kernel_noise = normals[: kernel.size].reshape(kernel.shape)
    bias_noise = normals[kernel.size:].reshape(_per_example_shape(x, features))
    return signs[..., :num_in], signs[..., num_in:], kernel_noise, bias_noise


class Dense(nn.Module):
    """A dense layer ``y = x W + b`` over the last axis, Bayesian under :func:`variational_apply`.

    Same parameters as ``flax.linen.Dense``: ``kernel (in, features)``, ``bias (features,)``.
    Local reparameterisation applies to inputs of shape (B, in); inputs with
    more axes (weights shared over positions) use Flipout.
    """

    features: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        if not _is_variational(self):
            y = jnp.matmul(x, kernel)
            return y if bias is None else y + bias
        mean_kernel, scale_kernel, mean_bias, scale_bias = _variational_weights(self, self.use_bias)
        estimator, key = _noise_key(self)
        mean_out = jnp.matmul(x, mean_kernel)
        if mean_bias is not None:
            mean_out = mean_out + mean_bias
        if estimator == LOCAL_REPARAMETERIZATION and x.ndim == 2:
            variance = jnp.matmul(jnp.square(x), jnp.square(scale_kernel))
            if scale_bias is not None:
                variance = variance + jnp.square(scale_bias)
            noise = jax.random.normal(key, mean_out.shape, mean_out.dtype)
            return mean_out + jnp.sqrt(jnp.maximum(variance, _MIN_VARIANCE)) * noise
        sign_in, sign_out, kernel_noise, bias_noise = _flipout_noise(key, x, scale_kernel, self.features)
        out = mean_out + jnp.matmul(x * sign_in, scale_kernel * kernel_noise) * sign_out
        if scale_bias is not None:
            out = out + scale_bias * bias_noise
        return out


def _conv_dimension_numbers(ndim: int) -> jax.lax.ConvDimensionNumbers:
    """Channels-last inputs (B, *spatial, C) and kernels (*window, in, out), as flax.linen.Conv."""
    spatial = tuple(range(1, ndim - 1))
    return jax.lax.ConvDimensionNumbers(
        lhs_spec=(0, ndim - 1) + spatial,
        rhs_spec=(ndim - 1, ndim - 2) + tuple(range(ndim - 2)),
        out_spec=(0, ndim - 1) + spatial,
    )


class Conv(nn.Module):
    """A convolution, Bayesian under :func:`variational_apply` (always by Flipout; see the module docstring).

    Same parameters as ``flax.linen.Conv``: ``kernel (*kernel_size, in, features)``,
    ``bias (features,)``. Inputs are (B, *spatial, channels).
    """

    features: int
    kernel_size: Sequence[int]
    strides: Union[int, Sequence[int]] = 1
    padding: Union[str, int, Sequence[Tuple[int, int]]] = "SAME"
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    def _convolve(self, x, kernel):
        spatial = len(self.kernel_size)
        strides = (self.strides,) * spatial if isinstance(self.strides, int) else tuple(self.strides)
        padding = self.padding
        if isinstance(padding, int):
            padding = ((padding, padding),) * spatial
        return jax.lax.conv_general_dilated(
            x, kernel, window_strides=strides, padding=padding, dimension_numbers=_conv_dimension_numbers(x.ndim)
        )

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != len(self.kernel_size) + 2:
            raise ValueError(
                f"Conv with kernel_size={tuple(self.kernel_size)} needs inputs (batch, {len(self.kernel_size)} spatial axes, "
                f"channels), got shape {x.shape}."
            )
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        if not _is_variational(self):
            y = self._convolve(x, kernel)
            return y if bias is None else y + bias
        mean_kernel, scale_kernel, mean_bias, scale_bias = _variational_weights(self, self.use_bias)
        _, key = _noise_key(self)
        sign_in, sign_out, kernel_noise, bias_noise = _flipout_noise(key, x, scale_kernel, self.features)
        out = self._convolve(x, mean_kernel) + self._convolve(x * sign_in, scale_kernel * kernel_noise) * sign_out
        if mean_bias is not None:
            out = out + mean_bias + scale_bias * bias_noise
        return out


class MLP(nn.Module):
    """:class:`bdljax.nn.models.MLP` with Bayesian :class:`Dense` layers (the same parameter pytree)."""

    hidden: Sequence[int]
    output_dim: int
    activation: str = "relu"
    dropout_rate: float = 0.0
    dropout_input: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = get_activation(self.activation)
        h = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            if self.dropout_rate > 0 and (i > 0 or self.dropout_input):
                h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
            h = act(Dense(width)(h))
        if self.dropout_rate > 0 and (self.hidden or self.dropout_input):
            h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return Dense(self.output_dim)(h)


class CNN(nn.Module):
    """:class:`bdljax.nn.models.CNN` with Bayesian :class:`Conv` and :class:`Dense` layers (the same parameter pytree)."""

    num_classes: int = 10
    features: Sequence[int] = (32, 64)
    hidden: int = 128
    activation: str = "relu"
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = get_activation(self.activation)
        h = x
        for width in self.features:
            h = act(Conv(width, kernel_size=(5, 5), padding="SAME")(h))
            h = nn.max_pool(h, window_shape=(2, 2), strides=(2, 2))
            if self.dropout_rate > 0:
                h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        h = h.reshape((h.shape[0], -1))
        h = act(Dense(self.hidden)(h))
        if self.dropout_rate > 0:
            h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return Dense(self.num_classes)(h)


class BayesianApply:
    """``apply(params, x, rng=None, train=False)`` of a Flax module built from these layers.

    Called with parameters it is the ordinary network (the contract of
    :mod:`bdljax.nn.models`); :meth:`variational` gives the output-sampling
    estimator for :mod:`bdljax.methods.mfvi`. Hashable by identity, so it can be a
    static argument of ``jax.jit`` (as :func:`bdljax.run.predictive.predictive_outputs` needs).
    """

    def __init__(self, module: nn.Module):
        self.module = module
        # A bare layer (Dense, Conv) used as a whole network takes no ``train`` argument.
        self.takes_train = "train" in inspect.signature(type(module).__call__).parameters

    def _apply(self, variables, x, train, rngs):
        if self.takes_train:
            return self.module.apply(variables, x, train=train, rngs=rngs)
        return self.module.apply(variables, x, rngs=rngs)

    def __call__(self, params, x, rng=None, train=False):
        rngs = None if rng is None else {"dropout": rng}
        return self._apply(params, x, train, rngs)

    def variational(self, estimator: str = LOCAL_REPARAMETERIZATION) -> Callable[..., jax.Array]:
        """``(mean, scale, theta, x, rng, train=False) -> output``: one draw of every example's output under q.

        ``mean`` and ``scale`` are μ and σ of q and ``theta`` one draw θ ~ q,
        pytrees like the parameters (``{"params": ...}``). Layers of this
        module sample their outputs from (μ, σ) with ``estimator``; every other
        parameter enters as its value in ``theta`` (XLA drops the unused rest).
        """
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")

        def apply_under_q(mean, scale, theta, x, rng, train=False):
            if rng is None:
                raise ValueError("variational_apply needs a PRNG key: it samples the network's outputs")
            if not isinstance(mean, Mapping) or "params" not in mean:
                raise ValueError(f"variational_apply expects Flax variables {{'params': ...}}, got a {type(mean).__name__}")
            noise_key, dropout_key = jax.random.split(rng)
            variables = {**theta, MEAN_COLLECTION: mean["params"], SCALE_COLLECTION: scale["params"]}
            return self._apply(variables, x, train, {estimator: noise_key, "dropout": dropout_key})

        return apply_under_q


def variational_apply(model: Union[Model, BayesianApply], estimator: str = LOCAL_REPARAMETERIZATION):
    """The output-sampling estimator of a model built here, for ``bdljax.methods.mfvi.build(variational_apply=...)``."""
    apply = model.apply if isinstance(model, Model) else model
    if not isinstance(apply, BayesianApply):
        raise ValueError(
            f"estimator {estimator!r} needs a network built from bdljax's Bayesian layers "
            "(bdljax.nn.bayesian_layers.mlp, .cnn or .from_flax); this model's apply is a plain function. "
            "Use estimator='reparameterization', which works for any network."
        )
    return apply.variational(estimator)


def from_flax(module: nn.Module, example_input: jax.Array, rebuild: Optional[Callable[[float], nn.Module]] = None) -> Model:
    """A :class:`bdljax.nn.models.Model` of a linen module built from these layers (cf. :func:`bdljax.nn.models.from_flax`)."""
    example_input = jnp.asarray(example_input)[:1]
    apply = BayesianApply(module)

    def init(key):
        if apply.takes_train:
            return module.init(key, example_input, train=False)
        return module.init(key, example_input)

    with_dropout = None
    if rebuild is not None:
        # Cached: the same rate gives the same apply function, so jitted code keyed on it compiles once.
        with_dropout = functools.lru_cache(maxsize=None)(
            lambda rate: from_flax(rebuild(rate), example_input, rebuild))
    return Model(init, apply, with_dropout)


def mlp(input_shape: Sequence[int], hidden: Sequence[int], output_dim: int, activation: str = "relu",
        dropout_rate: float = 0.0, dropout_input: bool = True) -> Model:
    """A Bayesian-layer :class:`MLP`, with the parameters of :func:`bdljax.nn.models.mlp`."""
    get_activation(activation)

    def build(rate):
        return MLP(tuple(hidden), output_dim, activation, rate, dropout_input)

    return from_flax(build(dropout_rate), jnp.zeros((1, *input_shape)), rebuild=build)


def cnn(num_classes: int = 10, features: Sequence[int] = (32, 64), hidden: int = 128,
        dropout_rate: float = 0.0, input_shape: Sequence[int] = (28, 28, 1)) -> Model:
    """A Bayesian-layer :class:`CNN`, with the parameters of :func:`bdljax.nn.models.cnn`."""

    def build(rate):
        return CNN(num_classes, tuple(features), hidden, "relu", rate)

    return from_flax(build(dropout_rate), jnp.zeros((1, *input_shape)), rebuild=build)
