"""Thompson sampling in contextual bandits with bdljax posteriors (Riquelme, Tucker & Snoek 2018).

Bandits: the wheel (synthetic; context uniform on the unit disc, 5 arms, the
safe arm pays N(1.2, 0.01²), the others N(1, 0.01²), except that outside
radius δ the arm of the context's quadrant pays N(50, 0.01²)) and the
mushroom bandit (UCI Mushroom, 117 one-hot features; leave it: 0; eat it: +5
if edible, +5 or −35 with probability ½ if poisonous).

Agents (:data:`experiments.bandits.registry.AGENTS`): uniform, greedy (MAP),
MC dropout, MFVI, deep ensemble, bootstrapped ensemble (Riquelme et al.'s
BootRMS: each observation in each member's data with probability 0.95, one
member picked at random per decision; on the wheel both ensembles are
ensemble samplers, Lu & Van Roy 2017: each member fits its own
N(0, σ²)-perturbed copy of the rewards, ``--ensemble-reward-perturbation``),
randomized-prior ensemble (Osband et al. 2018: a fixed random prior network
per member; ``--rp-reward-perturbation 1`` also has each member fit its own
N(0, σ²)-perturbed copy of the rewards), NeuralLinear, linear Thompson
sampling, SGLD and SGHMC. Each neural agent uses the same MLP (one output per
arm), Gaussian reward likelihood, prior, optimiser and retraining schedule:
every ``--retrain-every`` steps, ``--train-steps`` minibatch steps on the data
seen so far (warm-started), as in the paper. Every decision uses one
posterior sample. Flags left unset take the bandit's defaults
(:data:`experiments.bandits.settings.BANDIT_DEFAULTS`, chosen on pilot seeds).

Each agent's whole run — all seeds, acting, buffer updates and retraining —
is one compiled program (:func:`experiments.bandits.simulation.simulate`).
All agents face the same episodes (the seed's key fixes contexts and rewards).

Reported: cumulative regret Σ_t [max_a E r(x_t,a) − E r(x_t,a_t)] as a
percentage of the uniform policy's expected cumulative regret on the same
episode (uniform = 100), mean ± standard error over seeds; the paired
difference to greedy on the same episodes (mean ± standard error of the
per-seed differences); the fraction of optimal actions; compile and run
times. Figure: cumulative regret over time (one per δ).

Run from the repository root:

    python -m experiments.bandits --bandit wheel --delta 0.5,0.7,0.9,0.95,0.99 --seeds 8
    python -m experiments.bandits --bandit mushroom --agents uniform,lints,neural_linear
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Dict, List, Optional

import jax
import numpy as np

from bdljax.data.files import DataNotFoundError
from bdljax.data.mushroom import load_mushroom
from bdljax.run.rundir import RunLogger, default_run_dir

from experiments.bandits import report
from experiments.bandits.environments import WHEEL_DELTAS, Bandit, mushroom_bandit, wheel_bandit
from experiments.bandits.networks import DROPOUT_MASKS
from experiments.bandits.registry import AGENTS, POINT_PRIORS, bandit_optimizer, make_agent
from experiments.bandits.settings import BANDIT_DEFAULTS, AgentSettings
from experiments.bandits.simulation import build_simulation, check_run_config, run_config

CURVE_POINTS = 100  # checkpoints of the regret curve written to metrics.jsonl
# The AgentSettings fields set from a flag of the same name (hidden is parsed first; nig and the rest keep defaults).
SETTINGS_FLAGS = ("noise_scale", "prior_scale", "optimizer", "learning_rate", "lr_decay", "max_grad_norm", "init_scale",
                  "batch_size", "train_steps", "num_members", "rp_reward_perturbation", "ensemble_reward_perturbation",
                  "bootstrap_probability", "point_prior", "mfvi_init_scale", "dropout_rate", "dropout_input",
                  "concrete_dropout", "dropout_masks", "sgld_step_size", "sghmc_step_size", "sgmcmc_scale",
                  "learned_noise", "neural_linear_prior")


def on_off(value: str) -> bool:
    """``"on"`` → True, ``"off"`` → False (argparse type of the boolean flags)."""
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected 'on' or 'off', got {value!r}")
    return value == "on"


def parse_agents(values: Optional[List[str]]) -> List[str]:
    """``--agents a --agents b,c`` → ``[a, b, c]``, validated against :data:`~experiments.bandits.registry.AGENTS`."""
    if not values:
        return list(AGENTS)
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    for name in names:
        if name not in AGENTS:
            raise SystemExit(f"unknown agent {name!r}; choose from {list(AGENTS)}")
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
        raise SystemExit(f"--delta: need distinct values in (0, 1), got {value!r} (the paper uses {WHEEL_DELTAS})")
    return deltas


def parse_hidden(value: str) -> tuple:
    """``"50,20"`` → ``(50, 20)``."""
    try:
        return tuple(int(width) for width in value.split(",") if width.strip())
    except ValueError:
        raise SystemExit(f"--hidden expects comma-separated integers, got {value!r}") from None


def make_bandits(args) -> List[Bandit]:
    """One bandit per δ for the wheel (they share one compiled program: δ is an argument of it), or mushroom."""
    if args.bandit == "wheel":
        return [wheel_bandit(delta) for delta in parse_deltas(args.delta)]
    try:
        mushroom = load_mushroom(args.data_dir)
    except DataNotFoundError as error:
        raise SystemExit(f"mushroom bandit: {error}") from None
    return [mushroom_bandit(mushroom.contexts, mushroom.edible)]


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bandit", choices=("wheel", "mushroom"), default="wheel")
    parser.add_argument("--delta", default="0.95",
                        help=f"wheel exploration parameter(s) δ, comma-separated (paper: {WHEEL_DELTAS}); "
                             "all δ share one compiled program per agent")
    parser.add_argument("--agents", action="append", default=None,
                        help=f"agent(s), repeatable or comma-separated, from {list(AGENTS)} (default: all)")
    parser.add_argument("--horizon", type=int, default=2000, help="steps per run (default 2000)")
    parser.add_argument("--seeds", type=int, default=5, help="independent runs (episodes) per agent (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; run i uses split(key(seed), seeds)[i]")
    parser.add_argument("--retrain-every", type=int, default=50, help="k: retrain neural agents every k steps (default 50)")
    parser.add_argument("--initial-pulls", type=int, default=2, help="round-robin pulls of every arm at the start (default 2)")
    parser.add_argument("--fast-compile", action="store_true", help="compile with XLA optimisation level 0 (for short runs)")
    parser.add_argument("--out", default=None, help="run directory (default runs/bandits-<time>)")
    parser.add_argument("--data-dir", default=None, help="benchmark data root (default BDLJAX_DATA_DIR or ../shared/data)")


def _add_training_arguments(parser: argparse.ArgumentParser, defaults: AgentSettings) -> None:
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
    parser.add_argument("--point-prior", choices=POINT_PRIORS, default=None,
                        help="prior of the agents fitted to a point (greedy, ensembles, neural_linear, mcdropout): "
                             "'gaussian' = MAP, 'flat' = maximum likelihood as Riquelme et al.'s reference networks "
                             "(default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--learned-noise", type=on_off, default=None, metavar="{on,off}",
                        help="network agents learn the reward noise σ = noise_scale·e^ρ with ρ a parameter "
                             "(networks.learned_noise_model); default per bandit, BANDIT_DEFAULTS")
    parser.add_argument("--neural-linear-prior", choices=POINT_PRIORS, default=None,
                        help="prior of NeuralLinear's network, overriding --point-prior for it "
                             "(default per bandit, BANDIT_DEFAULTS)")


def _add_ensemble_and_sampler_arguments(parser: argparse.ArgumentParser, defaults: AgentSettings) -> None:
    parser.add_argument("--num-members", type=int, default=defaults.num_members,
                        help=f"ensemble / bootstrap members (default {defaults.num_members})")
    parser.add_argument("--rp-reward-perturbation", type=float, default=defaults.rp_reward_perturbation,
                        help="rp_ensemble: members fit rewards + N(0, (s·σ)²) noise (Lu & Van Roy 2017); default off")
    parser.add_argument("--ensemble-reward-perturbation", type=float, default=None,
                        help="ensemble, bootstrap: members fit rewards + N(0, (s·σ)²) noise, ensemble sampling "
                             "(Lu & Van Roy 2017); 0 = off; default per bandit, BANDIT_DEFAULTS")
    parser.add_argument("--bootstrap-probability", type=float, default=defaults.bootstrap_probability,
                        help="bootstrap: probability that an observation enters a member's data "
                             f"(default {defaults.bootstrap_probability}, Riquelme et al.'s BootRMS)")
    parser.add_argument("--mfvi-init-scale", type=float, default=defaults.mfvi_init_scale,
                        help="mfvi: initial σ of q as a fraction of the prior's σ (default "
                             f"{defaults.mfvi_init_scale}; Riquelme et al.'s BBB starts near MAP, σ_q = e^-5)")
    parser.add_argument("--sgld-step-size", type=float, default=None,
                        help="sgld: ε₀ at the first retraining (default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--sghmc-step-size", type=float, default=None,
                        help="sghmc: ε₀ at the first retraining (default per bandit, BANDIT_DEFAULTS)")
    parser.add_argument("--sgmcmc-scale", type=float, default=None,
                        help="sgld/sghmc: sample with σ·c and prior scale s·c, i.e. the posterior at temperature c² "
                             "(default per bandit, BANDIT_DEFAULTS)")


def _add_dropout_arguments(parser: argparse.ArgumentParser, defaults: AgentSettings) -> None:
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
    parser.add_argument("--dropout-masks", choices=DROPOUT_MASKS, default=defaults.dropout_masks,
                        help="mcdropout: 'shared' (one mask of the hidden units for every arm) or 'per_arm' (an "
                             "independent output-layer mask per arm, networks.per_arm_weight_sample); default "
                             f"{defaults.dropout_masks}")


def build_parser() -> argparse.ArgumentParser:
    """The command line; the flags defaulting to ``None`` take the bandit's :data:`BANDIT_DEFAULTS`."""
    defaults = AgentSettings()
    parser = argparse.ArgumentParser(prog="python -m experiments.bandits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(parser)
    _add_training_arguments(parser, defaults)
    _add_ensemble_and_sampler_arguments(parser, defaults)
    _add_dropout_arguments(parser, defaults)
    return parser


def settings_from_args(args) -> AgentSettings:
    """The :class:`AgentSettings` of the parsed flags, unset ones filled from the bandit's defaults."""
    for key, value in BANDIT_DEFAULTS[args.bandit].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return AgentSettings()._replace(hidden=parse_hidden(args.hidden),
                                    **{name: getattr(args, name) for name in SETTINGS_FLAGS})


def build_agents(args, bandit: Bandit, settings: AgentSettings, names: List[str]):
    """Every agent, built before any runs, so that a bad setting of the last one fails now, not after the others
    have run (an agent depends on the bandit only through its shapes and the horizon)."""
    try:
        check_run_config(run_config(args.horizon, args.retrain_every, args.initial_pulls), bandit.num_arms)
        bandit_optimizer(settings.optimizer, settings.learning_rate, train_steps=settings.train_steps,
                         lr_decay=settings.lr_decay, max_grad_norm=settings.max_grad_norm)
        return {name: make_agent(name, bandit, args.horizon, settings) for name in names}
    except ValueError as error:
        raise SystemExit(str(error)) from None


def run_record(args, problems: List[Bandit], names: List[str], settings: AgentSettings) -> Dict[str, object]:
    """The run's configuration as written to ``config.json``."""
    first = problems[0]
    return {
        "experiment": "bandits", "bandits": [b.name for b in problems],
        "deltas": parse_deltas(args.delta) if args.bandit == "wheel" else None,
        "agents": names, "horizon": args.horizon, "seeds": args.seeds, "seed": args.seed,
        "retrain_every": args.retrain_every, "initial_pulls": args.initial_pulls, "fast_compile": args.fast_compile,
        "settings": settings._asdict(),
        "model": f"mlp {first.context_dim}-{'-'.join(map(str, settings.hidden))}-{first.num_arms} relu",
        "regret": "expected (pseudo-)regret, normalised by the uniform policy's expected regret on the same episodes",
    }


def compile_agent(bandit, agent, keys, args):
    """Compile one agent's program (all seeds) for ``bandit``'s shapes; returns (executable, seconds).

    The wheel's δ is an argument of the program, so one executable serves every δ."""
    config = run_config(args.horizon, args.retrain_every, args.initial_pulls)
    # build_simulation checks the config against the agent (its horizon).
    program = build_simulation(bandit.sample, bandit.num_arms, bandit.context_dim, agent, config, args.fast_compile)
    start = time.perf_counter()
    compiled = program.lower(bandit.tables, keys).compile()
    return compiled, time.perf_counter() - start


def run_compiled(compiled, bandit, keys):
    start = time.perf_counter()
    trajectory = jax.block_until_ready(compiled(bandit.tables, keys))
    return jax.tree.map(np.asarray, trajectory), time.perf_counter() - start


def log_agent_run(logger: RunLogger, bandit: Bandit, name: str, scores, curve, horizon: int) -> None:
    """One agent on one bandit: a record per seed and the regret curve at :data:`CURVE_POINTS` steps."""
    for seed_index, value in enumerate(scores["normalised_regret_per_seed"]):
        logger.log({"split": "seed", "bandit": bandit.name, "agent": name, "seed_index": seed_index,
                    "normalised_regret": value, "cumulative_regret": scores["cumulative_regret_per_seed"][seed_index]})
    checkpoints = np.unique(np.linspace(0, horizon - 1, min(CURVE_POINTS, horizon)).astype(int))
    mean, stderr = curve
    logger.log({"split": "curve", "bandit": bandit.name, "agent": name, "step": (checkpoints + 1).tolist(),
                "cumulative_regret": mean[checkpoints].tolist(), "stderr": stderr[checkpoints].tolist()})


def run_agent(name: str, agent, problems: List[Bandit], keys, args, logger: RunLogger, results, curves) -> None:
    """Compile ``agent`` once, run it on every bandit, score, log and print each run."""
    compiled, compile_seconds = compile_agent(problems[0], agent, keys, args)  # one per agent, whatever the δ
    for bandit in problems:
        trajectory, run_seconds = run_compiled(compiled, bandit, keys)
        scores = report.summarise(trajectory)
        scores.update(compile_seconds=compile_seconds, run_seconds=run_seconds)
        results[bandit.name][name] = scores
        curves[bandit.name][name] = report.curve(trajectory)
        log_agent_run(logger, bandit, name, scores, curves[bandit.name][name], args.horizon)
        print(f"{bandit.name:<18} {name:<14} regret {scores['normalised_regret']:6.1f} ± "
              f"{scores['normalised_regret_stderr']:.1f} (compile {compile_seconds:.1f}s, run {run_seconds:.2f}s)",
              flush=True)
        if scores["skipped_steps"]:
            warnings.warn(f"{bandit.name} {name}: {scores['skipped_steps']} training steps skipped for a non-finite "
                          f"loss or gradient on {scores['seeds_with_skipped_steps']} of {args.seeds} seeds; its "
                          "regret is that of a partly untrained agent (lower the step size or learning rate)",
                          RuntimeWarning, stacklevel=1)


def report_bandit(bandit: Bandit, table, curves, args, logger: RunLogger, single: bool) -> None:
    """Paired differences to greedy, the summary records, the figure and the printed table of one bandit."""
    if "greedy" in table:
        reference = np.asarray(table["greedy"]["normalised_regret_per_seed"])
        for name, scores in table.items():
            if name != "greedy":
                scores["minus_greedy"] = report.paired_difference(np.asarray(scores["normalised_regret_per_seed"]),
                                                                  reference)
    for name, scores in table.items():
        logger.log({"split": "summary", "bandit": bandit.name, "agent": name,
                    **{k: v for k, v in scores.items() if not k.endswith("per_seed")}})
    title = f"{bandit.name}, T={args.horizon}, {args.seeds} seeds"
    suffix = "" if single else f"_delta{float(bandit.tables['delta']):.2f}"
    report.plot(logger.path(f"regret{suffix}.png"), curves, table, title)
    print(report.format_table(table, title))


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, Dict[str, object]]]:
    """Run every agent on every bandit; returns ``{bandit name: {agent: scores}}``."""
    args = build_parser().parse_args(argv)
    names = parse_agents(args.agents)
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, got {args.seeds}")
    settings = settings_from_args(args)
    problems = make_bandits(args)
    agents = build_agents(args, problems[0], settings, names)
    logger = RunLogger(args.out or default_run_dir("bandits"), run_record(args, problems, names, settings))
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)

    results: Dict[str, Dict[str, Dict[str, object]]] = {b.name: {} for b in problems}
    curves: Dict[str, Dict[str, tuple]] = {b.name: {} for b in problems}
    for name, agent in agents.items():
        run_agent(name, agent, problems, keys, args, logger, results, curves)
    for bandit in problems:
        report_bandit(bandit, results[bandit.name], curves[bandit.name], args, logger, single=len(problems) == 1)
    logger.write_summary({"horizon": args.horizon, "seeds": args.seeds, "bandits": results})
    print(f"run directory: {logger.directory}")
    return results
