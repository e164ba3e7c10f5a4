"""Thompson sampling in contextual bandits with bdljax posteriors (Riquelme, Tucker & Snoek 2018).

Bandits: the wheel (synthetic; context uniform on the unit disc, 5 arms, the
safe arm pays N(1.2, 0.01²), the others N(1, 0.01²), except that outside
radius δ the arm of the context's quadrant pays N(50, 0.01²)) and the
mushroom bandit (UCI Mushroom, 117 one-hot features; leave it: 0; eat it: +5
if edible, +5 or −35 with probability ½ if poisonous).

Agents (:data:`bdljax.bandits.AGENTS`): uniform, greedy (MAP), MC dropout,
MFVI, deep ensemble, bootstrapped ensemble (Riquelme et al.'s BootRMS: each
observation in each member's data with probability 0.95, one member picked
at random per decision; on the wheel both ensembles are ensemble samplers,
Lu & Van Roy 2017: each member fits its own N(0, σ²)-perturbed copy of the
rewards, ``--ensemble-reward-perturbation``), randomized-prior ensemble (Osband et al. 2018: a
fixed random prior network per member; ``--rp-reward-perturbation 1`` also
has each member fit its own N(0, σ²)-perturbed copy of the rewards),
NeuralLinear, linear Thompson sampling, SGLD and SGHMC. Each neural agent uses the same MLP (one output
per arm), Gaussian reward likelihood, prior, optimiser and retraining
schedule: every ``--retrain-every`` steps, ``--train-steps`` minibatch steps
on the data seen so far (warm-started), as in the paper. Every decision
uses one posterior sample.

Each agent's whole run — all seeds, acting, buffer updates and retraining —
is one compiled program (:func:`bdljax.bandits.simulate`). All agents face
the same episodes (the seed's key fixes contexts and rewards).

Reported: cumulative regret Σ_t [max_a E r(x_t,a) − E r(x_t,a_t)] as a
percentage of the uniform policy's expected cumulative regret on the same
episode (uniform = 100), mean ± standard error over seeds; the paired
difference to greedy on the same episodes (mean ± standard error of the
per-seed differences); the fraction of optimal actions; compile and run
times. Figure: cumulative regret over time (one per δ).

    python experiments/bandits.py --bandit wheel --delta 0.5,0.7,0.9,0.95,0.99 --seeds 8
    python experiments/bandits.py --bandit mushroom --agents uniform,lints,neural_linear
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Dict, List, Optional

import jax
import numpy as np

from bdljax import bandits, data
from bdljax.run.rundir import RunLogger, default_run_dir

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
# * sgmcmc_scale c (SGLD, SGHMC: their posterior at temperature c², bdljax.bandits.AgentSettings): on mushroom
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
CURVE_POINTS = 100  # checkpoints of the regret curve written to metrics.jsonl


def on_off(value: str) -> bool:
    """``"on"`` → True, ``"off"`` → False (argparse type of the boolean flags)."""
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected 'on' or 'off', got {value!r}")
    return value == "on"


def parse_agents(values: Optional[List[str]]) -> List[str]:
    """``--agents a --agents b,c`` → ``[a, b, c]``, validated against :data:`bdljax.bandits.AGENTS`."""
    if not values:
        return list(bandits.AGENTS)
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    for name in names:
        if name not in bandits.AGENTS:
            raise SystemExit(f"unknown agent {name!r}; choose from {list(bandits.AGENTS)}")
    if len(set(names)) != len(names):
        raise SystemExit(f"--agents lists an agent twice: {names}")
    return names


def parse_deltas(value: str) -> List[float]:
    """``"0.5,0.95"`` → ``[0.5, 0.95]``; every δ must lie in (0, 1)."""
    try:
        deltas = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--delta expects comma-separated numbers, got {value!r}") from None
    if not deltas or any(not 0.0 < d < 1.0 for d in deltas) or len(set(deltas)) != len(deltas):
        raise SystemExit(f"--delta: need distinct values in (0, 1), got {value!r} (the paper uses {bandits.WHEEL_DELTAS})")
    return deltas


def make_bandits(args) -> List[bandits.Bandit]:
    """One bandit per δ for the wheel (they share one compiled program: δ is an argument of it), or mushroom."""
    if args.bandit == "wheel":
        return [bandits.wheel_bandit(delta) for delta in parse_deltas(args.delta)]
    try:
        mushroom = data.load_mushroom(args.data_dir)
    except data.DataNotFoundError as error:
        raise SystemExit(f"mushroom bandit: {error}") from None
    return [bandits.mushroom_bandit(mushroom.contexts, mushroom.edible)]


def compile_agent(bandit, agent, keys, args):
    """Compile one agent's program (all seeds) for ``bandit``'s shapes; returns (executable, seconds).

    The wheel's δ is an argument of the program, so one executable serves every δ."""
    config = bandits.run_config(args.horizon, args.retrain_every, args.initial_pulls)
    # build_simulation checks the config against the agent (its horizon).
    program = bandits.build_simulation(bandit.sample, bandit.num_arms, bandit.context_dim, agent, config, args.fast_compile)
    start = time.perf_counter()
    compiled = program.lower(bandit.tables, keys).compile()
    return compiled, time.perf_counter() - start


def run_compiled(compiled, bandit, keys):
    start = time.perf_counter()
    trajectory = jax.block_until_ready(compiled(bandit.tables, keys))
    return jax.tree.map(np.asarray, trajectory), time.perf_counter() - start


def paired_difference(normalised: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    """Mean ± standard error over seeds of (agent − reference) normalised regret on the *same* episodes.

    Every agent faces the same episodes (contexts, rewards) per seed, so the per-seed difference removes
    the episode-to-episode variation that the unpaired standard errors contain."""
    difference = normalised - reference
    stderr = float(np.std(difference, ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else float("nan")
    return {"mean": float(np.mean(difference)), "stderr": stderr}


def summarise(trajectory: bandits.Trajectory) -> Dict[str, object]:
    normalised = bandits.normalised_regret(trajectory)
    num_seeds = len(normalised)
    stderr = float(np.std(normalised, ddof=1) / np.sqrt(num_seeds)) if num_seeds > 1 else float("nan")
    cumulative = trajectory.regret.sum(axis=-1)
    return {
        "normalised_regret": float(np.mean(normalised)),
        "normalised_regret_stderr": stderr,
        "normalised_regret_per_seed": normalised.tolist(),
        "cumulative_regret": float(np.mean(cumulative)),
        "cumulative_regret_per_seed": cumulative.tolist(),
        "optimal_action_rate": float(np.mean(trajectory.optimal)),
        "uniform_expected_regret": float(np.mean(trajectory.uniform_regret.sum(axis=-1))),
        # Training steps skipped for a non-finite loss or gradient, summed over seeds, and the seeds with any.
        "skipped_steps": int(np.sum(trajectory.skipped_steps)),
        "seeds_with_skipped_steps": int(np.count_nonzero(trajectory.skipped_steps)),
        "skipped_steps_per_seed": np.asarray(trajectory.skipped_steps).tolist(),
    }


def curve(trajectory: bandits.Trajectory):
    """Mean and standard error over seeds of the cumulative regret at every step."""
    cumulative = np.cumsum(trajectory.regret, axis=-1)
    num_seeds = cumulative.shape[0]
    stderr = cumulative.std(axis=0, ddof=1) / np.sqrt(num_seeds) if num_seeds > 1 else np.zeros(cumulative.shape[1])
    return cumulative.mean(axis=0), stderr


def format_table(results: Dict[str, Dict[str, object]], title: str) -> str:
    lines = [title, f"{'agent':<14} {'regret (uniform=100)':>22} {'minus greedy (paired)':>22} {'cum. regret':>12} "
                    f"{'optimal':>8} {'skipped':>8} {'compile s':>10} {'run s':>8}"]
    for name, r in sorted(results.items(), key=lambda item: item[1]["normalised_regret"]):
        versus = r.get("minus_greedy")
        versus = f"{versus['mean']:>13.1f} ± {versus['stderr']:<6.1f}" if versus else f"{'':>22}"
        lines.append(f"{name:<14} {r['normalised_regret']:>13.1f} ± {r['normalised_regret_stderr']:<6.1f} {versus} "
                     f"{r['cumulative_regret']:>12.1f} {r['optimal_action_rate']:>8.3f} {r['skipped_steps']:>8d} "
                     f"{r['compile_seconds']:>10.1f} "
                     f"{r['run_seconds']:>8.2f}")
    return "\n".join(lines)


def plot(path, curves: Dict[str, tuple], results: Dict[str, Dict[str, object]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    order = sorted(results, key=lambda name: results[name]["normalised_regret"])
    colours = [plt.cm.tab20(index % 20) if len(order) > 10 else f"C{index}" for index in range(len(order))]
    for index, name in enumerate(order):
        mean, stderr = curves[name]
        steps = np.arange(1, len(mean) + 1)
        left.plot(steps, mean, label=name, color=colours[index], ls="--" if name == "uniform" else "-")
        left.fill_between(steps, mean - stderr, mean + stderr, color=colours[index], alpha=0.2)
    left.set_xlabel("step t")
    left.set_ylabel("cumulative regret (mean ± s.e. over seeds)")
    left.set_title(title)
    left.legend(fontsize=7, loc="upper left")
    values = [results[name]["normalised_regret"] for name in order]
    errors = [results[name]["normalised_regret_stderr"] for name in order]
    right.barh(order, values, xerr=np.nan_to_num(errors), color=colours)
    right.axvline(100.0, color="k", lw=1, ls="--")
    right.invert_yaxis()
    right.set_xlabel("cumulative regret, uniform = 100")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, Dict[str, object]]]:
    """Run every agent on every bandit; returns ``{bandit name: {agent: scores}}``."""
    defaults = bandits.AgentSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bandit", choices=("wheel", "mushroom"), default="wheel")
    parser.add_argument("--delta", default="0.95",
                        help=f"wheel exploration parameter(s) δ, comma-separated (paper: {bandits.WHEEL_DELTAS}); "
                             "all δ share one compiled program per agent")
    parser.add_argument("--agents", action="append", default=None,
                        help=f"agent(s), repeatable or comma-separated, from {list(bandits.AGENTS)} (default: all)")
    parser.add_argument("--horizon", type=int, default=2000, help="steps per run (default 2000)")
    parser.add_argument("--seeds", type=int, default=5, help="independent runs (episodes) per agent (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; run i uses split(key(seed), seeds)[i]")
    parser.add_argument("--retrain-every", type=int, default=50, help="k: retrain neural agents every k steps (default 50)")
    parser.add_argument("--train-steps", type=int, default=defaults.train_steps,
                        help=f"minibatch steps per retraining (default {defaults.train_steps})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--hidden", default="50", help="hidden widths, comma-separated (default 50)")
    parser.add_argument("--optimizer", choices=("adam", "rmsprop"), default=defaults.optimizer)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help=f"initial learning rate of every retraining (default {defaults.learning_rate})")
    parser.add_argument("--lr-decay", type=float, default=defaults.lr_decay,
                        help="inverse-time decay rate within each retraining, η₀/(1 + rate·s) (Riquelme et al.: 0.5)")
    parser.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm,
                        help="global-norm gradient clipping (Riquelme et al.: 5)")
    parser.add_argument("--init-scale", type=float, default=defaults.init_scale,
                        help="kernels U(−s, s), biases 0 at initialisation (Riquelme et al.: 0.3); default: LeCun")
    parser.add_argument("--noise-scale", type=float, default=None,
                        help="σ of the neural agents' reward likelihood (default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--prior-scale", type=float, default=None,
                        help="prior N(0, s²/fan_in) on kernels, N(0, s²) on biases (default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--rp-reward-perturbation", type=float, default=defaults.rp_reward_perturbation,
                        help="rp_ensemble: members fit rewards + N(0, (s·σ)²) noise (Lu & Van Roy 2017); default off")
    parser.add_argument("--ensemble-reward-perturbation", type=float, default=None,
                        help="ensemble, bootstrap: members fit rewards + N(0, (s·σ)²) noise, ensemble sampling "
                             "(Lu & Van Roy 2017); 0 = off; default per bandit, BANDIT_DEFAULTS")
    parser.add_argument("--bootstrap-probability", type=float, default=defaults.bootstrap_probability,
                        help="bootstrap: probability that an observation enters a member's data "
                             f"(default {defaults.bootstrap_probability}, Riquelme et al.'s BootRMS)")
    parser.add_argument("--point-prior", choices=bandits.POINT_PRIORS, default=None,
                        help="prior of the agents fitted to a point (greedy, ensembles, neural_linear, mcdropout): "
                             "'gaussian' = MAP, 'flat' = maximum likelihood as Riquelme et al.'s reference networks "
                             "(default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--mfvi-init-scale", type=float, default=defaults.mfvi_init_scale,
                        help="mfvi: initial σ of q as a fraction of the prior's σ (default "
                             f"{defaults.mfvi_init_scale}; Riquelme et al.'s BBB starts near MAP, σ_q = e^-5)")
    parser.add_argument("--dropout-rate", type=float, default=None,
                        help="mcdropout: drop probability (default per bandit, BANDIT_DEFAULTS; Riquelme et al.: "
                             "keep 0.8)")
    parser.add_argument("--dropout-input", type=on_off, default=None, metavar="{on,off}",
                        help="mcdropout: a dropout mask on the raw context too (Gal & Ghahramani's family); "
                             "default per bandit, BANDIT_DEFAULTS")
    parser.add_argument("--concrete-dropout", type=on_off, default=None, metavar="{on,off}",
                        help="mcdropout: learn the drop rates on the ELBO (concrete dropout, Gal, Hron & Kendall "
                             "2017), starting from --dropout-rate, with the Gaussian prior as the KL's base "
                             "(default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--dropout-masks", choices=bandits.DROPOUT_MASKS, default=defaults.dropout_masks,
                        help="mcdropout: 'shared' (one mask of the hidden units for every arm) or 'per_arm' (an "
                             "independent output-layer mask per arm, bdljax.bandits.per_arm_weight_sample); default "
                             f"{defaults.dropout_masks}")
    parser.add_argument("--sgld-step-size", type=float, default=None,
                        help="sgld: ε₀ at the first retraining (default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--sghmc-step-size", type=float, default=None,
                        help="sghmc: ε₀ at the first retraining (default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--sgmcmc-scale", type=float, default=None,
                        help="sgld/sghmc: sample with σ·c and prior scale s·c, i.e. the posterior at temperature c² "
                             "(default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--learned-noise", type=on_off, default=None, metavar="{on,off}",
                        help="network agents learn the reward noise σ = noise_scale·e^ρ with ρ a parameter "
                             "(bdljax.bandits.learned_noise_model); default per bandit, BANDIT_DEFAULTS")
    parser.add_argument("--neural-linear-prior", choices=bandits.POINT_PRIORS, default=None,
                        help="prior of NeuralLinear's network, overriding --point-prior for it "
                             "(default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--num-members", type=int, default=defaults.num_members,
                        help=f"ensemble / bootstrap members (default {defaults.num_members})")
    parser.add_argument("--initial-pulls", type=int, default=2, help="round-robin pulls of every arm at the start (default 2)")
    parser.add_argument("--fast-compile", action="store_true", help="compile with XLA optimisation level 0 (for short runs)")
    parser.add_argument("--out", default=None, help="run directory (default runs/bandits-<time>)")
    parser.add_argument("--data-dir", default=None, help="benchmark data root (default BDLJAX_DATA_DIR or ../shared/data)")
    args = parser.parse_args(argv)
    agent_names = parse_agents(args.agents)
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, got {args.seeds}")
    try:
        hidden = tuple(int(width) for width in args.hidden.split(",") if width.strip())
    except ValueError:
        raise SystemExit(f"--hidden expects comma-separated integers, got {args.hidden!r}") from None
    for key, value in BANDIT_DEFAULTS[args.bandit].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    noise_scale = args.noise_scale

    problems = make_bandits(args)
    first = problems[0]
    settings = defaults._replace(hidden=hidden, noise_scale=noise_scale, prior_scale=args.prior_scale,
                                 optimizer=args.optimizer, learning_rate=args.learning_rate, lr_decay=args.lr_decay,
                                 max_grad_norm=args.max_grad_norm, init_scale=args.init_scale,
                                 batch_size=args.batch_size, train_steps=args.train_steps, num_members=args.num_members,
                                 rp_reward_perturbation=args.rp_reward_perturbation,
                                 ensemble_reward_perturbation=args.ensemble_reward_perturbation,
                                 bootstrap_probability=args.bootstrap_probability,
                                 point_prior=args.point_prior, mfvi_init_scale=args.mfvi_init_scale,
                                 dropout_rate=args.dropout_rate, dropout_input=args.dropout_input,
                                 concrete_dropout=args.concrete_dropout, dropout_masks=args.dropout_masks,
                                 sgld_step_size=args.sgld_step_size, sghmc_step_size=args.sghmc_step_size,
                                 sgmcmc_scale=args.sgmcmc_scale, learned_noise=args.learned_noise,
                                 neural_linear_prior=args.neural_linear_prior)
    try:
        bandits.check_run_config(bandits.run_config(args.horizon, args.retrain_every, args.initial_pulls), first.num_arms)
        bandits.bandit_optimizer(settings.optimizer, settings.learning_rate, train_steps=settings.train_steps,
                                 lr_decay=settings.lr_decay, max_grad_norm=settings.max_grad_norm)
        # Every agent is built before any runs, so that a bad setting of the last one fails now, not after the
        # others have run (the agent depends on the bandit only through its shapes and the horizon).
        agents = {name: bandits.make_agent(name, first, args.horizon, settings) for name in agent_names}
    except ValueError as error:
        raise SystemExit(str(error)) from None
    config = {
        "experiment": "bandits", "bandits": [b.name for b in problems],
        "deltas": parse_deltas(args.delta) if args.bandit == "wheel" else None,
        "agents": agent_names, "horizon": args.horizon, "seeds": args.seeds, "seed": args.seed,
        "retrain_every": args.retrain_every, "initial_pulls": args.initial_pulls, "fast_compile": args.fast_compile,
        "settings": settings._asdict(), "model": f"mlp {first.context_dim}-{'-'.join(map(str, hidden))}-{first.num_arms} relu",
        "regret": "expected (pseudo-)regret, normalised by the uniform policy's expected regret on the same episodes",
    }
    logger = RunLogger(args.out or default_run_dir("bandits"), config)
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)

    results: Dict[str, Dict[str, Dict[str, object]]] = {b.name: {} for b in problems}
    curves: Dict[str, Dict[str, tuple]] = {b.name: {} for b in problems}
    for name, agent in agents.items():
        compiled, compile_seconds = compile_agent(first, agent, keys, args)  # one per agent, whatever the δ
        for bandit in problems:
            trajectory, run_seconds = run_compiled(compiled, bandit, keys)
            scores = summarise(trajectory)
            scores.update(compile_seconds=compile_seconds, run_seconds=run_seconds)
            results[bandit.name][name] = scores
            curves[bandit.name][name] = curve(trajectory)
            for seed_index, value in enumerate(scores["normalised_regret_per_seed"]):
                logger.log({"split": "seed", "bandit": bandit.name, "agent": name, "seed_index": seed_index,
                            "normalised_regret": value, "cumulative_regret": scores["cumulative_regret_per_seed"][seed_index]})
            checkpoints = np.unique(np.linspace(0, args.horizon - 1, min(CURVE_POINTS, args.horizon)).astype(int))
            mean, stderr = curves[bandit.name][name]
            logger.log({"split": "curve", "bandit": bandit.name, "agent": name, "step": (checkpoints + 1).tolist(),
                        "cumulative_regret": mean[checkpoints].tolist(), "stderr": stderr[checkpoints].tolist()})
            print(f"{bandit.name:<18} {name:<14} regret {scores['normalised_regret']:6.1f} ± "
                  f"{scores['normalised_regret_stderr']:.1f} (compile {compile_seconds:.1f}s, run {run_seconds:.2f}s)",
                  flush=True)
            if scores["skipped_steps"]:
                warnings.warn(f"{bandit.name} {name}: {scores['skipped_steps']} training steps skipped for a non-finite "
                              f"loss or gradient on {scores['seeds_with_skipped_steps']} of {args.seeds} seeds; its "
                              "regret is that of a partly untrained agent (lower the step size or learning rate)",
                              RuntimeWarning, stacklevel=1)

    for bandit in problems:
        table = results[bandit.name]
        if "greedy" in table:
            reference = np.asarray(table["greedy"]["normalised_regret_per_seed"])
            for name, scores in table.items():
                if name != "greedy":
                    scores["minus_greedy"] = paired_difference(np.asarray(scores["normalised_regret_per_seed"]), reference)
        for name, scores in table.items():
            logger.log({"split": "summary", "bandit": bandit.name, "agent": name,
                        **{k: v for k, v in scores.items() if not k.endswith("per_seed")}})
        title = f"{bandit.name}, T={args.horizon}, {args.seeds} seeds"
        suffix = "" if len(problems) == 1 else f"_delta{float(bandit.tables['delta']):.2f}"
        plot(logger.path(f"regret{suffix}.png"), curves[bandit.name], table, title)
        print(format_table(table, title))
    logger.write_summary({"horizon": args.horizon, "seeds": args.seeds, "bandits": results})
    print(f"run directory: {logger.directory}")
    return results


if __name__ == "__main__":
    main()
