"""MC dropout (Gal & Ghahramani 2016), or concrete dropout with learned rates (Gal, Hron & Kendall 2017)."""

from __future__ import annotations

from functools import partial
from typing import Any, Dict, Optional

import jax

from bdljax.core import likelihoods, priors
from bdljax.methods import concrete_dropout, mcdropout, wrappers
from bdljax.nn import dropout
from bdljax.nn.models import Model
from bdljax.recipes import gal
from bdljax.recipes.base import Problem, batch_size_for, check_positive_int, make_optimizer
from bdljax.run.plan import Epochs, Fitted, Plan


def plan(problem: Problem, *, dropout_rate: float = 0.05, tau: Optional[float] = None,
         length_scale: Optional[float] = None, num_epochs: int = 40, batch_size: Optional[int] = gal.GAL_BATCH_SIZE,
         learning_rate: float = 1e-3, optimizer: str = "adam", num_samples: int = 100, per_point_masks: bool = False,
         concrete: bool = False, concrete_temperature: float = 0.1) -> Plan:
    """Train ``problem.model.with_dropout(dropout_rate)`` on the shared log posterior with dropout on, then draw
    ``num_samples`` = T dropout samples (one mask per pass, shared by all test points; ``per_point_masks=True``
    for independent masks per test point).

    ``tau``: model precision τ in the units of ``problem.y_train``; ``None`` keeps the problem's likelihood, a
    value replaces a fixed-scale Gaussian likelihood by ``gaussian(tau ** -0.5)``. ``length_scale``: prior
    length-scale l; ``None`` keeps the problem's prior, a value uses :func:`bdljax.recipes.gal.gal_prior`, which
    makes the objective Gal's. ``concrete``: learn every dropout layer's rate (``dropout_rate`` is then the
    initial one, the prior N(0, l⁻²) that of the KL term); ``concrete_temperature``: the relaxed masks'.

    ``Fitted.diagnostics`` holds ``tau`` (the noise precision used, or ``None``), ``dropout_rate``,
    ``length_scale``, ``form`` and ``form_reason``, and ``learned_dropout_rates`` with ``concrete=True``.
    """
    dropout.check_rate(dropout_rate)
    check_positive_int("mcdropout", num_samples=num_samples, num_epochs=num_epochs)
    if length_scale is not None:
        gal.check_positive("length_scale", length_scale)
    likelihood = _likelihood(problem, tau)
    if concrete and not 0.0 < dropout_rate:
        raise ValueError("with concrete=True, dropout_rate is the initial rate of the learned ones; give one in (0, 1)")
    if concrete and per_point_masks:
        raise ValueError("concrete=True draws weight samples of the learned rates; per_point_masks is not supported")
    model = dropout.dropout_model(problem.model, dropout_rate)
    # The structure is the architecture's: found once from any initialisation (and cached).
    structure = dropout.dropout_structure(model.apply, jax.jit(model.init)(jax.random.key(0)), problem.x_train,
                                          per_point_masks=per_point_masks)
    optimizer = make_optimizer(optimizer, learning_rate)
    if concrete:
        method, apply, init_params = _concrete(problem, model, structure, likelihood, length_scale, optimizer,
                                               dropout_rate, concrete_temperature)
    else:
        params = jax.eval_shape(model.init, jax.random.key(0))
        prior = problem.prior if length_scale is None else gal.gal_prior(params, structure, length_scale)
        log_posterior = problem._replace(model=model, likelihood=likelihood, prior=prior).log_posterior()
        method = mcdropout.build(log_posterior, optimizer, structure)
        apply, init_params = dropout.sample_apply(model.apply, structure), model.init
    settings = {"tau": gal.noise_precision(likelihood), "dropout_rate": float(dropout_rate),
                "length_scale": None if length_scale is None else float(length_scale), "form": structure.form,
                "form_reason": structure.reason}
    return Plan("concrete_dropout" if concrete else "mcdropout", wrappers.skip_nonfinite(method), init_params,
                (problem.x_train, problem.y_train), apply, likelihood,
                Epochs(num_epochs, batch_size_for(batch_size, problem.num_data)), num_samples,
                finish=partial(_record, settings=settings, concrete=concrete))


def _likelihood(problem: Problem, tau: Optional[float]) -> likelihoods.Likelihood:
    if tau is None:
        return problem.likelihood
    gal.check_positive("tau", tau)
    if problem.likelihood.name != "gaussian":
        raise ValueError(f"tau sets the precision of a fixed-scale Gaussian likelihood, but the problem's likelihood "
                         f"is {problem.likelihood.name!r}; leave tau=None to use that likelihood as it is.")
    return likelihoods.gaussian(float(tau) ** -0.5)


def _concrete(problem, model, structure, likelihood, length_scale, optimizer, dropout_rate, temperature):
    """Concrete dropout's transform, sample evaluator and initialiser (weights and dropout logits)."""
    if not structure.rates:
        raise ValueError("concrete=True learns the rates of the network's flax nn.Dropout layers, and this network "
                         "has none (its dropout, if any, is its own code, e.g. bdljax.nn.recurrent); use concrete=False.")
    base_prior = problem.prior if length_scale is None else priors.gaussian(1.0 / length_scale)
    apply = concrete_dropout.concrete_apply(model.apply, structure, temperature)
    log_posterior = problem._replace(model=Model(model.init, apply, None), likelihood=likelihood,
                                     prior=concrete_dropout.kl_prior(base_prior, structure)).log_posterior()
    method = concrete_dropout.build(log_posterior, optimizer, structure)
    return method, apply, partial(_concrete_init, init=model.init, structure=structure, rate=dropout_rate)


def _concrete_init(key, init, structure, rate):
    return concrete_dropout.init_params(init(key), structure, rate)


def _record(fitted: Fitted, plan: Plan, settings: Dict[str, Any], concrete: bool) -> Fitted:
    diagnostics = {**fitted.diagnostics, **settings}
    if concrete:
        diagnostics["learned_dropout_rates"] = concrete_dropout.learned_rates(fitted.state.inner)
    return fitted._replace(diagnostics=diagnostics)
