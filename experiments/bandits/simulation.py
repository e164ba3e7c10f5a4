"""A bandit run as one compiled program: acting, recording and retraining scanned over time, vmapped over seeds.

A fixed-capacity buffer (capacity = horizon; entries at or past the step
count are masked), an outer ``lax.scan`` over blocks of k steps whose body
retrains (a ``lax.cond`` on the block index, which is the same for every seed
so the branch stays a real branch under ``vmap``) and then scans k acting
steps; the whole run is ``vmap``-ed over seeds and jitted once per
configuration (:func:`simulate`). :func:`simulate_python_loop` runs the same
pieces step by step from Python, the baseline it is benchmarked against
(``scripts/bench_bandits.py``).

The measure is the cumulative (pseudo-)regret Σ_t [max_a E r(x_t, a) −
E r(x_t, a_t)], reported as a percentage of the uniform policy's expected
regret on the same episode (:func:`normalised_regret`).
"""

from __future__ import annotations

import functools
import operator
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bandits.agents import Agent, Buffer
from experiments.bandits.environments import Bandit, BanditData


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
