"""Deep ensembles (Lakshminarayanan et al. 2017): K MAP members, each with its own initialisation and data order."""

from __future__ import annotations

from typing import Optional

from bdljax.methods import ensemble, map_estimate, wrappers
from bdljax.recipes.base import Problem, batch_size_for, check_positive_int, make_optimizer
from bdljax.run.plan import Epochs, Plan


def plan(problem: Problem, *, num_members: int = 5, num_epochs: int = 40, batch_size: Optional[int] = 100,
         learning_rate: float = 1e-3, optimizer: str = "adam") -> Plan:
    """The paper's defaults: 5 members, Adam, batch 100, 40 epochs; each member is one sample.

    Each member undoes and counts its own non-finite steps. Whether members
    advance vmapped or one after another is the runner's choice
    (:mod:`bdljax.run.execution`): the two draw members from different keys,
    so their numbers differ; their distributions agree.
    """
    check_positive_int("ensemble", num_members=num_members, num_epochs=num_epochs)
    member = wrappers.skip_nonfinite(map_estimate.build(problem.log_posterior(), make_optimizer(optimizer, learning_rate)))
    return Plan("ensemble", ensemble.build(member, num_members), problem.model.init, (problem.x_train, problem.y_train),
                problem.model.apply, problem.likelihood, Epochs(num_epochs, batch_size_for(batch_size, problem.num_data)),
                num_samples=num_members)
