"""MC dropout: dropout at training and at prediction time as approximate variational inference.

Gal & Ghahramani (2016), "Dropout as a Bayesian Approximation: Representing
Model Uncertainty in Deep Learning" (ICML). A network trained with dropout
before every weight layer, with weight decay, maximises (up to a constant)
the evidence lower bound of a variational distribution q_M(W) whose draws are
W = diag(z)·M, z_j ~ Bernoulli(1 − p): the rows of each weight matrix M are
dropped together. Predicting with T stochastic passes then averages T draws
of that distribution, which approximates the posterior predictive.

Training
--------
Training is MAP on the shared :class:`~bdljax.core.posterior.LogPosterior` of the
*dropout* network (``model.with_dropout(p)``), with dropout switched on: each
step passes its key as ``rng``, so every example of a batch gets its own mask
(Gal's stochastic estimate of the expected log-likelihood). Nothing rescales
the prior here; the relation below makes the shared log posterior equal, up
to a positive factor and a constant, to the paper's objective.

The prior that makes this objective Gal's (weight decay λ = (1 − p) l²/(2Nτ)
as a Gaussian prior of scale 1/(l √(1 − p)) on the kernels dropout feeds) and
the paper's regression predictive are the protocol's: :mod:`bdljax.recipes.gal`.

Prediction: T stochastic passes, one mask per pass shared by every test
point, are T draws of q_M(W); where the masks fold into Dense kernels each
draw is a plain parameter pytree (:mod:`bdljax.nn.dropout` finds where the
masks act and evaluates the other forms).

Concrete dropout (Gal, Hron & Kendall 2017), which learns p through a
relaxed Bernoulli, is :mod:`bdljax.methods.concrete_dropout`; the recipe's
``concrete=True`` runs it. Its KL term, −Σ_k [‖K_k‖²/(2 s²(1 − p_k)) − D_k H(p_k)],
enters the shared log posterior as the prior term of the ELBO.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

import jax
import optax

from bdljax.core import tree
from bdljax.core.posterior import LogPosterior
from bdljax.core.transform import Transform
from bdljax.methods import map_estimate
from bdljax.nn.dropout import FORMS, DropoutStructure, MCDropoutSample, weight_sample

Params = Any
Draw = Callable[[Params, jax.Array], Params]  # (trained params, key) -> one draw of the variational family


def sample(state: map_estimate.MAPState, key: jax.Array, num_samples: int = 100, draw: Optional[Draw] = None):
    """T = ``num_samples`` draws of the dropout distribution around the trained weights: ``draw(params, key)``
    pytrees stacked (masks folded into the weights), or, without ``draw``, :class:`MCDropoutSample`
    ``(params, keys)`` whose masks the network draws itself (:func:`bdljax.nn.dropout.sample_apply`)."""
    keys = jax.random.split(key, num_samples)
    if draw is not None:
        return jax.vmap(lambda k: draw(state.params, k))(keys)
    return MCDropoutSample(tree.repeat(state.params, num_samples), keys)


def build(log_posterior: LogPosterior, optimizer: optax.GradientTransformation,
          structure: DropoutStructure, draw: Optional[Draw] = None) -> Transform:
    """MC dropout on the shared log posterior of a dropout network.

    ``init``/``update``: MAP steps (:mod:`bdljax.methods.map_estimate`) with
    dropout on, per-example masks from each step's key. ``sample(state, key,
    T)``: T draws of the dropout variational distribution (:func:`sample`);
    evaluate them with :func:`bdljax.nn.dropout.sample_apply` ``(log_posterior.apply, structure)``.

    Args:
      log_posterior: built on the dropout network's apply (``model.with_dropout(p)``).
      optimizer: any optax transformation.
      structure: from :func:`bdljax.nn.dropout.dropout_structure` for that network.
      draw: ``draw(params, key) -> parameter pytree``, one draw of another
        variational family over the same trained weights (e.g. a bandit's
        per-arm masks); default :func:`bdljax.nn.dropout.weight_sample`.
        Needs the ``"weight_sample"`` form.
    """
    if structure.form not in FORMS:
        raise ValueError(f"unknown MC dropout form {structure.form!r}; choose one of {FORMS}")
    if draw is not None and structure.form != "weight_sample":
        raise ValueError(f"a custom draw needs the 'weight_sample' form; this network's is {structure.form!r}")
    if draw is None and structure.form == "weight_sample":
        draw = partial(weight_sample, structure=structure)
    return Transform(partial(map_estimate.init, optimizer=optimizer),
                     partial(map_estimate.update, log_posterior=log_posterior, optimizer=optimizer),
                     partial(sample, draw=draw))
