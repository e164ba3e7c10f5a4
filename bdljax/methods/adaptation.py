"""Stan's window adaptation of HMC's step size and mass matrix, one transition at a time, from BlackJAX's parts.

During ``num_warmup`` transitions the step size ε follows dual averaging of
log ε towards a target acceptance rate (Hoffman & Gelman 2014, §3.2), and in
Stan's slow windows Welford's estimator accumulates the positions; at the end
of each slow window the inverse mass matrix M⁻¹ becomes the window's
(regularised) covariance and dual averaging restarts from its average ε. The
schedule of fast and slow windows is BlackJAX's ``build_schedule`` (Stan's: 75
initial fast steps, doubling slow windows, 50 final fast steps). Unlike
BlackJAX's ``window_adaptation``, which runs its own loop, the adaptation here
is a state carried by the chain, so warm-up and sampling are the same compiled
transition (:mod:`bdljax.methods.hmc`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import MassMatrixAdaptationState, mass_matrix_adaptation
from blackjax.adaptation.step_size import (
    DualAveragingAdaptationState,
    dual_averaging_adaptation,
    find_reasonable_step_size,
)
from blackjax.adaptation.window_adaptation import build_schedule

from bdljax.core import tree


class WarmupState(NamedTuple):
    """Dual averaging of log ε and Welford estimates of M⁻¹."""

    step_size: DualAveragingAdaptationState
    mass_matrix: MassMatrixAdaptationState


class Windows(NamedTuple):
    """Stan's schedule as host arrays over warm-up transitions: in a slow window; a slow window ends here."""

    slow: np.ndarray
    window_end: np.ndarray


def windows(num_warmup: int) -> Windows:
    """The schedule of ``num_warmup`` transitions, as host constants (also when built inside a trace)."""
    with jax.ensure_compile_time_eval():
        schedule = np.asarray(build_schedule(num_warmup), dtype=np.int32).reshape(num_warmup, 2)
    return Windows(schedule[:, 0] == 1, schedule[:, 1] == 1)


def init(key: jax.Array, one_step: Callable, chain, dim: int, dtype, target_acceptance_rate: float, dense: bool
         ) -> Tuple[jax.Array, WarmupState]:
    """Stan's heuristic first ε (double or halve until one leapfrog step's acceptance crosses the target;
    Hoffman & Gelman 2014, Alg. 4) and fresh adaptation states. ``one_step(eps)`` is a one-leapfrog kernel."""
    da_init, _, _ = dual_averaging_adaptation(target_acceptance_rate)
    mm_init, _, _ = mass_matrix_adaptation(is_diagonal_matrix=not dense)
    eps = find_reasonable_step_size(key, one_step, chain, jnp.asarray(1.0, dtype), target_acceptance_rate)
    return eps, WarmupState(da_init(eps), mm_init(dim))


def adapt(warmup: WarmupState, step: jax.Array, position, acceptance_rate: jax.Array, schedule: Windows,
          num_warmup: int, target_acceptance_rate: float, dense: bool):
    """After transition ``step``: the adapted ``(ε, M⁻¹, WarmupState)``; outside warm-up the caller keeps its own.

    Returns ``(eps, inverse_mass_matrix, warmup)`` as warm-up would set them at this step.
    """
    da_init, da_update, da_final = dual_averaging_adaptation(target_acceptance_rate)
    _, mm_update, mm_final = mass_matrix_adaptation(is_diagonal_matrix=not dense)
    t = jnp.clip(step, 0, num_warmup - 1)
    da = da_update(warmup.step_size, acceptance_rate)
    mm = warmup.mass_matrix
    mm = tree.select(jnp.asarray(schedule.slow)[t], mm_update(mm, position), mm)
    # End of a slow window: M⁻¹ from the window's draws; dual averaging restarts from its average ε.
    ends = jnp.asarray(schedule.window_end)[t]
    mm = tree.select(ends, mm_final(mm), mm)
    da = tree.select(ends, da_init(da_final(da)), da)
    eps = jnp.where(step == num_warmup - 1, da_final(da), jnp.exp(da.log_step_size))
    return eps, mm.inverse_mass_matrix, WarmupState(da, mm)
