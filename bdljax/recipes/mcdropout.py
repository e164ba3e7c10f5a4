"""MC dropout (Gal & Ghahramani 2016), or concrete dropout with learned rates (Gal, Hron & Kendall 2017)."""

from __future__ import annotations

from functools import partial
from typing import Any, Dict, Optional

import jax

from bdljax.core import priors
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
    """Train ``problem.model.with_dropout(dropout_rate)`` with dropout on, then draw T = ``num_samples`` dropout
    samples (one mask per pass shared by all test points; ``per_point_masks=True``: one per test point).

    ``tau``: noise precision τ in the units of ``problem.y_train``; a value replaces the (fixed-scale Gaussian)
    likelihood by ``gaussian(tau ** -0.5)``. ``length_scale``: a value l uses :func:`bdljax.recipes.gal.gal_prior`,
    which makes the objective Gal's. ``concrete=True``: learn every layer's rate from ``dropout_rate`` under the
    KL to N(0, l⁻²) (or the problem's Gaussian prior), relaxed masks at ``concrete_temperature``.
    ``Fitted.diagnostics`` gains ``tau``, ``dropout_rate``, ``length_scale``, ``form``, ``form_reason``, and
    ``learned_dropout_rates`` with ``concrete=True``.
    """
    dropout.check_rate(dropout_rate)
    check_positive_int("mcdropout", num_samples=num_samples, num_epochs=num_epochs)
    if length_scale is not None:
        gal.check_positive("length_scale", length_scale)
    if concrete and (dropout_rate == 0.0 or per_point_masks):
        raise ValueError("concrete=True learns rates from dropout_rate, the initial rate in (0, 1), and draws weight "
                         "samples of them (per_point_masks=False)")
    likelihood = problem.likelihood if tau is None else gal.precision_likelihood(problem.likelihood, tau)
    model = dropout.dropout_model(problem.model, dropout_rate)
    # The structure is the architecture's: found once from any initialisation (and cached).
    structure = dropout.dropout_structure(model.apply, jax.jit(model.init)(jax.random.key(0)), problem.x_train,
                                          per_point_masks=per_point_masks)
    if concrete:
        if not structure.rates:
            raise ValueError("concrete=True learns the rates of the network's flax nn.Dropout layers, and this "
                             "network has none (its dropout, if any, is its own code, e.g. bdljax.nn.recurrent)")
        base_prior = problem.prior if length_scale is None else priors.gaussian(1.0 / length_scale)
        prior = concrete_dropout.kl_prior(base_prior, structure)
        apply = concrete_dropout.concrete_apply(model.apply, structure, concrete_temperature)
        init = partial(_concrete_init, init=model.init, structure=structure, rate=dropout_rate)
        model, build = Model(model.init, apply, None), concrete_dropout.build
    else:
        prior = problem.prior if length_scale is None else gal.gal_prior(
            jax.eval_shape(model.init, jax.random.key(0)), structure, length_scale)
        apply, init, build = dropout.sample_apply(model.apply, structure), model.init, mcdropout.build
    log_posterior = problem._replace(model=model, likelihood=likelihood, prior=prior).log_posterior()
    method = build(log_posterior, make_optimizer(optimizer, learning_rate), structure)
    settings = {"tau": gal.noise_precision(likelihood), "dropout_rate": float(dropout_rate),
                "length_scale": None if length_scale is None else float(length_scale), "form": structure.form,
                "form_reason": structure.reason}
    return Plan("concrete_dropout" if concrete else "mcdropout", wrappers.skip_nonfinite(method), init,
                (problem.x_train, problem.y_train), apply, likelihood,
                Epochs(num_epochs, batch_size_for(batch_size, problem.num_data)), num_samples,
                finish=partial(_record, settings=settings, concrete=concrete))


def _concrete_init(key, init, structure, rate):
    return concrete_dropout.init_params(init(key), structure, rate)


def _record(fitted: Fitted, plan: Plan, settings: Dict[str, Any], concrete: bool) -> Fitted:
    diagnostics = {**fitted.diagnostics, **settings}
    if concrete:
        diagnostics["learned_dropout_rates"] = concrete_dropout.learned_rates(fitted.state.inner)
    return fitted._replace(diagnostics=diagnostics)
