"""Recipes: methods by name for experiment scripts."""

from bdljax.recipes.registry import *  # noqa: F401,F403  (temporary during the redesign)
from bdljax.recipes.registry import (Fitted, Problem, RECIPES, check_problem, fit_transform, get_recipe, hyperparameters,
                                     initial_state, likelihood_of, make_optimizer, names, nonfinite_diagnostics, run)
