"""Methods by name: what experiment scripts use so that swapping a method is one word.

``plan(name, problem, **hyperparameters)`` builds a method's plan;
``run(name, problem, key, options, **hyperparameters)`` executes it. Adding a
method is a method module, a recipe module and one line in :data:`RECIPES`;
no script changes.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import jax

from bdljax.recipes.base import Problem, check_problem
from bdljax.run.plan import Fitted, Plan
from bdljax.run.runner import RunOptions, execute

class Recipe(NamedTuple):
    """Where a method's recipe lives, and what it lets a batched runner trace.

    ``traceable``: hyperparameters the recipe accepts as traced scalars, so that
    grid points differing only in them share one compiled program
    (:mod:`bdljax.run.batched`). ``traceable_problem``: whether the problem's
    prior and likelihood may hold traced scalars (a prior scale, a noise
    precision); False for a recipe that reads them on the host.
    """

    target: str  # "module:function", imported on first use
    traceable: Tuple[str, ...] = ()
    traceable_problem: bool = True


RECIPES: Dict[str, Recipe] = {
    "map": Recipe("bdljax.recipes.map_estimate:plan", traceable=("learning_rate",)),
    "ensemble": Recipe("bdljax.recipes.ensemble:plan", traceable=("learning_rate",)),
    "mfvi": Recipe("bdljax.recipes.mfvi:plan", traceable=("learning_rate",)),
    "mcdropout": Recipe("bdljax.recipes.mcdropout:plan", traceable_problem=False),
    "hmc": Recipe("bdljax.recipes.hmc:hmc_plan", traceable_problem=False),
    "nuts": Recipe("bdljax.recipes.hmc:nuts_plan", traceable_problem=False),
    "sgld": Recipe("bdljax.recipes.sgmcmc:sgld_plan"),
    "sghmc": Recipe("bdljax.recipes.sgmcmc:sghmc_plan"),
}


def names() -> List[str]:
    """Every method name a recipe exists for."""
    return sorted(RECIPES)


def get(name: str) -> Callable[..., Plan]:
    """The recipe for ``name``; unknown names fail listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown method {name!r}; choose one of {names()}")
    module_name, function_name = RECIPES[name].target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def hyperparameters(name: str) -> Dict[str, Any]:
    """The keyword hyperparameters of a method's recipe with their defaults."""
    signature = inspect.signature(get(name))
    return {p.name: p.default for p in signature.parameters.values() if p.kind == p.KEYWORD_ONLY}


def plan(name: str, problem: Problem, **config) -> Plan:
    """Method ``name``'s plan on ``problem``; unknown hyperparameters fail naming the accepted ones, and the
    problem's data are checked against its model and likelihood before anything compiles."""
    recipe = get(name)
    accepted = hyperparameters(name)
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ValueError(f"method {name!r} does not take {unknown}; it accepts {sorted(accepted)}")
    check_problem(problem)
    return recipe(problem, **config)


def run(name: str, problem: Problem, key: jax.Array, options: Optional[RunOptions] = None, **config) -> Fitted:
    """Fit method ``name`` on ``problem``: :func:`plan`, then :func:`bdljax.run.runner.execute`."""
    return execute(plan(name, problem, **config), key, options or RunOptions())
