"""Bayesian recurrent networks: LSTM and GRU sequence models with variational dropout.

Gal & Ghahramani (2016), "A Theoretically Grounded Application of Dropout in
Recurrent Neural Networks" (NeurIPS): dropout in an RNN is approximate
variational inference over its weights only when a dropout mask is a draw of
the *weights*, so the same mask must be used at every time step. For one
sequence the masks ``m_x`` (inputs) and ``m_h`` (recurrent state) are drawn
once and every step computes

    LSTM:  [i, f, g, o] = [σ, σ, tanh, σ]( W (x_t ∘ m_x) + U (h_{t-1} ∘ m_h) + b )
           c_t = f ∘ c_{t-1} + i ∘ g,      h_t = o ∘ tanh(c_t)

    GRU:   [r, z] = σ( W_rz (x_t ∘ m_x) + U_rz (h_{t-1} ∘ m_h) + b_rz )
           n = tanh( W_n (x_t ∘ m_x) + b_n + r ∘ (U_n (h_{t-1} ∘ m_h) + b_hn) )
           h_t = (1 − z) ∘ n + z ∘ h_{t-1}

(the GRU of Cho et al. 2014 with the reset gate after the recurrent product,
as in cuDNN and Flax). This is the paper's "tied" parameterisation: one mask
per input and per state, shared by the gates of the fused weight matrices
``W = [W_i W_f W_g W_o]``, i.e. dropping rows of ``W`` and ``U``. The masks
are Bernoulli(1 − p)/(1 − p) (inverted dropout), drawn per example from the
``'dropout'`` rng, so different sequences and different MC samples get
different masks while one sequence keeps its mask through time. The final
hidden state is dropped with a mask of the same kind before the output head.

Naive dropout, a fresh mask at every step, is what this module does *not*
do: Gal & Ghahramani show it corrupts the recurrent signal and is not a
variational posterior. A test checks the masks are constant over time.

Models follow the :mod:`bdljax.nn.models` contract
``apply(params, x, rng=None, train=False)`` and come from
:func:`bdljax.nn.models.from_flax` with a ``rebuild(rate)``, so
``model.with_dropout(rate)`` gives MC dropout its variational RNN and every
other method (MAP, ensembles, MFVI, SG-MCMC) sees a plain parameter pytree.

Inputs are ``(B, T, D)`` sequences; ``(B, T)`` is a univariate series
(D = 1); ``(B, H, W, C)`` images are read row by row (T = H, D = W·C), as in
sequential ("row") MNIST. Heads: ``"last"`` maps the last hidden state to
``(B, output_dim)`` (classification logits, or ``[mean, raw scale]`` for a
one-step forecast); ``"sequence"`` maps every step to ``(B, T, output_dim)``.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bdljax.nn.models import Model, from_flax

CELLS = ("lstm", "gru")
HEADS = ("last", "sequence")
_GATES = {"lstm": 4, "gru": 3}


def as_sequences(x: jax.Array) -> jax.Array:
    """View a batch as ``(B, T, D)`` sequences.

    ``(B, T)`` → ``(B, T, 1)`` (a univariate series); ``(B, T, D)`` unchanged;
    ``(B, H, W, C)`` images → ``(B, H, W·C)``, read one row per time step.
    """
    if x.ndim == 2:
        return x[..., None]
    if x.ndim == 3:
        return x
    if x.ndim == 4:
        return x.reshape((x.shape[0], x.shape[1], x.shape[2] * x.shape[3]))
    raise ValueError(
        f"recurrent models take (B, T), (B, T, D) or (B, H, W, C) inputs, got shape {x.shape}; "
        "add a batch axis or reshape the data into sequences."
    )


def variational_mask(key: jax.Array, shape: Tuple[int, ...], rate: float, dtype=jnp.float32) -> jax.Array:
    """One inverted-dropout mask, entries 0 or 1/(1 − rate), each kept with probability 1 − rate.

    ``shape`` is ``(B, features)``: one mask per sequence, to be applied at
    every time step (Gal & Ghahramani 2016).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must lie in [0, 1), got {rate}")
    keep = 1.0 - rate
    return jax.random.bernoulli(key, keep, shape).astype(dtype) / keep


def lstm_step(params, carry, projected_input, recurrent_mask):
    """One LSTM step. ``projected_input = W (x_t ∘ m_x) + b``, ``(B, 4H)``; carry ``(c, h)``."""
    cell, hidden = carry
    h_in = hidden if recurrent_mask is None else hidden * recurrent_mask
    gates = projected_input + h_in @ params["recurrent_kernel"]
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    cell = nn.sigmoid(f) * cell + nn.sigmoid(i) * jnp.tanh(g)
    hidden = nn.sigmoid(o) * jnp.tanh(cell)
    return (cell, hidden), hidden


def gru_step(params, carry, projected_input, recurrent_mask):
    """One GRU step. ``projected_input = W (x_t ∘ m_x) + b``, ``(B, 3H)``; carry ``h``."""
    hidden = carry
    h_in = hidden if recurrent_mask is None else hidden * recurrent_mask
    x_r, x_z, x_n = jnp.split(projected_input, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(h_in @ params["recurrent_kernel"], 3, axis=-1)
    reset = nn.sigmoid(x_r + h_r)
    update = nn.sigmoid(x_z + h_z)
    candidate = jnp.tanh(x_n + reset * (h_n + params["recurrent_bias"]))
    hidden = (1.0 - update) * candidate + update * hidden
    return hidden, hidden


_STEPS = {"lstm": lstm_step, "gru": gru_step}


def recurrent_layer(cell: str, params, inputs: jax.Array, input_mask: Optional[jax.Array] = None,
                    recurrent_mask: Optional[jax.Array] = None) -> jax.Array:
    """Run one recurrent layer over ``inputs`` ``(B, T, D)``; returns every hidden state ``(B, T, H)``.

    ``input_mask`` ``(B, D)`` and ``recurrent_mask`` ``(B, H)`` (or ``None``)
    multiply the inputs and the previous state at *every* step: their shapes
    have no time axis, so one sequence cannot get two different masks.

    The input projection of all steps is one matrix product; only the
    recurrent product runs inside ``lax.scan`` over time.
    """
    if input_mask is not None:
        inputs = inputs * input_mask[:, None, :]
    projected = inputs @ params["input_kernel"] + params["bias"]  # (B, T, G·H)
    batch, width = inputs.shape[0], params["recurrent_kernel"].shape[0]
    zeros = jnp.zeros((batch, width), projected.dtype)
    carry = (zeros, zeros) if cell == "lstm" else zeros
    step = functools.partial(_STEPS[cell], params)
    _, hiddens = jax.lax.scan(lambda c, p: step(c, p, recurrent_mask), carry, jnp.swapaxes(projected, 0, 1))
    return jnp.swapaxes(hiddens, 0, 1)


def _lstm_bias_init(forget_bias: float):
    """Zero biases except the forget gate's, set to ``forget_bias`` (Jozefowicz et al. 2015)."""

    def init(key, shape, dtype=jnp.float32):
        del key
        width = shape[0] // 4
        return jnp.zeros(shape, dtype).at[width:2 * width].set(forget_bias)

    return init


class RecurrentLayer(nn.Module):
    """Parameters of one LSTM or GRU layer, with fused gate matrices.

    ``input_kernel`` ``(D, G·H)`` (LeCun normal), ``recurrent_kernel``
    ``(H, G·H)`` (orthogonal, Saxe et al. 2014), ``bias`` ``(G·H,)``; the GRU
    has the extra ``recurrent_bias`` ``(H,)`` inside its reset product.
    """

    cell: str
    width: int
    forget_bias: float = 1.0

    @nn.compact
    def __call__(self, inputs, input_mask=None, recurrent_mask=None):
        gates = _GATES[self.cell] * self.width
        params = {
            "input_kernel": self.param("input_kernel", nn.initializers.lecun_normal(), (inputs.shape[-1], gates)),
            "recurrent_kernel": self.param("recurrent_kernel", nn.initializers.orthogonal(), (self.width, gates)),
        }
        if self.cell == "lstm":
            params["bias"] = self.param("bias", _lstm_bias_init(self.forget_bias), (gates,))
        else:
            params["bias"] = self.param("bias", nn.initializers.zeros_init(), (gates,))
            params["recurrent_bias"] = self.param("recurrent_bias", nn.initializers.zeros_init(), (self.width,))
        return recurrent_layer(self.cell, params, inputs, input_mask, recurrent_mask)


class RecurrentNetwork(nn.Module):
    """Stacked LSTM/GRU layers and a dense head, with variational (time-tied) dropout.

    With ``train=True`` and ``dropout_rate > 0`` each layer draws, per
    example, an input mask (the first layer's only when ``dropout_input``)
    and a recurrent-state mask from the ``'dropout'`` rng, used at every
    step; the head's input gets one more mask (per example, shared over time
    for the ``"sequence"`` head). The masks are recorded with ``sow`` in the
    ``"intermediates"`` collection (``input_mask_<l>``, ``recurrent_mask_<l>``,
    ``output_mask``) so they can be inspected.
    """

    cell: str = "lstm"
    hidden: Sequence[int] = (128,)
    output_dim: int = 10
    head: str = "last"
    dropout_rate: float = 0.0
    dropout_input: bool = True
    forget_bias: float = 1.0

    def _mask(self, name, shape, active):
        if not active:
            return None
        mask = variational_mask(self.make_rng("dropout"), shape, self.dropout_rate)
        self.sow("intermediates", name, mask)
        return mask

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = as_sequences(x)
        batch = h.shape[0]
        dropout = train and self.dropout_rate > 0
        for layer, width in enumerate(self.hidden):
            input_mask = self._mask(f"input_mask_{layer}", (batch, h.shape[-1]),
                                    dropout and (layer > 0 or self.dropout_input))
            recurrent_mask = self._mask(f"recurrent_mask_{layer}", (batch, width), dropout)
            h = RecurrentLayer(self.cell, width, self.forget_bias, name=f"{self.cell}_{layer}")(h, input_mask, recurrent_mask)
        if self.head == "last":
            h = h[:, -1]
        output_mask = self._mask("output_mask", (batch, h.shape[-1]), dropout)
        if output_mask is not None:
            h = h * (output_mask if h.ndim == 2 else output_mask[:, None, :])
        return nn.Dense(self.output_dim, name="head")(h)


def rnn(cell: str, input_shape: Sequence[int], hidden: Sequence[int] = (128,), output_dim: int = 10,
        head: str = "last", dropout_rate: float = 0.0, dropout_input: bool = True,
        forget_bias: float = 1.0) -> Model:
    """A :class:`RecurrentNetwork` as a :class:`bdljax.nn.models.Model` for per-example ``input_shape``.

    Args:
      cell: ``"lstm"`` or ``"gru"``.
      input_shape: one example's shape: ``(T,)``, ``(T, D)`` or ``(H, W, C)``.
      hidden: widths of the stacked recurrent layers.
      output_dim: outputs of the dense head (classes, or 2 for a
        heteroscedastic Gaussian forecast).
      head: ``"last"`` (``(B, output_dim)``) or ``"sequence"`` (``(B, T, output_dim)``).
      dropout_rate: variational dropout rate p ∈ [0, 1); ``with_dropout(rate)``
        rebuilds the same architecture with another rate.
      dropout_input: also drop the first layer's inputs.
      forget_bias: initial LSTM forget-gate bias.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {CELLS}")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
    hidden = tuple(int(width) for width in hidden)
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must list at least one positive layer width, got {hidden}")
    if len(input_shape) not in (1, 2, 3):
        raise ValueError(f"input_shape must be (T,), (T, D) or (H, W, C) for one example, got {tuple(input_shape)}")

    def build(rate):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout_rate must lie in [0, 1), got {rate}")
        return RecurrentNetwork(cell, hidden, output_dim, head, float(rate), dropout_input, forget_bias)

    return from_flax(build(dropout_rate), jnp.zeros((1, *input_shape)), rebuild=build)


def lstm(input_shape: Sequence[int], hidden: Sequence[int] = (128,), output_dim: int = 10, **kwargs) -> Model:
    """An LSTM :class:`~bdljax.nn.models.Model` (Hochreiter & Schmidhuber 1997); see :func:`rnn`."""
    return rnn("lstm", input_shape, hidden, output_dim, **kwargs)


def gru(input_shape: Sequence[int], hidden: Sequence[int] = (128,), output_dim: int = 10, **kwargs) -> Model:
    """A GRU :class:`~bdljax.nn.models.Model` (Cho et al. 2014); see :func:`rnn`."""
    return rnn("gru", input_shape, hidden, output_dim, **kwargs)
