"""What a recipe hands the runner: a :class:`Plan`, plain data.

A recipe (:mod:`bdljax.recipes`) composes a method for a problem and returns a
plan; :func:`bdljax.run.runner.execute` executes any plan. A plan says *what*
to run (the transform, where it starts, the data, how long, how many
predictive samples); the runner decides *how* (scanned or chunked epochs,
members vmapped or one after another, progress, logging, evaluation) and owns
what every method shares (minibatching, non-finite accounting, diagnostics).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from bdljax.core.likelihoods import Likelihood
from bdljax.core.transform import Transform
from bdljax.nn.models import Apply

Params = Any


class Epochs(NamedTuple):
    """Train by minibatch epochs: each epoch a fresh permutation cut into ⌊N/B⌋ batches of B."""

    num_epochs: int
    batch_size: int  # B; the recipe resolves "full batch" to N


class Chains(NamedTuple):
    """Run full-batch Markov chains (HMC/NUTS): ``num_warmup`` adaptation transitions, then ``num_draws`` kept
    draws per chain, every ``thinning``-th transition, in compiled chunks of ``chunk_size`` draws."""

    num_chains: int
    num_warmup: int
    num_draws: int
    thinning: int = 1
    chunk_size: int = 100
    chain_method: str = "auto"  # "vectorized", "sequential" or "auto" (by backend)
    float64: bool = False  # run the chains under jax.enable_x64 (the transform was built for it)


class Fitted(NamedTuple):
    """What executing a plan gives.

    Attributes:
      samples: stacked parameter pytree, leading axis S (members, chains × draws, weight samples).
      apply: ``apply(sample, x, rng=None, train=False)`` evaluating one sample.
      likelihood: the likelihood to score predictions with.
      history: training records (one per epoch or chunk, per evaluation, per stage).
      diagnostics: method-specific figures (non-finite steps, acceptance, R̂, execution choices, ...).
      state: the method's final state.
    """

    samples: Params
    apply: Apply
    likelihood: Likelihood
    history: List[Dict[str, Any]]
    diagnostics: Dict[str, Any]
    state: Any


class Plan(NamedTuple):
    """One run of one method on one problem, as plain data.

    Attributes:
      name: the method's name (progress bars, logs).
      transform: the composed method.
      init_params: a pytree, or an initialiser ``key -> pytree``; with ``before``,
        a function of the first stage's :class:`Fitted` returning either.
      data: the training set ``(x, y)``; the transform's log posterior was built for its N rows.
      apply: evaluates one posterior sample.
      likelihood: scores the predictions.
      schedule: :class:`Epochs` or :class:`Chains`.
      num_samples: predictive draws taken from the final state.
      before: an optional first stage (MAP pretraining, MAP chain starts); the
        run's key is split between it and this stage.
      finish: an optional ``(Fitted, Plan) -> Fitted`` applied after sampling
        (diagnostics, reshaping draws); runs on the host.
    """

    name: str
    transform: Transform
    init_params: Any
    data: Tuple[Any, Any]
    apply: Apply
    likelihood: Likelihood
    schedule: Union[Epochs, Chains]
    num_samples: int
    before: Optional["Plan"] = None
    finish: Optional[Callable[[Fitted, "Plan"], Fitted]] = None

    @property
    def num_data(self) -> int:
        return int(self.data[0].shape[0])
