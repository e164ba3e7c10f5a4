"""Bayesian CNNs on MNIST: test metrics, rotation shift and Fashion-MNIST OOD detection.

The protocol, top to bottom:

1. **Data.** MNIST (LeCun, Cortes & Burges) from ``<data dir>/mnist``: 60000
   training and 10000 test images in [0, 1] (``--train-size`` / ``--test-size``
   take a random subset, seeded, for quick runs). Fashion-MNIST's test set
   (Xiao et al., 2017) is the out-of-distribution set.
2. **Model.** ``--model cnn``: :func:`bdljax.nn.models.cnn`, a LeNet-5-like
   network (two 5×5 conv + 2×2 max-pool blocks of ``--features`` channels, one
   hidden dense layer of ``--hidden`` units, ReLU); ``--model mlp``: an MLP with
   ``--mlp-hidden`` units. Categorical likelihood on the logits, isotropic
   Gaussian prior N(0, s²) on every weight (``--prior-scale``).
3. **Methods.** Every ``--method`` is trained on the same
   :class:`bdljax.recipes.Problem` through :func:`bdljax.recipes.run`, so MAP,
   deep ensembles, MFVI, MC dropout, SGLD/SGHMC — and any method added
   later — run through one code path. ``--epochs``, ``--batch-size``,
   ``--learning-rate`` and ``--num-samples`` are passed to every recipe that
   takes them; ``METHOD_DEFAULTS`` sets MC dropout's rate for a CNN;
   ``--set METHOD.KEY=VALUE`` sets any other recipe hyperparameter. How the
   steps run is the runner's choice (:func:`bdljax.run.execution.choose`),
   recorded in each method's ``diagnostics.execution``: on CPU a CNN trains one
   unrolled step per compiled call (XLA:CPU runs convolution gradients inside
   a rolled ``lax.scan`` several times slower, jax-ml/jax#12868) and ensemble
   members one after another (a conv vmapped over member weights is a slow
   grouped convolution there). ``--steps-per-call`` and
   ``--ensemble-execution`` override that choice.
4. **Predictive.** S posterior samples (``Fitted.samples``) evaluated by
   :func:`bdljax.run.predictive.predictive_outputs` in one compiled call per input
   shape, memory bounded by ``--data-chunk`` test points × ``--sample-chunk``
   samples at a time; the predictive is p̄(y|x) = (1/S) Σ_s softmax(f(x; θ_s)).
5. **In-distribution metrics** on the MNIST test set: accuracy, NLL
   −(1/N) Σ_n log p̄(y_n|x_n) (log-mean-exp over samples, no clipping), Brier
   (summed over classes), ECE of the top-label confidence with ``--ece-bins``
   bins of ``--ece-binning`` (default 15 equal-width bins, Guo et al. 2017); a
   reliability diagram per method (``reliability.png``).
6. **Dataset shift** (Ovadia et al., 2019, "Can you trust your model's
   uncertainty?"): the first ``--shift-size`` test images rotated by each of
   ``--shift-angles`` degrees (:func:`bdljax.data.rotate_images`); accuracy,
   NLL and ECE per angle, one curve per method (``shift.png``).
7. **OOD detection**: MNIST test (in) vs the first ``--ood-size`` Fashion-MNIST
   test images (out), scored by predictive entropy H[p̄], 1 − max_c p̄_c and
   the mutual information H[p̄] − (1/S) Σ_s H[p_s] (zero for a single sample,
   so AUROC 0.5 for MAP by construction); AUROC and AUPR with OOD as the
   positive class (:func:`bdljax.evaluate.ood.auroc`, :func:`bdljax.evaluate.ood.aupr`);
   score histograms (``ood.png``).
8. **Record**: a run directory (:class:`bdljax.run.rundir.RunLogger`) with
   config.json, metrics.jsonl (training curves, test, shift and OOD records),
   summary.json and the figures; the script prints a table and, as its last
   line, one JSON object with every figure and the goal checks of issue 7
   (ensemble accuracy ≥ 99.2% and ECE ≤ 1%, every Bayesian method's NLL below
   MAP's, best OOD AUROC ≥ 0.95).

Example (the full protocol of the goals; hours on two CPU cores)::

    python experiments/mnist.py --method map,ensemble,mcdropout,mfvi,sgld --epochs 20
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bdljax import data
from bdljax import recipes
from bdljax.core import likelihoods, priors
from bdljax.evaluate import classification, uncertainty
from bdljax.evaluate import ood as ood_metrics
from bdljax.nn import models
from bdljax.run import execution, predictive
from bdljax.run.options import RunOptions
from bdljax.run.rundir import RunLogger, default_run_dir

DEFAULT_ANGLES = tuple(range(0, 181, 15))
OOD_SCORES = ("entropy", "max_probability", "mutual_information")

# Script-level defaults for a CNN on MNIST, applied only where the recipe takes the key; --set overrides.
# MC dropout: the recipe's 0.05 is the UCI grid's smallest rate; Gal & Ghahramani's LeNet used 0.5 on the
# dense layer only, and our CNN drops after both pools as well, so a middle value keeps accuracy on short runs.
METHOD_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "mcdropout": {"dropout_rate": 0.25},
}

class CompileCounter:
    """Counts XLA backend compilations (and their seconds) through ``jax.monitoring``; one listener per process."""

    EVENT = "/jax/core/compile/backend_compile_duration"
    count = 0
    seconds = 0.0
    _registered = False

    @classmethod
    def register(cls) -> None:
        if not cls._registered:
            jax.monitoring.register_event_duration_secs_listener(cls._listen)
            cls._registered = True

    @classmethod
    def _listen(cls, event: str, duration: float, **kwargs) -> None:
        if event == cls.EVENT:
            cls.count += 1
            cls.seconds += duration


# Goals of issue 7, checked in the summary.
GOAL_ENSEMBLE_ACCURACY = 0.992
GOAL_ENSEMBLE_ECE = 0.01
GOAL_OOD_AUROC = 0.95


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_methods(values: Sequence[str]) -> List[str]:
    """Repeatable / comma-separated ``--method`` values, validated against the registry."""
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in recipes.RECIPES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {recipes.names()}")
    if not names:
        raise ValueError("--method selects no method; name at least one, e.g. --method map")
    return list(dict.fromkeys(names))


def parse_assignments(values: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``METHOD.KEY=VALUE`` → ``{method: {key: value}}`` (values read as Python literals)."""
    out: Dict[str, Dict[str, Any]] = {}
    for item in values:
        try:
            target, value = item.split("=", 1)
            method, key = target.split(".", 1)
        except ValueError:
            raise ValueError(f"--set expects METHOD.KEY=VALUE, e.g. mcdropout.dropout_rate=0.5; got {item!r}") from None
        out.setdefault(method.strip(), {})[key.strip()] = _literal(value.strip())
    return out


def parse_ints(text: str, flag: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag}: expected at least one integer")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    parser.add_argument("--method", action="append", default=None,
                        help=f"method name(s), repeatable or comma-separated; from {recipes.names()} (default map,ensemble)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of every method (default 10)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--num-samples", type=int, default=20,
                        help="posterior samples S of sampling methods (MC dropout passes, MFVI/SG-MCMC draws; default 20)")
    parser.add_argument("--steps-per-call", default="auto",
                        help="training steps per compiled call: a positive int (unrolled), 'scan' (whole epochs in a "
                             "lax.scan) or 'auto' (the runner's choice: 1 for a CNN on CPU, else scan; default)")
    parser.add_argument("--ensemble-execution", choices=("auto", *execution.MEMBER_EXECUTIONS), default="auto",
                        help="ensemble members (and SG-MCMC chains) vmapped in one step, or trained one after another "
                             "by one compiled member program (auto: the runner's choice, sequential for a CNN on CPU, "
                             "where a conv vmapped over weights runs as a slow grouped convolution; vmap otherwise)")
    parser.add_argument("--prior-scale", type=float, default=1.0, help="std of the isotropic Gaussian prior (default 1)")
    parser.add_argument("--features", default="32,64", help="CNN conv channels (default 32,64)")
    parser.add_argument("--hidden", type=int, default=128, help="CNN hidden dense units (default 128)")
    parser.add_argument("--mlp-hidden", default="400,400", help="MLP hidden widths (default 400,400)")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="any recipe hyperparameter, e.g. ensemble.num_members=3 (repeatable)")
    parser.add_argument("--train-size", type=int, default=None, help="random training subset (default: all 60000)")
    parser.add_argument("--test-size", type=int, default=None, help="random test subset (default: all 10000)")
    parser.add_argument("--shift-size", type=int, default=2000, help="test images rotated per angle (default 2000)")
    parser.add_argument("--shift-angles", default=",".join(map(str, DEFAULT_ANGLES)),
                        help="rotation angles in degrees (default 0,15,...,180)")
    parser.add_argument("--ood-size", type=int, default=None, help="Fashion-MNIST test images (default: as many as MNIST test)")
    parser.add_argument("--ece-bins", type=int, default=15)
    parser.add_argument("--ece-binning", choices=classification.ECE_BINNINGS, default="equal_width")
    parser.add_argument("--data-chunk", type=int, default=500, help="test points per predictive chunk (memory bound)")
    parser.add_argument("--sample-chunk", type=int, default=0,
                        help="samples vmapped at once in the predictive (0: 1 for a CNN on CPU, one sample per "
                             "lax.map iteration, since a conv vmapped over weights is a slow grouped conv there; else 4)")
    parser.add_argument("--data-dir", default=None, help=f"data root (default ${data.DATA_DIR_ENV_VAR} or ../shared/data)")
    parser.add_argument("--out", default=None, help="run directory (default runs/mnist-<time>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    return parser


def check_args(args) -> None:
    """Fail before any data is read or anything compiles."""
    if args.sample_chunk < 0:
        raise ValueError(f"--sample-chunk must be positive or 0 (auto), got {args.sample_chunk}")
    for flag in ("epochs", "batch_size", "num_samples", "hidden", "ece_bins", "data_chunk", "shift_size"):
        value = getattr(args, flag)
        if value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    for flag in ("train_size", "test_size", "ood_size"):
        value = getattr(args, flag)
        if value is not None and value < 2:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 2 (or left out for the whole set), got {value}")
    if args.steps_per_call not in ("auto", "scan"):
        if not (str(args.steps_per_call).isdigit() and int(args.steps_per_call) >= 1):
            raise ValueError(f"--steps-per-call must be a positive integer, 'scan' or 'auto', got {args.steps_per_call!r}")
        args.steps_per_call = int(args.steps_per_call)
    if not args.prior_scale > 0:
        raise ValueError(f"--prior-scale must be positive, got {args.prior_scale}")
    if not args.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {args.learning_rate}")


# --------------------------------------------------------------------------
# Data, problem, methods
# --------------------------------------------------------------------------


def subset(x, y, size: Optional[int], rng: np.random.Generator, name: str):
    """A random subset of ``size`` rows (all rows when ``size`` is None)."""
    if size is None:
        return x, y
    if size > x.shape[0]:
        raise ValueError(f"{name} has {x.shape[0]} images; asked for {size}")
    index = np.sort(rng.choice(x.shape[0], size, replace=False))
    return x[index], y[index]


def load_data(args):
    """MNIST train/test subsets and the Fashion-MNIST OOD images."""
    mnist = data.load_mnist(args.data_dir, "mnist")
    fashion = data.load_mnist(args.data_dir, "fashion_mnist")
    rng = np.random.default_rng(args.seed)
    x_train, y_train = subset(mnist.x_train, mnist.y_train, args.train_size, rng, "the MNIST training set")
    x_test, y_test = subset(mnist.x_test, mnist.y_test, args.test_size, rng, "the MNIST test set")
    ood_size = args.ood_size if args.ood_size is not None else x_test.shape[0]
    x_ood, _ = subset(fashion.x_test, fashion.y_test, ood_size, rng, "the Fashion-MNIST test set")
    return x_train, y_train, x_test, y_test, x_ood


def build_model(args) -> models.Model:
    if args.model == "cnn":
        return models.cnn(num_classes=10, features=parse_ints(args.features, "--features"), hidden=args.hidden)
    return models.mlp((28, 28, 1), parse_ints(args.mlp_hidden, "--mlp-hidden"), 10)


def execution_override(args, model: models.Model, example_x) -> Optional[execution.Execution]:
    """The flags' :class:`~bdljax.run.execution.Execution`, or ``None`` (both ``auto``): the runner's choice.

    A flag left ``auto`` keeps its half of what :func:`bdljax.run.execution.choose` picks for ``model`` on this
    backend, so ``--ensemble-execution vmap`` alone still trains a CNN on CPU one unrolled step per call.
    """
    if args.steps_per_call == "auto" and args.ensemble_execution == "auto":
        return None
    chosen = execution.choose(model.apply, jax.eval_shape(model.init, jax.random.key(0)), example_x)
    steps = {"auto": chosen.steps_per_call, "scan": None}.get(args.steps_per_call, args.steps_per_call)
    members = chosen.members if args.ensemble_execution == "auto" else args.ensemble_execution
    return execution.Execution(steps, members)


def method_config(name: str, args, overrides: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The hyperparameters passed to ``name``'s recipe: shared flags where it takes them, defaults, ``--set``."""
    accepted = recipes.hyperparameters(name)
    shared = {"num_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "num_samples": args.num_samples, **METHOD_DEFAULTS.get(name, {})}
    config = {key: value for key, value in shared.items() if key in accepted}
    config.update(overrides.get(name, {}))  # unknown keys fail in recipes.run, naming the accepted ones
    return config


# --------------------------------------------------------------------------
# Predictive and metrics
# --------------------------------------------------------------------------


def sample_chunk(args) -> int:
    """Samples vmapped at once in the predictive: ``--sample-chunk``, or auto.

    Auto: 1 for a CNN on CPU. Vmapping a conv over sample weights makes XLA:CPU run a grouped convolution;
    one sample per ``lax.map`` iteration halved the predictive's cost (5 CNN 16,32 samples on 1000 images:
    1.34 against 2.69 CPU-s, runs/mnist-cnn-predictive-bench). 4 elsewhere.
    """
    if args.sample_chunk > 0:
        return args.sample_chunk
    return 1 if args.model == "cnn" and jax.default_backend() == "cpu" else 4


def predictive_outputs(fitted: recipes.Fitted, x, key, args) -> jax.Array:
    """Per-sample logits ``(S, N, C)``; one key per sample feeds methods whose samples are stochastic passes."""
    return predictive.predictive_outputs(fitted.apply, fitted.samples, jnp.asarray(x), key,
                                         sample_chunk=sample_chunk(args), data_chunk=args.data_chunk)


@jax.jit
def _compiled_summaries(logits, labels):
    likelihood = likelihoods.categorical()
    mean_probs = predictive.mean_probabilities(likelihood, logits)
    log_density = predictive.log_predictive_density(likelihood, logits, labels)
    scores = {
        "entropy": uncertainty.predictive_entropy(mean_probs),
        "max_probability": 1.0 - uncertainty.max_probability(mean_probs),  # higher = more likely OOD
    }
    return mean_probs, log_density, scores


def _summaries(logits, labels):
    """Predictive probabilities, predictive NLL per point (one compiled call) and the OOD scores.

    The mutual information is computed in float64 on the host from the logits: in float32 it cannot
    resolve the MI of confidently classified points (:func:`bdljax.evaluate.uncertainty.mutual_information_from_logits`).
    """
    mean_probs, log_density, scores = _compiled_summaries(logits, labels)
    return mean_probs, log_density, {**scores, "mutual_information": uncertainty.mutual_information_from_logits(logits)}


def classification_record(logits, labels, args) -> Dict[str, Any]:
    """Accuracy, NLL (log-mean-exp over samples), Brier, ECE and mean uncertainties; host floats."""
    labels = jnp.asarray(labels)
    mean_probs, log_density, scores = _summaries(logits, labels)
    record = {
        "accuracy": classification.accuracy(mean_probs, labels),
        "nll": -jnp.mean(log_density),
        "brier": classification.brier(mean_probs, labels),
        "ece": classification.ece(mean_probs, labels, args.ece_bins, args.ece_binning),
        "mean_entropy": jnp.mean(scores["entropy"]),
        "mean_mutual_information": np.mean(scores["mutual_information"]),
    }
    return {key: float(value) for key, value in record.items()}, mean_probs, scores


def evaluate_method(name, fitted, x_test, y_test, x_shift, y_shift, angles, x_ood, key, args, logger):
    """Test metrics, reliability bins, the shift curve and OOD scores of one fitted method."""
    test_key, shift_key, ood_key = jax.random.split(key, 3)
    logits = predictive_outputs(fitted, x_test, test_key, args)
    test, mean_probs, scores_in = classification_record(logits, y_test, args)
    bins = classification.reliability_diagram_data(mean_probs, jnp.asarray(y_test), args.ece_bins, args.ece_binning)
    logger.log({"method": name, "split": "test", **test})

    shift = []
    for index, angle in enumerate(angles):
        rotated = data.rotate_images(x_shift, angle)
        record, _, _ = classification_record(predictive_outputs(fitted, rotated, jax.random.fold_in(shift_key, index), args),
                                             y_shift, args)
        record = {"angle": angle, **record}
        shift.append(record)
        logger.log({"method": name, "split": "shift", **record})

    members = []
    if name == "ensemble":
        # Each member alone is a MAP fit (members in turn: exactly the MAP plan run with key split(key, K)[k]):
        # K single-model baselines for free, from the logits already computed.
        for member in range(logits.shape[0]):
            record, _, member_scores = classification_record(logits[member:member + 1], y_test, args)
            members.append({"member": member, **record})
            logger.log({"method": name, "split": "member_test", "member": member, **record})

    ood_logits = predictive_outputs(fitted, x_ood, ood_key, args)
    _, _, scores_out = _summaries(ood_logits, jnp.zeros(ood_logits.shape[1], jnp.int32))
    ood = {}
    for score in OOD_SCORES:
        inside, outside = np.asarray(scores_in[score]), np.asarray(scores_out[score])
        ood[score] = {"auroc": ood_metrics.auroc(inside, outside), "aupr": ood_metrics.aupr(inside, outside)}
    logger.log({"method": name, "split": "ood", **{f"{s}_{m}": v for s, d in ood.items() for m, v in d.items()}})
    histograms = {score: (np.asarray(scores_in[score]), np.asarray(scores_out[score])) for score in OOD_SCORES}
    result = {"test": test, "shift": shift, "ood": ood, "num_samples": int(logits.shape[0])}
    if members:
        result["members"] = members
    return result, bins, histograms


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(path: Path, bins_by_method, results, args) -> None:
    plt = _pyplot()
    names = list(bins_by_method)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    edges = np.linspace(0.0, 1.0, args.ece_bins + 1)
    for ax, name in zip(axes[0], names):
        bins = bins_by_method[name]
        accuracy, confidence = np.asarray(bins.accuracy), np.asarray(bins.confidence)
        filled = np.asarray(bins.count) > 0
        if args.ece_binning == "equal_width":
            centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        else:  # equal-mass bins have no fixed edges: draw them at their mean confidence
            centres, widths = confidence, np.full(args.ece_bins, 0.8 / args.ece_bins)
        ax.bar(centres[filled], accuracy[filled], width=widths[filled] if widths.ndim else widths, edgecolor="k",
               alpha=0.7, label="accuracy")
        ax.plot(confidence[filled], confidence[filled], "r.", label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        test = results[name]["test"]
        ax.set_title(f"{name}\nacc {test['accuracy']:.4f}, ECE {100 * test['ece']:.2f}%", fontsize=9)
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"MNIST test reliability ({classification.ece_descriptor(args.ece_bins, args.ece_binning)} bins)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shift(path: Path, results) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, result in results.items():
        angles = [r["angle"] for r in result["shift"]]
        for ax, field in zip(axes, ("accuracy", "nll", "ece")):
            ax.plot(angles, [r[field] for r in result["shift"]], marker="o", ms=3, label=name)
    for ax, title in zip(axes, ("accuracy", "NLL (nats)", "ECE")):
        ax.set_title(f"rotated MNIST: {title}")
        ax.set_xlabel("rotation (degrees)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ood(path: Path, histograms, results) -> None:
    plt = _pyplot()
    names = list(histograms)
    fig, axes = plt.subplots(len(names), len(OOD_SCORES), figsize=(4 * len(OOD_SCORES), 2.6 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        for ax, score in zip(row, OOD_SCORES):
            inside, outside = histograms[name][score]
            high = max(float(np.max(inside)), float(np.max(outside)), 1e-3)  # a constant score (MAP MI) still gets bins
            edges = np.linspace(0.0, high, 41)
            ax.hist(inside, bins=edges, alpha=0.6, density=True, label="MNIST test (in)")
            ax.hist(outside, bins=edges, alpha=0.6, density=True, label="Fashion-MNIST (out)")
            auroc = results[name]["ood"][score]["auroc"]
            ax.set_title(f"{name}: {score} (AUROC {auroc:.3f})", fontsize=9)
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# Table and goals
# --------------------------------------------------------------------------


def format_table(results, angles) -> str:
    worst = max(angles)
    lines = [f"| method | S | accuracy | NLL | Brier | ECE | acc@{worst}° | NLL@{worst}° | AUROC ent | AUROC MI | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        t, last = r["test"], r["shift"][-1]
        lines.append(
            f"| {name} | {r['num_samples']} | {t['accuracy']:.4f} | {t['nll']:.4f} | {t['brier']:.4f} | {t['ece']:.4f} | "
            f"{last['accuracy']:.3f} | {last['nll']:.3f} | {r['ood']['entropy']['auroc']:.3f} | "
            f"{r['ood']['mutual_information']['auroc']:.3f} | {r['train_seconds']:.1f} |")
    return "\n".join(lines)


def goal_checks(results) -> Dict[str, Any]:
    """Issue 7's goals on this run (``None`` where the run lacks the method they need)."""
    goals: Dict[str, Any] = {}
    if "ensemble" in results:
        test = results["ensemble"]["test"]
        goals["ensemble_accuracy_ge_0.992"] = test["accuracy"] >= GOAL_ENSEMBLE_ACCURACY
        goals["ensemble_ece_le_0.01"] = test["ece"] <= GOAL_ENSEMBLE_ECE
    if "map" in results:
        map_nll = results["map"]["test"]["nll"]
        goals["nll_below_map"] = {name: r["test"]["nll"] < map_nll for name, r in results.items() if name != "map"}
    # Ties go to the first candidate (methods in run order, entropy before mutual information).
    best = max(((r["ood"][s]["auroc"], name, s) for name, r in results.items()
                for s in ("entropy", "mutual_information")), key=lambda candidate: candidate[0], default=None)
    if best is not None:
        goals["best_ood_auroc"] = {"auroc": best[0], "method": best[1], "score": best[2],
                                   "ge_0.95": best[0] >= GOAL_OOD_AUROC}
    return goals


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    check_args(args)
    names = parse_methods(args.method or ["map,ensemble"])
    overrides = parse_assignments(args.set)
    stray = sorted(set(overrides) - set(names))
    if stray:
        raise ValueError(f"--set names method(s) {stray} that are not run; run them with --method or drop the setting")
    for name, settings in overrides.items():  # the same check recipes.run makes, before any data is read
        unknown = sorted(set(settings) - set(recipes.hyperparameters(name)))
        if unknown:
            raise ValueError(f"method {name!r} does not take {unknown}; it accepts {sorted(recipes.hyperparameters(name))}")
    angles = parse_ints(args.shift_angles, "--shift-angles")
    configs = {name: method_config(name, args, overrides) for name in names}

    x_train, y_train, x_test, y_test, x_ood = load_data(args)
    shift_size = min(args.shift_size, x_test.shape[0])
    x_shift, y_shift = x_test[:shift_size], y_test[:shift_size]
    model = build_model(args)
    problem = recipes.Problem(model, likelihoods.categorical(), priors.gaussian(args.prior_scale), x_train, y_train)
    override = execution_override(args, model, x_train[:1])

    out = Path(args.out) if args.out else default_run_dir("mnist")
    logger = RunLogger(out, {
        **vars(args), "methods": names, "method_configs": configs, "angles": angles,
        "resolved_sample_chunk": sample_chunk(args),
        "execution_override": None if override is None else override._asdict(),
        "backend": jax.default_backend(),
        "num_train": int(x_train.shape[0]), "num_test": int(x_test.shape[0]), "num_ood": int(x_ood.shape[0]),
        "ece": classification.ece_descriptor(args.ece_bins, args.ece_binning),
        "nll": "-(1/N) sum_n log (1/S) sum_s p(y_n|x_n, theta_s), log-mean-exp over samples",
        "ood_positive_class": "Fashion-MNIST", "prior": f"isotropic Gaussian N(0, {args.prior_scale}^2)",
    })
    print(f"MNIST: {x_train.shape[0]} train, {x_test.shape[0]} test, {x_ood.shape[0]} Fashion-MNIST; "
          f"model {args.model}; ECE with {classification.ece_descriptor(args.ece_bins, args.ece_binning)} bins; run dir {out}",
          flush=True)

    CompileCounter.register()
    root_key = jax.random.key(args.seed)
    results: Dict[str, Any] = {}
    bins_by_method, histograms = {}, {}
    for index, name in enumerate(names):
        fit_key, eval_key = jax.random.split(jax.random.fold_in(root_key, index))
        options = RunOptions(logger=logger, log_fields={"method": name}, progress=args.progress, execution=override)
        # Wall and process-CPU seconds: on a shared machine wall time depends on the load, CPU time much less.
        start, cpu_start, compiles = time.perf_counter(), time.process_time(), CompileCounter.count
        fitted = recipes.run(name, problem, fit_key, options, **configs[name])
        jax.block_until_ready(fitted.samples)
        train_seconds, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        train_compiles = CompileCounter.count - compiles
        start, cpu_start, compiles = time.perf_counter(), time.process_time(), CompileCounter.count
        result, bins, hist = evaluate_method(name, fitted, x_test, y_test, x_shift, y_shift, angles, x_ood, eval_key,
                                             args, logger)
        result.update(train_seconds=train_seconds, eval_seconds=time.perf_counter() - start,
                      train_cpu_seconds=train_cpu, eval_cpu_seconds=time.process_time() - cpu_start,
                      train_compilations=train_compiles, eval_compilations=CompileCounter.count - compiles,
                      config=configs[name], diagnostics=fitted.diagnostics)
        results[name], bins_by_method[name], histograms[name] = result, bins, hist
        test = result["test"]
        print(f"{name}: accuracy {test['accuracy']:.4f}, NLL {test['nll']:.4f}, ECE {test['ece']:.4f} "
              f"(train {train_seconds:.1f} s, eval {result['eval_seconds']:.1f} s)", flush=True)

    plot_reliability(logger.path("reliability.png"), bins_by_method, results, args)
    plot_shift(logger.path("shift.png"), results)
    plot_ood(logger.path("ood.png"), histograms, results)
    summary = {"results": results, "goals": goal_checks(results),
               "ece": classification.ece_descriptor(args.ece_bins, args.ece_binning), "run_dir": str(out),
               "figures": ["reliability.png", "shift.png", "ood.png"]}
    logger.write_summary(summary)
    print(format_table(results, angles))
    print(json.dumps({"experiment": "mnist", "run_dir": str(out), "goals": summary["goals"],
                      **{name: {"test": r["test"], "ood_auroc": {s: r["ood"][s]["auroc"] for s in OOD_SCORES},
                                "shift_accuracy": [r2["accuracy"] for r2 in r["shift"]],
                                "train_seconds": r["train_seconds"]} for name, r in results.items()}}))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
