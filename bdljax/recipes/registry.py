"""Methods by name: what experiment scripts use so that swapping a method is one word.

The protocol (:mod:`bdljax.core.transform`) is what researchers compose. For
experiments, every method also has a *recipe*: a function

    recipe(problem: Problem, key, **hyperparameters) -> Fitted

that builds the method on the problem's shared log posterior, trains it
(:func:`bdljax.run.training.fit`, or the method's own sampler loop) and returns
posterior samples with the function that evaluates them. Scripts call
``bdljax.recipes.run(name, problem, key, **hyperparameters)`` and never
need to change when a method is added here.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import jax
import numpy as np
import optax

from bdljax.run import predictive
from bdljax.core.likelihoods import Likelihood
from bdljax.nn.models import Apply, Model, check_input_shape
from bdljax.core.posterior import LogPosterior, log_posterior
from bdljax.core.priors import Prior
from bdljax.run.training import check_finite, fit
from bdljax.core.transform import Transform

Params = Any

# name -> "module:recipe". Modules are imported on first use.
RECIPES: Dict[str, str] = {
    "map": "bdljax.methods.map_estimate:recipe",
    "ensemble": "bdljax.methods.ensemble:recipe",
    "mfvi": "bdljax.methods.mfvi:recipe",
    "mcdropout": "bdljax.methods.mcdropout:recipe",
    "hmc": "bdljax.methods.hmc:hmc_recipe",
    "nuts": "bdljax.methods.hmc:nuts_recipe",
    "sgld": "bdljax.methods.sgmcmc:sgld_recipe",
    "sghmc": "bdljax.methods.sgmcmc:sghmc_recipe",
}


class Problem(NamedTuple):
    """A supervised Bayesian learning problem: network, likelihood, prior and training data.

    ``x_train`` has N rows; every method's log posterior uses ``num_data = N``.
    """

    model: Model
    likelihood: Likelihood
    prior: Prior
    x_train: Any
    y_train: Any
    temperature: float = 1.0

    @property
    def num_data(self) -> int:
        return int(np.shape(self.x_train)[0])

    def log_posterior(self, model: Optional[Model] = None) -> LogPosterior:
        """The shared log posterior, for this problem's model or a variant of it (e.g. with dropout)."""
        model = model or self.model
        return log_posterior(model.apply, self.likelihood, self.prior, self.num_data, self.temperature)


class Fitted(NamedTuple):
    """What a recipe returns.

    Attributes:
      samples: stacked parameter pytree, leading axis S.
      apply: ``apply(sample, x, rng=None, train=False)`` evaluating one sample.
      history: training records (see :func:`bdljax.run.training.fit`).
      diagnostics: method-specific figures (acceptance, R̂, non-finite steps, ...).
      state: the method's final state.
      likelihood: the likelihood the method was fitted with when it differs
        from the problem's (MC dropout with its own τ); ``None`` means the
        problem's. Score predictions with :func:`likelihood_of`.
    """

    samples: Params
    apply: Apply
    history: List[Dict[str, Any]]
    diagnostics: Dict[str, Any]
    state: Any
    likelihood: Optional[Likelihood] = None


def likelihood_of(fitted: Fitted, problem: Problem) -> Likelihood:
    """The likelihood to score ``fitted``'s predictions with."""
    return fitted.likelihood or problem.likelihood


def names() -> List[str]:
    """Every method name a recipe exists for."""
    return sorted(RECIPES)


def get_recipe(name: str) -> Callable[..., Fitted]:
    """The recipe for ``name``; unknown names fail listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown method {name!r}; choose one of {names()}")
    module_name, function_name = RECIPES[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def hyperparameters(name: str) -> Dict[str, Any]:
    """The keyword hyperparameters of a method's recipe with their defaults."""
    signature = inspect.signature(get_recipe(name))
    return {p.name: p.default for p in signature.parameters.values() if p.kind == p.KEYWORD_ONLY}


def run(name: str, problem: Problem, key: jax.Array, **config) -> Fitted:
    """Fit method ``name`` on ``problem``; unknown hyperparameters fail naming the accepted ones."""
    recipe = get_recipe(name)
    accepted = hyperparameters(name)
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ValueError(f"method {name!r} does not take {unknown}; it accepts {sorted(accepted)}")
    check_problem(problem)
    return recipe(problem, key, **config)


def check_problem(problem: Problem) -> None:
    """Validate a problem's data against its model and likelihood before anything compiles."""
    x, y = np.asarray(problem.x_train), np.asarray(problem.y_train)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x_train has {x.shape[0]} rows but y_train has {y.shape[0]}; they must match.")
    check_finite("x_train", x)
    check_finite("y_train", y)
    params = jax.eval_shape(problem.model.init, jax.random.key(0))
    output = check_input_shape(problem.model, params, x)
    problem.likelihood.check_targets(y, output.shape)


def make_optimizer(name: str, learning_rate: float, weight_decay: float = 0.0, clip_norm: Optional[float] = None):
    """An optax optimiser by name: ``adam``, ``adamw``, ``sgd`` (momentum 0.9) or ``sgd_plain``.

    The prior is the regulariser: ``weight_decay`` is for decoupled decay
    (AdamW) only and is off by default.
    """
    optimizers = {
        "adam": lambda: optax.adam(learning_rate),
        "adamw": lambda: optax.adamw(learning_rate, weight_decay=weight_decay),
        "sgd": lambda: optax.sgd(learning_rate, momentum=0.9),
        "sgd_plain": lambda: optax.sgd(learning_rate),
    }
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(optimizers)}")
    optimizer = optimizers[name]()
    if clip_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)
    return optimizer


def fit_transform(
    problem: Problem,
    method: Transform,
    key: jax.Array,
    *,
    init_params: Any,
    num_epochs: int,
    batch_size: Optional[int],
    num_samples: int,
    apply: Optional[Apply] = None,
    eval_data: Optional[Tuple[Any, Any]] = None,
    eval_every: int = 0,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = False,
    description: str = "fit",
    steps_per_call: Optional[int] = None,
) -> Fitted:
    """Shared body of the recipes that train with :func:`bdljax.run.training.fit`.

    Initialises ``method`` from ``init_params`` (a pytree or ``key -> pytree``),
    trains it, optionally evaluates the predictive on ``eval_data`` every
    ``eval_every`` epochs, and draws ``num_samples`` posterior samples.
    """
    apply = apply or problem.model.apply
    init_key, fit_key, sample_key = jax.random.split(key, 3)
    state = initial_state(method, init_key, init_params)
    evaluate = None
    if eval_data is not None and eval_every:
        x_eval, y_eval = eval_data

        def evaluate_predictive(state):
            samples = method.sample(state, sample_key, num_samples)
            outputs = predictive.predictive_outputs(apply, samples, x_eval)
            return predictive.evaluate(problem.likelihood, outputs, y_eval)

        evaluate = evaluate_predictive

    result = fit(
        method, state, (problem.x_train, problem.y_train), key=fit_key, num_epochs=num_epochs,
        batch_size=batch_size, evaluate=evaluate, eval_every=eval_every, logger=logger,
        log_fields=log_fields, progress=progress, description=description, steps_per_call=steps_per_call,
    )
    samples = method.sample(result.state, sample_key, num_samples)
    return Fitted(samples, apply, result.history, nonfinite_diagnostics(result.state), result.state,
                  problem.likelihood)


def initial_state(method: Transform, key: jax.Array, init_params: Any):
    """``method.init(key, init_params)`` as one compiled call, compiled once per transform.

    One compiled init instead of dozens of eagerly dispatched (and separately
    compiled) ops; cached per (transform, initialiser), so refitting the same
    transform (ensemble members one after another, splits, grid points) never
    recompiles it. ``init_params`` is a pytree (an argument of the compiled
    function) or an initialiser ``key -> params`` (part of the cached function).
    """
    if callable(init_params):
        return _compiled_init(method, init_params)(key)
    return _compiled_init(method, None)(key, init_params)


@functools.lru_cache(maxsize=64)
def _compiled_init(method: Transform, initialiser: Optional[Callable]) -> Callable:
    if initialiser is None:
        return jax.jit(method.init)
    return jax.jit(lambda key: method.init(key, initialiser))


def nonfinite_diagnostics(state) -> Dict[str, int]:
    """``{"nonfinite_steps": n}`` for a state that counts its skipped non-finite steps (summed over any
    member or chain axes), else ``{}``: divergences are reported, never silently averaged in."""
    nonfinite = getattr(state, "num_nonfinite", None)
    return {} if nonfinite is None else {"nonfinite_steps": int(np.sum(np.asarray(nonfinite)))}
