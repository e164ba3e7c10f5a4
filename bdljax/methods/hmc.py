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

As in BlackJAX's ``mcmc/hmc.py``, on any parameter pytree: :func:`init`
starts a chain, :func:`build_kernel` gives one pure transition (BlackJAX's
``hmc`` or ``nuts`` kernel), :func:`update` adds Stan's window adaptation
of the step size and of a diagonal (or dense) inverse mass matrix during the
first ``num_warmup`` transitions
(:mod:`bdljax.methods.adaptation`), or a fixed step size with ``num_warmup``
transitions of burn-in, and :func:`build` closes over them. The full data set
is bound at build time: the state caches U and ∇U at the current position,
and a Metropolis ratio must compare values computed on the same data in the
same order. Several chains in compiled chunks, their draws, streamed
predictive and diagnostics are the runner's (:mod:`bdljax.run.chains`).

``float64=True`` runs chains in double precision (positions, momenta, the
log posterior and the energies of the Metropolis correction): Izmailov et
al. found float32 rounding of a log likelihood summed over many points
corrupts the acceptance test. Draws are handed back in float32.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple, Optional, Tuple

import blackjax.mcmc.hmc as bj_hmc
import blackjax.mcmc.integrators as bj_integrators
import blackjax.mcmc.nuts as bj_nuts
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from bdljax.core import tree
from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform
from bdljax.methods import adaptation

Params = Any

ALGORITHMS = ("hmc", "nuts")


class HMCSettings(NamedTuple):
    """A sampler's configuration (see :func:`build` for each field's meaning)."""

    algorithm: str = "nuts"
    step_size: Optional[float] = None
    num_warmup: int = 500
    num_integration_steps: int = 10
    trajectory_length: Optional[float] = None
    max_num_integration_steps: int = 1024
    max_num_doublings: int = 10
    step_size_jitter: float = 0.0
    target_acceptance_rate: float = 0.8
    dense_mass: bool = False
    divergence_threshold: float = 1000.0
    float64: bool = False

    @property
    def adapts(self) -> bool:
        return self.step_size is None

    def check(self) -> "HMCSettings":
        """Fail on settings no sampler can run, naming the fix."""
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; choose one of {ALGORITHMS}")
        if self.adapts and self.num_warmup < 1:
            raise ValueError("step_size=None asks for window adaptation, which needs num_warmup >= 1 (500 is "
                             "typical); or give a fixed step_size")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size must be positive, got {self.step_size}")
        if self.num_warmup < 0:
            raise ValueError(f"need num_warmup >= 0, got {self.num_warmup}")
        if self.algorithm == "nuts" and self.trajectory_length is not None:
            raise ValueError("NUTS chooses its own trajectory length; trajectory_length is for algorithm='hmc'")
        steps = self.num_integration_steps
        if self.algorithm == "hmc" and self.trajectory_length is None and (int(steps) != steps or steps < 1):
            raise ValueError(f"num_integration_steps must be a positive int, got {steps}")
        if self.trajectory_length is not None and not self.trajectory_length > 0:
            raise ValueError(f"trajectory_length must be positive, got {self.trajectory_length}")
        if not 0 < self.target_acceptance_rate < 1:
            raise ValueError(f"target_acceptance_rate must lie in (0, 1), got {self.target_acceptance_rate}")
        if not 0 <= self.step_size_jitter < 1:
            raise ValueError(f"step_size_jitter must lie in [0, 1), got {self.step_size_jitter}")
        return self


class HMCState(NamedTuple):
    """One chain.

    Attributes:
      chain: BlackJAX's ``HMCState(position, logdensity, logdensity_grad)``.
      step_size: ε in force (adapted during warm-up).
      inverse_mass_matrix: M⁻¹ over the flattened parameters, ``(D,)`` or ``(D, D)``.
      warmup: adaptation state, ``None`` for a fixed step size.
      step: transitions done.
    """

    chain: bj_hmc.HMCState
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    warmup: Optional[adaptation.WarmupState]
    step: jax.Array


class TransitionInfo(NamedTuple):
    log_density: jax.Array  # log p_T(θ|D) at the chain's new position
    acceptance_rate: jax.Array  # Metropolis probability (NUTS: mean over the trajectory)
    is_divergent: jax.Array  # energy error above divergence_threshold
    step_size: jax.Array  # ε used for this transition
    num_integration_steps: jax.Array  # leapfrog steps (= gradient evaluations) of this transition
    is_warmup: jax.Array


def full_batch_log_density(log_posterior: LogPosterior, data, float64: bool = False) -> Callable[[Params], jax.Array]:
    """θ ↦ log p_T(θ|D) on the whole training set ``data = (x, y)``, checked against the log posterior's N."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("data must be the full training set as a tuple (x, y)")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; they must match.")
    for name, array in (("training inputs x", x), ("training targets y", y)):
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise ValueError(f"{name} contains {bad} NaN/inf value(s) out of {array.size}; clean or drop them.")
    if x.shape[0] != log_posterior.num_data:
        raise ValueError(f"HMC is full batch: the data has {x.shape[0]} rows but the log posterior was built with "
                         f"num_data={log_posterior.num_data}; build it with num_data={x.shape[0]}.")
    if float64:
        with jax.enable_x64(True):
            batch = tree.cast_floats((jnp.asarray(x), jnp.asarray(y)), jnp.float64)
    else:
        batch = (jnp.asarray(x), jnp.asarray(y))
    return lambda params: log_posterior(params, batch)


def _strongly_typed(leaf):
    leaf = jnp.asarray(leaf)
    return jnp.asarray(leaf, leaf.dtype)


def init(key: jax.Array, params: Any, log_density: Callable, settings: HMCSettings) -> HMCState:
    """A chain at ``params`` (a pytree or ``key -> pytree``) with M⁻¹ = I and, when adapting, Stan's first ε."""
    if settings.float64 and not jax.config.jax_enable_x64:
        raise ValueError("this sampler was built with float64=True: call it inside `with jax.enable_x64(True):` "
                         "(bdljax.run.chains does this)")
    params = tree.initial_params(key, params)
    if settings.float64:
        params = tree.cast_floats(params, jnp.float64)
    chain = bj_hmc.init(params, log_density)
    flat, _ = jax.flatten_util.ravel_pytree(params)
    dim, dtype = flat.shape[0], flat.dtype
    inverse_mass_matrix = jnp.eye(dim, dtype=dtype) if settings.dense_mass else jnp.ones(dim, dtype)
    if settings.adapts:
        one_step_kernel = build_kernel("hmc", settings.divergence_threshold)

        def one_step(eps):
            return lambda k, state: one_step_kernel(k, state, log_density, eps, inverse_mass_matrix, 1)

        eps, warmup = adaptation.init(jax.random.fold_in(key, 1), one_step, chain, dim, dtype,
                                      settings.target_acceptance_rate, settings.dense_mass)
    else:
        eps, warmup = jnp.asarray(settings.step_size, dtype), None
    state = HMCState(chain, jnp.asarray(eps, dtype), inverse_mass_matrix, warmup, jnp.zeros((), jnp.int32))
    # Strong dtypes throughout: a weakly typed leaf (dual averaging starts from Python floats) would turn
    # strong after one update and make every chunk after the first retrace.
    return jax.tree.map(_strongly_typed, state)


def build_kernel(algorithm: str, divergence_threshold: float = 1000.0) -> Callable:
    """One pure transition, BlackJAX's ``hmc`` or ``nuts`` kernel with the velocity Verlet (leapfrog) integrator:
    ``kernel(key, chain, log_density, step_size, inverse_mass_matrix, trajectory) -> (chain, info)``, where
    ``trajectory`` is HMC's number of leapfrog steps L or NUTS's largest number of tree doublings."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    kernels = bj_nuts if algorithm == "nuts" else bj_hmc
    return kernels.build_kernel(bj_integrators.velocity_verlet, divergence_threshold)


def trajectory(settings: HMCSettings, eps: jax.Array):
    """The kernel's ``trajectory`` argument at step size ``eps``: NUTS's ``max_num_doublings``, HMC's L, or with
    a ``trajectory_length`` L = ⌈length / ε⌉ (at most ``max_num_integration_steps``), following the adapted ε."""
    if settings.algorithm == "nuts":
        return settings.max_num_doublings
    if settings.trajectory_length is None:
        return int(settings.num_integration_steps)
    return jnp.clip(jnp.ceil(settings.trajectory_length / eps), 1,
                    settings.max_num_integration_steps).astype(jnp.int32)


def update(state: HMCState, batch, key: jax.Array, kernel: Callable, log_density: Callable, settings: HMCSettings,
           windows: Optional[adaptation.Windows]):
    """One transition of ``kernel`` (:func:`build_kernel`; ε jittered if asked), then the window adaptation while
    ``state.step < num_warmup``."""
    del batch  # the target is the full data set bound at build time (see the module docstring)
    eps = state.step_size
    # ε·U(1 − j, 1 + j) per transition breaks periodic trajectories (Neal 2011, §5.4.2.2).
    if settings.step_size_jitter:
        key, jitter_key = jax.random.split(key)
        j = settings.step_size_jitter
        eps = eps * jax.random.uniform(jitter_key, (), eps.dtype, 1 - j, 1 + j)
    chain, info = kernel(key, state.chain, log_density, eps, state.inverse_mass_matrix, trajectory(settings, eps))
    is_warmup = state.step < settings.num_warmup
    new_eps, inverse_mass_matrix, warmup = state.step_size, state.inverse_mass_matrix, None
    if settings.adapts:
        adapted_eps, adapted_matrix, adapted = adaptation.adapt(
            state.warmup, state.step, chain.position, info.acceptance_rate, windows, settings.num_warmup,
            settings.target_acceptance_rate, settings.dense_mass)
        new_eps = jnp.where(is_warmup, adapted_eps.astype(state.step_size.dtype), state.step_size)
        inverse_mass_matrix = jnp.where(is_warmup, adapted_matrix, state.inverse_mass_matrix)
        warmup = tree.select(is_warmup, adapted, state.warmup)
    step_info = TransitionInfo(chain.logdensity, info.acceptance_rate, info.is_divergent, eps,
                               jnp.asarray(info.num_integration_steps, jnp.int32), is_warmup)
    return HMCState(chain, new_eps, inverse_mass_matrix, warmup, state.step + 1), step_info


def sample(state: HMCState, key: jax.Array, num_samples: int = 1) -> Params:
    """The chain's current position, repeated: draws over time are kept by the runner
    (:mod:`bdljax.run.chains`) or by :func:`bdljax.methods.wrappers.keep_draws`."""
    del key
    return tree.repeat(state.chain.position, num_samples)


def build(log_posterior: LogPosterior, data: Tuple[Any, Any], **settings) -> Transform:
    """HMC or NUTS as a :class:`~bdljax.core.transform.Transform` (one transition per ``update``).

    Args:
      log_posterior: the shared log posterior, built with ``num_data`` = N.
      data: the whole training set ``(x, y)`` (N rows). ``update`` ignores its
        ``batch`` argument: the target is this full-batch posterior.
      algorithm: ``"hmc"`` (fixed trajectory) or ``"nuts"`` (default).
      step_size: fixed ε; ``None`` adapts ε and M⁻¹ during ``num_warmup``
        transitions with Stan's window adaptation (:mod:`bdljax.methods.adaptation`).
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
      float64: run in double precision; call the transform inside
        ``with jax.enable_x64(True):``.
    """
    config = HMCSettings(**settings).check()
    log_density = full_batch_log_density(log_posterior, data, config.float64)
    windows = adaptation.windows(config.num_warmup) if config.adapts else None
    kernel = build_kernel(config.algorithm, config.divergence_threshold)
    return Transform(partial(init, log_density=log_density, settings=config),
                     partial(update, kernel=kernel, log_density=log_density, settings=config, windows=windows),
                     sample)
