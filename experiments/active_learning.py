"""Bayesian active learning on MNIST (Gal, Islam & Ghahramani 2017, "Deep Bayesian Active Learning with Image Data").

The protocol, top to bottom:

1. **Data.** MNIST training images form the initial labelled set — 20 images,
   2 per class, drawn at random — and the unlabelled pool (``--pool-size``
   further random training images; default all of the rest). Test error is
   measured on ``--test-size`` random MNIST test images. Each repeat
   (``--repeats``, default 3) draws its own initial set and pool.
2. **Model.** A LeNet-like CNN (:func:`bdljax.nn.models.cnn`, ``--features``,
   ``--hidden``; Gal et al. use conv-conv-pool-dense, 32 filters, 128 units),
   categorical likelihood, isotropic Gaussian prior N(0, s²) on every weight.
   The default s = 1/√7 is their weight decay c/n with c = 3.5 on the mean loss
   over n labelled images, i.e. a fixed prior of precision 2c on the summed
   loss (the likelihood grows with n, the prior does not).
3. **Posterior approximations** (``--method``):

   * ``mcdropout``: :func:`bdljax.methods.mcdropout.build` on the dropout CNN
     (``--dropout-rate``), T = ``--mc-samples`` stochastic passes at
     prediction time, all vmapped over the pool in one compiled call;
   * ``ensemble``: :func:`bdljax.methods.ensemble.build` of ``--num-members``
     MAP networks vmapped in one step;
   * ``map``: a single network (its BALD and mean-std scores are 0: a point
     estimate has no epistemic uncertainty; kept as a deterministic baseline).

4. **Training after every acquisition** from a fresh initialisation (as the
   paper's code), ``--train-steps`` Adam steps on minibatches of
   ``--batch-size`` drawn uniformly (with replacement) from the current
   labelled set, on the log posterior log p(θ) + (n/|B|) Σ_B log p(y|x, θ) with
   n the current labelled-set size (:class:`LabelledSetLogPosterior`). The
   labelled set is a fixed-size buffer of indices plus its size n, a traced
   scalar, so the training step, the acquisition step and the test evaluation
   each compile **once per run** however the labelled set grows (tested by
   counting traces). The steps run in jitted chunks of ``--steps-per-call``;
   a chunk shorter than the whole retraining is unrolled, the whole
   retraining is one rolled ``lax.scan``. By default the chunk is what the
   runner would choose (:func:`bdljax.run.execution.choose`): one step for a
   conv net on CPU, where XLA runs convolution gradients inside a while loop
   about 8× slower than outside one (jax-ml/jax#12868, measured here), and all
   steps in one scan otherwise.
5. **Acquisition** of ``--acquire-size`` (10) images per step by each of
   ``--acquisition`` (BALD, max entropy, variation ratios, mean std, random;
   :mod:`bdljax.evaluate.uncertainty`): a random subset of ``--pool-subset`` (2000, as
   the paper's code) available pool images is scored from the per-sample class
   probabilities, the top ones are labelled and leave the pool.
6. **Result**: test error after each of ``--steps`` acquisitions (plus the
   initial model), averaged over repeats; the number of acquired images
   (excluding the initial 20) at which the mean curve first reaches 10% and 5%
   error; ``error.png`` (error vs acquired images); a run directory with
   config.json, metrics.jsonl, summary.json. The paper's numbers (images to
   10% / 5% error, 100 acquisition steps): BALD 145 / 335, variation ratios
   120 / 295, max entropy 165 / 355, random 255 / 835.

Example (the paper's protocol; many hours on two CPU cores)::

    python experiments/active_learning.py --method mcdropout,ensemble --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bdljax import data, recipes
from bdljax.core import likelihoods, priors
from bdljax.core.posterior import LogPosterior, log_posterior
from bdljax.evaluate import uncertainty
from bdljax.methods import ensemble as ensemble_method
from bdljax.methods import map_estimate as map_method
from bdljax.methods import mcdropout, wrappers
from bdljax.nn import dropout, models
from bdljax.run import execution, predictive
from bdljax.run.rundir import RunLogger, default_run_dir

METHODS = ("mcdropout", "ensemble", "map")
NUM_CLASSES = 10
PAPER_IMAGES_TO_ERROR = {  # Gal, Islam & Ghahramani (2017), MNIST, MC dropout: (10% error, 5% error)
    "bald": (145, 335), "variation_ratios": (120, 295), "max_entropy": (165, 355), "random": (255, 835),
}
THRESHOLDS = (0.10, 0.05)


# --------------------------------------------------------------------------
# The log posterior of a growing labelled set
# --------------------------------------------------------------------------


class LabelledSetLogPosterior(NamedTuple):
    """The shared log posterior on a labelled set whose size n travels with the batch.

    Batches are ``(x, y, n)`` with ``n`` the current number of labelled
    points (a scalar, or one per ensemble member), so that

        log p_T(θ | D_n) ≈ (1/T) [ log p(θ) + (n/|B|) Σ_{i∈B} log p(y_i | x_i, θ) ]

    is ``base``'s estimate with ``num_data = n``, n an array, not a static
    int, so one compiled step serves every labelled-set size. ``base``'s own
    ``num_data`` is never used.
    """

    base: LogPosterior

    def evaluate(self, params, batch, rng=None):
        x, y, num_labelled = batch
        return self.base._replace(num_data=num_labelled).evaluate(params, (x, y), rng)

    def __call__(self, params, batch, rng=None):
        return self.evaluate(params, batch, rng)[0]


class Learner(NamedTuple):
    """A method set up for active learning: its transform, how to evaluate its samples, and S."""

    name: str
    transform: Any
    apply: Callable
    init_params: Callable
    num_samples: int


def build_learner(name: str, args, model: models.Model, example_x) -> Learner:
    """The transform of ``name`` on the labelled-set log posterior (``num_data`` dynamic), composed as its recipe
    composes it: every MAP-like step that turns non-finite is undone and counted (per member for the ensemble)."""
    likelihood = likelihoods.categorical()
    prior = priors.gaussian(args.prior_scale)
    optimizer = recipes.make_optimizer("adam", args.learning_rate)
    if name == "mcdropout":
        dropout_model = dropout.dropout_model(model, args.dropout_rate)
        params = jax.jit(dropout_model.init)(jax.random.key(0))
        structure = dropout.dropout_structure(dropout_model.apply, params, example_x)
        lp = LabelledSetLogPosterior(log_posterior(dropout_model.apply, likelihood, prior, args.batch_size))
        transform = wrappers.skip_nonfinite(mcdropout.build(lp, optimizer, structure))
        return Learner(name, transform, dropout.sample_apply(dropout_model.apply, structure), dropout_model.init,
                       args.mc_samples)
    lp = LabelledSetLogPosterior(log_posterior(model.apply, likelihood, prior, args.batch_size))
    member = wrappers.skip_nonfinite(map_method.build(lp, optimizer))
    if name == "ensemble":
        return Learner(name, ensemble_method.build(member, args.num_members), model.apply, model.init, args.num_members)
    if name == "map":
        return Learner(name, member, model.apply, model.init, 1)
    raise ValueError(f"active learning supports methods {METHODS}, got {name!r}")


# --------------------------------------------------------------------------
# The three compiled programs of a run
# --------------------------------------------------------------------------


class Programs(NamedTuple):
    init: Callable
    train: Callable
    test_error: Callable
    acquire: Dict[str, Callable]


def build_programs(learner: Learner, args, acquisitions: Sequence[str]) -> Programs:
    """Jitted init / training chunk / test error / one acquisition per function, each compiled once.

    Every array whose *content* changes during a run (labelled indices, n,
    the pool's availability mask, the state) is an argument, never a
    closed-over constant; every shape is fixed by the flags.
    """
    transform = learner.transform
    streams = transform.batch_streams
    batch_shape = (streams, args.batch_size) if streams else (args.batch_size,)
    # Chunks are unrolled, as the runner's (module docstring, jax-ml/jax#12868); the whole retraining is one rolled scan.
    unroll = args.steps_per_call < args.train_steps

    def init(key):
        return transform.init(key, learner.init_params)

    def train(state, keys, x_all, y_all, labelled, num_labelled):
        def step(state, key):
            index_key, step_key = jax.random.split(key)
            # Uniform draws from the first n buffer entries: the labelled set, whatever its size.
            rows = labelled[jax.random.randint(index_key, batch_shape, 0, num_labelled)]
            sizes = jnp.full(batch_shape[:-1], num_labelled, jnp.float32)
            state, info = transform.update(state, (x_all[rows], y_all[rows], sizes), step_key)
            return state, jnp.mean(info.loss)

        return jax.lax.scan(step, state, keys, unroll=unroll)

    def sample_probs(state, key, x):
        sample_key, pass_key = jax.random.split(key)
        samples = transform.sample(state, sample_key, learner.num_samples)
        logits = predictive.predictive_outputs(learner.apply, samples, x, pass_key, data_chunk=args.data_chunk)
        return jax.nn.softmax(logits, axis=-1)

    def test_error(state, key, x_test, y_test):
        mean_probs = jnp.mean(sample_probs(state, key, x_test), axis=0)
        return 1.0 - jnp.mean(jnp.argmax(mean_probs, axis=-1) == y_test)

    def make_acquire(name):
        score = uncertainty.get(name)

        def acquire(state, key, x_all, labelled, num_labelled, available):
            subset_key, predict_key, score_key = jax.random.split(key, 3)
            # A uniform random subset of the available pool (Gumbel top-k), as the paper's code scores 2000 points.
            gumbel = jnp.where(available, jax.random.gumbel(subset_key, available.shape), -jnp.inf)
            subset = jax.lax.top_k(gumbel, args.pool_subset)[1]
            if name == "random":  # needs no predictions
                scores = uncertainty.random(jnp.zeros((1, args.pool_subset, 1)), score_key)
            else:
                scores = score(sample_probs(state, predict_key, x_all[subset]), score_key)
            chosen = subset[uncertainty.select_top(scores, available[subset], args.acquire_size)]
            labelled = jax.lax.dynamic_update_slice(labelled, chosen.astype(labelled.dtype), (num_labelled,))
            return labelled, num_labelled + args.acquire_size, available.at[chosen].set(False), chosen

        return jax.jit(acquire)

    return Programs(jax.jit(init), jax.jit(train), jax.jit(test_error), {name: make_acquire(name) for name in acquisitions})


# --------------------------------------------------------------------------
# One active-learning run
# --------------------------------------------------------------------------


def balanced_initial_set(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` random indices of every class (the paper's 20 = 2 × 10 balanced images)."""
    chosen = []
    for c in range(NUM_CLASSES):
        members = np.flatnonzero(labels == c)
        if members.size < per_class:
            raise ValueError(f"class {c} has {members.size} training images; need {per_class} for the initial set")
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.concatenate(chosen)


def split_initial_and_pool(y_train: np.ndarray, args, repeat: int):
    """Training-set indices of the initial labelled set and of the pool, for one repeat."""
    rng = np.random.default_rng([args.seed, repeat])
    initial = balanced_initial_set(y_train, args.initial_per_class, rng)
    rest = np.setdiff1d(np.arange(y_train.shape[0]), initial)
    pool_size = rest.size if args.pool_size is None else args.pool_size
    if pool_size > rest.size:
        raise ValueError(f"--pool-size {pool_size} exceeds the {rest.size} training images left after the initial set")
    pool = rng.choice(rest, pool_size, replace=False)
    return initial, pool


def run_active_learning(programs: Programs, acquisition_name: str, x_all, y_all, num_initial: int, x_test, y_test,
                        args, key, log: Callable[[Dict[str, Any]], None]) -> List[float]:
    """Test error after 0..steps acquisitions; ``x_all`` = initial images then pool images."""
    capacity = num_initial + args.steps * args.acquire_size
    labelled = jnp.zeros((capacity,), jnp.int32).at[:num_initial].set(jnp.arange(num_initial, dtype=jnp.int32))
    num_labelled = jnp.asarray(num_initial, jnp.int32)
    available = jnp.arange(x_all.shape[0]) >= num_initial
    errors: List[float] = []
    for step in range(args.steps + 1):
        step_key = jax.random.fold_in(key, step)
        init_key, train_key, test_key, acquire_key = jax.random.split(step_key, 4)
        start = time.perf_counter()
        state = programs.init(init_key)
        keys = jax.random.split(train_key, args.train_steps).reshape(-1, args.steps_per_call)
        for chunk in keys:
            state, losses = programs.train(state, chunk, x_all, y_all, labelled, num_labelled)
        final_loss = float(losses[-1])  # waits for training: the timings below are per phase
        trained = time.perf_counter()
        error = float(programs.test_error(state, test_key, x_test, y_test))  # one host transfer per step
        errors.append(error)
        tested = time.perf_counter()
        record = {"step": step, "acquired": step * args.acquire_size, "labelled": num_initial + step * args.acquire_size,
                  "test_error": error, "final_loss": final_loss, "train_seconds": trained - start,
                  "test_seconds": tested - trained}
        if step < args.steps:
            labelled, num_labelled, available, chosen = programs.acquire[acquisition_name](
                state, acquire_key, x_all, labelled, num_labelled, available)
            record["acquired_labels"] = np.bincount(np.asarray(y_all[chosen]), minlength=NUM_CLASSES).tolist()
            record["acquire_seconds"] = time.perf_counter() - tested
        record["seconds"] = time.perf_counter() - start
        log(record)
    return errors


def images_to_reach(errors: Sequence[float], threshold: float, acquire_size: int) -> Optional[int]:
    """Acquired images (initial set excluded) at the first step with error ≤ threshold; None if never."""
    for step, error in enumerate(errors):
        if error <= threshold:
            return step * acquire_size
    return None


# --------------------------------------------------------------------------
# Command line, figure, table
# --------------------------------------------------------------------------


def parse_names(values: Sequence[str], allowed: Sequence[str], flag: str) -> List[str]:
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"{flag}: unknown name(s) {unknown}; choose from {list(allowed)}")
    if not names:
        raise ValueError(f"{flag} selects nothing")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", action="append", default=None,
                        help=f"posterior approximation(s), repeatable or comma-separated, from {list(METHODS)} "
                             "(default mcdropout,ensemble)")
    parser.add_argument("--acquisition", action="append", default=None,
                        help=f"acquisition function(s) from {uncertainty.names()} (default all)")
    parser.add_argument("--steps", type=int, default=100, help="acquisition steps (default 100, the paper's 1000 images)")
    parser.add_argument("--acquire-size", type=int, default=10, help="images acquired per step (default 10)")
    parser.add_argument("--initial-per-class", type=int, default=2, help="initial labelled images per class (default 2)")
    parser.add_argument("--pool-size", type=int, default=None, help="pool images (default: all training images left)")
    parser.add_argument("--pool-subset", type=int, default=2000, help="random pool images scored per step (default 2000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--test-size", type=int, default=10000, help="random MNIST test images for the error (default all)")
    parser.add_argument("--train-steps", type=int, default=500, help="Adam steps per retraining (default 500)")
    parser.add_argument("--steps-per-call", type=int, default=0,
                        help="training steps per compiled call (0: the runner's choice, 1 for a CNN on CPU, else all; "
                             "must divide --train-steps)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--prior-scale", type=float, default=float(1 / np.sqrt(7.0)),
                        help="prior std s (default 1/sqrt(7): Gal et al.'s weight decay 3.5/n on the mean loss)")
    parser.add_argument("--dropout-rate", type=float, default=0.25, help="MC dropout rate (default 0.25)")
    parser.add_argument("--mc-samples", type=int, default=20, help="MC dropout passes T (default 20, as the paper)")
    parser.add_argument("--num-members", type=int, default=5, help="deep-ensemble members (default 5)")
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    parser.add_argument("--features", default="32,32", help="CNN conv channels (default 32,32)")
    parser.add_argument("--hidden", type=int, default=128, help="CNN / MLP hidden units (default 128)")
    parser.add_argument("--data-chunk", type=int, default=1000, help="images per predictive chunk (memory bound)")
    parser.add_argument("--data-dir", default=None, help=f"data root (default ${data.DATA_DIR_ENV_VAR} or ../shared/data)")
    parser.add_argument("--out", default=None, help="run directory (default runs/active_learning-<time>)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def check_args(args) -> None:
    positive = ("steps", "acquire_size", "initial_per_class", "pool_subset", "repeats", "test_size", "train_steps",
                "batch_size", "mc_samples", "num_members", "hidden", "data_chunk")
    for flag in positive:
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    if args.steps_per_call == 0:
        args.steps_per_call = automatic_steps_per_call(args, build_model(args))
    if args.steps_per_call < 1 or args.train_steps % args.steps_per_call:
        raise ValueError(f"--steps-per-call {args.steps_per_call} must be positive and divide --train-steps "
                         f"{args.train_steps}")
    if args.acquire_size > args.pool_subset:
        raise ValueError(f"--acquire-size {args.acquire_size} exceeds --pool-subset {args.pool_subset}")
    needed = args.pool_subset + args.steps * args.acquire_size
    if args.pool_size is not None and args.pool_size < needed:
        raise ValueError(f"--pool-size {args.pool_size} is too small: {args.steps} steps of {args.acquire_size} "
                         f"images with a scored subset of {args.pool_subset} need at least {needed}")
    if not 0.0 < args.dropout_rate < 1.0:
        raise ValueError(f"--dropout-rate must lie in (0, 1), got {args.dropout_rate}")
    for flag in ("prior_scale", "learning_rate"):
        if not getattr(args, flag) > 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")


def automatic_steps_per_call(args, model: models.Model) -> int:
    """The runner's choice for this network on this backend (:func:`bdljax.run.execution.choose`): one unrolled
    step per call for a conv net on CPU, all ``--train-steps`` in one rolled scan otherwise."""
    params = jax.eval_shape(model.init, jax.random.key(0))
    chosen = execution.choose(model.apply, params, jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32))
    return chosen.steps_per_call or args.train_steps


def build_model(args) -> models.Model:
    if args.model == "cnn":
        features = [int(v) for v in args.features.split(",") if v.strip()]
        return models.cnn(NUM_CLASSES, features=features, hidden=args.hidden)
    return models.mlp((28, 28, 1), [args.hidden], NUM_CLASSES)


def plot_errors(path: Path, curves, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FormatStrFormatter

    method_names = list(dict.fromkeys(m for m, _ in curves))
    fig, axes = plt.subplots(1, len(method_names), figsize=(5.5 * len(method_names), 4), squeeze=False)
    acquired = np.arange(args.steps + 1) * args.acquire_size
    for ax, method in zip(axes[0], method_names):
        for (m, name), runs in curves.items():
            if m != method:
                continue
            runs = 100 * np.asarray(runs)
            mean = runs.mean(axis=0)
            line, = ax.plot(acquired, mean, label=name)
            if runs.shape[0] > 1:
                ax.fill_between(acquired, runs.min(axis=0), runs.max(axis=0), color=line.get_color(), alpha=0.15)
        for threshold in THRESHOLDS:
            ax.axhline(100 * threshold, color="k", ls=":", lw=1)
        ax.set_title(f"{method}: MNIST test error ({args.repeats} repeat(s), band = min..max)")
        ax.set_xlabel("acquired images")
        ax.set_ylabel("test error (%)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(table: List[Dict[str, Any]]) -> str:
    def show(value):
        return "not reached" if value is None else str(value)

    lines = ["| method | acquisition | final error | images to 10% | images to 5% | paper (10% / 5%) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for row in table:
        paper = PAPER_IMAGES_TO_ERROR.get(row["acquisition"])
        lines.append(f"| {row['method']} | {row['acquisition']} | {100 * row['final_error']:.2f}% | "
                     f"{show(row['images_to_10'])} | {show(row['images_to_5'])} | "
                     f"{'%d / %d' % paper if paper else '—'} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    method_names = parse_names(args.method or ["mcdropout,ensemble"], METHODS, "--method")
    acquisition_names = parse_names(args.acquisition or [",".join(uncertainty.names())], uncertainty.names(),
                                    "--acquisition")
    check_args(args)

    mnist = data.load_mnist(args.data_dir, "mnist")
    test_rng = np.random.default_rng([args.seed, 10**6])
    if args.test_size > mnist.x_test.shape[0]:
        raise ValueError(f"--test-size {args.test_size} exceeds the {mnist.x_test.shape[0]} MNIST test images")
    test_index = np.sort(test_rng.choice(mnist.x_test.shape[0], args.test_size, replace=False))
    x_test, y_test = jnp.asarray(mnist.x_test[test_index]), jnp.asarray(mnist.y_test[test_index])
    model = build_model(args)

    out = Path(args.out) if args.out else default_run_dir("active_learning")
    logger = RunLogger(out, {**vars(args), "methods": method_names, "acquisitions": acquisition_names,
                             "backend": jax.default_backend(),
                             "images_to_error": "acquired images (initial set excluded) at the first step whose "
                                                "mean-over-repeats test error is <= the threshold"})
    print(f"active learning: methods {method_names}, acquisitions {acquisition_names}, {args.steps} steps of "
          f"{args.acquire_size}, {args.repeats} repeat(s), {args.test_size} test images; run dir {out}", flush=True)

    curves: Dict[tuple, List[List[float]]] = {}
    seconds: Dict[tuple, float] = {}
    compiles: Dict[str, Dict[str, int]] = {}
    root_key = jax.random.key(args.seed)
    for method_index, method in enumerate(method_names):
        learner = build_learner(method, args, model, mnist.x_train[:2])
        programs = build_programs(learner, args, acquisition_names)
        for acquisition_index, name in enumerate(acquisition_names):
            start = time.perf_counter()
            for repeat in range(args.repeats):
                initial, pool = split_initial_and_pool(mnist.y_train, args, repeat)
                rows = np.concatenate([initial, pool])
                x_all, y_all = jnp.asarray(mnist.x_train[rows]), jnp.asarray(mnist.y_train[rows])
                # Same initial set, pool and keys for every acquisition function of a repeat: paired comparisons.
                key = jax.random.fold_in(jax.random.fold_in(root_key, method_index), repeat)
                fields = {"method": method, "acquisition": name, "repeat": repeat}

                def log(record, fields=fields):
                    logger.log({**fields, **record})
                    print(f"  {method}/{name} repeat {repeat} step {record['step']}: {record['labelled']} labelled, "
                          f"test error {100 * record['test_error']:.2f}% ({record['seconds']:.1f} s)", flush=True)

                errors = run_active_learning(programs, name, x_all, y_all, initial.size, x_test, y_test, args, key, log)
                curves.setdefault((method, name), []).append(errors)
            seconds[(method, name)] = time.perf_counter() - start
        compiles[method] = {"train": programs.train._cache_size(), "test_error": programs.test_error._cache_size(),
                            **{f"acquire_{n}": f._cache_size() for n, f in programs.acquire.items()}}

    table = []
    for (method, name), runs in curves.items():
        mean = np.mean(np.asarray(runs), axis=0)
        table.append({
            "method": method, "acquisition": name, "final_error": float(mean[-1]),
            "images_to_10": images_to_reach(mean, 0.10, args.acquire_size),
            "images_to_5": images_to_reach(mean, 0.05, args.acquire_size),
            "per_repeat_to_10": [images_to_reach(r, 0.10, args.acquire_size) for r in runs],
            "per_repeat_to_5": [images_to_reach(r, 0.05, args.acquire_size) for r in runs],
            "mean_error_curve": mean.tolist(), "seconds": seconds[(method, name)],
        })
    plot_errors(logger.path("error.png"), curves, args)
    summary = {"table": table, "compilations": compiles, "paper": PAPER_IMAGES_TO_ERROR, "run_dir": str(out),
               "figures": ["error.png"]}
    logger.write_summary(summary)
    print(format_table(table))
    print(json.dumps({"experiment": "active_learning", "run_dir": str(out), "compilations": compiles,
                      "table": [{k: v for k, v in row.items() if k != "mean_error_curve"} for row in table]}))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
