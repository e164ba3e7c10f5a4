"""Priors p(θ) over parameter pytrees.

A :class:`Prior` gives ``log_prob(params)`` (a scalar, summed over every
leaf), ``scales(params)`` (a pytree of prior standard deviations, which lets
variational methods use the closed-form Gaussian KL) and ``sample``.

:func:`gaussian` is an isotropic zero-mean Gaussian; its ``scale`` is a
float, a pytree matching the parameters, or a function of the leaf's path
(``"params/Dense_0/kernel"``) and the leaf, giving per-layer scales such as
the 1/√fan_in scaling of Neal (1996).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
ScaleSpec = Union[float, Params, Callable[[str, jax.Array], float]]


class Prior(NamedTuple):
    """A prior over parameter pytrees.

    Attributes:
      name: for logs.
      log_prob: ``params -> scalar`` log p(θ).
      scales: ``params -> pytree`` of the standard deviations of a zero-mean
        Gaussian prior, or ``None`` for priors with no closed-form Gaussian
        KL (variational methods then fall back to a Monte Carlo KL).
      sample: ``(key, params_like) -> params`` a draw from the prior.
    """

    name: str
    log_prob: Callable[[Params], jax.Array]
    scales: Optional[Callable[[Params], Params]]
    sample: Optional[Callable[[jax.Array, Params], Params]]


def leaf_path(path) -> str:
    """``"params/Dense_0/kernel"`` from a ``jax.tree_util`` key path."""
    parts = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _scale_tree(scale: ScaleSpec, params: Params) -> Params:
    if callable(scale):
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.broadcast_to(jnp.asarray(scale(leaf_path(path), leaf), leaf.dtype), leaf.shape),
            params,
        )
    if isinstance(scale, (int, float)) or (isinstance(scale, (jax.Array, np.ndarray)) and np.ndim(scale) == 0):
        # A scalar, also a traced one (a prior scale batched over grid points).
        return jax.tree.map(lambda leaf: jnp.full(leaf.shape, scale, leaf.dtype), params)
    try:
        return jax.tree.map(lambda s, leaf: jnp.broadcast_to(jnp.asarray(s, leaf.dtype), leaf.shape), scale, params)
    except ValueError as error:
        raise ValueError(f"gaussian prior: the scale pytree does not match the parameter pytree: {error}") from error


def gaussian(scale: ScaleSpec = 1.0) -> Prior:
    """Zero-mean Gaussian prior θ ~ N(0, diag(s²)), with per-leaf scales ``s``.

    log p(θ) = Σ_j [−½ (θ_j/s_j)² − log s_j − ½ log 2π].
    """
    if isinstance(scale, (int, float)) and not scale > 0:
        raise ValueError(f"gaussian prior: scale must be positive, got {scale}")

    def scales(params):
        return _scale_tree(scale, params)

    def log_prob(params):
        terms = jax.tree.map(
            lambda theta, s: jnp.sum(-0.5 * jnp.square(theta / s) - jnp.log(s) - 0.5 * math.log(2 * math.pi)),
            params, scales(params),
        )
        return sum(jax.tree.leaves(terms))

    def sample(key, params_like):
        leaves, treedef = jax.tree.flatten(params_like)
        keys = jax.random.split(key, len(leaves))
        scale_leaves = jax.tree.leaves(scales(params_like))
        draws = [s * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf, s in zip(keys, leaves, scale_leaves)]
        return jax.tree.unflatten(treedef, draws)

    return Prior("gaussian", log_prob, scales, sample)


def fan_in_scales(scale: float = 1.0) -> Callable[[str, jax.Array], float]:
    """Per-leaf scale ``scale/√fan_in`` for kernels and ``scale`` for biases (Neal 1996)."""

    def spec(path: str, leaf: jax.Array) -> float:
        if leaf.ndim >= 2:
            fan_in = math.prod(leaf.shape[:-1])
            return scale / math.sqrt(fan_in)
        return scale

    return spec


def flat() -> Prior:
    """The improper flat prior, log p(θ) = 0: maximum likelihood instead of MAP."""
    return Prior("flat", lambda params: jnp.zeros(()), None, None)
