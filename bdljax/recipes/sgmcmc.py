"""SGLD and SGHMC: a step-size schedule, the sampler, its wrappers, chains as an ensemble, convergence diagnostics.

One chain is ``keep_draws(skip_nonfinite(sampler))``: a non-finite step is
undone first, so the buffer slot it falls on still holds a valid state (the
unchanged position). ``num_chains`` chains are an ensemble of such chains,
each with its own key, initialisation and data order. After the run the
finishing step computes split-R̂ and ESS of the kept draws
(:func:`chain_diagnostics`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import numpy as np

from bdljax.core.posterior import LogPosterior
from bdljax.evaluate import diagnostics as diag
from bdljax.methods import ensemble, sgmcmc, wrappers
from bdljax.recipes.base import Problem, batch_size_for
from bdljax.run.plan import Epochs, Fitted, Plan

# SG-MCMC's split-R̂/ESS is computed on the predictions at this many training points.
NUM_TRACED_POINTS = 8


def sgld_plan(problem: Problem, *, num_chains: int = 1, num_epochs: int = 200, batch_size: Optional[int] = 100,
              step_size: float = 1e-5, schedule: str = "constant", num_cycles: int = 4,
              exploration_fraction: float = 0.0, burnin_epochs: Optional[int] = None, num_samples: int = 100,
              thinning: Optional[int] = None) -> Plan:
    """SGLD, ``num_chains`` vmapped chains with their own data orders.

    ``num_samples`` draws per chain, kept every ``thinning`` eligible steps
    (``None``: spread evenly over the steps after ``burnin_epochs``, which
    default to half the run, or none for ``schedule="cyclical"``).
    ``step_size`` is ε in θ ← θ + ε∇Û + √(2ε)ξ (the peak ε_0 for schedules).
    Periodic evaluations (``RunOptions.eval_every``) use the draws kept so
    far; before ``num_samples`` of them exist, unfilled slots still hold the
    initialisation.
    """
    length = _length("sgld", problem, num_chains, num_epochs, batch_size, schedule, burnin_epochs, num_samples)
    chosen = sgmcmc.make_schedule(schedule, step_size, length.num_steps, num_cycles=num_cycles,
                                  exploration_fraction=exploration_fraction)
    return _chains_plan("sgld", problem, sgmcmc.sgld, chosen, length, thinning,
                        {"schedule": schedule, "step_size": step_size})


def sghmc_plan(problem: Problem, *, num_chains: int = 1, num_epochs: int = 200, batch_size: Optional[int] = 100,
               step_size: float = 1e-3, friction: float = 100.0, schedule: str = "constant", num_cycles: int = 4,
               exploration_fraction: float = 0.0, burnin_epochs: Optional[int] = None, num_samples: int = 100,
               thinning: Optional[int] = None) -> Plan:
    """SGHMC, as :func:`sgld_plan` with momentum.

    ``step_size`` is the time step ε and ``friction`` α (learning rate ε²,
    momentum 1 − αε in SGD terms); ``schedule="cyclical"`` with
    ``exploration_fraction > 0`` is cSGHMC (Zhang et al. 2020).
    """
    length = _length("sghmc", problem, num_chains, num_epochs, batch_size, schedule, burnin_epochs, num_samples)
    chosen = sgmcmc.make_schedule(schedule, step_size, length.num_steps, num_cycles=num_cycles,
                                  exploration_fraction=exploration_fraction)
    return _chains_plan("sghmc", problem, partial(sgmcmc.sghmc, friction=friction), chosen, length, thinning,
                        {"schedule": schedule, "step_size": step_size})


class _Length(NamedTuple):
    """How long every chain runs, and how many draws it keeps."""

    num_chains: int
    num_epochs: int
    batch_size: int
    num_steps: int  # minibatch steps of the whole run
    num_burnin: int  # steps before any draw is kept
    num_samples: int  # draws kept per chain


def _length(name, problem, num_chains, num_epochs, batch_size, schedule_name, burnin_epochs, num_samples) -> _Length:
    if num_chains < 1 or num_epochs < 1 or num_samples < 4:
        # 4: the split-chain R̂/ESS reported after the run need two halves of two draws each.
        raise ValueError(f"{name}: need num_chains >= 1, num_epochs >= 1, num_samples >= 4 (per chain, for split "
                         f"R-hat); got {num_chains}, {num_epochs}, {num_samples}")
    batch_size = batch_size_for(batch_size, problem.num_data)
    steps_per_epoch = problem.num_data // batch_size
    if burnin_epochs is None:  # cyclical schedules explore at the start of every cycle instead
        burnin_epochs = 0 if schedule_name == "cyclical" else num_epochs // 2
    if not 0 <= burnin_epochs < num_epochs:
        raise ValueError(f"{name}: burnin_epochs={burnin_epochs} must lie in [0, num_epochs={num_epochs})")
    return _Length(num_chains, num_epochs, batch_size, num_epochs * steps_per_epoch, burnin_epochs * steps_per_epoch,
                   num_samples)


def _chains_plan(name: str, problem: Problem, sampler: Callable, schedule: sgmcmc.Schedule, length: _Length,
                 thinning: Optional[int], settings: Dict[str, Any]) -> Plan:
    """``sampler(log_posterior, schedule)``'s chains: non-finite steps undone, draws kept, chains as an ensemble."""
    eligible = sgmcmc.eligible_steps(schedule, length.num_steps, length.num_burnin)
    if thinning is None:  # spread the kept draws over every eligible step
        thinning = max(1, eligible // length.num_samples)
    if eligible // thinning < length.num_samples:
        raise ValueError(
            f"{name}: only {eligible // thinning} draws can be kept ({eligible} eligible steps after burn-in, thinning "
            f"{thinning}) but num_samples={length.num_samples}; train longer, lower thinning or burnin_epochs, or ask "
            "for fewer samples")
    log_posterior = problem.log_posterior()
    chain = wrappers.keep_draws(wrappers.skip_nonfinite(sampler(log_posterior, schedule)), length.num_samples,
                                thinning=thinning, num_burnin=length.num_burnin, exploring=schedule.exploring)
    settings = {"algorithm": name, "num_chains": length.num_chains, "num_draws": length.num_samples,
                "thinning": thinning, "num_steps": length.num_steps, "num_burnin": length.num_burnin, **settings}
    return Plan(name, ensemble.build(chain, length.num_chains), problem.model.init, (problem.x_train, problem.y_train),
                problem.model.apply, problem.likelihood, Epochs(length.num_epochs, length.batch_size),
                length.num_chains * length.num_samples,
                finish=partial(chain_diagnostics, log_posterior=log_posterior, settings=settings))


def chain_diagnostics(fitted: Fitted, plan: Plan, log_posterior: LogPosterior, settings: Dict[str, Any]) -> Fitted:
    """The run's diagnostics plus split-R̂ and ESS over every chain's kept draws of the full-data log posterior,
    the parameter norms and the predictions at the first training points; exploded draws counted; the
    ``settings``; and ``warnings`` for whatever does not converge (:func:`bdljax.evaluate.diagnostics.check`).
    ``fitted.samples`` stay stacked chain-major, ``(C·S, ...)``."""
    num_chains, num_draws = settings["num_chains"], settings["num_draws"]
    draws = jax.tree.map(lambda leaf: leaf.reshape((num_chains, num_draws, *leaf.shape[1:])), fitted.samples)
    points = np.asarray(plan.data[0])[:NUM_TRACED_POINTS]
    traces = diag.draw_traces(log_posterior, plan.data, draws, plan.apply, plan.likelihood, points)
    diagnostics = {**fitted.diagnostics, **diag.summarise(traces), "exploded_draws": diag.exploded_draws(traces),
                   **settings}
    diagnostics["warnings"] = diag.check(diagnostics, num_chains)
    return fitted._replace(diagnostics=diagnostics)
