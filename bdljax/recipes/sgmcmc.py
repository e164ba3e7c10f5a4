"""SGLD and SGHMC chains: a schedule, the sampler, its kept draws, vmapped chains, and convergence diagnostics."""

from __future__ import annotations

from functools import partial
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.core.posterior import LogPosterior
from bdljax.evaluate import diagnostics as diag
from bdljax.methods import ensemble, sgmcmc, wrappers
from bdljax.recipes.base import Problem, batch_size_for
from bdljax.run.plan import Epochs, Fitted, Plan

Params = Any


def sgld_plan(problem: Problem, *, num_chains: int = 1, num_epochs: int = 200, batch_size: Optional[int] = 100,
              step_size: float = 1e-5, schedule: str = "constant", num_cycles: int = 4,
              exploration_fraction: float = 0.0, burnin_epochs: Optional[int] = None, num_samples: int = 100,
              thinning: Optional[int] = None) -> Plan:
    """SGLD, ``num_chains`` vmapped chains with their own data orders.

    ``num_samples`` draws per chain, kept every ``thinning`` eligible steps
    (``None``: spread evenly over the steps after ``burnin_epochs``, which
    default to half the run, or none for ``schedule="cyclical"``).
    ``step_size`` is ε in θ ← θ + ε∇Û + √(2ε)ξ (the peak ε_0 for schedules).
    """
    return _plan(problem, "sgld", sgmcmc.sgld, num_chains, num_epochs, batch_size, step_size, schedule, num_cycles,
                 exploration_fraction, burnin_epochs, num_samples, thinning)


def sghmc_plan(problem: Problem, *, num_chains: int = 1, num_epochs: int = 200, batch_size: Optional[int] = 100,
               step_size: float = 1e-3, friction: float = 100.0, schedule: str = "constant", num_cycles: int = 4,
               exploration_fraction: float = 0.0, burnin_epochs: Optional[int] = None, num_samples: int = 100,
               thinning: Optional[int] = None) -> Plan:
    """SGHMC, as :func:`sgld_plan` with momentum: ``step_size`` is the time step ε and ``friction`` α (learning
    rate ε², momentum 1 − αε in SGD terms); ``schedule="cyclical"`` with ``exploration_fraction > 0`` is cSGHMC
    (Zhang et al. 2020)."""
    return _plan(problem, "sghmc", partial(sgmcmc.sghmc, friction=friction), num_chains, num_epochs, batch_size,
                 step_size, schedule, num_cycles, exploration_fraction, burnin_epochs, num_samples, thinning)


def _plan(problem, name, sampler, num_chains, num_epochs, batch_size, step_size, schedule_name, num_cycles,
          exploration_fraction, burnin_epochs, num_samples, thinning) -> Plan:
    if num_chains < 1 or num_epochs < 1 or num_samples < 4:
        # 4: the split-chain R̂/ESS reported after the run need two halves of two draws each.
        raise ValueError(f"need num_chains >= 1, num_epochs >= 1, num_samples >= 4 (per chain, for split R-hat); "
                         f"got {num_chains}, {num_epochs}, {num_samples}")
    batch_size = batch_size_for(batch_size, problem.num_data)
    steps_per_epoch = problem.num_data // batch_size
    num_steps = num_epochs * steps_per_epoch
    if burnin_epochs is None:  # cyclical schedules explore at the start of every cycle instead
        burnin_epochs = 0 if schedule_name == "cyclical" else num_epochs // 2
    if not 0 <= burnin_epochs < num_epochs:
        raise ValueError(f"burnin_epochs={burnin_epochs} must lie in [0, num_epochs={num_epochs})")
    schedule = sgmcmc.make_schedule(schedule_name, step_size, num_steps, num_cycles=num_cycles,
                                    exploration_fraction=exploration_fraction)
    num_burnin = burnin_epochs * steps_per_epoch
    eligible = sgmcmc.eligible_steps(schedule, num_steps, num_burnin)
    if thinning is None:  # spread the kept draws over every eligible step
        thinning = max(1, eligible // num_samples)
    if eligible // thinning < num_samples:
        raise ValueError(
            f"{name}: only {eligible // thinning} draws can be kept ({eligible} eligible steps after burn-in, thinning "
            f"{thinning}) but num_samples={num_samples}; train longer, lower thinning or burnin_epochs, or ask for "
            "fewer samples")
    log_posterior = problem.log_posterior()
    chain = wrappers.keep_draws(wrappers.skip_nonfinite(sampler(log_posterior, schedule)), num_samples,
                                thinning=thinning, num_burnin=num_burnin, exploring=schedule.exploring)
    settings = {"algorithm": name, "num_chains": num_chains, "num_draws": num_samples, "thinning": thinning,
                "num_steps": num_steps, "num_burnin": num_burnin, "schedule": schedule_name, "step_size": step_size}
    return Plan(name, ensemble.build(chain, num_chains), problem.model.init, (problem.x_train, problem.y_train),
                problem.model.apply, problem.likelihood, Epochs(num_epochs, batch_size), num_chains * num_samples,
                finish=partial(chain_diagnostics, log_posterior=log_posterior, settings=settings))


def chain_diagnostics(fitted: Fitted, plan: Plan, log_posterior: LogPosterior, settings: Dict[str, Any]) -> Fitted:
    """R̂ and ESS of the full-batch log posterior, parameter norms and predictions at 8 training points, over the
    kept draws of every chain; exploded draws counted; warnings for what does not converge."""
    num_chains, num_draws = settings["num_chains"], settings["num_draws"]
    draws = jax.tree.map(lambda leaf: leaf.reshape((num_chains, num_draws, *leaf.shape[1:])), fitted.samples)
    points = np.asarray(plan.data[0])[:8]
    traces = draw_traces(log_posterior, plan.data, draws, plan.apply, plan.likelihood, points)
    diagnostics = {**fitted.diagnostics, **diag.summarise(traces), "exploded_draws": diag.exploded_draws(traces),
                   **settings}
    diagnostics["warnings"] = diag.check(diagnostics, num_chains)
    return fitted._replace(diagnostics=diagnostics)


def draw_traces(log_posterior: LogPosterior, data: Tuple[Any, Any], samples: Params, apply, likelihood,
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
