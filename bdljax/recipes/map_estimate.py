"""MAP: an optax optimiser on the log posterior; one sample, the estimate."""

from __future__ import annotations

from typing import Optional

from bdljax.methods import map_estimate, wrappers
from bdljax.recipes.base import Problem, batch_size_for, check_positive_int, make_optimizer
from bdljax.run.plan import Epochs, Plan


def plan(problem: Problem, *, num_epochs: int = 40, batch_size: Optional[int] = 100, learning_rate: float = 1e-3,
         optimizer: str = "adam") -> Plan:
    """MAP with Adam (by default) on minibatches of ``batch_size`` (``None``: full batch) for ``num_epochs``."""
    check_positive_int("map", num_epochs=num_epochs)
    method = map_estimate.build(problem.log_posterior(), make_optimizer(optimizer, learning_rate))
    return Plan("map", wrappers.skip_nonfinite(method), problem.model.init, (problem.x_train, problem.y_train),
                problem.model.apply, problem.likelihood, Epochs(num_epochs, batch_size_for(batch_size, problem.num_data)),
                num_samples=1)
