"""Recipes: each method composed for a :class:`~bdljax.recipes.base.Problem` as a plan, and the registry by name."""

from bdljax.recipes.base import Problem, batch_size_for, check_problem, make_optimizer
from bdljax.recipes.registry import RECIPES, Recipe, get, hyperparameters, names, plan, run
from bdljax.run.plan import Chains, Epochs, Fitted, Plan
from bdljax.run.runner import RunOptions, execute

__all__ = ["Problem", "batch_size_for", "check_problem", "make_optimizer", "RECIPES", "Recipe", "get", "hyperparameters",
           "names", "plan", "run", "Chains", "Epochs", "Fitted", "Plan", "RunOptions", "execute"]
