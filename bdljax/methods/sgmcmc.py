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

A transform here is one chain's transition; ``sample`` is its current
position. Draws are kept by :func:`bdljax.methods.wrappers.keep_draws` (after
burn-in, every ``thinning``-th step outside exploration, ``exploring=
schedule.exploring``), non-finite steps undone and counted by
:func:`bdljax.methods.wrappers.skip_nonfinite`, and several chains are an
ensemble of samplers (:func:`bdljax.methods.ensemble.build`): vmapped, each with
its own key, initialisation and data order. The recipes compose them
(:mod:`bdljax.recipes.sgmcmc`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, NamedTuple, Optional

import blackjax.sgmcmc.diffusions as diffusions
import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.util import generate_gaussian_noise

from bdljax.core import tree
from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform

Params = Any


class Schedule(NamedTuple):
    """Step size ε_t and exploration flag as functions of the step index t.

    ``step_size`` is jit-able; ``exploring`` takes a JAX *or* NumPy ``t`` (an
    array of steps too), so that a recipe counts the steps that may keep draws
    on the host (:func:`eligible_steps`), even while it is being traced.
    """

    step_size: Callable[[jax.Array], jax.Array]
    exploring: Callable[[Any], Any]  # True: no noise, no draws (cSG-MCMC's exploration stage)


def never_exploring(t):
    """No exploration stage: every step samples (``t``: a JAX or NumPy step index or array of them)."""
    return np.zeros(np.shape(t), bool)


def constant(step_size: float) -> Schedule:
    """ε_t = ε."""
    _check_positive("step_size", step_size)
    return Schedule(lambda t: jnp.asarray(step_size, jnp.float32), never_exploring)


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
                    never_exploring)


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

    # `%` is jnp.mod on a JAX t and np.mod on a NumPy one: the same flags on the device and on the host.
    return Schedule(step_size, lambda t: t % cycle_length < exploration_steps)


def _check_positive(name, value):
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


class SGMCMCState(NamedTuple):
    position: Params
    momentum: Optional[Params]  # SGHMC only
    step: jax.Array  # transitions so far: the schedule's t


class SGMCMCInfo(NamedTuple):
    log_posterior: jax.Array  # minibatch estimate of log p_T(θ|D) before the step
    log_likelihood: jax.Array
    log_prior: jax.Array
    step_size: jax.Array
    grad_norm: jax.Array


Move = Callable[..., tuple]  # (key, position, momentum, grads, eps, noise_scale) -> (position, momentum)


def init(key: jax.Array, params: Any, with_momentum: bool) -> SGMCMCState:
    """The chain at ``params`` (a pytree or ``key -> pytree``); SGHMC's momentum r ~ N(0, I), its stationary law."""
    position = tree.initial_params(key, params)
    momentum = None
    if with_momentum:
        leaves, treedef = jax.tree.flatten(position)
        keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
        momentum = jax.tree.unflatten(treedef, [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])
    return SGMCMCState(position, momentum, jnp.zeros((), jnp.int32))


def update(state: SGMCMCState, batch, key: jax.Array, log_posterior: LogPosterior, schedule: Schedule, move: Move):
    """One transition with the minibatch gradient ∇Û and the schedule's ε_t (no noise while exploring)."""
    rng, noise_key = jax.random.split(key)
    (value, terms), grads = jax.value_and_grad(log_posterior.evaluate, has_aux=True)(state.position, batch, rng)
    eps = schedule.step_size(state.step)
    # BlackJAX's temperature only scales the injected noise; T itself is in the log posterior, so it is 1 when
    # sampling and 0 in an exploration stage (plain gradient ascent / SGD with momentum).
    noise_scale = jnp.where(schedule.exploring(state.step), 0.0, 1.0).astype(eps.dtype)
    position, momentum = move(noise_key, state.position, state.momentum, grads, eps, noise_scale)
    return (SGMCMCState(position, momentum, state.step + 1),
            SGMCMCInfo(value, terms.log_likelihood, terms.log_prior, eps, optax.tree.norm(grads)))


def sample(state: SGMCMCState, key: jax.Array, num_samples: int = 1) -> Params:
    """The chain's current position, repeated: keep draws over time with :func:`bdljax.methods.wrappers.keep_draws`."""
    del key
    return tree.repeat(state.position, num_samples)


def langevin_move(key, position, momentum, grads, eps, noise_scale):
    """SGLD: BlackJAX's Euler step of the overdamped Langevin diffusion, θ ← θ + ε∇Û + √(2ε)ξ."""
    del momentum
    return diffusions.overdamped_langevin()(key, position, grads, eps, noise_scale), None


def momentum_move(key, position, momentum, grads, eps, noise_scale, friction: float):
    """SGHMC as SGD with momentum: r ← (1 − αε) r + ε∇Û + √(2αε)ξ, then θ ← θ + ε r with the new r.

    Momentum first, then the position with the new momentum: the gradient was taken at the current θ, so this is
    one gradient per step, as BlackJAX's forward-Euler order, but stable (module docstring)."""
    noise = generate_gaussian_noise(key, momentum)
    momentum = jax.tree.map(lambda r, g, xi: (1.0 - friction * eps) * r + eps * g
                            + jnp.sqrt(2.0 * friction * eps * noise_scale) * xi, momentum, grads, noise)
    position = jax.tree.map(lambda theta, r: theta + eps * r, position, momentum)
    return position, momentum


def sgld(log_posterior: LogPosterior, schedule: Schedule) -> Transform:
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011), one chain.

    Args:
      log_posterior: the shared log posterior (``num_data`` = N, temperature T).
      schedule: ε_t (and exploration stages), e.g. ``constant(1e-5)``.
    """
    return Transform(partial(init, with_momentum=False),
                     partial(update, log_posterior=log_posterior, schedule=schedule, move=langevin_move), sample)


def sghmc(log_posterior: LogPosterior, schedule: Schedule, *, friction: float = 100.0) -> Transform:
    """Stochastic gradient HMC (Chen et al. 2014), discretised as SGD with momentum (module docstring), one chain.

    ``friction`` is α: a fraction αε_t of the momentum is lost per step
    (α = 100 with ε = 10⁻³ is SGD's momentum 0.9 at learning rate 10⁻⁶). The
    gradient-noise correction β̂ is 0, as in Chen et al.'s experiments; it is
    negligible when ε·Var[∇Û] ≪ α.
    """
    _check_positive("friction", friction)
    move = partial(momentum_move, friction=friction)
    return Transform(partial(init, with_momentum=True),
                     partial(update, log_posterior=log_posterior, schedule=schedule, move=move), sample)


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
    """How many of ``num_steps`` steps may keep a draw (after burn-in, outside exploration), counted in NumPy."""
    exploring = np.broadcast_to(np.asarray(schedule.exploring(np.arange(num_steps))), (num_steps,))
    return int(np.sum(~exploring[num_burnin:]))
