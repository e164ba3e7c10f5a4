"""The networks the neural agents fit: an MLP with one predicted reward per arm, and its variants.

* :func:`bandit_model`: context → (f_1(x), …, f_A(x)); :func:`mlp_features`
  reads its last hidden layer (NeuralLinear's representation).
* :func:`uniform_init_model`: Riquelme et al.'s initialisation (kernels U(−s, s)).
* :func:`learned_noise_model`: one more parameter ρ = log σ, the reward noise.
* :func:`randomized_prior_model`: a trainable network plus a fixed random
  prior network (Osband, Aslanides & Cassirer 2018).
* :func:`mcdropout_network` and :func:`per_arm_weight_sample`: MC dropout's
  network, and a dropout draw with an independent output mask per arm.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from bdljax.core.priors import Prior
from bdljax.nn import dropout, models

Params = Any

def bandit_model(context_dim: int, num_arms: int, hidden: Sequence[int] = (50,), activation: str = "relu",
                 dropout_rate: float = 0.0, dropout_input: bool = False) -> models.Model:
    """An MLP context → one predicted reward per arm.

    With dropout, masks sit after every hidden layer (Riquelme et al.'s Dropout agent) and, when
    ``dropout_input``, on the raw context too (Gal & Ghahramani's variational family: Bernoulli rows of
    every weight matrix, the first included).
    """
    if not hidden:
        raise ValueError("bandit_model needs at least one hidden layer (NeuralLinear regresses on the last one).")
    return models.mlp((context_dim,), hidden, num_arms, activation, dropout_rate, dropout_input=dropout_input)


def uniform_init_model(model: models.Model, scale: float) -> models.Model:
    """``model`` initialised as Riquelme et al.'s reference networks: every kernel U(−s, s), every bias 0.

    Their ``NeuralBanditModel`` draws weights from ``random_uniform_initializer(−0.3, 0.3)`` whatever the
    fan-in (biases start at TensorFlow's 0). On the wheel's 2-D contexts this is ~2.5x wider than a LeCun
    initialisation of the first layer, so freshly initialised ensemble members disagree more about arms
    and regions they have no data on (see :class:`experiments.bandits.settings.AgentSettings`).
    """
    if not scale > 0:
        raise ValueError(f"uniform_init_model: scale must be positive, got {scale}")

    def rebuild(net: models.Model) -> models.Model:
        def init(key):
            params = net.init(key)
            leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
            keys = jax.random.split(key, len(leaves))

            def draw(k, path, leaf):
                if getattr(path[-1], "key", None) == "kernel":
                    return jax.random.uniform(k, leaf.shape, leaf.dtype, -scale, scale)
                return jnp.zeros_like(leaf)

            return jax.tree.unflatten(treedef, [draw(k, path, leaf) for k, (path, leaf) in zip(keys, leaves)])

        with_dropout = None if net.with_dropout is None else (lambda rate: rebuild(net.with_dropout(rate)))
        return models.Model(init, net.apply, with_dropout)

    return rebuild(model)


def mlp_features(params: Params, x: jax.Array, num_hidden: int, activation: str = "relu") -> jax.Array:
    """The last hidden layer of a :func:`bandit_model` network (``Dense_0 … Dense_{L−1}``), ``(B, h)``.

    Dropout layers are off here (they are identities at prediction time), so
    this is the deterministic representation NeuralLinear regresses on.
    """
    act = models.get_activation(activation)
    layers = params["params"]
    h = x
    for i in range(num_hidden):
        h = act(h @ layers[f"Dense_{i}"]["kernel"] + layers[f"Dense_{i}"]["bias"])
    return h


LOG_NOISE = "log_noise"  # the leaf of a learned_noise_model's parameters that holds ρ = log σ


def learned_noise_model(model: models.Model, initial_scale: float = 1.0) -> models.Model:
    """``model`` with one extra learned parameter ρ = log σ, the reward noise's log standard deviation.

    Parameters ``{"net": θ, "log_noise": ρ}``, ρ initialised at log ``initial_scale``. ``apply`` is the
    network's (one predicted reward per arm; ρ plays no part in the prediction), so acting is unchanged;
    :func:`~experiments.bandits.log_posterior.bandit_log_posterior` with ``learned_noise=True`` reads ρ into
    the likelihood r ~ N(f_a(x; θ), e^{2ρ}). ρ is then fitted (greedy, ensembles, MC dropout, NeuralLinear's
    network), given a variational factor (MFVI) or sampled (SGLD, SGHMC) together with θ, under the agent's
    prior: the Gaussian prior of :func:`~experiments.bandits.registry.agent_prior` puts N(0, s²) on the scalar
    ρ (the bias rule of :func:`bdljax.core.priors.fan_in_scales`), i.e. a log-normal prior on σ with median 1
    (s = 1: σ within [0.14, 7.1] with 95 % prior probability); the flat prior puts none (maximum likelihood
    for σ).

    This is the homoscedastic learned noise of Riquelme et al.'s BBB with ``infer_noise_sigma`` (their
    NeuralLinear and LinTS learn it through the inverse-gamma instead,
    :class:`~experiments.bandits.linear.NIGPrior`).
    """
    if not initial_scale > 0:
        raise ValueError(f"learned_noise_model: initial_scale must be a positive standard deviation, got {initial_scale}")
    initial = math.log(initial_scale)

    def rebuild(net: models.Model) -> models.Model:
        def init(key):
            return {"net": net.init(key), LOG_NOISE: jnp.asarray(initial, jnp.float32)}

        def apply(params, x, rng=None, train=False):
            return net.apply(params["net"], x, rng=rng, train=train)

        with_dropout = None if net.with_dropout is None else (lambda rate: rebuild(net.with_dropout(rate)))
        return models.Model(init, apply, with_dropout)

    return rebuild(model)


def network_params(params: Params) -> Params:
    """The network's own parameters: ``params["net"]`` for a :func:`learned_noise_model`, else ``params``."""
    return params["net"] if isinstance(params, dict) and LOG_NOISE in params else params


def learned_noise_scale(params: Params) -> jax.Array:
    """σ = e^ρ of a :func:`learned_noise_model`'s parameters (or of a randomized-prior wrapper around one)."""
    if isinstance(params, dict) and LOG_NOISE in params:
        return jnp.exp(params[LOG_NOISE])
    if isinstance(params, dict) and "net" in params:
        return learned_noise_scale(params["net"])
    raise ValueError("learned_noise_scale: these parameters have no 'log_noise' leaf; build the model with "
                     "learned_noise_model.")


def randomized_prior_model(model: models.Model, scale: float) -> models.Model:
    """f(x; θ) + β p(x; φ): a trainable network plus a fixed random "prior function" of the same architecture.

    Osband, Aslanides & Cassirer (2018), "Randomized Prior Functions for Deep
    Reinforcement Learning": an ensemble member fitted this way is, for a
    linear-Gaussian model, an exact posterior draw; for networks it keeps the
    members apart where there are no data, which plain ensembles do not. The
    parameters are ``{"net": θ, "prior_function": φ}``; φ is drawn by
    ``model.init`` and never trained (``stop_gradient`` here, and
    :func:`trainable_prior` puts no prior on it, so its gradient is exactly 0).
    """

    def init(key):
        net_key, prior_key = jax.random.split(key)
        return {"net": model.init(net_key), "prior_function": model.init(prior_key)}

    def apply(params, x, rng=None, train=False):
        prior_output = jax.lax.stop_gradient(model.apply(params["prior_function"], x))
        return model.apply(params["net"], x, rng=rng, train=train) + scale * prior_output

    return models.Model(init, apply)


def trainable_prior(prior: Prior) -> Prior:
    """``prior`` on the ``"net"`` part of :func:`randomized_prior_model` parameters only."""
    return Prior(f"{prior.name}(net)", lambda params: prior.log_prob(params["net"]), None, None)


def mcdropout_network(model: models.Model, dropout_rate: float, context_dim: int):
    """``(dropout network, its bdljax.nn.dropout.DropoutStructure)`` of the MC dropout agent built on ``model``."""
    dropout_net = dropout.dropout_model(model, dropout_rate)
    example = jnp.zeros((2, context_dim))
    return dropout_net, dropout.dropout_structure(dropout_net.apply, dropout_net.init(jax.random.key(0)), example)


DROPOUT_MASKS = ("shared", "per_arm")


def per_arm_weight_sample(params: Params, key: jax.Array, structure, num_arms: int) -> Params:
    """One MC dropout draw with an independent mask of the output layer's inputs for every arm.

    ``bdljax.nn.dropout.weight_sample`` folds one mask m of the last hidden layer into the rows of the output
    kernel K (D × A): W = diag(m)·K, so all A arm values move with the same mask. Here the output kernel gets
    an independent Bernoulli(1 − p)/(1 − p) entry per (unit, arm), W = M ∘ K (DropConnect on the output
    layer, Wan et al. 2013); every earlier layer keeps its shared mask.

    The bandit's likelihood only ever evaluates the played arm's output, so for every observation the two
    families give the same distribution of the fitted quantity: the expected log-likelihood of the dropout
    objective, hence the trained network, is the same for both. Each arm's sampled value has the same marginal
    distribution under both; they differ only in the correlation between arms, which the data never inform.
    With the shared mask the decision depends on f_q − f_s, whose spread is p/(1 − p)·Σ_j (K_jq − K_js)² h_j²,
    small when two arms were fitted to similar rewards from the same features; with per-arm masks the arms'
    draws are independent given the weights. (On the wheel this doubles that spread but does not make MC dropout
    explore: each arm's own spread collapses, ``scripts/mcdropout_spread.py`` and RESULTS.md, session 6.)
    """
    if structure.form != "weight_sample" or not structure.folded:
        raise ValueError("per-arm masks need an MLP whose dropout feeds Dense layers (the 'weight_sample' form of "
                         f"bdljax.nn.dropout.dropout_structure); this network's form is {structure.form!r}")
    leaf_index, dropout_index = structure.folded[-1]
    kernel = jax.tree.leaves(params)[leaf_index]
    if kernel.ndim != 2 or kernel.shape[-1] != num_arms:
        raise ValueError(f"per-arm masks need the last dropout to feed the output kernel (D, {num_arms}); "
                         f"it feeds a kernel of shape {kernel.shape}")
    masks = dropout.dropout_masks(key, structure)
    # Every earlier layer as usual; the output kernel's rows are left to the per-arm mask below.
    folded = dropout.fold_masks(params, masks, structure._replace(folded=structure.folded[:-1]))
    rate = structure.rates[dropout_index]
    keep = jax.random.bernoulli(jax.random.fold_in(key, len(masks)), 1.0 - rate, kernel.shape)
    leaves, treedef = jax.tree.flatten(folded)
    leaves[leaf_index] = kernel * (keep.astype(kernel.dtype) / (1.0 - rate))
    return jax.tree.unflatten(treedef, leaves)
