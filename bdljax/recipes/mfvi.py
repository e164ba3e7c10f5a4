"""Mean-field VI (Bayes by Backprop, Blundell et al. 2015), optionally started from a MAP solution."""

from __future__ import annotations

from typing import Optional

from bdljax.core import tree
from bdljax.methods import mfvi, wrappers
from bdljax.nn import bayesian_layers
from bdljax.recipes import map_estimate
from bdljax.recipes.base import Problem, batch_size_for, check_positive_int, make_optimizer
from bdljax.run.plan import Epochs, Plan


def plan(problem: Problem, *, num_epochs: int = 100, batch_size: Optional[int] = 100, learning_rate: float = 1e-3,
         optimizer: str = "adam", num_mc_samples: int = 1, num_samples: int = 100, init_scale: float = 1e-2,
         pretrain_epochs: int = 0, estimator: str = "reparameterization", predict_with_mean: bool = False) -> Plan:
    """Bayes by Backprop with an optax optimiser.

    ``num_mc_samples`` draws per training step; ``num_samples`` weight draws
    for prediction (``predict_with_mean=True``: the one mean-weight network
    instead). ``pretrain_epochs > 0`` first runs MAP for that many epochs and
    starts q's mean at its solution (a first stage: its records carry
    ``stage="map_pretrain"``). ``estimator``: ``"reparameterization"`` (any
    network), or ``"local_reparameterization"`` / ``"flipout"`` for models
    built with :mod:`bdljax.nn.bayesian_layers`.
    """
    if estimator not in mfvi.ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {mfvi.ESTIMATORS}")
    check_positive_int("mfvi", num_epochs=num_epochs, num_samples=num_samples)
    if not isinstance(pretrain_epochs, int) or pretrain_epochs < 0:
        raise ValueError(f"mfvi: pretrain_epochs must be a non-negative int, got {pretrain_epochs!r}")
    variational_apply = None
    if estimator != "reparameterization":
        variational_apply = bayesian_layers.variational_apply(problem.model, estimator)
    method = mfvi.build(problem.log_posterior(), make_optimizer(optimizer, learning_rate),
                        num_mc_samples=num_mc_samples, init_scale=init_scale, variational_apply=variational_apply)
    if predict_with_mean:
        method = method._replace(sample=lambda state, key, n=1: tree.repeat(state.mean, n))
        num_samples = 1
    before, init_params = None, problem.model.init
    if pretrain_epochs:
        before = map_estimate.plan(problem, num_epochs=pretrain_epochs, batch_size=batch_size,
                                   learning_rate=learning_rate, optimizer=optimizer)._replace(name="map_pretrain")
        init_params = _pretrained_mean
    return Plan("mfvi", wrappers.skip_nonfinite(method), init_params, (problem.x_train, problem.y_train),
                problem.model.apply, problem.likelihood, Epochs(num_epochs, batch_size_for(batch_size, problem.num_data)),
                num_samples, before=before)


def _pretrained_mean(pretrained):
    """q's initial mean: the (guarded) MAP stage's final parameters."""
    return pretrained.state.inner.params
