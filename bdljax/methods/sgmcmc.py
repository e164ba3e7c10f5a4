"""Stochastic-gradient MCMC: SGLD and SGHMC on minibatches, through BlackJAX's sgmcmc module.

Both simulate a diffusion whose stationary distribution is the tempered
posterior p_T(θ|D) ∝ exp(U(θ)), using the minibatch gradient of the shared
log posterior (:mod:`bdljax.core.posterior`),

    ∇Û(θ) = (1/T) [ ∇log p(θ) + (N/|B|) Σ_{i∈B} ∇log p(y_i|x_i, θ) ],

an unbiased estimate of ∇U. The N/|B| scaling and the temperature T live in
:class:`~bdljax.core.posterior.LogPosterior` only: BlackJAX's own
``grad_estimator`` would scale by N a second time, so the gradient is built
from the log posterior directly and handed to BlackJAX's integrators
(:mod:`blackjax.sgmcmc.diffusions`) with *their* temperature at 1.

* SGLD (Welling & Teh 2011, "Bayesian learning via stochastic gradient
  Langevin dynamics"), BlackJAX's Euler step of the overdamped Langevin
  diffusion: θ ← θ + ε_t ∇Û(θ) + √(2ε_t) ξ, ξ ~ N(0, I). (Welling & Teh
  write ε/2 for the drift: their ε is 2× this one.)
* SGHMC (Chen, Fox & Guestrin 2014, "Stochastic gradient Hamiltonian Monte
  Carlo"), the underdamped diffusion with friction α discretised as SGD with
  momentum: r ← (1 − αε) r + ε ∇Û(θ) + √(2αε) ξ, then θ ← θ + ε r with the
  *new* r (learning rate ε², momentum 1 − αε). BlackJAX's ``diffusions.sghmc``
  moves θ with the old r and updates r with the gradient at the old θ
  (forward Euler), whose update matrix has determinant 1 − αε + ε²λ: it
  diverges, unflagged (every value stays finite for a while), once ελ > α
  in a direction of curvature λ, and inflates the variance well before
  (×2 at ελ = α/2); this order is stable up to ε²λ ≈ 2(2 − αε). The
  momentum persists across minibatches (BlackJAX's ``sghmc`` kernel instead
  redraws it every call and runs several steps on one minibatch).

Step-size schedules (:class:`Schedule`): :func:`constant`, the polynomial
decay of Welling & Teh (:func:`polynomial`) and the cyclical schedule of
Zhang, Li, Zhang, Chen & Wilson (2020), "Cyclical stochastic gradient MCMC
for Bayesian deep learning" (:func:`cyclical`), whose exploration stage at
the start of every cycle turns the noise off (an optimiser heading for a new
mode) and whose sampling stage keeps draws.

Draws are kept in a ring buffer in the state after ``num_burnin`` steps,
every ``thinning``-th eligible step (outside exploration). Steps whose loss
or gradient is not finite leave the state unchanged and are counted in
``num_nonfinite``, as in :mod:`bdljax.methods.map_estimate`. Several chains are a deep
ensemble of samplers (:func:`bdljax.methods.ensemble.build`): vmapped, each with its
own key, initialisation and data order. Both transforms run under
:func:`bdljax.run.training.fit`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import blackjax.sgmcmc.diffusions as diffusions
from blackjax.util import generate_gaussian_noise
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bdljax.evaluate import diagnostics as diag
from bdljax.methods import ensemble
from bdljax.methods.map_estimate import batch_size_for, select_tree, tree_all_finite
from bdljax.recipes import Fitted, Problem, fit_transform
from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform
from bdljax.core.tree import initial_params

Params = Any


class Schedule(NamedTuple):
    """Step size ε_t and exploration flag as functions of the step index t (jit-able)."""

    step_size: Callable[[jax.Array], jax.Array]
    exploring: Callable[[jax.Array], jax.Array]  # True: no noise, no draws (cSG-MCMC's exploration stage)


def constant(step_size: float) -> Schedule:
    """ε_t = ε."""
    _check_positive("step_size", step_size)
    return Schedule(lambda t: jnp.asarray(step_size, jnp.float32), lambda t: jnp.zeros((), bool))


def polynomial(initial_step_size: float, decay_steps: float, gamma: float = 0.55) -> Schedule:
    """ε_t = ε_0 (1 + t/decay_steps)^(−γ): Welling & Teh's a(b + t)^(−γ) with b = decay_steps.

    γ ∈ (0.5, 1] satisfies Σε_t = ∞, Σε_t² < ∞ (Robbins–Monro), the condition
    for SGLD to converge without a Metropolis correction.
    """
    _check_positive("initial_step_size", initial_step_size)
    _check_positive("decay_steps", decay_steps)
    if not 0.5 < gamma <= 1:
        raise ValueError(f"gamma must lie in (0.5, 1] (Robbins–Monro), got {gamma}")
    return Schedule(lambda t: jnp.asarray(initial_step_size * (1.0 + t / decay_steps) ** (-gamma), jnp.float32),
                    lambda t: jnp.zeros((), bool))


def cyclical(initial_step_size: float, num_steps: int, num_cycles: int, exploration_fraction: float = 0.0) -> Schedule:
    """Zhang et al. (2020), eq. (1): ε_t = (ε_0/2) [cos(π · mod(t, L)/L) + 1], L = ⌈num_steps/num_cycles⌉.

    The first ``exploration_fraction`` (β) of every cycle explores (no noise,
    no draws); the rest samples with the small step sizes at the cycle's end.
    """
    _check_positive("initial_step_size", initial_step_size)
    if num_cycles < 1 or num_steps < num_cycles:
        raise ValueError(f"need 1 <= num_cycles <= num_steps, got num_cycles={num_cycles}, num_steps={num_steps}")
    if not 0 <= exploration_fraction < 1:
        raise ValueError(f"exploration_fraction must lie in [0, 1), got {exploration_fraction}")
    cycle_length = math.ceil(num_steps / num_cycles)
    # Steps t with mod(t, L)/L < β, counted in integers so that rounding cannot move a cycle's boundary.
    exploration_steps = math.ceil(exploration_fraction * cycle_length)

    def step_size(t):
        phase = jnp.mod(t, cycle_length) / cycle_length
        return jnp.asarray(initial_step_size / 2 * (jnp.cos(jnp.pi * phase) + 1), jnp.float32)

    return Schedule(step_size, lambda t: jnp.mod(t, cycle_length) < exploration_steps)


def _check_positive(name, value):
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


class SGMCMCState(NamedTuple):
    position: Params
    momentum: Optional[Params]  # SGHMC only
    step: jax.Array
    num_eligible: jax.Array  # steps after burn-in outside exploration (what thinning counts)
    draws: Params  # ring buffer of the last num_kept kept draws
    num_stored: jax.Array
    num_nonfinite: jax.Array  # steps skipped because the loss or gradient was not finite


class SGMCMCInfo(NamedTuple):
    log_posterior: jax.Array  # minibatch estimate of log p_T(θ|D) before the step
    log_likelihood: jax.Array
    log_prior: jax.Array
    step_size: jax.Array
    grad_norm: jax.Array
    kept: jax.Array  # a draw was stored after this step


def _build(log_posterior: LogPosterior, schedule: Schedule, move: Callable, with_momentum: bool, *, num_burnin: int,
           thinning: int, num_kept: int) -> Transform:
    if num_burnin < 0 or thinning < 1 or num_kept < 1:
        raise ValueError(f"need num_burnin >= 0, thinning >= 1, num_kept >= 1; "
                         f"got {num_burnin}, {thinning}, {num_kept}")

    def init(key, params) -> SGMCMCState:
        params = initial_params(key, params)
        momentum = None
        if with_momentum:  # r ~ N(0, I), the stationary law of the momentum at T = 1
            leaves, treedef = jax.tree.flatten(params)
            keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
            momentum = jax.tree.unflatten(
                treedef, [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])
        draws = jax.tree.map(lambda p: jnp.broadcast_to(p, (num_kept, *p.shape)), params)
        zero = jnp.zeros((), jnp.int32)
        return SGMCMCState(params, momentum, zero, zero, draws, zero, zero)

    def objective(params, batch, rng):
        return log_posterior.evaluate(params, batch, rng)

    def update(state: SGMCMCState, batch, key):
        rng, noise_key = jax.random.split(key)
        (value, terms), grads = jax.value_and_grad(objective, has_aux=True)(state.position, batch, rng)
        eps = schedule.step_size(state.step)
        exploring = schedule.exploring(state.step)
        # BlackJAX's temperature only scales the injected noise; T itself is in the log posterior, so it is 1
        # when sampling and 0 in an exploration stage (plain gradient ascent / SGD with momentum).
        noise_scale = jnp.where(exploring, 0.0, 1.0).astype(eps.dtype)
        position, momentum = move(noise_key, state.position, state.momentum, grads, eps, noise_scale)
        finite = jnp.isfinite(value) & tree_all_finite(grads)
        position = select_tree(finite, position, state.position)
        if with_momentum:
            momentum = select_tree(finite, momentum, state.momentum)
        # A skipped (non-finite) step leaves the chain where it was, a valid state to keep: counting it keeps the
        # buffer's fill on the schedule the recipe sized it for, instead of leaving slots at the initialisation.
        eligible = (state.step >= num_burnin) & ~exploring
        keep = eligible & (state.num_eligible % thinning == thinning - 1)
        slot = state.num_stored % num_kept
        draws = jax.tree.map(lambda buffer, p: buffer.at[slot].set(jnp.where(keep, p, buffer[slot])),
                             state.draws, position)
        new_state = SGMCMCState(
            position, momentum, state.step + 1, state.num_eligible + eligible.astype(jnp.int32), draws,
            state.num_stored + keep.astype(jnp.int32), state.num_nonfinite + (~finite).astype(jnp.int32),
        )
        return new_state, SGMCMCInfo(value, terms.log_likelihood, terms.log_prior, eps, optax.tree.norm(grads), keep)

    def sample(state: SGMCMCState, key, num_samples: int = num_kept):
        """The last ``num_samples`` kept draws, oldest first (``num_samples <= num_kept``)."""
        del key
        if not 1 <= num_samples <= num_kept:
            raise ValueError(f"num_samples={num_samples} must lie in [1, num_kept={num_kept}]")
        index = (state.num_stored - num_samples + jnp.arange(num_samples)) % num_kept
        return jax.tree.map(lambda buffer: buffer[index], state.draws)

    return Transform(init, update, sample)


def sgld(log_posterior: LogPosterior, schedule: Schedule, *, num_burnin: int = 0, thinning: int = 1,
         num_kept: int = 100) -> Transform:
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011) with BlackJAX's overdamped Langevin step.

    Args:
      log_posterior: the shared log posterior (``num_data`` = N, temperature T).
      schedule: ε_t (and exploration stages), e.g. ``constant(1e-5)``.
      num_burnin: steps before any draw is kept.
      thinning: keep every ``thinning``-th eligible step.
      num_kept: draws held in the state's ring buffer (``sample`` returns the latest).
    """
    langevin = diffusions.overdamped_langevin()

    def move(key, position, momentum, grads, eps, noise_scale):
        del momentum
        return langevin(key, position, grads, eps, noise_scale), None

    return _build(log_posterior, schedule, move, False, num_burnin=num_burnin, thinning=thinning, num_kept=num_kept)


def sghmc(log_posterior: LogPosterior, schedule: Schedule, *, friction: float = 100.0, num_burnin: int = 0,
          thinning: int = 1, num_kept: int = 100) -> Transform:
    """Stochastic gradient HMC (Chen et al. 2014), discretised as SGD with momentum (module docstring).

    ``friction`` is α: a fraction αε_t of the momentum is lost per step
    (α = 100 with ε = 10⁻³ is SGD's momentum 0.9 at learning rate 10⁻⁶). The
    gradient-noise correction β̂ is 0, as in Chen et al.'s experiments; it is
    negligible when ε·Var[∇Û] ≪ α. Other arguments as in :func:`sgld`.
    """
    _check_positive("friction", friction)

    def move(key, position, momentum, grads, eps, noise_scale):
        # Momentum first, then the position with the new momentum: the gradient was taken at the current θ,
        # so this is one gradient per step, as BlackJAX's forward-Euler order, but stable (module docstring).
        noise = generate_gaussian_noise(key, momentum)
        momentum = jax.tree.map(lambda r, g, xi: (1.0 - friction * eps) * r + eps * g
                                + jnp.sqrt(2.0 * friction * eps * noise_scale) * xi, momentum, grads, noise)
        position = jax.tree.map(lambda theta, r: theta + eps * r, position, momentum)
        return position, momentum

    return _build(log_posterior, schedule, move, True, num_burnin=num_burnin, thinning=thinning, num_kept=num_kept)


# --------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------

SCHEDULES = ("constant", "polynomial", "cyclical")


def make_schedule(name: str, step_size: float, num_steps: int, *, num_cycles: int = 4,
                  exploration_fraction: float = 0.0) -> Schedule:
    """A schedule by name over ``num_steps`` steps: ``constant``, ``polynomial`` (decays to ≈ ε/3.6 at the end:
    decay_steps = num_steps/10, γ = 0.55) or ``cyclical`` (``num_cycles`` cycles)."""
    if name == "constant":
        return constant(step_size)
    if name == "polynomial":
        return polynomial(step_size, max(num_steps / 10, 1.0))
    if name == "cyclical":
        return cyclical(step_size, num_steps, num_cycles, exploration_fraction)
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def eligible_steps(schedule: Schedule, num_steps: int, num_burnin: int) -> int:
    """How many of ``num_steps`` steps may keep a draw (after burn-in, outside exploration)."""
    exploring = np.asarray(jax.vmap(schedule.exploring)(jnp.arange(num_steps)))
    return int(np.sum(~exploring[num_burnin:]))


def draw_traces(log_posterior: LogPosterior, data: Tuple[Any, Any], samples: Params, apply: Callable, likelihood,
                points) -> Dict[str, np.ndarray]:
    """Full-batch log posterior, leaf norms and predictions at ``points`` for draws ``(C, S, ...)``."""
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    num_chains, num_draws = jax.tree.leaves(samples)[0].shape[:2]
    flat = jax.tree.map(lambda leaf: jnp.reshape(jnp.asarray(leaf), (-1, *leaf.shape[2:])), samples)

    @jax.jit
    def trace(flat, x, y, points):
        def one(params):
            # Draws one at a time and the data in chunks: memory stays at one chunk's activations (vmapping 20
            # CNN draws over 60 000 MNIST images at once asked for 120 GB).
            return {"log_density": log_posterior.full_data(params, (x, y)),
                    **diag.draw_summaries(apply, likelihood, params, points)}

        return jax.lax.map(one, flat)

    traces = jax.tree.map(np.asarray, trace(flat, x, y, jnp.asarray(points)))
    return {name: value.reshape((num_chains, num_draws, *value.shape[1:])) for name, value in traces.items()}


def _recipe(problem: Problem, key: jax.Array, name: str, *, num_chains, num_epochs, batch_size, step_size, schedule,
            num_cycles, exploration_fraction, burnin_epochs, num_samples, thinning, friction, eval_data, eval_every,
            logger, log_fields, progress, steps_per_call) -> Fitted:
    if num_chains < 1 or num_epochs < 1 or num_samples < 4:
        # 4: the split-chain R̂/ESS the recipe reports after the run need two halves of two draws each.
        raise ValueError(f"need num_chains >= 1, num_epochs >= 1, num_samples >= 4 (per chain, for split R-hat); "
                         f"got {num_chains}, {num_epochs}, {num_samples}")
    batch_size = batch_size_for(batch_size, problem.num_data)
    steps_per_epoch = problem.num_data // batch_size
    num_steps = num_epochs * steps_per_epoch
    if burnin_epochs is None:  # cyclical schedules explore at the start of every cycle instead
        burnin_epochs = 0 if schedule == "cyclical" else num_epochs // 2
    if not 0 <= burnin_epochs < num_epochs:
        raise ValueError(f"burnin_epochs={burnin_epochs} must lie in [0, num_epochs={num_epochs})")
    chosen = make_schedule(schedule, step_size, num_steps, num_cycles=num_cycles,
                           exploration_fraction=exploration_fraction)
    num_burnin = burnin_epochs * steps_per_epoch
    eligible = eligible_steps(chosen, num_steps, num_burnin)
    if thinning is None:  # spread the kept draws over every eligible step
        thinning = max(1, eligible // num_samples)
    if eligible // thinning < num_samples:
        raise ValueError(
            f"{name}: only {eligible // thinning} draws can be kept ({eligible} eligible steps after burn-in, thinning "
            f"{thinning}) but num_samples={num_samples}; train longer, lower thinning or burnin_epochs, or ask for "
            "fewer samples")
    log_posterior = problem.log_posterior()
    if name == "sgld":
        member = sgld(log_posterior, chosen, num_burnin=num_burnin, thinning=thinning, num_kept=num_samples)
    else:
        member = sghmc(log_posterior, chosen, friction=friction, num_burnin=num_burnin, thinning=thinning,
                       num_kept=num_samples)
    method = ensemble.build(member, num_chains)
    fitted = fit_transform(
        problem, method, key, init_params=problem.model.init, num_epochs=num_epochs, batch_size=batch_size,
        num_samples=num_chains * num_samples, eval_data=eval_data, eval_every=eval_every, logger=logger,
        log_fields=log_fields, progress=progress, description=name, steps_per_call=steps_per_call,
    )
    samples = jax.tree.map(lambda leaf: leaf.reshape((num_chains, num_samples, *leaf.shape[1:])), fitted.samples)
    points = np.asarray(problem.x_train if eval_data is None else eval_data[0])[:8]
    traces = draw_traces(log_posterior, (problem.x_train, problem.y_train), samples, problem.model.apply,
                         problem.likelihood, points)
    diagnostics = {
        **fitted.diagnostics, **diag.summarise(traces), "exploded_draws": diag.exploded_draws(traces),
        "algorithm": name, "num_chains": num_chains,
        "num_draws": num_samples, "thinning": thinning, "num_steps": num_steps, "num_burnin": num_burnin,
        "schedule": schedule, "step_size": step_size,
    }
    diagnostics["warnings"] = diag.check(diagnostics, num_chains)
    if logger is not None:
        logger.log({**(log_fields or {}), "split": "diagnostics", **diagnostics})
    return Fitted(fitted.samples, fitted.apply, fitted.history, diagnostics, fitted.state)


def sgld_recipe(
    problem: Problem,
    key: jax.Array,
    *,
    num_chains: int = 1,
    num_epochs: int = 200,
    batch_size: Optional[int] = 100,
    step_size: float = 1e-5,
    schedule: str = "constant",
    num_cycles: int = 4,
    exploration_fraction: float = 0.0,
    burnin_epochs: Optional[int] = None,
    num_samples: int = 100,
    thinning: Optional[int] = None,
    eval_data: Optional[Tuple[Any, Any]] = None,
    eval_every: int = 0,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = False,
    steps_per_call: Optional[int] = None,
) -> Fitted:
    """Experiment recipe (:mod:`bdljax.recipes`): SGLD, ``num_chains`` vmapped chains with their own data orders.

    ``num_samples`` draws per chain, kept every ``thinning`` eligible steps
    (``None``: spread evenly over the steps after ``burnin_epochs``, which
    default to half the run, or none for ``schedule="cyclical"``).
    ``step_size`` is ε in θ ← θ + ε∇Û + √(2ε)ξ (the peak ε_0 for schedules).
    Evaluations (``eval_every``) use the draws kept so far; before
    ``num_samples`` of them exist, the buffer's unfilled slots still hold
    the initialisation.
    """
    return _recipe(problem, key, "sgld", num_chains=num_chains, num_epochs=num_epochs, batch_size=batch_size,
                   step_size=step_size, schedule=schedule, num_cycles=num_cycles,
                   exploration_fraction=exploration_fraction, burnin_epochs=burnin_epochs, num_samples=num_samples,
                   thinning=thinning, friction=None, eval_data=eval_data, eval_every=eval_every, logger=logger,
                   log_fields=log_fields, progress=progress, steps_per_call=steps_per_call)


def sghmc_recipe(
    problem: Problem,
    key: jax.Array,
    *,
    num_chains: int = 1,
    num_epochs: int = 200,
    batch_size: Optional[int] = 100,
    step_size: float = 1e-3,
    friction: float = 100.0,
    schedule: str = "constant",
    num_cycles: int = 4,
    exploration_fraction: float = 0.0,
    burnin_epochs: Optional[int] = None,
    num_samples: int = 100,
    thinning: Optional[int] = None,
    eval_data: Optional[Tuple[Any, Any]] = None,
    eval_every: int = 0,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = False,
    steps_per_call: Optional[int] = None,
) -> Fitted:
    """Experiment recipe (:mod:`bdljax.recipes`): SGHMC, as :func:`sgld_recipe` with momentum.

    ``step_size`` is the time step ε and ``friction`` α (learning rate ε²,
    momentum 1 − αε in SGD terms); ``schedule="cyclical"`` with
    ``exploration_fraction > 0`` is cSGHMC (Zhang et al. 2020).
    """
    return _recipe(problem, key, "sghmc", num_chains=num_chains, num_epochs=num_epochs, batch_size=batch_size,
                   step_size=step_size, schedule=schedule, num_cycles=num_cycles,
                   exploration_fraction=exploration_fraction, burnin_epochs=burnin_epochs, num_samples=num_samples,
                   thinning=thinning, friction=friction, eval_data=eval_data, eval_every=eval_every, logger=logger,
                   log_fields=log_fields, progress=progress, steps_per_call=steps_per_call)
