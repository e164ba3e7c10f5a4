"""The agents' hyperparameters (:class:`AgentSettings`) and the per-bandit defaults chosen on pilot seeds.

Every neural agent shares one :class:`AgentSettings`; :data:`BANDIT_DEFAULTS`
holds the few settings that differ between the wheel and the mushroom bandit,
each with the pilot runs that chose it, and :func:`settings_for` applies them.
The command line (:mod:`experiments.bandits.cli`) fills every flag left unset
from them; the analysis scripts (``scripts/wheel_exploration.py``, ...) use them
as they are.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

from experiments.bandits.linear import NIGPrior


class AgentSettings(NamedTuple):
    """Hyperparameters shared by the agents of :func:`experiments.bandits.registry.make_agent`.

    Every neural agent uses the same network (``hidden``), Gaussian reward
    likelihood (``noise_scale`` σ), prior N(0, s²/fan_in) on kernels and N(0,
    s²) on biases (``prior_scale`` s), optimiser, batch size and number of
    minibatch steps per retraining; only the inference method differs. Three
    documented exceptions: ``point_prior = "flat"`` fits the point agents by
    maximum likelihood, as Riquelme et al.'s reference networks (no weight
    decay), ``neural_linear_prior`` does the same for NeuralLinear's network
    alone, and ``sgmcmc_scale`` c samples SGLD/SGHMC's posterior at
    temperature c². :data:`BANDIT_DEFAULTS` sets them per bandit from pilot
    seeds. ``learned_noise`` (off by default) makes σ a learned parameter of
    every network agent (:func:`experiments.bandits.networks.learned_noise_model`).
    ``ensemble_reward_perturbation`` changes how the plain and bootstrapped
    ensembles sample, not their model: each member fits its own
    N(0, (c·σ)²)-perturbed copy of the rewards (ensemble sampling).

    Taken from Riquelme et al. (2018): one hidden layer of 50 ReLUs, retraining every 50 steps for 100
    minibatch steps, 2 round-robin pulls per arm, bootstrap inclusion p = 0.95, dropout keep 0.8, the NIG
    prior (a₀ = b₀ = 6, λ = 0.25). Their optimiser recipe (RMSProp, η₀ = 0.1 decayed as η₀/(1 + 0.5 s)
    within each retraining, clipping at 5, batch 512, kernels U(−0.3, 0.3)) is available
    (``optimizer="rmsprop", learning_rate=0.1, lr_decay=0.5, max_grad_norm=5, init_scale=0.3,
    batch_size=512``) but is not the default: on pilot seeds (wheel δ = 0.95, T = 2000, keys
    split(key(1000), 4), never the reported ones) greedy with it missed the outer ring on all four seeds
    (regret 120.2 ± 0.2 vs 84.9 ± 20.4 with Adam, η = 0.01, batch 64), the ensemble was no better (88.7 ±
    23.6 vs 97.8 ± 7.6), and batch 512 made the ensemble's run 16x slower on the 2 shared CPU cores.
    """

    hidden: Tuple[int, ...] = (50,)
    activation: str = "relu"
    noise_scale: float = 1.0
    prior_scale: float = 1.0
    learning_rate: float = 1e-2
    optimizer: str = "adam"  # or "rmsprop" (Riquelme et al.); see registry.bandit_optimizer
    lr_decay: float = 0.0  # inverse-time decay within each retraining (Riquelme et al.: 0.5)
    max_grad_norm: Optional[float] = None  # global-norm clipping (Riquelme et al.: 5)
    init_scale: Optional[float] = None  # None: the MLP's LeCun init; s: kernels U(−s, s), biases 0 (Riquelme et al.: 0.3)
    batch_size: int = 64
    train_steps: int = 100
    num_members: int = 5  # ensemble and bootstrap
    bootstrap_probability: float = 0.95  # BootRMS's p
    dropout_rate: float = 0.2  # Riquelme et al.'s keep_prob 0.8
    # mcdropout: a mask on the raw context too (Gal & Ghahramani's family); False: hidden layers only, as
    # Riquelme et al.
    dropout_input: bool = False
    # mcdropout: learn the drop rate of every dropout layer on the ELBO (concrete dropout, Gal, Hron & Kendall
    # 2017), starting from dropout_rate, with the Gaussian prior above as the KL's base whatever point_prior
    # says (the KL is what sets the rate). The paper's argument for RL: with little data the entropy term
    # keeps p near ½ (wide samples), and p falls as the data grow, which a fixed rate cannot do.
    concrete_dropout: bool = False
    # mcdropout: "shared", one mask of the hidden units for all arms (the network's own dropout), or "per_arm",
    # an independent mask of the output layer's inputs for each arm (see networks.per_arm_weight_sample).
    dropout_masks: str = "shared"
    prior_function_scale: float = 1.0  # β of rp_ensemble's randomized prior functions
    # Optionally rp_ensemble's members fit rewards perturbed by N(0, s²) noise, s = this × noise_scale (1: the
    # likelihood's own σ, as exact posterior sampling needs for a linear-Gaussian model; None or 0: off). Off by default: on pilot
    # seeds (wheel δ = 0.95, split(key(1000), 4)) it gave 55.0 ± 11.7 against 47.5 ± 4.7 without.
    rp_reward_perturbation: Optional[float] = None
    # The same perturbation for the plain and bootstrapped ensembles (ensemble sampling, Lu & Van Roy 2017):
    # member k fits r_i + s·z_ik, s = this × noise_scale. None or 0: the members fit the rewards themselves.
    ensemble_reward_perturbation: Optional[float] = None
    mfvi_init_scale: float = 1.0  # initial σ of q as a fraction of the prior's σ: q starts at the prior (no data yet)
    mfvi_mc_samples: int = 1
    sgld_step_size: float = 1e-3  # ε at the first retraining; then ε ∝ 1/(retrainings so far), see registry
    # SGHMC's drift per step is ε∇U/α (SGLD's is ε∇U) and its momentum decay 1 − αε must stay in (0, 1):
    # α = 10, ε₀ = 0.01 gives it SGLD's drift (ε₀/α = 10⁻³) and stays stable on the 117-feature mushroom
    # contexts, where ε₀ = 0.03 diverged on pilot seeds.
    sghmc_step_size: float = 1e-2
    sghmc_friction: float = 10.0
    nig: NIGPrior = NIGPrior()
    # The prior of the agents fitted to a point by optimisation (greedy, ensemble, bootstrap, neural_linear's
    # network, mcdropout): "gaussian" (MAP with the prior above) or "flat" (maximum likelihood, as Riquelme et
    # al.'s reference RMS / BootRMS / Dropout / NeuralLinear networks, whose loss is the plain squared error on
    # the played arm with no weight decay). The sampling agents (mfvi, sgld, sghmc, rp_ensemble) keep the prior.
    point_prior: str = "gaussian"
    # SGLD and SGHMC only: sample with likelihood σ·c and prior scale s·c. Multiplying both by c multiplies the
    # log posterior by 1/c² up to a constant, so this is the same model's posterior at temperature T = c² (same
    # mode, c times wider), the width a likelihood with noise c·σ gives when the rewards are that noisy (a
    # poisonous mushroom's reward has standard deviation 20) without letting the prior dominate the mean. Step
    # sizes are not rescaled here: ε₀ is given for the scaled target (it scales like the posterior variance, c²).
    sgmcmc_scale: float = 1.0
    # Every network agent (all but uniform and lints) learns the reward noise: ρ = log σ is one more parameter,
    # initialised at log noise_scale and fitted / sampled with the weights (learned_noise_model); with the
    # Gaussian prior ρ ~ N(0, prior_scale²). Off: σ = noise_scale fixed (the behaviour before session 4).
    learned_noise: bool = False
    # The prior of NeuralLinear's network alone, overriding point_prior for it (None: follow point_prior).
    # Riquelme et al.'s NeuralLinear trains its network on the plain squared error (flat); see
    # BANDIT_DEFAULTS for where that differs from the other point agents' choice.
    neural_linear_prior: Optional[str] = None


# Settings that differ per bandit, each chosen on pilot seeds (keys split(key(1000), 8), T = 2000; never the
# evaluation keys split(key(0), S)); every one can be overridden on the command line.
# * point_prior: Riquelme et al.'s reference networks for RMS / BootRMS / Dropout / NeuralLinear minimise the
#   plain squared error (no weight decay), i.e. "flat". On the wheel (δ = 0.95) that made the plain and
#   bootstrapped ensembles find the outer ring on every pilot seed (55.9 ± 1.8 and 54.1 ± 5.3 against 97.5 ± 5.0
#   and 97.8 ± 4.9 with the Gaussian prior; greedy 70.7 ± 13.3 against 89.0 ± 13.0; MC dropout 71.5 ± 7.8 against
#   97.5 ± 7.8; NeuralLinear 53.4 ± 3.7 against 51.2 ± 3.4). On mushroom the unregularised networks overfit the
#   ±20 reward noise (ensemble 20.5 ± 1.2 flat against 11.7 ± 0.6 with the prior), so mushroom keeps the prior.
# * noise_scale σ / prior_scale s: σ = 1, s = 1 on both (σ = 5 alone made greedy and MFVI stop eating mushrooms:
#   against the prior the likelihood was too weak to learn "eat"; σ = s = 3 or 5 for every agent made MFVI
#   worse, 20.2 ± 0.9 and 33.9 ± 0.8 against 15.0 ± 1.1).
# * sgmcmc_scale c (SGLD, SGHMC: their posterior at temperature c², AgentSettings): on mushroom
#   with σ = 1 the posterior is certain after two −35 rewards that eating is bad (a poisonous mushroom's reward
#   has standard deviation 20), and on one pilot seed in eight greedy, SGLD and SGHMC never ate again (54.7,
#   the regret of never eating). c = 5 removed that on every pilot seed (SGHMC 17.3 ± 0.7, every seed ≤ 21.5,
#   against 26.7 ± 4.1 at c = 1; greedy 19.6 ± 5.2; SGLD 18.2 ± 0.9 with ε₀ = 10⁻², 19.9 ± 0.9 with 2.5·10⁻²,
#   against 21.1 ± 4.8 at c = 1); c = 3 did not (SGHMC 18.8 and SGLD 22.6, each with a seed at 54.7). Step sizes
#   are given for the scaled target (ε scales like the posterior's variance, c²: 7.5·10⁻² = 25 × 3·10⁻³).
# * learned_noise (session 4): off on both. On mushroom pilots a learned σ with s = 1 made every agent stop eating
#   (greedy 52.9 ± 2.3, SGLD 56.2, SGHMC 57.8, MC dropout 54.5, NeuralLinear 49.7, MFVI 55.0); with s = 5 MFVI
#   explored at random (94.0 ± 3.8) and SGLD/SGHMC were far worse than their tempered defaults (38.5, 45.9).
# * neural_linear_prior (session 4): mushroom "flat" (the reference NeuralLinear's plain squared error) for
#   NeuralLinear's network only: 16.3 ± 1.2 on the pilot keys, every seed ≤ 21.7, against 17.5 ± 4.5 with the
#   Gaussian prior (one seed at 48.6, a never-eat-like collapse). Wheel: None (follows point_prior, flat).
# * ensemble_reward_perturbation (session 5): wheel 1 (ensemble sampling, Lu & Van Roy 2017: member k fits
#   r + σ·z_k, σ the likelihood's own scale, fixed a priori, not tuned). On 24 pilot seeds (split(key(1000), 24))
#   it took the plain ensemble from 63.9 ± 5.2 to 34.4 ± 2.4 and the bootstrap from 61.6 ± 4.1 to 39.2 ± 2.3
#   (greedy 56.3 ± 5.3): maximum-likelihood members fitted to the same near-noiseless rewards agree and explore
#   no more than one network does. Rejected on the same seeds: 10 members instead of 5 (71.9, 65.0), bootstrap
#   inclusion p = 0.5 (57.8), and for MC dropout the rates 0.1 and 0.5 (71.1, 75.4 against 73.8 at 0.2).
# * dropout_rate (session 5): wheel 0.2 (Riquelme et al.'s keep 0.8), mushroom 0.5 (Gal & Ghahramani's usual
#   rate). Mushroom, 16 pilot seeds: 16.2 ± 1.2 at 0.5, every seed ≤ 33, against 16.3 ± 2.7 at 0.2 with a
#   never-eat seed at 55 (greedy 16.3 ± 2.7, the same seed at 55); the flat prior instead gave 17.3 ± 0.7.
# * dropout_input (session 5): off on both. A mask on the raw context as well (Gal & Ghahramani's family) made MC
#   dropout worse on both pilots: wheel 79.2 ± 3.7 against 73.8 ± 4.0, mushroom 28.4 ± 0.9 against 16.2 ± 1.2.
# * concrete_dropout (session 6): mushroom on, wheel off. MC dropout's rates learned on the ELBO (Gal, Hron &
#   Kendall 2017, with the Gaussian prior as the KL's base), starting from dropout_rate. Mushroom, 16 pilot seeds:
#   13.9 ± 1.7 against 16.2 ± 1.2 with the fixed rate 0.5 (greedy 16.3 ± 2.7). Wheel, 24 pilot seeds: 86.8 ± 5.8
#   starting from 0.2 and 94.0 ± 5.3 from 0.5, against 73.8 ± 4.0 with the fixed rate (greedy 56.3 ± 5.3).
BANDIT_DEFAULTS = {
    "wheel": {"noise_scale": 1.0, "prior_scale": 1.0, "point_prior": "flat", "sgld_step_size": 1e-3,
              "sghmc_step_size": 1e-2, "sgmcmc_scale": 1.0, "learned_noise": False,
              "neural_linear_prior": None, "ensemble_reward_perturbation": 1.0, "dropout_rate": 0.2,
              "dropout_input": False, "concrete_dropout": False},
    "mushroom": {"noise_scale": 1.0, "prior_scale": 1.0, "point_prior": "gaussian", "sgld_step_size": 1e-2,
                 "sghmc_step_size": 7.5e-2, "sgmcmc_scale": 5.0, "learned_noise": False,
                 "neural_linear_prior": "flat", "ensemble_reward_perturbation": None, "dropout_rate": 0.5,
                 "dropout_input": False, "concrete_dropout": True},
}


def settings_for(bandit: str, settings: Optional[AgentSettings] = None) -> AgentSettings:
    """``settings`` (default: :class:`AgentSettings`'s defaults) with ``BANDIT_DEFAULTS[bandit]`` applied."""
    if bandit not in BANDIT_DEFAULTS:
        raise ValueError(f"unknown bandit {bandit!r}; choose from {sorted(BANDIT_DEFAULTS)}")
    return (settings or AgentSettings())._replace(**BANDIT_DEFAULTS[bandit])
