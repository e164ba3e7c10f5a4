"""What every recipe starts from: the :class:`Problem`, and the small choices recipes share.

A recipe (one module per method in this package) is a short function

    plan(problem: Problem, **hyperparameters) -> bdljax.run.plan.Plan

that composes a method on the problem's shared log posterior and returns a
plan; :func:`bdljax.run.runner.execute` runs it. Recipes never train.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import numpy as np
import optax

from bdljax.core.likelihoods import Likelihood
from bdljax.core.posterior import LogPosterior, log_posterior
from bdljax.core.priors import Prior
from bdljax.nn.models import Model, check_input_shape
from bdljax.run.training import check_finite


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


def batch_size_for(batch_size: Optional[int], num_data: int) -> int:
    """``None`` means full batch; a default batch larger than a small data set means full batch, not an error."""
    return num_data if batch_size is None else min(int(batch_size), num_data)


def check_positive_int(recipe: str, **values) -> None:
    """Every value must be an int >= 1 (``int()`` would truncate 10.5 silently; 0 fails deep in tracing)."""
    for name, value in values.items():
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{recipe}: {name} must be a positive int, got {value!r}")


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
