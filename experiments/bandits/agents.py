"""Thompson-sampling agents as pure functions: random, linear, and over any bdljax posterior.

At step t an agent sees a context x_t, draws *one* sample θ̃_t from its
current posterior p(θ | D_{t−1}), plays

    a_t = argmax_a  f_a(x_t; θ̃_t),

observes the reward r_t of that arm only, and appends (x_t, a_t, r_t) to its
data D_t (Thompson 1933; Riquelme, Tucker & Snoek 2018). An :class:`Agent` is
``init``, ``act`` (one Thompson draw), ``observe`` (after every step) and
``retrain`` (every k steps); its state is a pytree, so a run vmaps over seeds.

* :func:`uniform_agent`: random arms (the regret's normaliser).
* :func:`linear_thompson_agent`: the exact NIG posterior per arm on [x, 1].
* :func:`transform_agent`: *any* :class:`~bdljax.core.transform.Transform`
  (MAP, MFVI, MC dropout, ensembles, SGLD, SGHMC, ...) fitted to the log
  posterior of :func:`experiments.bandits.log_posterior.bandit_log_posterior`;
  it retrains with ``train_steps`` minibatch updates on the data so far,
  warm-started from its previous state.
* :func:`neural_linear_agent`: a network fitted by a transform, and exact
  Bayesian linear regression on its last hidden layer.

These agents stay with the benchmark rather than in the library: their data
(contexts, played arms, rewards), the weighting of a growing data set and the
per-arm networks are the contextual bandit's, and nothing else uses them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from bdljax.core.transform import Transform
from bdljax.methods.wrappers import SkipNonfiniteState
from bdljax.nn import models
from bdljax.run.training import check_count

from experiments.bandits.linear import (LinearStats, NIGPrior, check_nig_prior, linear_stats_add,
                                        linear_stats_from_data, linear_stats_init, nig_posterior, nig_sample,
                                        with_intercept)
from experiments.bandits.networks import mlp_features, network_params

State = Any


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


def check_training(train_steps: int, batch_size: int = 1) -> None:
    """Both counts must be positive integers (0 steps would leave a network untrained without a word)."""
    check_count("train_steps", train_steps)
    check_count("batch_size", batch_size)


def method_skipped_steps(state) -> jax.Array:
    """The steps that :func:`bdljax.methods.wrappers.skip_nonfinite` undid in an agent state's transform
    (``state.method``), summed over members or chains; 0 when the transform is not wrapped."""
    if isinstance(state.method, SkipNonfiniteState):
        return jnp.sum(state.method.num_nonfinite).astype(jnp.int32)
    return jnp.zeros((), jnp.int32)


def _observe_nothing(state, index, context, action, reward, key):
    del index, context, action, reward, key
    return state


def _retrain_nothing(state, buffer, num_filled, key):
    del buffer, num_filled, key
    return state


def uniform_agent(num_arms: int) -> Agent:
    """Plays an arm uniformly at random (its expected regret, computed exactly per episode, is the normaliser of
    :func:`experiments.bandits.simulation.normalised_regret`; this agent's own regret scatters around 100)."""

    def init(key):
        del key
        return jnp.zeros(())

    def act(state, context, key):
        del state, context
        return jax.random.randint(key, (), 0, num_arms, dtype=jnp.int32)

    return Agent("uniform", init, act, _observe_nothing, _retrain_nothing)


def thompson_linear_values(key, stats: LinearStats, prior: NIGPrior, phi: jax.Array) -> jax.Array:
    """Every arm's value β̃_aᵀφ under one joint draw (σ̃², β̃) of each arm's NIG posterior, ``(A,)``."""
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
        return jnp.argmax(thompson_linear_values(key, stats, prior, with_intercept(context))).astype(jnp.int32)

    def observe(stats, index, context, action, reward, key):
        del index, key
        return linear_stats_add(stats, action, with_intercept(context), reward)

    return Agent(name, init, act, observe, _retrain_nothing)


def _streams(method: Transform) -> int:
    return max(method.batch_streams, 1)


class Retraining(NamedTuple):
    """How a neural agent retrains: ``train_steps`` minibatch steps of ``batch_size`` rows drawn from its buffer
    of ``horizon`` rows (the log posterior's N) of contexts with one of ``num_arms`` arms played."""

    num_arms: int
    horizon: int
    batch_size: int = 64
    train_steps: int = 100


def check_retraining(retraining: Retraining) -> Retraining:
    """``retraining`` with its counts checked and the batch no larger than the horizon."""
    check_training(retraining.train_steps, retraining.batch_size)
    return retraining._replace(batch_size=min(retraining.batch_size, retraining.horizon))


def train_on_buffer(method: Transform, method_state, buffer: Buffer, num_filled, key, retraining: Retraining,
                    inclusion=None, perturbation=None):
    """``retraining.train_steps`` updates of ``method`` on minibatches drawn uniformly (with replacement) from the
    first ``num_filled`` buffer rows; one batch per member for multi-stream methods.

    Each row is ``x = [context, one_hot(arm)]``, ``y = [reward, weight]`` with weight n_t/horizon (the growing
    data set of :mod:`experiments.bandits.log_posterior`) times member k's bootstrap ``inclusion (T, K)``;
    ``perturbation (T, K)`` is added to member k's copy of each reward."""
    streams = method.batch_streams
    shape = (streams, retraining.batch_size) if streams else (retraining.batch_size,)
    member = jnp.arange(streams)[:, None] if streams else 0
    scale = num_filled.astype(jnp.float32) / retraining.horizon  # n_t / N

    def step(state, step_key):
        index_key, update_key = jax.random.split(step_key)
        index = jax.random.randint(index_key, shape, 0, num_filled)
        played = jax.nn.one_hot(buffer.actions[index], retraining.num_arms)
        x = jnp.concatenate([buffer.contexts[index], played], axis=-1)
        weight = jnp.broadcast_to(scale, shape)
        if inclusion is not None:
            weight = weight * inclusion[index, member]
        rewards = buffer.rewards[index]
        if perturbation is not None:
            rewards = rewards + perturbation[index, member]
        state, _ = method.update(state, (x, jnp.stack([rewards, weight], axis=-1)), update_key)
        return state, None

    state, _ = jax.lax.scan(step, method_state, jax.random.split(key, retraining.train_steps))
    return state


class TransformAgentState(NamedTuple):
    method: State  # the transform's state
    inclusion: Optional[jax.Array]  # (T, K) bootstrap inclusion of every observation per member; None without bootstrap
    perturbation: Optional[jax.Array] = None  # (T, K) each member's N(0, s²) noise on every reward; None without


def _check_member_options(method: Transform, samples_per_draw: int, bootstrap_probability: Optional[float],
                          reward_perturbation: Optional[float]) -> None:
    if samples_per_draw < 1:
        raise ValueError(f"samples_per_draw must be at least 1, got {samples_per_draw}")
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


def transform_agent(name: str, method: Transform, model: models.Model, retraining: Retraining, *,
                    samples_per_draw: int = 1, sample_apply: Optional[models.Apply] = None,
                    bootstrap_probability: Optional[float] = None,
                    reward_perturbation: Optional[float] = None) -> Agent:
    """Thompson sampling with any bdljax transform.

    ``act`` draws ``samples_per_draw`` samples with ``method.sample`` (the
    member count for ensembles, 1 otherwise) and keeps one uniformly at random
    — one posterior sample per decision — then plays the arm with the largest
    predicted reward. ``retrain`` runs ``train_steps`` minibatch updates on the
    data so far (:func:`train_on_buffer`), continuing from the current state.

    Args:
      method: a transform built on ``bandit_log_posterior(..., capacity=retraining.horizon)``; wrap it (each
        member of an ensemble) in :func:`bdljax.methods.wrappers.skip_nonfinite` to have skipped steps counted.
      model: the network (``bandit_model``); its ``init`` initialises the method.
      retraining: the arms, the horizon and the retraining's batch size and steps.
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
    _check_member_options(method, samples_per_draw, bootstrap_probability, reward_perturbation)
    retraining = check_retraining(retraining)
    horizon = retraining.horizon
    sample_apply = model.apply if sample_apply is None else sample_apply
    streams = _streams(method)

    def init(key):
        inclusion = None if bootstrap_probability is None else jnp.zeros((horizon, streams))
        perturbation = None if reward_perturbation is None else jnp.zeros((horizon, streams))
        return TransformAgentState(method.init(key, model.init), inclusion, perturbation)

    def act(state, context, key):
        sample_key, pick_key = jax.random.split(key)
        samples = method.sample(state.method, sample_key, samples_per_draw)
        pick = jax.random.randint(pick_key, (), 0, samples_per_draw)
        one_sample = jax.tree.map(lambda leaf: leaf[pick], samples)
        return jnp.argmax(sample_apply(one_sample, context[None])[0]).astype(jnp.int32)

    def observe(state, index, context, action, reward, key):
        inclusion_key, noise_key = jax.random.split(key)
        if bootstrap_probability is not None:
            included = jax.random.bernoulli(inclusion_key, bootstrap_probability, (streams,)).astype(jnp.float32)
            state = state._replace(inclusion=state.inclusion.at[index].set(included))
        if reward_perturbation is not None:
            noise = reward_perturbation * jax.random.normal(noise_key, (streams,))
            state = state._replace(perturbation=state.perturbation.at[index].set(noise))
        return state

    def retrain(state, buffer, num_filled, key):
        method_state = train_on_buffer(method, state.method, buffer, num_filled, key, retraining, state.inclusion,
                                       state.perturbation)
        return state._replace(method=method_state)

    return Agent(name, init, act, observe, retrain, capacity=horizon, skipped_steps=method_skipped_steps)


class NeuralLinearState(NamedTuple):
    method: State  # the network's transform state (MAP)
    stats: LinearStats  # per-arm statistics of the last-layer features [φ(x), 1]


def neural_linear_agent(method: Transform, model: models.Model, retraining: Retraining, *, num_hidden: int,
                        activation: str = "relu", prior: NIGPrior = NIGPrior(), name: str = "neural_linear") -> Agent:
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
    retraining = check_retraining(retraining)
    num_arms, horizon = retraining.num_arms, retraining.horizon

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
        return jnp.argmax(thompson_linear_values(thompson_key, state.stats, prior, phi)).astype(jnp.int32)

    def observe(state, index, context, action, reward, key):
        del index
        phi = features(network(state.method, key), context[None])[0]
        return state._replace(stats=linear_stats_add(state.stats, action, phi, reward))

    def retrain(state, buffer, num_filled, key):
        train_key, sample_key = jax.random.split(key)
        method_state = train_on_buffer(method, state.method, buffer, num_filled, train_key, retraining)
        phi = features(network(method_state, sample_key), buffer.contexts)
        mask = (jnp.arange(horizon) < num_filled).astype(phi.dtype)
        return NeuralLinearState(method_state, linear_stats_from_data(phi, buffer.actions, buffer.rewards, mask, num_arms))

    return Agent(name, init, act, observe, retrain, capacity=horizon, skipped_steps=method_skipped_steps)
