"""Every agent of the benchmark by name: the bandit's recipes, composing bdljax methods into agents.

Every neural agent fits the same network (:func:`agent_network`) to the same
log posterior (:func:`experiments.bandits.log_posterior.bandit_log_posterior`
with the prior of :func:`agent_prior`) with the same optimiser
(:func:`bandit_optimizer`) and retraining schedule; only the inference method
differs. Each method is wrapped in :func:`bdljax.methods.wrappers.skip_nonfinite`
(each ensemble member on its own), so a diverging retraining is undone and
counted per seed instead of averaged into the regret.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import numpy as np
import optax

from bdljax.core import priors
from bdljax.core.posterior import LogPosterior
from bdljax.core.priors import Prior
from bdljax.methods import concrete_dropout, ensemble, map_estimate, mcdropout, mfvi, sgmcmc
from bdljax.methods.wrappers import skip_nonfinite
from bdljax.nn import dropout, models

from experiments.bandits.agents import (Agent, Retraining, check_training, linear_thompson_agent,
                                        neural_linear_agent, transform_agent, uniform_agent)
from experiments.bandits.environments import Bandit
from experiments.bandits.log_posterior import bandit_log_posterior
from experiments.bandits.networks import (DROPOUT_MASKS, bandit_model, learned_noise_model, mcdropout_network,
                                          per_arm_weight_sample, randomized_prior_model, trainable_prior,
                                          uniform_init_model)
from experiments.bandits.settings import AgentSettings

AGENTS = ("uniform", "greedy", "mcdropout", "mfvi", "ensemble", "bootstrap", "rp_ensemble", "neural_linear", "lints",
          "sgld", "sghmc")
POINT_PRIORS = ("gaussian", "flat")
POINT_AGENTS = ("greedy", "ensemble", "bootstrap", "neural_linear", "mcdropout")


def bandit_optimizer(name: str, learning_rate: float, *, train_steps: int, lr_decay: float = 0.0,
                     max_grad_norm: Optional[float] = None) -> optax.GradientTransformation:
    """The optimiser of the neural agents' retrainings.

    ``lr_decay`` > 0 gives Riquelme et al.'s inverse-time decay restarted at every retraining,
    η_s = η₀ / (1 + lr_decay · s) with s the step *within* the current retraining (their ``reset_lr``):
    every retraining runs exactly ``train_steps`` updates, so s = count mod train_steps. Their networks
    use RMSProp, η₀ = 0.1, decay 0.5 and global-norm clipping at 5.
    """
    if name not in ("adam", "rmsprop"):
        raise ValueError(f"bandit optimizer must be 'adam' or 'rmsprop', got {name!r}")
    if not learning_rate > 0 or lr_decay < 0:
        raise ValueError(f"need learning_rate > 0 and lr_decay >= 0, got {learning_rate} and {lr_decay}")
    check_training(train_steps)
    if max_grad_norm is not None and not max_grad_norm > 0:
        # 0 would zero every update and a negative norm would turn descent into ascent.
        raise ValueError(f"max_grad_norm must be positive (or None for no clipping), got {max_grad_norm}")
    schedule = learning_rate
    if lr_decay:
        schedule = lambda count: learning_rate / (1.0 + lr_decay * (count % train_steps))  # noqa: E731
    optimizer = optax.adam(schedule) if name == "adam" else optax.rmsprop(schedule)
    if max_grad_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(max_grad_norm), optimizer)
    return optimizer


def agent_prior(name: str, settings: AgentSettings) -> Prior:
    """The prior of agent ``name``'s network: N(0, s²/fan_in) on kernels and N(0, s²) on biases
    (s = ``prior_scale``), or the flat prior (maximum likelihood) for the agents fitted to a point
    (:data:`POINT_AGENTS`) when ``point_prior == "flat"``; NeuralLinear's network follows
    ``neural_linear_prior`` instead when that is set."""
    if not (np.isfinite(settings.prior_scale) and settings.prior_scale > 0):
        raise ValueError(f"prior_scale must be positive and finite, got {settings.prior_scale}")
    if settings.point_prior not in POINT_PRIORS:
        raise ValueError(f"point_prior must be one of {POINT_PRIORS}, got {settings.point_prior!r}")
    if settings.neural_linear_prior is not None and settings.neural_linear_prior not in POINT_PRIORS:
        raise ValueError(f"neural_linear_prior must be None or one of {POINT_PRIORS}, "
                         f"got {settings.neural_linear_prior!r}")
    point_prior = settings.point_prior
    if name == "neural_linear" and settings.neural_linear_prior is not None:
        point_prior = settings.neural_linear_prior
    if name in POINT_AGENTS and point_prior == "flat":
        return priors.flat()
    return priors.gaussian(priors.fan_in_scales(settings.prior_scale))


def agent_network(name: str, bandit: Bandit, settings: AgentSettings) -> models.Model:
    """The network agent ``name`` of :func:`make_agent` fits, before any dropout: the bandit MLP, with
    Riquelme et al.'s uniform initialisation when ``init_scale`` is set and a learned ρ = log σ when
    ``learned_noise``."""
    s = settings
    # dropout_input only shapes the network MC dropout rebuilds with masks (without dropout it is the same MLP).
    model = bandit_model(bandit.context_dim, bandit.num_arms, s.hidden, s.activation,
                         dropout_input=s.dropout_input and name == "mcdropout")
    if s.init_scale is not None:
        model = uniform_init_model(model, s.init_scale)
    if s.learned_noise:
        model = learned_noise_model(model, s.noise_scale)
    return model


class AgentParts(NamedTuple):
    """What every network agent of :func:`make_agent` is built from."""

    model: models.Model  # agent_network
    prior: Prior  # agent_prior
    noise: float  # the likelihood's fixed σ: noise_scale, or 1 when σ = noise_scale·e^ρ is learned
    log_posterior: LogPosterior  # of model under prior, on up to horizon observations
    optimizer: optax.GradientTransformation
    retraining: Retraining


def agent_parts(name: str, bandit: Bandit, horizon: int, settings: AgentSettings) -> AgentParts:
    """The shared pieces of network agent ``name`` (every setting they read is checked here)."""
    s = settings
    model = agent_network(name, bandit, s)
    # With a learned σ = noise_scale·e^ρ the likelihood's fixed factor is 1 and ρ starts at log noise_scale.
    noise = 1.0 if s.learned_noise else s.noise_scale
    prior = agent_prior(name, s)
    log_post = bandit_log_posterior(model, bandit.context_dim, noise, prior, horizon, learned_noise=s.learned_noise)
    optimizer = bandit_optimizer(s.optimizer, s.learning_rate, train_steps=s.train_steps, lr_decay=s.lr_decay,
                                 max_grad_norm=s.max_grad_norm)
    retraining = Retraining(bandit.num_arms, horizon, s.batch_size, s.train_steps)
    return AgentParts(model, prior, noise, log_post, optimizer, retraining)


def _member_perturbation(multiple: Optional[float], settings: AgentSettings) -> Optional[float]:
    """The standard deviation of the per-member reward perturbation, ``multiple`` × σ; None or 0: off."""
    return multiple * settings.noise_scale if multiple else None


def _map(parts: AgentParts, log_post: Optional[LogPosterior] = None):
    return skip_nonfinite(map_estimate.build(log_post or parts.log_posterior, parts.optimizer))


def _greedy_agent(name: str, bandit: Bandit, s: AgentSettings, p: AgentParts) -> Agent:
    """MAP; its "sample" is the estimate."""
    return transform_agent(name, _map(p), p.model, p.retraining)


def _neural_linear_agent(name: str, bandit: Bandit, s: AgentSettings, p: AgentParts) -> Agent:
    """A MAP network and exact NIG regression on its last hidden layer."""
    return neural_linear_agent(_map(p), p.model, p.retraining, num_hidden=len(s.hidden), activation=s.activation,
                               prior=s.nig, name=name)


def _ensemble_agent(name: str, bandit: Bandit, s: AgentSettings, p: AgentParts) -> Agent:
    """K MAP members (``bootstrap``: each observation in each member's data with probability p)."""
    return transform_agent(name, ensemble.build(_map(p), s.num_members), p.model, p.retraining,
                           samples_per_draw=s.num_members,
                           bootstrap_probability=s.bootstrap_probability if name == "bootstrap" else None,
                           reward_perturbation=_member_perturbation(s.ensemble_reward_perturbation, s))


def _rp_ensemble_agent(name: str, bandit: Bandit, s: AgentSettings, p: AgentParts) -> Agent:
    """K MAP members, each with its own fixed random prior network added (Osband et al. 2018)."""
    rp_model = randomized_prior_model(p.model, s.prior_function_scale)
    log_post = bandit_log_posterior(rp_model, bandit.context_dim, p.noise, trainable_prior(p.prior),
                                    p.retraining.horizon, learned_noise=s.learned_noise)
    return transform_agent(name, ensemble.build(_map(p, log_post), s.num_members), rp_model, p.retraining,
                           samples_per_draw=s.num_members,
                           reward_perturbation=_member_perturbation(s.rp_reward_perturbation, s))


def _mfvi_agent(name: str, bandit: Bandit, s: AgentSettings, p: AgentParts) -> Agent:
    """Mean-field VI; one draw from q per decision."""
    # Thompson sampling needs the most uncertainty before any data: q starts with the prior's scales (times
    # mfvi_init_scale) around a random initialisation, and shrinks as the data come in.
    prior_scales = p.prior.scales(jax.eval_shape(p.model.init, jax.random.key(0)))
    init_scale = jax.tree.map(lambda scale: np.asarray(s.mfvi_init_scale * scale), prior_scales)
    method = mfvi.build(p.log_posterior, p.optimizer, num_mc_samples=s.mfvi_mc_samples, init_scale=init_scale)
    return transform_agent(name, skip_nonfinite(method), p.model, p.retraining)


def _concrete_dropout_agent(dropout_net: models.Model, structure, bandit: Bandit, s: AgentSettings,
                            p: AgentParts) -> Agent:
    """MC dropout with learned rates (:mod:`bdljax.methods.concrete_dropout`): the ELBO with the KL to the Gaussian
    prior N(0, s²/fan_in) starts every rate at ``dropout_rate``; one hard Bernoulli mask of the learned rates
    per decision."""
    if s.dropout_masks != "shared":
        raise ValueError("concrete_dropout supports dropout_masks='shared' only")
    if s.learned_noise:
        raise ValueError("concrete_dropout does not support learned_noise (both add parameters to the network's "
                         "pytree); turn one of them off.")
    apply = concrete_dropout.concrete_apply(dropout_net.apply, structure)

    def init(key):
        return concrete_dropout.init_params(dropout_net.init(key), structure, s.dropout_rate)

    concrete_net = models.Model(init, apply)
    kl = concrete_dropout.kl_prior(priors.gaussian(priors.fan_in_scales(s.prior_scale)), structure)
    log_post = bandit_log_posterior(concrete_net, bandit.context_dim, p.noise, kl, p.retraining.horizon)
    method = concrete_dropout.build(log_post, p.optimizer, structure)
    return transform_agent("mcdropout", skip_nonfinite(method), concrete_net, p.retraining, sample_apply=apply)


def _mcdropout_agent(name: str, bandit: Bandit, s: AgentSettings, p: AgentParts) -> Agent:
    """MC dropout; one dropout mask per decision (shared by the arms, or ``per_arm``), or concrete dropout."""
    dropout_net, structure = mcdropout_network(p.model, s.dropout_rate, bandit.context_dim)
    if s.dropout_masks not in DROPOUT_MASKS:
        raise ValueError(f"dropout_masks must be one of {DROPOUT_MASKS}, got {s.dropout_masks!r}")
    if s.concrete_dropout:
        return _concrete_dropout_agent(dropout_net, structure, bandit, s, p)
    log_post = bandit_log_posterior(dropout_net, bandit.context_dim, p.noise, p.prior, p.retraining.horizon,
                                    learned_noise=s.learned_noise)
    draw = (functools.partial(per_arm_weight_sample, structure=structure, num_arms=bandit.num_arms)
            if s.dropout_masks == "per_arm" else None)
    method = mcdropout.build(log_post, p.optimizer, structure, draw=draw)
    return transform_agent(name, skip_nonfinite(method), dropout_net, p.retraining,
                           sample_apply=dropout.sample_apply(dropout_net.apply, structure))


def _sgmcmc_agent(name: str, bandit: Bandit, s: AgentSettings, p: AgentParts) -> Agent:
    """SGLD or SGHMC, one chain; its current position is the decision's sample."""
    # The posterior's curvature grows like the data count n_t = (retrainings so far)·k, and a Langevin step is
    # stable only while ε·curvature stays bounded: ε_t = ε₀ (1 + t/train_steps)⁻¹ (Welling & Teh's polynomial
    # decay with γ = 1, t the chain's step count) keeps ε·n_t about constant as the data grow.
    schedule = sgmcmc.polynomial(s.sgld_step_size if name == "sgld" else s.sghmc_step_size, s.train_steps, 1.0)
    if not s.sgmcmc_scale > 0:
        raise ValueError(f"sgmcmc_scale must be positive, got {s.sgmcmc_scale}")
    log_post = p.log_posterior
    if s.sgmcmc_scale != 1.0:
        # σ → cσ and s → cs together: the same MAP, the posterior tempered at T = c² (see AgentSettings).
        c = s.sgmcmc_scale
        log_post = bandit_log_posterior(p.model, bandit.context_dim, c * p.noise,
                                        agent_prior(name, s._replace(prior_scale=c * s.prior_scale)),
                                        p.retraining.horizon, learned_noise=s.learned_noise)
    if name == "sgld":
        method = sgmcmc.sgld(log_post, schedule)
    else:
        method = sgmcmc.sghmc(log_post, schedule, friction=s.sghmc_friction)
    # One chain's transition; the decision needs only its current position (sgmcmc.sample), so no draw buffer.
    return transform_agent(name, skip_nonfinite(method), p.model, p.retraining)


NETWORK_AGENTS = {"greedy": _greedy_agent, "neural_linear": _neural_linear_agent, "ensemble": _ensemble_agent,
                  "bootstrap": _ensemble_agent, "rp_ensemble": _rp_ensemble_agent, "mfvi": _mfvi_agent,
                  "mcdropout": _mcdropout_agent, "sgld": _sgmcmc_agent, "sghmc": _sgmcmc_agent}


def make_agent(name: str, bandit: Bandit, horizon: int, settings: AgentSettings = AgentSettings()) -> Agent:
    """The agent called ``name`` (one of :data:`AGENTS`) for ``bandit`` and a run of ``horizon`` steps.

    * ``uniform``: random arms. ``lints``: exact linear Thompson sampling.
    * ``greedy``: MAP (:func:`bdljax.methods.map_estimate.build`); its "sample" is the estimate.
    * ``mcdropout``: :func:`bdljax.methods.mcdropout.build`; one dropout mask per decision.
    * ``mfvi``: :func:`bdljax.methods.mfvi.build`; one draw from q per decision.
    * ``ensemble``: K MAP members from independent initialisations; one member per decision.
    * ``bootstrap``: the same with each observation in each member's data with probability p.
      Optionally the members of both fit their own noise-perturbed copies of the rewards
      (``ensemble_reward_perturbation``; ensemble sampling, Lu & Van Roy 2017).
    * ``rp_ensemble``: the ensemble with a fixed random prior function added to each member
      (:func:`~experiments.bandits.networks.randomized_prior_model`), Osband et al. (2018); optionally each
      member fits its own noise-perturbed copy of the rewards (``rp_reward_perturbation``).
    * ``neural_linear``: MAP network + exact NIG regression on its last hidden layer.
    * ``sgld`` / ``sghmc``: :mod:`bdljax.methods.sgmcmc`; the chain's current state per decision.
    """
    if name not in AGENTS:
        raise ValueError(f"unknown bandit agent {name!r}; choose from {list(AGENTS)}")
    if name == "uniform":
        return uniform_agent(bandit.num_arms)
    if name == "lints":
        return linear_thompson_agent(bandit.num_arms, bandit.context_dim, settings.nig)
    return NETWORK_AGENTS[name](name, bandit, settings, agent_parts(name, bandit, horizon, settings))
