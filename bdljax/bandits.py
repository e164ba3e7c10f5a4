"""Contextual bandits solved by Thompson sampling with bdljax posteriors.

Riquelme, Tucker & Snoek (2018), "Deep Bayesian Bandits Showdown: An
Empirical Comparison of Bayesian Deep Networks for Thompson Sampling" (ICLR).

At step t an agent sees a context x_t, draws *one* sample θ̃_t from its
current posterior p(θ | D_{t−1}), plays

    a_t = argmax_a  f_a(x_t; θ̃_t),

observes the reward r_t of that arm only, and appends (x_t, a_t, r_t) to its
data D_t (Thompson 1933). Neural agents retrain on all of D_t every k steps
(a fixed number of minibatch steps, warm-started from the previous state);
the linear posteriors are updated exactly after every step. The measure is
the cumulative (pseudo-)regret Σ_t [max_a E r(x_t, a) − E r(x_t, a_t)].

The module has four parts.

* **Environments** as pure JAX functions: :func:`wheel_bandit` (the wheel of
  Riquelme et al. §4) and :func:`mushroom_bandit` (Blundell et al. 2015).
  ``bandit.sample(tables, key, horizon)`` draws a whole
  :class:`BanditData` (contexts, every arm's reward, expected rewards) up
  front, as the reference implementation does.
* **Bayesian linear regression** with the Normal–Inverse-Gamma prior of
  Riquelme et al. (their ``LinearFullPosteriorSampling``): exact sufficient
  statistics per arm (:class:`LinearStats`), the closed-form posterior
  (:func:`nig_posterior`) and one joint draw of (σ², β) per arm
  (:func:`nig_sample`). Used by linear Thompson sampling on the raw context
  and by NeuralLinear on the network's last hidden layer.
* **Agents** (:class:`Agent`): ``init``, ``act`` (one Thompson draw),
  ``observe`` (after every step) and ``retrain`` (every k steps).
  :func:`transform_agent` turns *any* :class:`~bdljax.core.transform.Transform`
  (MAP, MFVI, MC dropout, ensembles, SGLD, SGHMC, ...) into an agent: the
  network has one output per arm, and its log posterior is the shared
  :class:`~bdljax.core.posterior.LogPosterior` of the rewards of the arms that
  were played (:func:`bandit_log_posterior`). :func:`make_agent` builds every
  agent of :data:`AGENTS` by name from shared :class:`AgentSettings`.
* **The run as one compiled program** (:func:`simulate`): a fixed-capacity
  buffer (capacity = horizon; entries at or past the step count are masked),
  an outer ``lax.scan`` over blocks of k steps whose body retrains (a
  ``lax.cond`` on the block index, which is the same for every seed so the
  branch stays a real branch under ``vmap``) and then scans k acting steps;
  the whole run is ``vmap``-ed over seeds and jitted once per configuration.
  :func:`simulate_python_loop` runs the same pieces step by step from Python,
  the baseline it is benchmarked against (``scripts/bench_bandits.py``).

A growing data set and the static ``num_data``: the shared log posterior
scales a minibatch B by N/|B| with N static. A bandit's data set grows, so
the log posterior is built with N = capacity and every observation carries a
weight n_t/capacity (times its bootstrap inclusion, :func:`transform_agent`) inside the
target array, which :func:`observed_reward_likelihood` multiplies into the
per-example log-likelihood: the estimate is then (n_t/|B|) Σ_B w_i log p(r_i |
x_i, a_i, θ), unbiased for the log-likelihood of the n_t points seen so far
when B is drawn uniformly from them. The prior is counted once, unscaled.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.nn import models

from bdljax.nn import dropout
from bdljax.core import posterior
from bdljax.core.likelihoods import LOG_2PI, Likelihood
from bdljax.core.priors import Prior
from bdljax.core.transform import Transform

Params = Any
State = Any


# =============================================================================
# Environments
# =============================================================================


class BanditData(NamedTuple):
    """One bandit episode drawn up front.

    Attributes:
      contexts: ``(T, d)`` the context of every step.
      rewards: ``(T, A)`` the reward every arm *would* pay at that step; an
        agent only sees the entry of the arm it plays.
      expected_rewards: ``(T, A)`` E[r | x_t, a], for the regret.
    """

    contexts: jax.Array
    rewards: jax.Array
    expected_rewards: jax.Array


class Bandit(NamedTuple):
    """A contextual bandit as pure functions.

    Attributes:
      name: for logs.
      num_arms: A.
      context_dim: d.
      sample: ``sample(tables, key, horizon) -> BanditData``, pure and jittable.
      tables: the arrays ``sample`` reads (the mushroom table, the wheel's δ).
        They are arguments of the compiled run, not constants in it, so a new
        δ or data table does not recompile.
    """

    name: str
    num_arms: int
    context_dim: int
    sample: Callable[[Any, jax.Array, int], BanditData]
    tables: Any


# ----------------------------------------------------------------------------- wheel

WHEEL_MEANS = (1.0, 1.0, 1.0, 1.0, 1.2)  # arm 4 is the safe arm
WHEEL_LARGE_MEAN = 50.0
WHEEL_STD = 0.01
WHEEL_LARGE_STD = 0.01
WHEEL_SAFE_ARM = 4
WHEEL_DELTAS = (0.5, 0.7, 0.9, 0.95, 0.99)


def wheel_contexts(key: jax.Array, num: int) -> jax.Array:
    """``num`` contexts uniform on the unit disc, ``(num, 2)``.

    Radius √U and angle 2πV (U, V uniform) give the uniform density on the
    disc exactly, with no rejection, so the shape is static.
    """
    radius_key, angle_key = jax.random.split(key)
    radius = jnp.sqrt(jax.random.uniform(radius_key, (num,)))
    angle = 2.0 * jnp.pi * jax.random.uniform(angle_key, (num,))
    return jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)


def wheel_quadrant_arm(contexts: jax.Array) -> jax.Array:
    """The arm that owns the quadrant of each context, ``(n,)`` int32.

    As in Riquelme et al.'s reference code: x₀ > 0, x₁ > 0 → 0; x₀ > 0, x₁ ≤ 0
    → 1; x₀ ≤ 0, x₁ > 0 → 2; x₀ ≤ 0, x₁ ≤ 0 → 3.
    """
    right, up = contexts[..., 0] > 0, contexts[..., 1] > 0
    return jnp.where(right, jnp.where(up, 0, 1), jnp.where(up, 2, 3)).astype(jnp.int32)


def wheel_outside(contexts: jax.Array, delta) -> jax.Array:
    """‖x‖ > δ: the context lies in the outer ring, where its quadrant's arm pays the large reward."""
    return jnp.linalg.norm(contexts, axis=-1) > delta


def wheel_expected_rewards(contexts: jax.Array, delta) -> jax.Array:
    """E[r | x, a], ``(n, 5)``: μ = (1, 1, 1, 1, 1.2); in the outer ring (‖x‖ > δ) the
    quadrant's arm pays 50 instead."""
    large = jax.nn.one_hot(wheel_quadrant_arm(contexts), 5, dtype=bool) & wheel_outside(contexts, delta)[..., None]
    return jnp.where(large, WHEEL_LARGE_MEAN, jnp.asarray(WHEEL_MEANS, jnp.float32))


def wheel_rewards(key: jax.Array, contexts: jax.Array, delta) -> jax.Array:
    """Sampled rewards of every arm, ``(n, 5)``: N(μ_a, 0.01²), the quadrant arm N(50, 0.01²) outside δ."""
    large = jax.nn.one_hot(wheel_quadrant_arm(contexts), 5, dtype=bool) & wheel_outside(contexts, delta)[..., None]
    std = jnp.where(large, WHEEL_LARGE_STD, WHEEL_STD)
    return wheel_expected_rewards(contexts, delta) + std * jax.random.normal(key, large.shape)


def wheel_optimal_arm(contexts: jax.Array, delta) -> jax.Array:
    """The optimal arm: the quadrant's arm outside δ, the safe arm 4 inside."""
    return jnp.where(wheel_outside(contexts, delta), wheel_quadrant_arm(contexts), WHEEL_SAFE_ARM).astype(jnp.int32)


def _sample_wheel(tables, key, horizon: int) -> BanditData:
    context_key, reward_key = jax.random.split(key)
    contexts = wheel_contexts(context_key, horizon)
    delta = tables["delta"]
    return BanditData(contexts, wheel_rewards(reward_key, contexts, delta), wheel_expected_rewards(contexts, delta))


def wheel_bandit(delta: float) -> Bandit:
    """The wheel bandit (Riquelme et al. 2018, §4) with exploration parameter δ ∈ (0, 1).

    Contexts uniform on the unit disc; 5 arms. Inside radius δ arm a pays
    N(μ_a, 0.01²) with μ = (1, 1, 1, 1, 1.2), so the safe arm 4 is optimal;
    outside, the arm of x's quadrant pays N(50, 0.01²). The outer ring has
    probability 1 − δ², so a large δ hides the big rewards and punishes
    agents that stop exploring.
    """
    if not 0.0 < float(delta) < 1.0:
        raise ValueError(f"wheel bandit: delta must lie in (0, 1), got {delta}; the paper uses {WHEEL_DELTAS}.")
    return Bandit(f"wheel(delta={float(delta)})", 5, 2, _sample_wheel, {"delta": jnp.asarray(delta, jnp.float32)})


# ----------------------------------------------------------------------------- mushroom

MUSHROOM_LEAVE, MUSHROOM_EAT = 0, 1
MUSHROOM_REWARD_LEAVE = 0.0
MUSHROOM_REWARD_EDIBLE = 5.0
MUSHROOM_REWARD_POISON_GOOD = 5.0
MUSHROOM_REWARD_POISON_BAD = -35.0
MUSHROOM_PROB_POISON_BAD = 0.5


def mushroom_expected_rewards(edible: jax.Array) -> jax.Array:
    """E[r | mushroom, a], ``(n, 2)``: leaving pays 0; eating pays 5 if edible, else
    ½·5 + ½·(−35) = −15."""
    bad = MUSHROOM_PROB_POISON_BAD
    poison = bad * MUSHROOM_REWARD_POISON_BAD + (1 - bad) * MUSHROOM_REWARD_POISON_GOOD
    eat = jnp.where(edible, MUSHROOM_REWARD_EDIBLE, poison)
    return jnp.stack([jnp.full_like(eat, MUSHROOM_REWARD_LEAVE), eat], axis=-1)


def mushroom_rewards(key: jax.Array, edible: jax.Array) -> jax.Array:
    """Sampled rewards, ``(n, 2)``: leave → 0; eat → +5 if edible, else +5 or −35 with probability ½ each."""
    bad = jax.random.bernoulli(key, MUSHROOM_PROB_POISON_BAD, edible.shape)
    poison = jnp.where(bad, MUSHROOM_REWARD_POISON_BAD, MUSHROOM_REWARD_POISON_GOOD)
    eat = jnp.where(edible, MUSHROOM_REWARD_EDIBLE, poison)
    return jnp.stack([jnp.full_like(eat, MUSHROOM_REWARD_LEAVE), eat], axis=-1)


def _sample_mushroom(tables, key, horizon: int) -> BanditData:
    index_key, reward_key = jax.random.split(key)
    # Mushrooms are drawn with replacement, as in Riquelme et al.'s sample_mushroom_data.
    index = jax.random.randint(index_key, (horizon,), 0, tables["contexts"].shape[0])
    edible = tables["edible"][index]
    return BanditData(tables["contexts"][index], mushroom_rewards(reward_key, edible), mushroom_expected_rewards(edible))


def mushroom_bandit(contexts, edible) -> Bandit:
    """The mushroom bandit (Blundell et al. 2015; Riquelme et al. 2018): eat (arm 1) or leave (arm 0).

    Args:
      contexts: ``(N, F)`` one-hot features (:func:`bdljax.data.load_mushroom`).
      edible: ``(N,)`` bool.
    """
    contexts, edible = np.asarray(contexts, np.float32), np.asarray(edible)
    if contexts.ndim != 2 or edible.shape != (contexts.shape[0],):
        raise ValueError(f"mushroom bandit: need contexts (N, F) and edible (N,), got {contexts.shape} and {edible.shape}.")
    if edible.dtype != bool:
        raise ValueError(f"mushroom bandit: edible must be a bool array, got dtype {edible.dtype}.")
    if not np.all(np.isfinite(contexts)):
        raise ValueError("mushroom bandit: contexts contain NaN/inf.")
    return Bandit("mushroom", 2, contexts.shape[1], _sample_mushroom,
                  {"contexts": jnp.asarray(contexts), "edible": jnp.asarray(edible)})


# =============================================================================
# Bayesian linear regression (Normal–Inverse-Gamma), one model per arm
# =============================================================================


class NIGPrior(NamedTuple):
    """σ² ~ InvGamma(a₀, b₀), β | σ² ~ N(0, (σ²/λ) I): Riquelme et al.'s defaults a₀ = b₀ = 6, λ = 0.25."""

    a0: float = 6.0
    b0: float = 6.0
    precision: float = 0.25


def check_nig_prior(prior: NIGPrior) -> None:
    """a₀, b₀ and λ must be positive and finite: a NaN posterior would make argmax play arm 0 forever."""
    for name, value in prior._asdict().items():
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"NIGPrior.{name} must be positive and finite, got {value}")


class LinearStats(NamedTuple):
    """Sufficient statistics of each arm's data, ``(A, ...)``: Σφφᵀ, Σφr, Σr², n."""

    gram: jax.Array  # (A, p, p)
    moment: jax.Array  # (A, p)
    sum_sq: jax.Array  # (A,)
    count: jax.Array  # (A,)


class NIGPosterior(NamedTuple):
    """The Normal–Inverse-Gamma posterior of each arm, ``(A, ...)``."""

    mean: jax.Array  # μ_n (A, p)
    precision_cholesky: jax.Array  # L with L Lᵀ = Λ_n (A, p, p)
    a: jax.Array  # a_n (A,)
    b: jax.Array  # b_n (A,)


def linear_stats_init(num_arms: int, dim: int) -> LinearStats:
    """Statistics of no data."""
    return LinearStats(jnp.zeros((num_arms, dim, dim)), jnp.zeros((num_arms, dim)), jnp.zeros(num_arms), jnp.zeros(num_arms))


def linear_stats_add(stats: LinearStats, arm: jax.Array, phi: jax.Array, reward: jax.Array) -> LinearStats:
    """Add one observation (features ``phi (p,)``, ``reward``) to arm ``arm``: a rank-one update."""
    one_hot = jax.nn.one_hot(arm, stats.count.shape[0], dtype=stats.gram.dtype)
    return LinearStats(
        stats.gram + one_hot[:, None, None] * jnp.outer(phi, phi),
        stats.moment + one_hot[:, None] * (reward * phi),
        stats.sum_sq + one_hot * jnp.square(reward),
        stats.count + one_hot,
    )


def linear_stats_from_data(features: jax.Array, actions: jax.Array, rewards: jax.Array, mask: jax.Array,
                           num_arms: int) -> LinearStats:
    """Statistics of the rows of ``features (T, p)`` where ``mask`` holds, split by ``actions``."""
    weights = jax.nn.one_hot(actions, num_arms, dtype=features.dtype) * mask[:, None]  # (T, A)
    return LinearStats(
        jnp.einsum("ta,ti,tj->aij", weights, features, features),
        jnp.einsum("ta,ti,t->ai", weights, features, rewards),
        jnp.einsum("ta,t->a", weights, jnp.square(rewards)),
        jnp.sum(weights, axis=0),
    )


def nig_posterior(stats: LinearStats, prior: NIGPrior) -> NIGPosterior:
    """Closed-form posterior of each arm's Bayesian linear regression r = φᵀβ + ε, ε ~ N(0, σ²):

        Λ_n = Σφφᵀ + λI,   μ_n = Λ_n⁻¹ Σφr,
        a_n = a₀ + n/2,    b_n = b₀ + ½ (Σr² − μ_nᵀ Λ_n μ_n),

    so that β | σ², D ~ N(μ_n, σ² Λ_n⁻¹) and σ² | D ~ InvGamma(a_n, b_n)
    (Riquelme et al. 2018, eqs. 1–2). Σr² − μ_nᵀΛ_nμ_n = min_β ‖r − Φβ‖² + λ‖β‖²
    is non-negative; it is clipped at 0 against float32 cancellation.
    """
    dim = stats.gram.shape[-1]
    precision = stats.gram + prior.precision * jnp.eye(dim, dtype=stats.gram.dtype)
    cholesky = jnp.linalg.cholesky(precision)
    mean = jax.vmap(lambda c, m: jax.scipy.linalg.cho_solve((c, True), m))(cholesky, stats.moment)
    residual = jnp.maximum(stats.sum_sq - jnp.sum(mean * stats.moment, axis=-1), 0.0)
    return NIGPosterior(mean, cholesky, prior.a0 + 0.5 * stats.count, prior.b0 + 0.5 * residual)


def nig_sample(key: jax.Array, post: NIGPosterior):
    """One joint draw per arm: σ² ~ InvGamma(a_n, b_n), then β ~ N(μ_n, σ² Λ_n⁻¹). Returns ``(β (A, p), σ² (A,))``.

    With Λ_n = L Lᵀ, β = μ_n + σ L⁻ᵀ z has covariance σ² L⁻ᵀL⁻¹ = σ² Λ_n⁻¹.
    """
    gamma_key, normal_key = jax.random.split(key)
    variance = post.b / jax.random.gamma(gamma_key, post.a)
    noise = jax.random.normal(normal_key, post.mean.shape)
    solve = jax.vmap(lambda c, z: jax.scipy.linalg.solve_triangular(c, z, lower=True, trans="T"))
    whitened = solve(post.precision_cholesky, noise)  # L⁻ᵀ z
    return post.mean + jnp.sqrt(variance)[:, None] * whitened, variance


def with_intercept(x: jax.Array) -> jax.Array:
    """Append a constant feature 1 (the regression's bias)."""
    return jnp.concatenate([x, jnp.ones((*x.shape[:-1], 1), x.dtype)], axis=-1)


# =============================================================================
# Agents
# =============================================================================


class Buffer(NamedTuple):
    """Everything observed, in fixed-size arrays of capacity T (the horizon).

    Rows at or past the step count n are not observed yet and are masked out
    by everything that reads the buffer. Contexts are the episode's contexts
    (all known in advance to the environment, revealed one per step); only
    actions and rewards depend on the agent.
    """

    contexts: jax.Array  # (T, d)
    actions: jax.Array  # (T,) int32
    rewards: jax.Array  # (T,)


class Agent(NamedTuple):
    """A Thompson-sampling agent as pure functions (its state is a pytree, so seeds vmap).

    Attributes:
      name: for logs.
      init: ``init(key) -> state``.
      act: ``act(state, context (d,), key) -> arm`` (int32 scalar): one
        posterior draw, then the arm it values most.
      observe: ``observe(state, index, context, action, reward, key) -> state``,
        after every step (exact linear updates, bootstrap inclusion draws).
      retrain: ``retrain(state, buffer, num_filled, key) -> state``, every k
        steps, on the first ``num_filled`` rows of the buffer.
      capacity: the horizon its per-observation tables and log posterior were
        built for (``None``: any horizon); a run of another length is refused.
      skipped_steps: ``skipped_steps(state) -> int32``, the training steps
        skipped so far because the loss or gradient was not finite (``None``:
        the agent does not train by gradient). Runs report it per seed.
    """

    name: str
    init: Callable[[jax.Array], State]
    act: Callable[[State, jax.Array, jax.Array], jax.Array]
    observe: Callable[..., State]
    retrain: Callable[[State, Buffer, jax.Array, jax.Array], State]
    capacity: Optional[int] = None
    skipped_steps: Optional[Callable[[State], jax.Array]] = None


def _method_skipped_steps(state) -> jax.Array:
    """The skipped non-finite steps of an agent state's transform (``state.method``), summed over members or
    chains (0 if it keeps no count)."""
    count = getattr(state.method, "num_nonfinite", None)
    return jnp.zeros((), jnp.int32) if count is None else jnp.sum(count).astype(jnp.int32)


def _observe_nothing(state, index, context, action, reward, key):
    del index, context, action, reward, key
    return state


def _retrain_nothing(state, buffer, num_filled, key):
    del buffer, num_filled, key
    return state


def uniform_agent(num_arms: int) -> Agent:
    """Plays an arm uniformly at random (its expected regret, computed exactly per episode, is the
    normaliser of :func:`normalised_regret`; this agent's own regret scatters around 100)."""

    def init(key):
        del key
        return jnp.zeros(())

    def act(state, context, key):
        del state, context
        return jax.random.randint(key, (), 0, num_arms, dtype=jnp.int32)

    return Agent("uniform", init, act, _observe_nothing, _retrain_nothing)


def _thompson_linear_values(key, stats: LinearStats, prior: NIGPrior, phi: jax.Array) -> jax.Array:
    beta, _ = nig_sample(key, nig_posterior(stats, prior))
    return beta @ phi


def linear_thompson_agent(num_arms: int, context_dim: int, prior: NIGPrior = NIGPrior(), name: str = "lints") -> Agent:
    """Linear Thompson sampling with the exact NIG posterior per arm on φ(x) = [x, 1]
    (Riquelme et al.'s ``LinFullPost``). Updated exactly after every step."""
    check_nig_prior(prior)

    def init(key):
        del key
        return linear_stats_init(num_arms, context_dim + 1)

    def act(stats, context, key):
        return jnp.argmax(_thompson_linear_values(key, stats, prior, with_intercept(context))).astype(jnp.int32)

    def observe(stats, index, context, action, reward, key):
        del index, key
        return linear_stats_add(stats, action, with_intercept(context), reward)

    return Agent(name, init, act, observe, _retrain_nothing)


# ----------------------------------------------------------------------------- neural agents


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
    and regions they have no data on (see :class:`AgentSettings`).
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


def bandit_optimizer(name: str, learning_rate: float, *, train_steps: int, lr_decay: float = 0.0,
                     max_grad_norm: Optional[float] = None):
    """The optimiser of the neural agents' retrainings.

    ``lr_decay`` > 0 gives Riquelme et al.'s inverse-time decay restarted at every retraining,
    η_s = η₀ / (1 + lr_decay · s) with s the step *within* the current retraining (their ``reset_lr``):
    every retraining runs exactly ``train_steps`` updates, so s = count mod train_steps. Their networks
    use RMSProp, η₀ = 0.1, decay 0.5 and global-norm clipping at 5.
    """
    import optax

    if name not in ("adam", "rmsprop"):
        raise ValueError(f"bandit optimizer must be 'adam' or 'rmsprop', got {name!r}")
    if not learning_rate > 0 or lr_decay < 0:
        raise ValueError(f"need learning_rate > 0 and lr_decay >= 0, got {learning_rate} and {lr_decay}")
    _check_training(train_steps)
    if max_grad_norm is not None and not max_grad_norm > 0:
        # 0 would zero every update and a negative norm would turn descent into ascent.
        raise ValueError(f"max_grad_norm must be positive (or None for no clipping), got {max_grad_norm}")
    schedule = learning_rate
    if lr_decay:
        schedule = lambda count: learning_rate / (1.0 + lr_decay * (count % train_steps))  # noqa: E731
    optimizer = optax.adam(schedule) if name == "adam" else optax.rmsprop(schedule)
    if max_grad_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(max_grad_norm), optimizer)
    return optimizer


def _check_training(train_steps: int, batch_size: int = 1) -> None:
    from bdljax.run.training import check_count

    check_count("train_steps", train_steps)
    check_count("batch_size", batch_size)


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


def observed_reward_likelihood(noise_scale: float) -> Likelihood:
    """Gaussian on the played arm's reward, r ~ N(f_a(x; θ), σ²), with a per-observation weight.

    Targets are ``y = [reward, weight]`` of shape ``(B, 2)``; the weight
    multiplies the log-density (see the module docstring: it carries the
    growing data-set size n_t/capacity and the bootstrap inclusion).
    """
    if not noise_scale > 0:
        raise ValueError(f"observed_reward_likelihood: noise_scale must be positive, got {noise_scale}")

    def log_prob(output, y):
        reward, weight = y[..., 0], y[..., 1]
        return weight * (-0.5 * jnp.square((reward - output) / noise_scale) - math.log(noise_scale) - 0.5 * LOG_2PI)

    def check_targets(y, output_shape):
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[1] != 2 or not np.all(np.isfinite(y)):
            raise ValueError(f"bandit likelihood: targets must be finite [reward, weight] rows (B, 2), got shape {y.shape}.")

    def mean_and_scale(output):
        return output, jnp.full_like(output, noise_scale)

    return Likelihood("bandit_gaussian", "regression", log_prob, check_targets, mean_and_scale)


LOG_NOISE = "log_noise"  # the leaf of a learned_noise_model's parameters that holds ρ = log σ


def learned_noise_model(model: models.Model, initial_scale: float = 1.0) -> models.Model:
    """``model`` with one extra learned parameter ρ = log σ, the reward noise's log standard deviation.

    Parameters ``{"net": θ, "log_noise": ρ}``, ρ initialised at log ``initial_scale``. ``apply`` is the
    network's (one predicted reward per arm; ρ plays no part in the prediction), so acting is unchanged;
    :func:`bandit_log_posterior` with ``learned_noise=True`` reads ρ into the likelihood
    r ~ N(f_a(x; θ), e^{2ρ}). ρ is then fitted (greedy, ensembles, MC dropout, NeuralLinear's network),
    given a variational factor (MFVI) or sampled (SGLD, SGHMC) together with θ, under the agent's prior:
    the Gaussian prior of :func:`agent_prior` puts N(0, s²) on the scalar ρ (the bias rule of
    :func:`bdljax.core.priors.fan_in_scales`), i.e. a log-normal prior on σ with median 1 (s = 1: σ within
    [0.14, 7.1] with 95 % prior probability); the flat prior puts none (maximum likelihood for σ).

    This is the homoscedastic learned noise of Riquelme et al.'s BBB with ``infer_noise_sigma`` (their
    NeuralLinear and LinTS learn it through the inverse-gamma instead, :class:`NIGPrior`).
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


def observed_reward_likelihood_learned(noise_multiplier: float = 1.0) -> Likelihood:
    """Gaussian on the played arm's reward with a learned σ: r ~ N(f_a(x; θ), (c·e^ρ)²), weighted.

    The output is ``(B, 2)`` rows ``[f_a(x; θ), ρ]`` (:func:`bandit_log_posterior` with
    ``learned_noise=True`` builds them); targets ``[reward, weight]`` as in
    :func:`observed_reward_likelihood`. The weight multiplies the whole log-density, −log σ included, so
    ρ sees the data count n_t. ``noise_multiplier`` c is ``sgmcmc_scale``'s tempering (1 otherwise).
    """
    if not noise_multiplier > 0:
        raise ValueError(f"observed_reward_likelihood_learned: noise_multiplier must be positive, got {noise_multiplier}")
    log_c = math.log(noise_multiplier)

    def log_prob(output, y):
        reward, weight = y[..., 0], y[..., 1]
        mean, log_scale = output[..., 0], output[..., 1] + log_c
        return weight * (-0.5 * jnp.square((reward - mean) * jnp.exp(-log_scale)) - log_scale - 0.5 * LOG_2PI)

    def check_targets(y, output_shape):
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[1] != 2 or not np.all(np.isfinite(y)):
            raise ValueError(f"bandit likelihood: targets must be finite [reward, weight] rows (B, 2), got shape {y.shape}.")

    def mean_and_scale(output):
        return output[..., 0], noise_multiplier * jnp.exp(output[..., 1])

    return Likelihood("bandit_gaussian_learned_noise", "regression", log_prob, check_targets, mean_and_scale)


def played_arm_apply(apply: models.Apply, context_dim: int) -> models.Apply:
    """The network's prediction for the arm that was played.

    Inputs are ``[context, one_hot(arm)]`` rows, ``(B, d + A)``, so that the
    log posterior's batch stays the usual ``(x, y)`` pair.
    """

    def apply_played(params, x, rng=None, train=False):
        contexts, played = x[:, :context_dim], x[:, context_dim:]
        return jnp.sum(apply(params, contexts, rng=rng, train=train) * played, axis=-1)

    return apply_played


def bandit_log_posterior(model: models.Model, context_dim: int, noise_scale: float, prior: Prior,
                         capacity: int, temperature: float = 1.0, learned_noise: bool = False) -> posterior.LogPosterior:
    """The shared log posterior of a bandit network on up to ``capacity`` observations.

    log p(θ | D_t) = log p(θ) + Σ_{i ≤ n_t} log N(r_i | f_{a_i}(x_i; θ), σ²) + const,
    with N = capacity and the n_t/capacity weights in the targets (module docstring).

    ``learned_noise``: ``model`` is a :func:`learned_noise_model` (possibly inside
    :func:`randomized_prior_model`) and σ = ``noise_scale``·e^ρ with ρ one of the parameters, so the log
    posterior is over (θ, ρ); ``noise_scale`` is then a fixed multiplier (``sgmcmc_scale``'s tempering, or 1).
    """
    if not learned_noise:
        return posterior.log_posterior(played_arm_apply(model.apply, context_dim),
                                       observed_reward_likelihood(noise_scale), prior, capacity, temperature)
    played = played_arm_apply(model.apply, context_dim)

    def apply_with_noise(params, x, rng=None, train=False):
        mean = played(params, x, rng=rng, train=train)
        return jnp.stack([mean, jnp.broadcast_to(jnp.log(learned_noise_scale(params)), mean.shape)], axis=-1)

    return posterior.log_posterior(apply_with_noise, observed_reward_likelihood_learned(noise_scale), prior, capacity,
                                   temperature)


class TransformAgentState(NamedTuple):
    method: State  # the transform's state
    inclusion: Optional[jax.Array]  # (T, K) bootstrap inclusion of every observation per member; None without bootstrap
    perturbation: Optional[jax.Array] = None  # (T, K) each member's N(0, s²) noise on every reward; None without


def _streams(method: Transform) -> int:
    return max(method.batch_streams, 1)


def _train_on_buffer(method: Transform, method_state, inclusion, buffer: Buffer, num_filled, key, *,
                     num_arms: int, capacity: int, batch_size: int, train_steps: int, perturbation=None):
    """``train_steps`` updates of ``method`` on minibatches drawn uniformly (with replacement) from the
    first ``num_filled`` buffer rows; one batch per member for multi-stream methods. ``perturbation (T, K)``
    is added to member k's copy of each reward."""
    streams = method.batch_streams
    shape = (streams, batch_size) if streams else (batch_size,)
    scale = num_filled.astype(jnp.float32) / capacity  # n_t / N: see the module docstring

    def step(state, step_key):
        index_key, update_key = jax.random.split(step_key)
        index = jax.random.randint(index_key, shape, 0, num_filled)
        x = jnp.concatenate([buffer.contexts[index], jax.nn.one_hot(buffer.actions[index], num_arms)], axis=-1)
        weight = jnp.broadcast_to(scale, shape)
        if inclusion is not None:
            member = jnp.arange(streams)[:, None] if streams else 0
            weight = weight * inclusion[index, member]
        rewards = buffer.rewards[index]
        if perturbation is not None:
            rewards = rewards + perturbation[index, jnp.arange(streams)[:, None] if streams else 0]
        y = jnp.stack([rewards, weight], axis=-1)
        state, _ = method.update(state, (x, y), update_key)
        return state, None

    state, _ = jax.lax.scan(step, method_state, jax.random.split(key, train_steps))
    return state


def transform_agent(name: str, method: Transform, model: models.Model, *, num_arms: int, horizon: int,
                    samples_per_draw: int = 1, sample_apply: Optional[models.Apply] = None, batch_size: int = 64,
                    train_steps: int = 100, bootstrap_probability: Optional[float] = None,
                    reward_perturbation: Optional[float] = None) -> Agent:
    """Thompson sampling with any bdljax transform.

    ``act`` draws ``samples_per_draw`` samples with ``method.sample`` (the
    member count for ensembles, 1 otherwise) and keeps one uniformly at random
    — one posterior sample per decision — then plays the arm with the largest
    predicted reward. ``retrain`` runs ``train_steps`` minibatch updates on the
    data so far, continuing from the current state.

    Args:
      method: a transform built on :func:`bandit_log_posterior` with capacity ``horizon``.
      model: the network (``bandit_model``); its ``init`` initialises the method.
      sample_apply: evaluates one of ``method.sample``'s samples,
        ``(sample, contexts) -> (B, A)``; default ``model.apply`` (MC dropout
        passes :func:`bdljax.nn.dropout.sample_apply`, whose samples carry
        their dropout masks).
      bootstrap_probability: when set, observation i enters member k's data
        with this probability (independently per member; Riquelme et al.'s
        ``BootRMS``, p = 0.95); needs a multi-stream method (an ensemble).
      reward_perturbation: when set (s > 0), member k fits r_i + s·z_ik with z_ik ~ N(0, 1) drawn once per
        observation and member (Lu & Van Roy 2017, "Ensemble Sampling"; Osband et al. 2018 train their
        randomized-prior members on such perturbed targets). For a linear-Gaussian model with noise s, a
        member fitted to perturbed targets and regularised towards its own prior draw is an exact posterior
        sample; without the perturbation the members' spread ignores the observation noise and collapses
        wherever data exist. Needs an ensemble.
    """
    if samples_per_draw < 1:
        raise ValueError(f"samples_per_draw must be at least 1, got {samples_per_draw}")
    _check_training(train_steps, batch_size)
    if bootstrap_probability is not None:
        if not method.batch_streams:
            raise ValueError("bootstrap_probability needs an ensemble (a method with batch_streams = K members).")
        if not 0.0 < bootstrap_probability <= 1.0:
            raise ValueError(f"bootstrap_probability must lie in (0, 1], got {bootstrap_probability}")
    if reward_perturbation is not None:
        if not method.batch_streams:
            raise ValueError("reward_perturbation needs an ensemble (a method with batch_streams = K members).")
        if not reward_perturbation > 0:
            raise ValueError(f"reward_perturbation must be positive, got {reward_perturbation}")
    if method.num_data is not None and method.num_data != horizon:
        raise ValueError(f"the log posterior was built for {method.num_data} points but the horizon is {horizon}; "
                         "build it with bandit_log_posterior(..., capacity=horizon).")
    batch_size = min(batch_size, horizon)
    sample_apply = model.apply if sample_apply is None else sample_apply

    def init(key):
        method_state = method.init(key, model.init)
        inclusion = None if bootstrap_probability is None else jnp.zeros((horizon, _streams(method)))
        perturbation = None if reward_perturbation is None else jnp.zeros((horizon, _streams(method)))
        return TransformAgentState(method_state, inclusion, perturbation)

    def act(state, context, key):
        sample_key, pick_key = jax.random.split(key)
        samples = method.sample(state.method, sample_key, samples_per_draw)
        pick = jax.random.randint(pick_key, (), 0, samples_per_draw)
        one_sample = jax.tree.map(lambda leaf: leaf[pick], samples)
        return jnp.argmax(sample_apply(one_sample, context[None])[0]).astype(jnp.int32)

    def observe(state, index, context, action, reward, key):
        inclusion_key, noise_key = jax.random.split(key)
        if bootstrap_probability is not None:
            included = jax.random.bernoulli(inclusion_key, bootstrap_probability, (_streams(method),)).astype(jnp.float32)
            state = state._replace(inclusion=state.inclusion.at[index].set(included))
        if reward_perturbation is not None:
            noise = reward_perturbation * jax.random.normal(noise_key, (_streams(method),))
            state = state._replace(perturbation=state.perturbation.at[index].set(noise))
        return state

    def retrain(state, buffer, num_filled, key):
        method_state = _train_on_buffer(method, state.method, state.inclusion, buffer, num_filled, key,
                                        num_arms=num_arms, capacity=horizon, batch_size=batch_size,
                                        train_steps=train_steps, perturbation=state.perturbation)
        return state._replace(method=method_state)

    return Agent(name, init, act, observe, retrain, capacity=horizon, skipped_steps=_method_skipped_steps)


class NeuralLinearState(NamedTuple):
    method: State  # the network's transform state (MAP)
    stats: LinearStats  # per-arm statistics of the last-layer features [φ(x), 1]


def neural_linear_agent(method: Transform, model: models.Model, *, num_arms: int, horizon: int, num_hidden: int,
                        activation: str = "relu", prior: NIGPrior = NIGPrior(), batch_size: int = 64,
                        train_steps: int = 100, name: str = "neural_linear") -> Agent:
    """NeuralLinear (Riquelme et al. 2018, §3): exact Bayesian linear regression on a network's last layer.

    The network (all heads) is fitted by ``method`` (MAP) every k steps; its
    last hidden layer φ(x) (plus a constant) is the representation on which
    each arm's NIG posterior is exact. After each retraining the statistics
    are recomputed on the whole buffer with the new features; between
    retrainings each observation is added as a rank-one update with the
    current features. Thompson draws (σ²_a, β_a) per arm and plays
    argmax_a β_aᵀ[φ(x), 1].
    """
    check_nig_prior(prior)
    _check_training(train_steps, batch_size)
    batch_size = min(batch_size, horizon)
    if method.num_data is not None and method.num_data != horizon:
        raise ValueError(f"the log posterior was built for {method.num_data} points but the horizon is {horizon}.")

    def network(state, key):
        return jax.tree.map(lambda leaf: leaf[0], method.sample(state, key, 1))

    def features(params, contexts):
        return with_intercept(mlp_features(network_params(params), contexts, num_hidden, activation))

    def init(key):
        method_state = method.init(key, model.init)
        last_hidden = network_params(network(method_state, key))["params"][f"Dense_{num_hidden - 1}"]["bias"]
        return NeuralLinearState(method_state, linear_stats_init(num_arms, last_hidden.shape[-1] + 1))

    def act(state, context, key):
        sample_key, thompson_key = jax.random.split(key)
        phi = features(network(state.method, sample_key), context[None])[0]
        return jnp.argmax(_thompson_linear_values(thompson_key, state.stats, prior, phi)).astype(jnp.int32)

    def observe(state, index, context, action, reward, key):
        del index
        phi = features(network(state.method, key), context[None])[0]
        return state._replace(stats=linear_stats_add(state.stats, action, phi, reward))

    def retrain(state, buffer, num_filled, key):
        train_key, sample_key = jax.random.split(key)
        method_state = _train_on_buffer(method, state.method, None, buffer, num_filled, train_key, num_arms=num_arms,
                                        capacity=horizon, batch_size=batch_size, train_steps=train_steps)
        phi = features(network(method_state, sample_key), buffer.contexts)
        mask = (jnp.arange(horizon) < num_filled).astype(phi.dtype)
        return NeuralLinearState(method_state, linear_stats_from_data(phi, buffer.actions, buffer.rewards, mask, num_arms))

    return Agent(name, init, act, observe, retrain, capacity=horizon, skipped_steps=_method_skipped_steps)


# ----------------------------------------------------------------------------- agents by name

AGENTS = ("uniform", "greedy", "mcdropout", "mfvi", "ensemble", "bootstrap", "rp_ensemble", "neural_linear", "lints",
          "sgld", "sghmc")


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


class AgentSettings(NamedTuple):
    """Hyperparameters shared by the agents of :func:`make_agent`.

    Every neural agent uses the same network (``hidden``), Gaussian reward
    likelihood (``noise_scale`` σ), prior N(0, s²/fan_in) on kernels and N(0,
    s²) on biases (``prior_scale`` s), optimiser, batch size and number of
    minibatch steps per retraining; only the inference method differs. Three
    documented exceptions: ``point_prior = "flat"`` fits the point agents by
    maximum likelihood, as Riquelme et al.'s reference networks (no weight
    decay), ``neural_linear_prior`` does the same for NeuralLinear's network
    alone, and ``sgmcmc_scale`` c samples SGLD/SGHMC's posterior at
    temperature c². ``experiments/bandits.py`` sets them per bandit from pilot
    seeds (its ``BANDIT_DEFAULTS``). ``learned_noise`` (off by default) makes
    σ a learned parameter of every network agent (:func:`learned_noise_model`).
    ``ensemble_reward_perturbation`` changes how the plain and bootstrapped
    ensembles sample, not their model: each member fits its own
    N(0, (c·σ)²)-perturbed copy of the rewards (ensemble sampling).

    Taken from Riquelme et al. (2018): one hidden layer of 50 ReLUs, retraining every 50 steps for 100
    minibatch steps, 2 round-robin pulls per arm, bootstrap inclusion p = 0.95, dropout keep 0.8, the NIG
    prior (a₀ = b₀ = 6, λ = 0.25). Their optimiser recipe (RMSProp, η₀ = 0.1 decayed as η₀/(1 + 0.5 s)
    within each retraining, clipping at 5, batch 512, kernels U(−0.3, 0.3)) is available
    (``optimizer="rmsprop", learning_rate=0.1, lr_decay=0.5, max_grad_norm=5, init_scale=0.3,
    batch_size=512``) but is not the default: on pilot seeds (wheel δ = 0.95, T = 2000, keys
    split(key(1000), 4), never the reported ones) greedy with it missed the outer ring on all four seeds
    (regret 120.2 ± 0.2 vs 84.9 ± 20.4 with Adam, η = 0.01, batch 64), the ensemble was no better (88.7 ±
    23.6 vs 97.8 ± 7.6), and batch 512 made the ensemble's run 16x slower on the 2 shared CPU cores.
    """

    hidden: Tuple[int, ...] = (50,)
    activation: str = "relu"
    noise_scale: float = 1.0
    prior_scale: float = 1.0
    learning_rate: float = 1e-2
    optimizer: str = "adam"  # or "rmsprop" (Riquelme et al.); see bandit_optimizer
    lr_decay: float = 0.0  # inverse-time decay within each retraining (Riquelme et al.: 0.5)
    max_grad_norm: Optional[float] = None  # global-norm clipping (Riquelme et al.: 5)
    init_scale: Optional[float] = None  # None: the MLP's LeCun init; s: kernels U(−s, s), biases 0 (Riquelme et al.: 0.3)
    batch_size: int = 64
    train_steps: int = 100
    num_members: int = 5  # ensemble and bootstrap
    bootstrap_probability: float = 0.95  # BootRMS's p
    dropout_rate: float = 0.2  # Riquelme et al.'s keep_prob 0.8
    # mcdropout: a mask on the raw context too (Gal & Ghahramani's family); False: hidden layers only, as
    # Riquelme et al.
    dropout_input: bool = False
    # mcdropout: learn the drop rate of every dropout layer on the ELBO (concrete dropout, Gal, Hron & Kendall
    # 2017), starting from dropout_rate, with the Gaussian prior above as the KL's base whatever point_prior
    # says (the KL is what sets the rate). The paper's argument for RL: with little data the entropy term
    # keeps p near ½ (wide samples), and p falls as the data grow, which a fixed rate cannot do.
    concrete_dropout: bool = False
    # mcdropout: "shared", one mask of the hidden units for all arms (the network's own dropout), or "per_arm",
    # an independent mask of the output layer's inputs for each arm (see per_arm_weight_sample).
    dropout_masks: str = "shared"
    prior_function_scale: float = 1.0  # β of rp_ensemble's randomized prior functions
    # Optionally rp_ensemble's members fit rewards perturbed by N(0, s²) noise, s = this × noise_scale (1: the
    # likelihood's own σ, as exact posterior sampling needs for a linear-Gaussian model; None or 0: off). Off by default: on pilot
    # seeds (wheel δ = 0.95, split(key(1000), 4)) it gave 55.0 ± 11.7 against 47.5 ± 4.7 without.
    rp_reward_perturbation: Optional[float] = None
    # The same perturbation for the plain and bootstrapped ensembles (ensemble sampling, Lu & Van Roy 2017):
    # member k fits r_i + s·z_ik, s = this × noise_scale. None or 0: the members fit the rewards themselves.
    ensemble_reward_perturbation: Optional[float] = None
    mfvi_init_scale: float = 1.0  # initial σ of q as a fraction of the prior's σ: q starts at the prior (no data yet)
    mfvi_mc_samples: int = 1
    sgld_step_size: float = 1e-3  # ε at the first retraining; then ε ∝ 1/(retrainings so far), see make_agent
    # SGHMC's drift per step is ε∇U/α (SGLD's is ε∇U) and its momentum decay 1 − αε must stay in (0, 1):
    # α = 10, ε₀ = 0.01 gives it SGLD's drift (ε₀/α = 10⁻³) and stays stable on the 117-feature mushroom
    # contexts, where ε₀ = 0.03 diverged on pilot seeds.
    sghmc_step_size: float = 1e-2
    sghmc_friction: float = 10.0
    nig: NIGPrior = NIGPrior()
    # The prior of the agents fitted to a point by optimisation (greedy, ensemble, bootstrap, neural_linear's
    # network, mcdropout): "gaussian" (MAP with the prior above) or "flat" (maximum likelihood, as Riquelme et
    # al.'s reference RMS / BootRMS / Dropout / NeuralLinear networks, whose loss is the plain squared error on
    # the played arm with no weight decay). The sampling agents (mfvi, sgld, sghmc, rp_ensemble) keep the prior.
    point_prior: str = "gaussian"
    # SGLD and SGHMC only: sample with likelihood σ·c and prior scale s·c. Multiplying both by c multiplies the
    # log posterior by 1/c² up to a constant, so this is the same model's posterior at temperature T = c² (same
    # mode, c times wider), the width a likelihood with noise c·σ gives when the rewards are that noisy (a
    # poisonous mushroom's reward has standard deviation 20) without letting the prior dominate the mean. Step
    # sizes are not rescaled here: ε₀ is given for the scaled target (it scales like the posterior variance, c²).
    sgmcmc_scale: float = 1.0
    # Every network agent (all but uniform and lints) learns the reward noise: ρ = log σ is one more parameter,
    # initialised at log noise_scale and fitted / sampled with the weights (learned_noise_model); with the
    # Gaussian prior ρ ~ N(0, prior_scale²). Off: σ = noise_scale fixed (the behaviour before session 4).
    learned_noise: bool = False
    # The prior of NeuralLinear's network alone, overriding point_prior for it (None: follow point_prior).
    # Riquelme et al.'s NeuralLinear trains its network on the plain squared error (flat); see
    # experiments/bandits.py's BANDIT_DEFAULTS for where that differs from the other point agents' choice.
    neural_linear_prior: Optional[str] = None


POINT_PRIORS = ("gaussian", "flat")
POINT_AGENTS = ("greedy", "ensemble", "bootstrap", "neural_linear", "mcdropout")


def agent_prior(name: str, settings: AgentSettings) -> Prior:
    """The prior of agent ``name``'s network: N(0, s²/fan_in) on kernels and N(0, s²) on biases
    (s = ``prior_scale``), or the flat prior (maximum likelihood) for the agents fitted to a point
    (:data:`POINT_AGENTS`) when ``point_prior == "flat"``; NeuralLinear's network follows
    ``neural_linear_prior`` instead when that is set."""
    from bdljax.core import priors

    if not (np.isfinite(settings.prior_scale) and settings.prior_scale > 0):
        raise ValueError(f"prior_scale must be positive and finite, got {settings.prior_scale}")
    if settings.point_prior not in POINT_PRIORS:
        raise ValueError(f"point_prior must be one of {POINT_PRIORS}, got {settings.point_prior!r}")
    if settings.neural_linear_prior is not None and settings.neural_linear_prior not in POINT_PRIORS:
        raise ValueError(f"neural_linear_prior must be None or one of {POINT_PRIORS}, got {settings.neural_linear_prior!r}")
    point_prior = settings.point_prior
    if name == "neural_linear" and settings.neural_linear_prior is not None:
        point_prior = settings.neural_linear_prior
    if name in POINT_AGENTS and point_prior == "flat":
        return priors.flat()
    return priors.gaussian(priors.fan_in_scales(settings.prior_scale))


def _member_perturbation(multiple: Optional[float], settings: AgentSettings) -> Optional[float]:
    """The standard deviation of the per-member reward perturbation, ``multiple`` × σ; None or 0: off."""
    return multiple * settings.noise_scale if multiple else None


def agent_network(name: str, bandit: Bandit, settings: AgentSettings) -> models.Model:
    """The network agent ``name`` of :func:`make_agent` fits, before any dropout: the bandit MLP, with
    Riquelme et al.'s uniform initialisation when ``init_scale`` is set and a learned ρ = log σ when
    ``learned_noise``."""
    s = settings
    # dropout_input only shapes the network MC dropout rebuilds with masks (without dropout it is the same MLP).
    model = bandit_model(bandit.context_dim, bandit.num_arms, s.hidden, s.activation,
                         dropout_input=s.dropout_input and name == "mcdropout")
    if s.init_scale is not None:
        model = uniform_init_model(model, s.init_scale)
    if s.learned_noise:
        model = learned_noise_model(model, s.noise_scale)
    return model


def mcdropout_network(model: models.Model, dropout_rate: float, context_dim: int):
    """``(dropout network, its bdljax.nn.dropout.DropoutStructure)`` of the MC dropout agent built on ``model``."""
    from bdljax.methods import mcdropout

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
    from bdljax.methods import mcdropout

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


def _concrete_dropout_agent(dropout_net: models.Model, structure, s: AgentSettings, context_dim: int,
                            noise: float, optimizer, common) -> Agent:
    """MC dropout with learned rates (:mod:`bdljax.methods.concrete_dropout`): the ELBO with the KL to the Gaussian
    prior N(0, s²/fan_in) starts every rate at ``dropout_rate``; one hard Bernoulli mask of the learned rates
    per decision."""
    from bdljax.methods import concrete_dropout
    from bdljax.core import priors

    if s.learned_noise:
        raise ValueError("concrete_dropout does not support learned_noise (both add parameters to the network's "
                         "pytree); turn one of them off.")
    apply = concrete_dropout.concrete_apply(dropout_net.apply, structure)

    def init(key):
        return concrete_dropout.init_params(dropout_net.init(key), structure, s.dropout_rate)

    concrete_net = models.Model(init, apply)
    kl = concrete_dropout.kl_prior(priors.gaussian(priors.fan_in_scales(s.prior_scale)), structure)
    log_post = bandit_log_posterior(concrete_net, context_dim, noise, kl, common["horizon"])
    method = concrete_dropout.build(log_post, optimizer, structure)
    return transform_agent("mcdropout", method, concrete_net, sample_apply=apply, **common)


def make_agent(name: str, bandit: Bandit, horizon: int, settings: AgentSettings = AgentSettings()) -> Agent:
    """The agent called ``name`` (one of :data:`AGENTS`) for ``bandit`` and a run of ``horizon`` steps.

    * ``uniform``: random arms. ``lints``: exact linear Thompson sampling.
    * ``greedy``: MAP (:func:`bdljax.methods.map_estimate.build`); its "sample" is the estimate.
    * ``mcdropout``: :func:`bdljax.methods.mcdropout.build`; one dropout mask per decision.
    * ``mfvi``: :func:`bdljax.methods.mfvi.build`; one draw from q per decision.
    * ``ensemble``: K MAP members from independent initialisations; one member per decision.
    * ``bootstrap``: the same with each observation in each member's data with probability p.
      Optionally the members of both fit their own noise-perturbed copies of the rewards
      (``ensemble_reward_perturbation``; ensemble sampling, Lu & Van Roy 2017).
    * ``rp_ensemble``: the ensemble with a fixed random prior function added to each member
      (:func:`randomized_prior_model`), Osband et al. (2018); optionally each member fits its own
      noise-perturbed copy of the rewards (``rp_reward_perturbation``).
    * ``neural_linear``: MAP network + exact NIG regression on its last hidden layer.
    * ``sgld`` / ``sghmc``: :mod:`bdljax.methods.sgmcmc`; the chain's current state per decision.
    """
    if name not in AGENTS:
        raise ValueError(f"unknown bandit agent {name!r}; choose from {list(AGENTS)}")
    num_arms, context_dim = bandit.num_arms, bandit.context_dim
    if name == "uniform":
        return uniform_agent(num_arms)
    if name == "lints":
        return linear_thompson_agent(num_arms, context_dim, settings.nig)

    from bdljax.methods import ensemble
    from bdljax.methods import map_estimate as map_method

    s = settings
    model = agent_network(name, bandit, s)
    learned = bool(s.learned_noise)
    # With a learned σ = noise_scale·e^ρ the likelihood's fixed factor is 1 and ρ starts at log noise_scale.
    noise = 1.0 if learned else s.noise_scale
    prior = agent_prior(name, s)
    log_post = bandit_log_posterior(model, context_dim, noise, prior, horizon, learned_noise=learned)
    optimizer = bandit_optimizer(s.optimizer, s.learning_rate, train_steps=s.train_steps, lr_decay=s.lr_decay,
                                 max_grad_norm=s.max_grad_norm)
    common = dict(num_arms=num_arms, horizon=horizon, batch_size=s.batch_size, train_steps=s.train_steps)
    if name == "greedy":
        return transform_agent(name, map_method.build(log_post, optimizer), model, **common)
    if name == "neural_linear":
        return neural_linear_agent(map_method.build(log_post, optimizer), model, num_hidden=len(s.hidden),
                                   activation=s.activation, prior=s.nig, name=name, **common)
    if name in ("ensemble", "bootstrap"):
        method = ensemble.deep_ensemble(log_post, optimizer, s.num_members)
        return transform_agent(name, method, model, samples_per_draw=s.num_members,
                               bootstrap_probability=s.bootstrap_probability if name == "bootstrap" else None,
                               reward_perturbation=_member_perturbation(s.ensemble_reward_perturbation, s), **common)
    if name == "rp_ensemble":
        rp_model = randomized_prior_model(model, s.prior_function_scale)
        rp_log_post = bandit_log_posterior(rp_model, context_dim, noise, trainable_prior(prior), horizon,
                                           learned_noise=learned)
        return transform_agent(name, ensemble.deep_ensemble(rp_log_post, optimizer, s.num_members), rp_model,
                               samples_per_draw=s.num_members,
                               reward_perturbation=_member_perturbation(s.rp_reward_perturbation, s), **common)
    if name == "mfvi":
        from bdljax.methods import mfvi

        # Thompson sampling needs the most uncertainty before any data: q starts with the prior's scales (times
        # mfvi_init_scale) around a random initialisation, and shrinks as the data come in.
        prior_scales = prior.scales(jax.eval_shape(model.init, jax.random.key(0)))
        init_scale = jax.tree.map(lambda scale: np.asarray(s.mfvi_init_scale * scale), prior_scales)
        method = mfvi.build(log_post, optimizer, num_mc_samples=s.mfvi_mc_samples, init_scale=init_scale)
        return transform_agent(name, method, model, **common)
    if name == "mcdropout":
        from bdljax.methods import mcdropout

        dropout_net, structure = mcdropout_network(model, s.dropout_rate, context_dim)
        if s.dropout_masks not in DROPOUT_MASKS:
            raise ValueError(f"dropout_masks must be one of {DROPOUT_MASKS}, got {s.dropout_masks!r}")
        if s.concrete_dropout:
            if s.dropout_masks != "shared":
                raise ValueError("concrete_dropout supports dropout_masks='shared' only")
            return _concrete_dropout_agent(dropout_net, structure, s, context_dim, noise, optimizer, common)
        log_post = bandit_log_posterior(dropout_net, context_dim, noise, prior, horizon, learned_noise=learned)
        draw = (functools.partial(per_arm_weight_sample, structure=structure, num_arms=num_arms)
                if s.dropout_masks == "per_arm" else None)
        method = mcdropout.build(log_post, optimizer, structure, draw=draw)
        return transform_agent(name, method, dropout_net, sample_apply=dropout.sample_apply(dropout_net.apply, structure),
                               **common)
    from bdljax.methods import sgmcmc

    # The posterior's curvature grows like the data count n_t = (retrainings so far)·k, and a Langevin step is
    # stable only while ε·curvature stays bounded: ε_t = ε₀ (1 + t/train_steps)⁻¹ (Welling & Teh's polynomial
    # decay with γ = 1, t the chain's step count) keeps ε·n_t about constant as the data grow.
    schedule = sgmcmc.polynomial(s.sgld_step_size if name == "sgld" else s.sghmc_step_size, s.train_steps, 1.0)
    if not s.sgmcmc_scale > 0:
        raise ValueError(f"sgmcmc_scale must be positive, got {s.sgmcmc_scale}")
    if s.sgmcmc_scale != 1.0:
        # σ → cσ and s → cs together: the same MAP, the posterior tempered at T = c² (see AgentSettings).
        c = s.sgmcmc_scale
        log_post = bandit_log_posterior(model, context_dim, c * noise,
                                        agent_prior(name, s._replace(prior_scale=c * s.prior_scale)), horizon,
                                        learned_noise=learned)
    if name == "sgld":
        method = sgmcmc.sgld(log_post, schedule, num_kept=1)
    else:
        method = sgmcmc.sghmc(log_post, schedule, friction=s.sghmc_friction, num_kept=1)
    return transform_agent(name, method, model, **common)


# =============================================================================
# The run
# =============================================================================


class Trajectory(NamedTuple):
    """What a run returns, per seed (leading axis S when vmapped), per step ``(T,)``."""

    actions: jax.Array
    rewards: jax.Array  # the reward the agent received
    regret: jax.Array  # max_a E r(x_t, a) − E r(x_t, a_t)
    uniform_regret: jax.Array  # max_a E r(x_t, a) − mean_a E r(x_t, a): the uniform policy's expected regret
    optimal: jax.Array  # bool: a_t was an optimal arm
    # Per seed, a scalar: training steps the agent skipped because its loss or gradient was not finite
    # (Agent.skipped_steps; 0 for agents that do not train by gradient). Reported, never averaged away.
    skipped_steps: Optional[jax.Array] = None


class RunConfig(NamedTuple):
    horizon: int
    retrain_every: int
    initial_pulls: int = 2


def run_config(horizon, retrain_every, initial_pulls=2) -> RunConfig:
    """A :class:`RunConfig` of true integers (``horizon=40.9`` must not silently run 40 steps)."""
    import operator

    try:
        return RunConfig(operator.index(horizon), operator.index(retrain_every), operator.index(initial_pulls))
    except TypeError:
        raise ValueError(f"horizon, retrain_every and initial_pulls must be integers, got {horizon!r}, "
                         f"{retrain_every!r} and {initial_pulls!r}") from None


def check_run_config(config: RunConfig, num_arms: int, agent: Optional[Agent] = None) -> None:
    """Fail before anything compiles when the schedule does not fit (or does not fit ``agent``)."""
    if agent is not None and agent.capacity is not None and agent.capacity != config.horizon:
        # Its per-observation tables have agent.capacity rows: later writes would be dropped, reads clamped.
        raise ValueError(f"agent {agent.name!r} was built for horizon {agent.capacity} but the run has horizon "
                         f"{config.horizon}; build it with make_agent(..., horizon={config.horizon}).")
    if config.horizon < 1 or config.retrain_every < 1:
        raise ValueError(f"horizon and retrain_every must be positive, got {config.horizon} and {config.retrain_every}.")
    if config.horizon % config.retrain_every:
        raise ValueError(f"horizon={config.horizon} must be a multiple of retrain_every={config.retrain_every} "
                         f"(the run scans whole blocks of retrain_every steps); e.g. use horizon="
                         f"{config.retrain_every * max(1, round(config.horizon / config.retrain_every))}.")
    if config.initial_pulls < 0 or config.initial_pulls * num_arms > config.horizon:
        raise ValueError(f"initial_pulls={config.initial_pulls} round-robin pulls of {num_arms} arms do not fit in "
                         f"horizon={config.horizon}.")


def _keys(key):
    env_key, agent_key = jax.random.split(key)
    init_key, act_key, retrain_key = jax.random.split(agent_key, 3)
    return env_key, init_key, act_key, retrain_key


def episode(bandit: Bandit, tables, key: jax.Array, horizon: int) -> BanditData:
    """The episode (contexts, rewards, expected rewards) that a run with seed key ``key`` faces.

    The key's first half fixes the episode, the second the agent's randomness
    (:func:`run`), so analyses can rebuild an episode without running an agent.
    """
    return bandit.sample(tables, _keys(key)[0], horizon)


def _start(bandit: Bandit, agent: Agent, config: RunConfig, tables, key):
    _, init_key, act_key, retrain_key = _keys(key)
    data = episode(bandit, tables, key, config.horizon)
    buffer = Buffer(data.contexts, jnp.zeros(config.horizon, jnp.int32), jnp.zeros(config.horizon, data.rewards.dtype))
    return data, agent.init(init_key), buffer, act_key, retrain_key


def _act_and_observe(agent: Agent, num_arms: int, config: RunConfig, data: BanditData, state, buffer: Buffer,
                     act_key, t):
    """Step t: act (round-robin for the first initial_pulls·A steps, as Riquelme et al.), receive, record."""
    step_key = jax.random.fold_in(act_key, t)
    decide_key, observe_key = jax.random.split(step_key)
    context = data.contexts[t]
    thompson = agent.act(state, context, decide_key)
    action = jnp.where(t < config.initial_pulls * num_arms, t % num_arms, thompson).astype(jnp.int32)
    reward = data.rewards[t, action]
    buffer = buffer._replace(actions=buffer.actions.at[t].set(action), rewards=buffer.rewards.at[t].set(reward))
    return agent.observe(state, t, context, action, reward, observe_key), buffer


def _retrain(agent: Agent, config: RunConfig, state, buffer: Buffer, retrain_key, block):
    """Retraining at the start of block b ≥ 1, on the b·k rows seen so far."""
    return agent.retrain(state, buffer, block * config.retrain_every, jax.random.fold_in(retrain_key, block))


def _trajectory(agent: Agent, data: BanditData, state, buffer: Buffer) -> Trajectory:
    expected = data.expected_rewards
    best = jnp.max(expected, axis=-1)
    chosen = jnp.take_along_axis(expected, buffer.actions[:, None], axis=-1)[:, 0]
    skipped = jnp.zeros((), jnp.int32) if agent.skipped_steps is None else agent.skipped_steps(state)
    return Trajectory(buffer.actions, buffer.rewards, best - chosen, best - jnp.mean(expected, axis=-1), chosen >= best,
                      skipped)


def run(bandit: Bandit, agent: Agent, config: RunConfig, tables, key) -> Trajectory:
    """One bandit episode of ``agent``, as scans (jit and vmap it; :func:`simulate` does).

    An outer ``lax.scan`` over the T/k blocks: retrain (skipped by
    ``lax.cond`` in block 0, which has no data), then an inner ``lax.scan``
    over the block's k steps. The predicate depends only on the block index,
    which is not batched by a ``vmap`` over seeds, so ``cond`` stays a branch
    instead of becoming a select that would retrain at every block anyway.
    """
    data, state, buffer, act_key, retrain_key = _start(bandit, agent, config, tables, key)
    num_blocks = config.horizon // config.retrain_every

    def block(carry, b):
        state, buffer = carry
        state = jax.lax.cond(b > 0, lambda s: _retrain(agent, config, s, buffer, retrain_key, b), lambda s: s, state)

        def step(carry, t):
            state, buffer = carry
            return _act_and_observe(agent, bandit.num_arms, config, data, state, buffer, act_key, t), None

        steps = b * config.retrain_every + jnp.arange(config.retrain_every)
        (state, buffer), _ = jax.lax.scan(step, (state, buffer), steps)
        return (state, buffer), None

    (state, buffer), _ = jax.lax.scan(block, (state, buffer), jnp.arange(num_blocks))
    return _trajectory(agent, data, state, buffer)


# XLA's CPU backend spends most of a bandit program's compile time in LLVM optimisation; level 0 compiles
# about 3x faster and runs about 2x slower (measured on the greedy agent), the better trade for short runs.
FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}


def _jit(function, fast_compile: bool):
    return jax.jit(function, compiler_options=FAST_COMPILE_OPTIONS if fast_compile else None)


@functools.lru_cache(maxsize=64)
def build_simulation(bandit_sample: Callable, num_arms: int, context_dim: int, agent: Agent, config: RunConfig,
                     fast_compile: bool = False) -> Callable:
    """The jitted, seed-vmapped run ``(tables, keys (S,)) -> Trajectory``; cached, so compiled once per configuration."""
    check_run_config(config, num_arms, agent)
    bandit = Bandit("", num_arms, context_dim, bandit_sample, None)
    return _jit(jax.vmap(lambda tables, key: run(bandit, agent, config, tables, key), in_axes=(None, 0)), fast_compile)


def simulate(bandit: Bandit, agent: Agent, keys: jax.Array, *, horizon: int, retrain_every: int,
             initial_pulls: int = 2, fast_compile: bool = False) -> Trajectory:
    """Run ``agent`` on ``bandit`` for every seed key in ``keys (S,)`` as one compiled program.

    Returns a :class:`Trajectory` with leading axes ``(S, T)``. Each seed's
    key fixes its episode (contexts and rewards) and, separately, the agent's
    randomness, so every agent run with the same keys faces the same episodes.
    ``fast_compile`` lowers XLA's optimisation level (:data:`FAST_COMPILE_OPTIONS`).
    """
    config = run_config(horizon, retrain_every, initial_pulls)
    check_run_config(config, bandit.num_arms, agent)
    keys = _check_keys(keys)
    program = build_simulation(bandit.sample, bandit.num_arms, bandit.context_dim, agent, config, bool(fast_compile))
    return program(bandit.tables, keys)


def _check_keys(keys):
    keys = jnp.asarray(keys)
    if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) or keys.ndim != 1:
        raise ValueError(f"keys must be a 1-D array of typed PRNG keys (jax.random.split(jax.random.key(seed), S)), "
                         f"got dtype {keys.dtype} and shape {keys.shape}.")
    return keys


@functools.lru_cache(maxsize=64)
def _loop_pieces(bandit_sample: Callable, num_arms: int, context_dim: int, agent: Agent, config: RunConfig,
                 fast_compile: bool):
    bandit = Bandit("", num_arms, context_dim, bandit_sample, None)
    start = _jit(jax.vmap(lambda tables, key: _start(bandit, agent, config, tables, key), in_axes=(None, 0)), fast_compile)
    step = _jit(jax.vmap(lambda data, state, buffer, act_key, t: _act_and_observe(
        agent, num_arms, config, data, state, buffer, act_key, t), in_axes=(0, 0, 0, 0, None)), fast_compile)
    retrain = _jit(jax.vmap(lambda state, buffer, retrain_key, b: _retrain(agent, config, state, buffer, retrain_key, b),
                            in_axes=(0, 0, 0, None)), fast_compile)
    finish = _jit(jax.vmap(functools.partial(_trajectory, agent)), fast_compile)
    return start, step, retrain, finish


def simulate_python_loop(bandit: Bandit, agent: Agent, keys: jax.Array, *, horizon: int, retrain_every: int,
                         initial_pulls: int = 2, fast_compile: bool = False) -> Trajectory:
    """The same run as :func:`simulate`, driven step by step from Python (the baseline of the benchmark).

    Each step is one jitted, seed-vmapped call and each retraining another;
    the time step is passed as an array so nothing retraces. Same keys, same
    arithmetic per step: the trajectories agree with :func:`simulate` up to
    floating-point differences between the two compiled programs.
    """
    config = run_config(horizon, retrain_every, initial_pulls)
    check_run_config(config, bandit.num_arms, agent)
    keys = _check_keys(keys)
    start, step, retrain, finish = _loop_pieces(bandit.sample, bandit.num_arms, bandit.context_dim, agent, config,
                                                bool(fast_compile))
    data, state, buffer, act_key, retrain_key = start(bandit.tables, keys)
    for t in range(config.horizon):
        if t and t % config.retrain_every == 0:
            state = retrain(state, buffer, retrain_key, jnp.asarray(t // config.retrain_every, jnp.int32))
        state, buffer = step(data, state, buffer, act_key, jnp.asarray(t, jnp.int32))
    return finish(data, state, buffer)


def normalised_regret(trajectory: Trajectory) -> np.ndarray:
    """Cumulative regret per seed as a percentage of the uniform policy's expected cumulative regret (uniform = 100)."""
    regret = np.asarray(trajectory.regret, np.float64).sum(axis=-1)
    uniform = np.asarray(trajectory.uniform_regret, np.float64).sum(axis=-1)
    return 100.0 * regret / uniform
