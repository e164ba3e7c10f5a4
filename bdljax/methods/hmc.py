"""Full-batch Hamiltonian Monte Carlo and NUTS on the shared log posterior, through BlackJAX.

HMC (Duane et al. 1987; Neal 2011, "MCMC using Hamiltonian dynamics") samples
θ ~ p_T(θ|D) ∝ exp(U(θ)), U = log p_T(θ|D) the full-batch tempered log
posterior of :mod:`bdljax.core.posterior`, by simulating H(θ, r) = −U(θ) + ½ rᵀM⁻¹r
with L leapfrog steps of size ε and accepting the end point with probability
min(1, exp(H_0 − H_L)) (Metropolis). NUTS (Hoffman & Gelman 2014, "The
No-U-Turn Sampler"; BlackJAX's multinomial, iterative variant of Betancourt
2017) chooses L per transition by doubling the trajectory until it turns
back. Izmailov, Vikram, Hoffman & Wilson (2021), "What are Bayesian neural
network posteriors really like?", made full-batch HMC the reference every
other method is measured against; here it is one word away from MAP.

Pieces, all on any parameter pytree:

* :func:`build` returns a :class:`~bdljax.core.transform.Transform` whose
  ``update`` is one transition of BlackJAX's ``hmc`` or ``nuts`` kernel,
  with BlackJAX's Stan-style window adaptation of the step size (dual
  averaging to a target acceptance rate) and of a diagonal (or dense)
  inverse mass matrix during the first ``num_warmup`` transitions, or a
  fixed step size with ``num_warmup`` transitions of burn-in. The full data
  set is bound at build time: the state caches U and ∇U at the current
  position, and a Metropolis ratio must compare values computed on the same
  data in the same order.
* :func:`sample_chains` runs several chains as a leading axis — vmapped, or
  mapped one after another inside the compiled step
  (:func:`resolve_chain_method`) — each with its own key and
  initialisation (random, or around given parameters such as MAP
  solutions), in compiled ``lax.scan`` chunks of
  ``chunk_size`` transitions (one compilation per chunk size), keeps draws
  stacked ``(chains, draws, ...)`` on the host and/or streams them into a
  :class:`bdljax.run.predictive.RunningPredictive`, and traces the log
  posterior, parameter-leaf norms and predictions at a few points for
  :mod:`bdljax.evaluate.diagnostics`.
* :func:`hmc_recipe` and :func:`nuts_recipe` are the registry entries
  (``bdljax.recipes.run("hmc" | "nuts", problem, key, ...)``).

``float64=True`` runs chains in double precision (positions, momenta, the
log posterior and the energies of the Metropolis correction): Izmailov et
al. found float32 rounding of a log likelihood summed over many points
corrupts the acceptance test. Draws are handed back in float32.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import blackjax.mcmc.hmc as bj_hmc
import blackjax.mcmc.integrators as bj_integrators
import blackjax.mcmc.nuts as bj_nuts
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import MassMatrixAdaptationState, mass_matrix_adaptation
from blackjax.adaptation.step_size import (
    DualAveragingAdaptationState,
    dual_averaging_adaptation,
    find_reasonable_step_size,
)
from blackjax.adaptation.window_adaptation import build_schedule

from bdljax.evaluate import diagnostics as diag
from bdljax.methods import ensemble
from bdljax.evaluate import metrics
from bdljax.run import predictive
from bdljax.core.likelihoods import Likelihood
from bdljax.methods.map_estimate import batch_size_for
from bdljax.recipes import Fitted, Problem, fit_transform, make_optimizer
from bdljax.core.posterior import LogPosterior
from bdljax.run.training import check_finite
from bdljax.core.transform import Transform
from bdljax.core.tree import initial_params

Params = Any

ALGORITHMS = ("hmc", "nuts")

# (transform, chunk length, transitions per emission) -> number of times a chunk function was traced; the
# tests assert one trace per chunk size for a whole run.
TRACE_COUNTS: collections.Counter = collections.Counter()


class WarmupState(NamedTuple):
    """Window adaptation (Stan's schedule): dual averaging of log ε and Welford estimates of M⁻¹."""

    step_size: DualAveragingAdaptationState
    mass_matrix: MassMatrixAdaptationState


class HMCState(NamedTuple):
    """One chain.

    Attributes:
      chain: BlackJAX's ``HMCState(position, logdensity, logdensity_grad)``.
      step_size: ε in force (adapted during warm-up).
      inverse_mass_matrix: M⁻¹ over the flattened parameters, ``(D,)`` or ``(D, D)``.
      warmup: adaptation state, ``None`` for a fixed step size.
      step: transitions done.
      draws: ring buffer of the last ``num_kept`` kept draws (``None`` when 0).
      num_stored: draws written to the buffer so far.
    """

    chain: bj_hmc.HMCState
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    warmup: Optional[WarmupState]
    step: jax.Array
    draws: Optional[Params]
    num_stored: jax.Array


class TransitionInfo(NamedTuple):
    log_density: jax.Array  # log p_T(θ|D) at the chain's new position
    acceptance_rate: jax.Array  # Metropolis probability (NUTS: mean over the trajectory)
    is_divergent: jax.Array  # energy error above divergence_threshold
    step_size: jax.Array  # ε used for this transition
    num_integration_steps: jax.Array  # leapfrog steps (= gradient evaluations) of this transition
    is_warmup: jax.Array


class Sampler(NamedTuple):
    """A transform plus the static settings :func:`sample_chains` needs to drive it."""

    transform: Transform
    algorithm: str
    num_warmup: int
    thinning: int
    float64: bool


def _cast_floats(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _check_data(log_posterior: LogPosterior, data) -> Tuple[np.ndarray, np.ndarray]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("data must be the full training set as a tuple (x, y)")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; they must match.")
    check_finite("training inputs x", x)
    check_finite("training targets y", y)
    if x.shape[0] != log_posterior.num_data:
        raise ValueError(
            f"HMC is full batch: the data has {x.shape[0]} rows but the log posterior was built with "
            f"num_data={log_posterior.num_data}; build it with num_data={x.shape[0]}."
        )
    return x, y


def sampler(
    log_posterior: LogPosterior,
    data: Tuple[Any, Any],
    *,
    algorithm: str = "nuts",
    step_size: Optional[float] = None,
    num_warmup: int = 500,
    num_integration_steps: int = 10,
    trajectory_length: Optional[float] = None,
    max_num_integration_steps: int = 1024,
    max_num_doublings: int = 10,
    step_size_jitter: float = 0.0,
    target_acceptance_rate: float = 0.8,
    dense_mass: bool = False,
    divergence_threshold: float = 1000.0,
    num_kept: int = 0,
    thinning: int = 1,
    float64: bool = False,
) -> Sampler:
    """Full-batch HMC or NUTS on ``log_posterior`` over ``data``; see :func:`build` for the arguments."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    if step_size is None and num_warmup < 1:
        raise ValueError("step_size=None asks for window adaptation, which needs num_warmup >= 1 (500 is typical); "
                         "or give a fixed step_size")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if num_warmup < 0 or thinning < 1 or num_kept < 0:
        raise ValueError(f"need num_warmup >= 0, thinning >= 1 and num_kept >= 0; "
                         f"got {num_warmup}, {thinning}, {num_kept}")
    if algorithm == "nuts" and trajectory_length is not None:
        raise ValueError("NUTS chooses its own trajectory length; trajectory_length is for algorithm='hmc'")
    if algorithm == "hmc" and trajectory_length is None and (int(num_integration_steps) != num_integration_steps
                                                              or num_integration_steps < 1):
        raise ValueError(f"num_integration_steps must be a positive int, got {num_integration_steps}")
    if trajectory_length is not None and not trajectory_length > 0:
        raise ValueError(f"trajectory_length must be positive, got {trajectory_length}")
    if not 0 < target_acceptance_rate < 1:
        raise ValueError(f"target_acceptance_rate must lie in (0, 1), got {target_acceptance_rate}")
    if not 0 <= step_size_jitter < 1:
        raise ValueError(f"step_size_jitter must lie in [0, 1), got {step_size_jitter}")
    x, y = _check_data(log_posterior, data)
    if float64:
        with jax.enable_x64(True):
            x, y = _cast_floats((jnp.asarray(x), jnp.asarray(y)), jnp.float64)
    else:
        x, y = jnp.asarray(x), jnp.asarray(y)
    batch = (x, y)

    def log_density(params):
        return log_posterior(params, batch)

    adapt = step_size is None
    integrator = bj_integrators.velocity_verlet
    if algorithm == "hmc":
        kernel = bj_hmc.build_kernel(integrator, divergence_threshold)

        def transition(key, chain, eps, inverse_mass_matrix):
            if trajectory_length is None:
                steps = int(num_integration_steps)
            else:  # L = ⌈length / ε⌉ follows the adapted ε
                steps = jnp.clip(jnp.ceil(trajectory_length / eps), 1, max_num_integration_steps).astype(jnp.int32)
            return kernel(key, chain, log_density, eps, inverse_mass_matrix, steps)
    else:
        kernel = bj_nuts.build_kernel(integrator, divergence_threshold)

        def transition(key, chain, eps, inverse_mass_matrix):
            return kernel(key, chain, log_density, eps, inverse_mass_matrix, max_num_doublings)

    one_step_kernel = bj_hmc.build_kernel(integrator, divergence_threshold)
    da_init, da_update, da_final = dual_averaging_adaptation(target_acceptance_rate)
    mm_init, mm_update, mm_final = mass_matrix_adaptation(is_diagonal_matrix=not dense_mass)
    if adapt:
        # A host constant even when the sampler is built inside a trace (experiments/uci.py traces recipes to
        # batch their MAP initialisations over splits); BlackJAX builds the schedule with jnp.
        with jax.ensure_compile_time_eval():
            schedule = np.asarray(build_schedule(num_warmup), dtype=np.int32).reshape(num_warmup, 2)
        slow_window, window_end = schedule[:, 0] == 1, schedule[:, 1] == 1

    def init(key, params) -> HMCState:
        if float64 and not jax.config.jax_enable_x64:
            raise ValueError("this sampler was built with float64=True: call it inside `with jax.enable_x64(True):` "
                             "(sample_chains does this)")
        params = initial_params(key, params)
        if float64:
            params = _cast_floats(params, jnp.float64)
        chain = bj_hmc.init(params, log_density)
        flat, _ = jax.flatten_util.ravel_pytree(params)
        dim, dtype = flat.shape[0], flat.dtype
        inverse_mass_matrix = jnp.eye(dim, dtype=dtype) if dense_mass else jnp.ones(dim, dtype)
        if adapt:
            # Stan's heuristic start for dual averaging: double or halve ε until one leapfrog step's
            # acceptance crosses the target (Hoffman & Gelman 2014, Alg. 4).
            def one_step(eps):
                return lambda k, state: one_step_kernel(k, state, log_density, eps, inverse_mass_matrix, 1)

            eps = find_reasonable_step_size(jax.random.fold_in(key, 1), one_step, chain, jnp.asarray(1.0, dtype),
                                            target_acceptance_rate)
            warmup = WarmupState(da_init(eps), mm_init(dim))
        else:
            eps, warmup = jnp.asarray(step_size, dtype), None
        draws = None
        if num_kept:
            draws = jax.tree.map(lambda p: jnp.broadcast_to(p, (num_kept, *p.shape)), params)
        state = HMCState(chain, jnp.asarray(eps, dtype), inverse_mass_matrix, warmup, jnp.zeros((), jnp.int32), draws,
                         jnp.zeros((), jnp.int32))
        # Strong dtypes throughout: a weakly typed leaf (dual averaging starts from Python floats) would turn
        # strong after one update and make every chunk after the first retrace.
        return jax.tree.map(_strongly_typed, state)

    def adapted(state: HMCState, chain, acceptance_rate):
        """Stan's window adaptation after transition ``state.step`` (a no-op after warm-up)."""
        t = jnp.clip(state.step, 0, num_warmup - 1)
        in_warmup = state.step < num_warmup
        da = da_update(state.warmup.step_size, acceptance_rate)
        mm = state.warmup.mass_matrix
        mm = _select(jnp.asarray(slow_window)[t], mm_update(mm, chain.position), mm)
        # End of a slow window: M⁻¹ from the window's draws; dual averaging restarts from its average ε.
        ends = jnp.asarray(window_end)[t]
        mm = _select(ends, mm_final(mm), mm)
        da = _select(ends, da_init(da_final(da)), da)
        eps = jnp.where(state.step == num_warmup - 1, da_final(da), jnp.exp(da.log_step_size))
        return (
            jnp.where(in_warmup, eps.astype(state.step_size.dtype), state.step_size),
            jnp.where(in_warmup, mm.inverse_mass_matrix, state.inverse_mass_matrix),
            _select(in_warmup, WarmupState(da, mm), state.warmup),
        )

    def update(state: HMCState, batch, key):
        del batch  # the target is the full data set bound at build time (see the module docstring)
        eps = state.step_size
        if step_size_jitter:  # ε·U(1 − j, 1 + j) per transition breaks periodic trajectories (Neal 2011, §5.4.2.2)
            key, jitter_key = jax.random.split(key)
            eps = eps * jax.random.uniform(jitter_key, (), eps.dtype, 1 - step_size_jitter, 1 + step_size_jitter)
        chain, info = transition(key, state.chain, eps, state.inverse_mass_matrix)
        used_eps = eps  # what this transition integrated with (jittered), for its info
        is_warmup = state.step < num_warmup
        if adapt:
            eps, inverse_mass_matrix, warmup = adapted(state, chain, info.acceptance_rate)
        else:
            eps, inverse_mass_matrix, warmup = state.step_size, state.inverse_mass_matrix, None
        draws, num_stored = state.draws, state.num_stored
        if num_kept:
            keep = (~is_warmup) & ((state.step - num_warmup) % thinning == thinning - 1)
            slot = num_stored % num_kept
            draws = jax.tree.map(
                lambda buffer, p: buffer.at[slot].set(jnp.where(keep, p.astype(buffer.dtype), buffer[slot])),
                draws, chain.position)
            num_stored = num_stored + keep.astype(jnp.int32)
        new_state = HMCState(chain, eps, inverse_mass_matrix, warmup, state.step + 1, draws, num_stored)
        step_info = TransitionInfo(chain.logdensity, info.acceptance_rate, info.is_divergent, used_eps,
                                   jnp.asarray(info.num_integration_steps, jnp.int32), is_warmup)
        return new_state, step_info

    def sample(state: HMCState, key, num_samples: int = num_kept):
        del key
        if not num_kept:
            raise ValueError("this HMC transform keeps no draws (num_kept=0); build it with num_kept > 0, or run "
                             "bdljax.methods.hmc.sample_chains, which collects draws itself")
        if not 1 <= num_samples <= num_kept:
            raise ValueError(f"num_samples={num_samples} must lie in [1, num_kept={num_kept}]")
        index = (state.num_stored - num_samples + jnp.arange(num_samples)) % num_kept
        return jax.tree.map(lambda buffer: buffer[index], state.draws)

    transform = Transform(init, update, sample)
    return Sampler(transform, algorithm, int(num_warmup), int(thinning), bool(float64))


def build(log_posterior: LogPosterior, data: Tuple[Any, Any], **settings) -> Transform:
    """HMC or NUTS as a :class:`~bdljax.core.transform.Transform` (one transition per ``update``).

    Args:
      log_posterior: the shared log posterior, built with ``num_data`` = N.
      data: the whole training set ``(x, y)`` (N rows). ``update`` ignores its
        ``batch`` argument: the target is this full-batch posterior.
      algorithm: ``"hmc"`` (fixed trajectory) or ``"nuts"`` (default).
      step_size: fixed ε; ``None`` adapts ε and M⁻¹ during ``num_warmup``
        transitions with BlackJAX's window adaptation (Stan's schedule).
      num_warmup: adaptation (or, with a fixed ε, burn-in) transitions.
      num_integration_steps: HMC's L (default 10).
      trajectory_length: HMC's εL instead of L; L = ⌈length/ε⌉ then follows the
        adapted ε (at most ``max_num_integration_steps``).
      max_num_doublings: NUTS's tree depth limit (2^depth leapfrog steps).
      step_size_jitter: j > 0 draws each transition's ε uniformly from
        [(1 − j)ε, (1 + j)ε], so that a fixed trajectory length cannot sit on a
        multiple of some direction's period (where HMC would not move) —
        Neal (2011), "MCMC using Hamiltonian dynamics", §5.4.2.2.
      target_acceptance_rate: dual-averaging target (0.8 is Stan's default for
        NUTS; 0.65 is optimal for HMC in high dimension, Beskos et al. 2013).
      dense_mass: adapt a dense M⁻¹ instead of a diagonal one.
      divergence_threshold: energy error above which a transition is counted
        as divergent. HMC then rejects the proposal (its acceptance probability
        is below e^-threshold); NUTS stops extending the trajectory and samples
        from the part built before the divergence. Either way the count is
        reported, and :mod:`bdljax.evaluate.diagnostics` warns about it.
      num_kept: size of a ring buffer of kept draws in the state (for
        ``sample``); 0 keeps none (use :func:`sample_chains`).
      thinning: keep every ``thinning``-th transition after warm-up.
      float64: run in double precision; call the transform inside
        ``with jax.enable_x64(True):``.
    """
    return sampler(log_posterior, data, **settings).transform


def _strongly_typed(leaf):
    leaf = jnp.asarray(leaf)
    return jnp.asarray(leaf, leaf.dtype)


def _select(condition, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


# --------------------------------------------------------------------------
# Chains in compiled chunks
# --------------------------------------------------------------------------


class ChainRun(NamedTuple):
    """What :func:`sample_chains` returns.

    Attributes:
      samples: stacked draws ``(chains, draws, ...)`` (host numpy leaves), or
        ``None`` with ``keep_samples=False``.
      traces: ``log_density`` ``(C, S)``, ``param_norms`` ``(C, S, leaves)`` and,
        with ``trace_points``, ``predictions`` ``(C, S, K)``.
      warmup_infos, infos: :class:`TransitionInfo` fields ``(C, T)`` for the
        warm-up and the kept phase (every transition, thinned ones included).
      running: the streamed :class:`~bdljax.run.predictive.RunningPredictive` on
        ``predictive_data`` (``None`` without it).
      state: final chain states, leading axis C.
      history: one record per chunk (and per evaluation).
      diagnostics: see :func:`bdljax.evaluate.diagnostics.summarise` and
        :func:`bdljax.evaluate.diagnostics.sampler_summary`.
    """

    samples: Optional[Params]
    traces: Dict[str, np.ndarray]
    warmup_infos: Dict[str, np.ndarray]
    infos: Dict[str, np.ndarray]
    running: Optional[predictive.RunningPredictive]
    state: Any
    history: List[Dict[str, Any]]
    diagnostics: Dict[str, Any]


def _transition_keys(run_keys, start, length, thinning=1):
    """Key of transition t of chain c: fold_in(run_key_c, t), whatever the chunking or the number of chains."""
    steps = start + jnp.arange(length * thinning, dtype=jnp.int32)
    keys = jax.vmap(lambda k: jax.vmap(lambda t: jax.random.fold_in(k, t))(steps))(run_keys)  # (C, T)
    keys = jnp.swapaxes(keys, 0, 1)  # (T, C)
    return keys.reshape((length, thinning, *keys.shape[1:])) if thinning > 1 else keys


CHAIN_METHODS = ("auto", "vectorized", "sequential")


def resolve_chain_method(chain_method: str, num_chains: int) -> str:
    """``auto``: ``vectorized`` (``jax.vmap``) for several chains on an accelerator, else ``sequential``.

    XLA's CPU backend runs a vmapped matrix product as a batched
    ``dot_general``, which is slower than the plain products one chain at a
    time: in scripts/bench_hmc.py (session 2, 2 shared CPU cores, single-threaded
    XLA) 4 chains gave 2304 gradients/s vmapped against 2948 mapped one after
    another, 16 chains 1900 against 2875, and a batch of one chain 1934 against
    2271; with XLA's default threading on the same loaded machine sequential
    won too (16 chains: 1317 against 6342). So on CPU chains are mapped one
    after another inside the compiled step (``lax.map``); on GPU/TPU the
    batched products fill the device and ``vectorized`` is the default for
    several chains. State layout, keys and draws are the same either way.
    """
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"unknown chain_method {chain_method!r}; choose one of {CHAIN_METHODS}")
    if chain_method == "auto":
        return "vectorized" if num_chains > 1 and jax.default_backend() != "cpu" else "sequential"
    return chain_method


def _over_chains(fn: Callable, chain_method: str) -> Callable:
    """``fn`` of one chain's arguments → the same over a leading chain axis of every argument."""
    if chain_method == "vectorized":
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda chain_args: fn(*chain_args), args)


@functools.lru_cache(maxsize=64)
def _init_chains_fn(transform: Transform, init_fn: Optional[Callable], chain_method: str):
    if init_fn is None:
        return jax.jit(_over_chains(transform.init, chain_method))
    return jax.jit(_over_chains(lambda key: transform.init(key, init_fn), chain_method))


@functools.lru_cache(maxsize=64)
def _chunk_fn(transform: Transform, length: int, group: int, keep_samples: bool, sample_dtype,
              apply: Optional[Callable], likelihood: Optional[Likelihood], chain_method: str):
    """``length`` emissions, each after ``group`` transitions of every chain, as one jitted scan.

    Warm-up (group 1, ``accumulate`` False) and sampling (group = thinning,
    ``accumulate`` True) share this function, so with thinning 1 a whole run
    compiles once per chunk length. What warm-up emits is dropped on the host.
    """
    # The transform is full batch (its data is bound at build time), so every update gets batch=None.
    step_chains = _over_chains(lambda state, key: transform.update(state, None, key), chain_method)

    def chunk(states, run_keys, start, running, accumulate, points, x_pred, y_pred):
        TRACE_COUNTS[(transform, length, group)] += 1
        keys = _transition_keys(run_keys, start, length, group)
        summaries = _over_chains(lambda p: diag.draw_summaries(apply, likelihood, p, points), chain_method)

        def one_draw(carry, draw_keys):
            states, running = carry
            if group > 1:
                states, infos = jax.lax.scan(step_chains, states, draw_keys)
            else:
                states, infos = step_chains(states, draw_keys)
            position = jax.tree.map(lambda p: p.astype(sample_dtype), states.chain.position)
            emitted = {"log_density": states.chain.logdensity}
            emitted.update(summaries(position))
            if keep_samples:
                emitted["position"] = position
            if running is not None:
                def add(running):
                    outputs = _over_chains(lambda p: apply(p, x_pred), chain_method)(position)  # (C, N, ...)
                    return predictive.running_update(likelihood, running, outputs, y_pred)

                # `accumulate` is one flag for all chains (not vmapped), so this is a real branch: warm-up
                # pays nothing for the predictive.
                running = jax.lax.cond(accumulate, add, lambda r: r, running)
            return (states, running), (emitted, infos)

        (states, running), (emitted, infos) = jax.lax.scan(one_draw, (states, running), keys)
        return states, running, emitted, infos

    return jax.jit(chunk)


def _chunks(total: int, size: int) -> List[int]:
    return [size] * (total // size) + ([total % size] if total % size else [])


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def _stack_infos(parts: List[TransitionInfo]) -> Dict[str, np.ndarray]:
    if not parts:
        return {field: np.zeros((0, 0)) for field in TransitionInfo._fields}
    fields = {}
    for field in TransitionInfo._fields:
        # (length[, thinning], C) per chunk -> (T, C) -> (C, T)
        values = np.concatenate([np.reshape(getattr(p, field), (-1, np.shape(getattr(p, field))[-1])) for p in parts])
        fields[field] = values.T
    return fields


def running_metrics(likelihood: Likelihood, running: predictive.RunningPredictive, y) -> Dict[str, float]:
    """Predictive metrics from streamed accumulators: RMSE and test log-likelihood, or accuracy and NLL."""
    log_density = predictive.running_log_predictive_density(running)
    mean, _ = predictive.running_moments(running)
    if likelihood.kind == "regression":
        return {"rmse": float(metrics.rmse(mean, jnp.asarray(y))), "test_ll": float(jnp.mean(log_density))}
    return {"accuracy": float(metrics.accuracy(mean, jnp.asarray(y))), "nll": float(-jnp.mean(log_density))}


def sample_chains(
    mcmc: Sampler,
    chain_keys: jax.Array,
    init_params: Any,
    *,
    num_draws: int,
    chunk_size: int = 100,
    keep_samples: bool = True,
    apply: Optional[Callable] = None,
    likelihood: Optional[Likelihood] = None,
    trace_points: Optional[Any] = None,
    predictive_data: Optional[Tuple[Any, Any]] = None,
    eval_every: int = 0,
    chain_method: str = "auto",
    diagnose: bool = True,
    warn: bool = True,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = False,
    description: str = "mcmc",
) -> ChainRun:
    """Run ``len(chain_keys)`` chains of ``mcmc``: warm-up, then ``num_draws`` kept draws per chain.

    Every chunk of ``chunk_size`` draws (``chunk_size · thinning``
    transitions; ``chunk_size`` transitions in warm-up) is one jitted
    ``lax.scan`` of the transition of all chains (vmapped or mapped), so the host
    sees the chains once per chunk (progress, logs) and device memory holds
    one chunk of draws. Chunk functions are cached per (sampler, chunk
    length): a run compiles once per distinct chunk length, and a second run
    of the same sampler not at all.

    Args:
      mcmc: from :func:`sampler`.
      chain_keys: ``(C,)`` keys, one per chain. Chain c's run depends only on
        ``chain_keys[c]`` and its initialisation, so a chain run alone gives the
        same draws as in a vmapped batch.
      init_params: ``key -> params`` (a fresh initialisation per chain), or a
        pytree stacked with a leading axis of C (e.g. C MAP solutions; use
        :func:`bdljax.core.transform.repeat_params` for one shared start).
      num_draws: kept draws per chain (after warm-up and thinning).
      keep_samples: keep every draw on the host as ``(C, S, ...)``; with
        ``False`` memory stays constant (use ``predictive_data``).
      apply, likelihood: the network and likelihood, needed for
        ``trace_points`` and ``predictive_data``.
      trace_points: a few inputs ``(K, ...)`` whose predictions are traced per
        draw for R̂/ESS of the predictive.
      predictive_data: ``(x, y)`` streamed into a running predictive
        (log-mean-exp over draws, as bnn_hmc's running ensemble).
      eval_every: with ``predictive_data``, log predictive metrics every this
        many kept chunks (and after the last).
      chain_method: ``"vectorized"`` (``jax.vmap`` over chains), ``"sequential"``
        (``lax.map`` over chains inside each compiled step) or ``"auto"``
        (see :func:`resolve_chain_method`).
      diagnose: compute R̂ and ESS of the traces (one compiled diagnostic per
        trace shape); the sampler summary (acceptance, divergences, ...) is
        always computed.
      warn: issue :class:`bdljax.evaluate.diagnostics.ConvergenceWarning` for large R̂,
        small ESS or divergences.
    """
    from tqdm.auto import tqdm

    transform = mcmc.transform
    num_chains = int(chain_keys.shape[0])
    chain_method = resolve_chain_method(chain_method, num_chains)
    if num_draws < 4 or chunk_size < 1:
        # 4: the split-chain R̂/ESS reported after the run need two halves of two draws each.
        raise ValueError(f"need num_draws >= 4 (per chain, for split R-hat) and chunk_size >= 1, got {num_draws} "
                         f"and {chunk_size}")
    if (trace_points is not None or predictive_data is not None) and apply is None:
        raise ValueError("trace_points and predictive_data need the network's apply")
    if predictive_data is not None and likelihood is None:
        raise ValueError("predictive_data needs the likelihood")
    if not callable(init_params):
        leading = {leaf.shape[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(init_params)}
        if leading != {num_chains}:
            raise ValueError(
                f"init_params must be an initialiser key -> params or params stacked with a leading axis of "
                f"{num_chains} chains (bdljax.core.transform.repeat_params(params, {num_chains}) for one shared start); "
                f"got leading sizes {sorted(map(str, leading))}")
    keys = jax.vmap(lambda k: jax.random.split(k, 2))(chain_keys)
    init_keys, run_keys = keys[:, 0], keys[:, 1]
    context = jax.enable_x64(True) if mcmc.float64 else contextlib.nullcontext()
    history: List[Dict[str, Any]] = []
    extra = dict(log_fields or {})

    def record(entry):
        entry = {**extra, **entry}
        history.append(entry)
        if logger is not None:
            logger.log(entry)

    total = mcmc.num_warmup + num_draws * mcmc.thinning
    bar = tqdm(total=total, desc=description, disable=not progress, leave=False)
    warmup_parts, draw_parts, emitted_parts = [], [], []
    with context:
        if callable(init_params):
            states = _init_chains_fn(transform, init_params, chain_method)(init_keys)
        else:
            states = _init_chains_fn(transform, None, chain_method)(init_keys, init_params)
        sample_dtype = jnp.float32 if mcmc.float64 else jax.tree.leaves(states.chain.position)[0].dtype
        running, points, x_pred, y_pred = None, None, None, None
        if trace_points is not None:
            points = _cast_floats(jnp.asarray(trace_points), sample_dtype)
        if predictive_data is not None:
            x_pred, y_pred = jnp.asarray(predictive_data[0]), jnp.asarray(predictive_data[1])
            example = jax.eval_shape(apply, jax.tree.map(lambda p: p[0].astype(sample_dtype), states.chain.position),
                                     x_pred[:1])
            num_classes = example.shape[-1] if likelihood.kind == "classification" else 0
            # Once, on the host, before any chunk streams them (inside the compiled chunks they are traced).
            likelihood.check_targets(np.asarray(predictive_data[1]), tuple(example.shape[1:]))
            running = predictive.running_init(likelihood, x_pred.shape[0], num_classes)

        def chunk(length, group):
            return _chunk_fn(transform, length, group, keep_samples, sample_dtype, apply, likelihood, chain_method)

        step = 0
        for length in _chunks(mcmc.num_warmup, chunk_size):
            start = time.perf_counter()
            states, running, _, infos = chunk(length, 1)(states, run_keys, np.int32(step), running, False, points,
                                                         x_pred, y_pred)
            infos = _host(infos)
            warmup_parts.append(infos)
            step += length
            record(_chunk_record("warmup", step, infos, time.perf_counter() - start))
            bar.update(length)
            bar.set_postfix(acc=f"{history[-1]['acceptance']:.2f}", eps=f"{history[-1]['step_size']:.3g}")

        draw_chunks = _chunks(num_draws, chunk_size)
        for index, length in enumerate(draw_chunks, start=1):
            start = time.perf_counter()
            states, running, emitted, infos = chunk(length, mcmc.thinning)(states, run_keys, np.int32(step), running,
                                                                           True, points, x_pred, y_pred)
            emitted, infos = _host(emitted), _host(infos)
            emitted_parts.append(emitted)
            draw_parts.append(infos)
            step += length * mcmc.thinning
            record(_chunk_record("sampling", step, infos, time.perf_counter() - start))
            bar.update(length * mcmc.thinning)
            bar.set_postfix(acc=f"{history[-1]['acceptance']:.2f}", div=int(history[-1]["divergences"]))
            if running is not None and eval_every and (index % eval_every == 0 or index == len(draw_chunks)):
                num_kept = num_chains * sum(part["log_density"].shape[0] for part in emitted_parts)
                record({"step": step, "split": "eval", "draws": num_kept,
                        **running_metrics(likelihood, running, predictive_data[1])})
    bar.close()

    def joined(name):  # (T, C, ...) chunks -> (C, T, ...)
        return np.swapaxes(np.concatenate([part[name] for part in emitted_parts]), 0, 1)

    traces = {"log_density": joined("log_density"), "param_norms": joined("param_norms")}
    if trace_points is not None:
        traces["predictions"] = joined("predictions")
    samples = None
    if keep_samples:
        samples = jax.tree.map(lambda *leaves: np.swapaxes(np.concatenate(leaves), 0, 1),
                               *[part["position"] for part in emitted_parts])
    warmup_infos, infos = _stack_infos(warmup_parts), _stack_infos(draw_parts)
    summary = diag.sampler_summary(infos["acceptance_rate"], infos["is_divergent"], np.asarray(states.step_size),
                                   infos["num_integration_steps"], warmup_infos["is_divergent"])
    if diagnose:
        summary.update(diag.summarise(traces))
    summary.update({"algorithm": mcmc.algorithm, "chain_method": chain_method, "num_chains": num_chains,
                    "num_draws": int(num_draws), "num_warmup": mcmc.num_warmup, "thinning": mcmc.thinning,
                    "float64": mcmc.float64})
    summary["warnings"] = diag.check(summary, num_chains, warn=warn)
    if logger is not None:
        logger.log({**extra, "split": "diagnostics", **summary})
    return ChainRun(samples, traces, warmup_infos, infos, running, states, history, summary)


def _chunk_record(phase: str, step: int, infos: TransitionInfo, seconds: float) -> Dict[str, Any]:
    return {
        "step": step, "split": "train", "phase": phase,
        "acceptance": float(np.mean(infos.acceptance_rate)),
        "divergences": int(np.sum(infos.is_divergent)),
        "step_size": float(np.mean(infos.step_size)),
        "num_integration_steps": float(np.mean(infos.num_integration_steps)),
        "log_density": float(np.mean(infos.log_density)),
        "seconds": seconds,
    }


def flatten_chains(samples: Params) -> Params:
    """``(C, S, ...)`` draws → ``(C·S, ...)`` device arrays, chain-major (the sample axis of the predictive)."""
    return jax.tree.map(lambda leaf: jnp.asarray(leaf.reshape((-1, *leaf.shape[2:]))), samples)


# --------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------


def map_initialisations(problem: Problem, key: jax.Array, num_chains: int, *, num_epochs: int, learning_rate: float,
                        batch_size: Optional[int], progress: bool = False) -> Params:
    """One MAP solution per chain, stacked ``(C, ...)``: a deep ensemble of C independently initialised members.

    Starting chains in different modes found by optimisation saves the
    warm-up from climbing out of the prior (Izmailov et al. 2021 start HMC
    from SGD solutions); chains from different modes also make R̂ honest.
    """
    method = ensemble.deep_ensemble(problem.log_posterior(), make_optimizer("adam", learning_rate), num_chains)
    fitted = fit_transform(problem, method, key, init_params=problem.model.init, num_epochs=num_epochs,
                           batch_size=batch_size_for(batch_size, problem.num_data), num_samples=num_chains,
                           progress=progress, description="map init")
    return fitted.samples


def _recipe(problem: Problem, key: jax.Array, algorithm: str, *, num_chains, num_warmup, num_samples, thinning,
            step_size, num_integration_steps, trajectory_length, max_num_doublings, step_size_jitter,
            target_acceptance_rate, init, map_epochs, map_learning_rate, map_batch_size, float64, chunk_size,
            chain_method, eval_data, eval_every, logger, log_fields, progress) -> Fitted:
    if init not in ("random", "map"):
        raise ValueError(f"init must be 'random' (the model's initialiser) or 'map' (one MAP solution per chain), "
                         f"got {init!r}")
    if num_chains < 1:
        raise ValueError(f"num_chains must be at least 1, got {num_chains}")
    mcmc = sampler(
        problem.log_posterior(), (problem.x_train, problem.y_train), algorithm=algorithm, step_size=step_size,
        num_warmup=num_warmup, num_integration_steps=num_integration_steps, trajectory_length=trajectory_length,
        max_num_doublings=max_num_doublings, step_size_jitter=step_size_jitter,
        target_acceptance_rate=target_acceptance_rate, thinning=thinning, float64=float64,
    )
    init_key, run_key = jax.random.split(key)
    init_params = problem.model.init
    if init == "map":
        init_params = map_initialisations(problem, init_key, num_chains, num_epochs=map_epochs,
                                          learning_rate=map_learning_rate, batch_size=map_batch_size, progress=progress)
    points_source = problem.x_train if eval_data is None else eval_data[0]
    run = sample_chains(
        mcmc, jax.random.split(run_key, num_chains), init_params, num_draws=num_samples, chunk_size=chunk_size,
        apply=problem.model.apply, likelihood=problem.likelihood, trace_points=np.asarray(points_source)[:8],
        predictive_data=eval_data, eval_every=eval_every, chain_method=chain_method, logger=logger,
        log_fields=log_fields, progress=progress, description=algorithm,
    )
    return Fitted(flatten_chains(run.samples), problem.model.apply, run.history, run.diagnostics, run)


def hmc_recipe(
    problem: Problem,
    key: jax.Array,
    *,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    thinning: int = 1,
    step_size: Optional[float] = None,
    num_integration_steps: int = 10,
    trajectory_length: Optional[float] = None,
    step_size_jitter: float = 0.1,
    target_acceptance_rate: float = 0.65,
    init: str = "random",
    map_epochs: int = 100,
    map_learning_rate: float = 1e-3,
    map_batch_size: Optional[int] = 100,
    float64: bool = False,
    chunk_size: int = 100,
    chain_method: str = "auto",
    eval_data: Optional[Tuple[Any, Any]] = None,
    eval_every: int = 0,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = False,
) -> Fitted:
    """Experiment recipe (:mod:`bdljax.recipes`): full-batch HMC, ``num_chains`` chains.

    ``num_samples`` draws per chain after ``num_warmup`` adaptation
    transitions (``step_size=None``) or burn-in (a fixed ``step_size``);
    ``Fitted.samples`` holds all ``num_chains · num_samples`` draws, chain-major.
    ``init="map"`` starts each chain at its own MAP solution (``map_epochs``
    of Adam). ``step_size_jitter`` (default ±10 %) varies ε per transition so
    that the fixed trajectory cannot be periodic in some direction.
    ``Fitted.diagnostics``: acceptance, divergences, step size, leapfrog
    steps, R̂ and ESS of the log posterior, parameter norms and predictions
    at 8 points (of ``eval_data`` when given); ``Fitted.state`` is the
    :class:`ChainRun` (traces, per-transition infos, running predictive).
    """
    return _recipe(problem, key, "hmc", num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples,
                   thinning=thinning, step_size=step_size, num_integration_steps=num_integration_steps,
                   trajectory_length=trajectory_length, max_num_doublings=10, step_size_jitter=step_size_jitter,
                   target_acceptance_rate=target_acceptance_rate, init=init, map_epochs=map_epochs,
                   map_learning_rate=map_learning_rate, map_batch_size=map_batch_size, float64=float64,
                   chunk_size=chunk_size, chain_method=chain_method, eval_data=eval_data, eval_every=eval_every,
                   logger=logger, log_fields=log_fields, progress=progress)


def nuts_recipe(
    problem: Problem,
    key: jax.Array,
    *,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    thinning: int = 1,
    step_size: Optional[float] = None,
    max_num_doublings: int = 10,
    target_acceptance_rate: float = 0.8,
    init: str = "random",
    map_epochs: int = 100,
    map_learning_rate: float = 1e-3,
    map_batch_size: Optional[int] = 100,
    float64: bool = False,
    chunk_size: int = 100,
    chain_method: str = "auto",
    eval_data: Optional[Tuple[Any, Any]] = None,
    eval_every: int = 0,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = False,
) -> Fitted:
    """Experiment recipe (:mod:`bdljax.recipes`): full-batch NUTS, ``num_chains`` chains.

    As :func:`hmc_recipe`, with the trajectory length chosen per transition
    by the no-U-turn criterion (at most 2^``max_num_doublings`` leapfrog steps).
    """
    return _recipe(problem, key, "nuts", num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples,
                   thinning=thinning, step_size=step_size, num_integration_steps=10, trajectory_length=None,
                   max_num_doublings=max_num_doublings, step_size_jitter=0.0,
                   target_acceptance_rate=target_acceptance_rate, init=init, map_epochs=map_epochs,
                   map_learning_rate=map_learning_rate, map_batch_size=map_batch_size, float64=float64,
                   chunk_size=chunk_size, chain_method=chain_method, eval_data=eval_data, eval_every=eval_every,
                   logger=logger, log_fields=log_fields, progress=progress)
