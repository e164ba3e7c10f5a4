"""Networks as pure functions, and the one contract every method relies on.

The apply contract
------------------
bdljax calls every network as::

    output = apply(params, x, rng=None, train=False)

* ``params`` is any pytree of arrays (a Flax ``variables`` dict, a list of
  ``(W, b)`` tuples, ...). Inference methods only ever map over its leaves.
* ``x`` has a leading batch axis; ``output`` keeps it.
* ``rng`` is a PRNG key for stochastic layers (dropout). Methods that need
  stochastic forward passes (MC dropout) pass one; everybody else passes
  ``None``.
* ``train`` switches stochastic layers on. MC dropout predicts with
  ``train=True`` and an ``rng``, which is what makes it Bayesian.

A :class:`Model` bundles ``init(key) -> params`` with such an ``apply``.
:func:`from_flax` builds one from a Flax linen module; :func:`from_functions`
from any pair of functions a user brings (a plain ``apply(params, x)`` is
accepted and given the keyword arguments it ignores).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bdljax.core.posterior import Apply

Params = Any

_ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "gelu": nn.gelu,
    "swish": nn.swish,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
}


class Model(NamedTuple):
    """A network as two pure functions.

    Attributes:
      init: ``init(key) -> params``, a fresh random initialisation.
      apply: ``apply(params, x, rng=None, train=False) -> output``.
      with_dropout: optional ``with_dropout(rate) -> Model``, the same
        architecture with dropout at rate ``rate``; MC dropout uses it so that
        an experiment can swap methods without rebuilding its model.
    """

    init: Callable[[jax.Array], Params]
    apply: Apply
    with_dropout: Optional[Callable[[float], "Model"]] = None


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Look up an activation by name, failing loudly on unknown names."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class MLP(nn.Module):
    """Fully connected network ``x -> [dropout -> dense -> act]* -> dropout -> dense``.

    Dropout sits before every dense layer (the input one too when
    ``dropout_input``), as in Gal & Ghahramani's (2016) UCI code, so that a
    dropout mask is a distribution over the rows of every weight matrix.
    """

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
            h = act(nn.Dense(width)(h))
        if self.dropout_rate > 0 and (self.hidden or self.dropout_input):
            h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return nn.Dense(self.output_dim)(h)


class CNN(nn.Module):
    """LeNet-5-like network for 28×28×1 images: two conv/max-pool blocks, one hidden dense layer.

    Dropout (when ``dropout_rate > 0``) follows each pooling and the hidden
    layer, the placement of Gal & Ghahramani's (2016) LeNet experiments.
    """

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
            h = act(nn.Conv(width, kernel_size=(5, 5), padding="SAME")(h))
            h = nn.max_pool(h, window_shape=(2, 2), strides=(2, 2))
            if self.dropout_rate > 0:
                h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        h = h.reshape((h.shape[0], -1))
        h = act(nn.Dense(self.hidden)(h))
        if self.dropout_rate > 0:
            h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return nn.Dense(self.num_classes)(h)


def from_flax(module: nn.Module, example_input: jax.Array, rebuild: Optional[Callable[[float], nn.Module]] = None) -> Model:
    """Wrap a Flax linen module into a :class:`Model`.

    Args:
      module: a linen module whose ``__call__(x, train=...)`` takes a batch.
      example_input: one batch (any batch size) fixing the input shape for ``init``.
      rebuild: optional ``rate -> module`` giving the same module with dropout.
    """
    example_input = jnp.asarray(example_input)[:1]

    def init(key):
        return module.init(key, example_input, train=False)

    def apply(params, x, rng=None, train=False):
        rngs = None if rng is None else {"dropout": rng}
        return module.apply(params, x, train=train, rngs=rngs)

    with_dropout = None
    if rebuild is not None:
        # Cached: the same rate gives the same apply function, so jitted code keyed on it compiles once.
        with_dropout = functools.lru_cache(maxsize=None)(
            lambda rate: from_flax(rebuild(rate), example_input, rebuild))
    return Model(init, apply, with_dropout)


def from_functions(init: Callable[[jax.Array], Params], apply: Callable[..., jax.Array]) -> Model:
    """Wrap a user's ``init(key)`` and ``apply(params, x[, rng, train])`` into a :class:`Model`.

    An ``apply`` that takes neither ``rng`` nor ``train`` is deterministic and
    simply ignores them.
    """
    params_of_apply = inspect.signature(apply).parameters
    takes_keywords = any(p.kind == p.VAR_KEYWORD for p in params_of_apply.values())
    if takes_keywords or ("rng" in params_of_apply and "train" in params_of_apply):
        return Model(init, apply)

    def deterministic_apply(params, x, rng=None, train=False):
        del rng, train
        return apply(params, x)

    return Model(init, deterministic_apply)


def mlp(input_shape: Sequence[int], hidden: Sequence[int], output_dim: int, activation: str = "relu",
        dropout_rate: float = 0.0, dropout_input: bool = True) -> Model:
    """An :class:`MLP` as a :class:`Model` for inputs of per-example shape ``input_shape``."""
    get_activation(activation)  # unknown names fail here, not at first trace

    def build(rate):
        return MLP(tuple(hidden), output_dim, activation, rate, dropout_input)

    return from_flax(build(dropout_rate), jnp.zeros((1, *input_shape)), rebuild=build)


def cnn(num_classes: int = 10, features: Sequence[int] = (32, 64), hidden: int = 128,
        dropout_rate: float = 0.0, input_shape: Sequence[int] = (28, 28, 1)) -> Model:
    """A :class:`CNN` as a :class:`Model` for images of shape ``input_shape``."""

    def build(rate):
        return CNN(num_classes, tuple(features), hidden, "relu", rate)

    return from_flax(build(dropout_rate), jnp.zeros((1, *input_shape)), rebuild=build)


def check_input_shape(model: Model, params: Params, x) -> jax.ShapeDtypeStruct:
    """Fail early and clearly when ``x`` does not fit the model; return the output shape.

    Uses ``jax.eval_shape``, so nothing is compiled or computed.
    """
    x = jnp.asarray(x)
    try:
        return jax.eval_shape(lambda p, xb: model.apply(p, xb), params, x[:1])
    except Exception as error:  # re-raised with the shapes that explain it
        raise ValueError(
            f"inputs of shape {tuple(x.shape)} (per example {tuple(x.shape[1:])}) do not fit the model: {error}. "
            "Reshape the data or build the model for this input shape."
        ) from error


def count_params(params: Params) -> int:
    """Number of scalar parameters in a pytree."""
    return sum(int(leaf.size) for leaf in jax.tree.leaves(params))


def with_learned_noise(model: Model, initial_scale: float = 1.0) -> Model:
    """Add one learned, input-independent noise parameter to a one-output regression model.

    The new parameters are ``{"net": params, "noise": s}`` and the output is
    ``[mean, s]`` per example, so :func:`bdljax.core.likelihoods.heteroscedastic_gaussian`
    gives σ = softplus(s) + min_scale for every input: homoscedastic noise
    learned (or sampled) with the weights, under the same prior.
    """
    if not initial_scale > 0:
        raise ValueError(f"initial_scale must be positive (a noise standard deviation), got {initial_scale}")
    # softplus⁻¹ on the host: no device computation when the model is built (it may be built inside a trace)
    raw_initial = math.log(math.expm1(initial_scale))

    def init(key):
        return {"net": model.init(key), "noise": jnp.asarray(raw_initial, jnp.float32)}

    def apply(params, x, rng=None, train=False):
        mean = model.apply(params["net"], x, rng=rng, train=train)
        mean = mean[..., 0] if mean.ndim > 1 else mean
        return jnp.stack([mean, jnp.broadcast_to(params["noise"], mean.shape)], axis=-1)

    with_dropout = None
    if model.with_dropout is not None:
        with_dropout = functools.lru_cache(maxsize=None)(
            lambda rate: with_learned_noise(model.with_dropout(rate), initial_scale))
    return Model(init, apply, with_dropout)
