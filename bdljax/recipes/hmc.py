"""Full-batch HMC and NUTS chains, started at random or at one MAP solution per chain (Izmailov et al. 2021)."""

from __future__ import annotations

from typing import Optional

from bdljax.methods import hmc
from bdljax.recipes import ensemble
from bdljax.recipes.base import Problem, check_positive_int
from bdljax.run.plan import Chains, Plan

INITS = ("random", "map")


def hmc_plan(problem: Problem, *, num_chains: int = 4, num_warmup: int = 500, num_samples: int = 500,
             thinning: int = 1, step_size: Optional[float] = None, num_integration_steps: int = 10,
             trajectory_length: Optional[float] = None, step_size_jitter: float = 0.1,
             target_acceptance_rate: float = 0.65, init: str = "random", map_epochs: int = 100,
             map_learning_rate: float = 1e-3, map_batch_size: Optional[int] = 100, float64: bool = False,
             chunk_size: int = 100, chain_method: str = "auto") -> Plan:
    """Full-batch HMC, ``num_chains`` chains of ``num_samples`` draws after ``num_warmup`` adaptation
    transitions (``step_size=None``) or burn-in (a fixed ``step_size``); ``Fitted.samples`` holds all
    ``num_chains · num_samples`` draws, chain-major. ``init="map"`` starts each chain at its own MAP solution
    (``map_epochs`` of Adam). ``step_size_jitter`` (default ±10 %) varies ε per transition so that the fixed
    trajectory cannot be periodic in some direction. ``Fitted.diagnostics``: acceptance, divergences, step size,
    leapfrog steps, R̂ and ESS of the log posterior, parameter norms and predictions at 8 points."""
    settings = hmc.HMCSettings("hmc", step_size, num_warmup, num_integration_steps, trajectory_length,
                               step_size_jitter=step_size_jitter, target_acceptance_rate=target_acceptance_rate,
                               float64=float64)
    return _plan(problem, settings, Chains(num_chains, num_warmup, num_samples, thinning, chunk_size, chain_method,
                                           float64), init, map_epochs, map_learning_rate, map_batch_size)


def nuts_plan(problem: Problem, *, num_chains: int = 4, num_warmup: int = 500, num_samples: int = 500,
              thinning: int = 1, step_size: Optional[float] = None, max_num_doublings: int = 10,
              target_acceptance_rate: float = 0.8, init: str = "random", map_epochs: int = 100,
              map_learning_rate: float = 1e-3, map_batch_size: Optional[int] = 100, float64: bool = False,
              chunk_size: int = 100, chain_method: str = "auto") -> Plan:
    """Full-batch NUTS (Hoffman & Gelman 2014), as :func:`hmc_plan` with the trajectory length chosen per
    transition by the no-U-turn criterion (at most 2^``max_num_doublings`` leapfrog steps)."""
    settings = hmc.HMCSettings("nuts", step_size, num_warmup, max_num_doublings=max_num_doublings,
                               target_acceptance_rate=target_acceptance_rate, float64=float64)
    return _plan(problem, settings, Chains(num_chains, num_warmup, num_samples, thinning, chunk_size, chain_method,
                                           float64), init, map_epochs, map_learning_rate, map_batch_size)


def _plan(problem: Problem, settings: hmc.HMCSettings, schedule: Chains, init: str, map_epochs: int,
          map_learning_rate: float, map_batch_size: Optional[int]) -> Plan:
    if init not in INITS:
        raise ValueError(f"init must be 'random' (the model's initialiser) or 'map' (one MAP solution per chain), "
                         f"got {init!r}")
    check_positive_int(settings.algorithm, num_chains=schedule.num_chains, num_samples=schedule.num_draws,
                       thinning=schedule.thinning, chunk_size=schedule.chunk_size)
    transform = hmc.build(problem.log_posterior(), (problem.x_train, problem.y_train), **settings._asdict())
    before, init_params = None, problem.model.init
    if init == "map":
        # Starting chains in different modes found by optimisation saves the warm-up from climbing out of the
        # prior (Izmailov et al. 2021 start HMC from SGD solutions); chains from different modes make R̂ honest.
        before = ensemble.plan(problem, num_members=schedule.num_chains, num_epochs=map_epochs,
                               batch_size=map_batch_size, learning_rate=map_learning_rate,
                               optimizer="adam")._replace(name="map init")
        init_params = _map_solutions
    return Plan(settings.algorithm, transform, init_params, (problem.x_train, problem.y_train), problem.model.apply,
                problem.likelihood, schedule, schedule.num_chains * schedule.num_draws, before=before)


def _map_solutions(first):
    """One MAP solution per chain, stacked ``(C, ...)``."""
    return first.samples
