"""1-D regression with a gap: the "in-between uncertainty" picture.

Data: two clusters of inputs with a gap between them (Foong et al. 2019,
"'In-Between' Uncertainty in Bayesian Neural Networks"), generated from the
seed, no files needed. Model: an MLP 1 → 50 → 50 → 1 (ReLU), Gaussian
likelihood with the data's known noise scale, Gaussian prior N(0, 1) on
every weight. Methods: any bdljax method by name (``--method``); each gets
the same network, likelihood and prior, and is scored on a dense test grid
(RMSE, test log-likelihood, interval coverage). The figure shows each
method's predictive mean and ±2σ band over the data: a good posterior
widens its band in the gap and outside the data.

    python experiments/regression_1d.py                       # MAP and a 5-member deep ensemble
    python experiments/regression_1d.py --method map,ensemble,mfvi,hmc
"""

from __future__ import annotations

import argparse
import ast
import time
from typing import Dict, List, Optional

import jax
import numpy as np

from bdljax import data
from bdljax import recipes
from bdljax.core import likelihoods, priors
from bdljax.nn import models
from bdljax.run import predictive
from bdljax.run.options import RunOptions
from bdljax.run.rundir import RunLogger, default_run_dir

NOISE_SCALE = 0.1

# vmapping many samples at once is slower on CPU than chunks that fit in cache (bench_mcdropout.py).
SAMPLE_CHUNK = 10
# Per-method settings for this small problem (40 points, so full-batch training).
# Keys a method's recipe does not take are simply not passed to it.
COMMON_SETTINGS = {"num_epochs": 2000, "batch_size": None, "learning_rate": 1e-2}


def parse_methods(values: List[str]) -> List[str]:
    """``--method a --method b,c`` → ``[a, b, c]``, each validated against the registry."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    for name in names:
        if name not in recipes.RECIPES:
            raise SystemExit(f"unknown method {name!r}; choose from {recipes.names()}")
    return names


def parse_settings(values: List[str]) -> Dict[str, Dict[str, object]]:
    """``--set mfvi.num_samples=50`` → ``{"mfvi": {"num_samples": 50}}``."""
    settings: Dict[str, Dict[str, object]] = {}
    for item in values:
        try:
            target, value = item.split("=", 1)
            method, key = target.split(".", 1)
        except ValueError:
            raise SystemExit(f"--set expects method.key=value, got {item!r}") from None
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        settings.setdefault(method, {})[key] = parsed
    return settings


def settings_for(method: str, epochs: Optional[int], overrides: Dict[str, object]) -> Dict[str, object]:
    accepted = recipes.hyperparameters(method)
    chosen = {k: v for k, v in COMMON_SETTINGS.items() if k in accepted}
    if epochs is not None and "num_epochs" in accepted:
        chosen["num_epochs"] = epochs
    chosen.update(overrides)
    return chosen


def plot(path, dataset, bands: Dict[str, tuple]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(bands)
    fig, axes = plt.subplots(1, columns, figsize=(4 * columns, 3.4), sharey=True, squeeze=False)
    x_grid = dataset.x_test[:, 0]
    for ax, (name, (mean, std)) in zip(axes[0], bands.items()):
        ax.fill_between(x_grid, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.25, label="±2σ")
        ax.plot(x_grid, mean, color="C0", label="predictive mean")
        ax.plot(x_grid, dataset.f_test, color="k", ls="--", lw=1, label="truth")
        ax.scatter(dataset.x_train[:, 0], dataset.y_train, s=10, color="C3", zorder=3, label="train")
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.set_ylim(-3, 3)
    axes[0][0].set_ylabel("y")
    axes[0][0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", action="append", default=None,
                        help=f"method(s), repeatable or comma-separated; from {recipes.names()} (default: map,ensemble)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of every method (default 0)")
    parser.add_argument("--out", default=None, help="run directory (default runs/regression_1d-<time>)")
    parser.add_argument("--data-dir", default=None,
                        help="data directory (unused: this data set is generated from --seed; kept for a uniform CLI)")
    parser.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {COMMON_SETTINGS['num_epochs']})")
    parser.add_argument("--num-train", type=int, default=40, help="training points (default 40)")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method hyperparameter, e.g. --set ensemble.num_members=10")
    parser.add_argument("--progress", action="store_true", help="show per-epoch progress bars")
    args = parser.parse_args(argv)
    method_names = parse_methods(args.method or ["map,ensemble"])
    overrides = parse_settings(args.set)
    for name in overrides:
        if name not in method_names:
            raise SystemExit(f"--set names method {name!r}, which is not among --method {method_names}")

    dataset = data.make_regression_1d(args.seed, num_train=args.num_train, noise=NOISE_SCALE)
    model = models.mlp((1,), hidden=(50, 50), output_dim=1)
    problem = recipes.Problem(model, likelihoods.gaussian(NOISE_SCALE), priors.gaussian(1.0),
                              dataset.x_train, dataset.y_train)

    config = {
        "experiment": "regression_1d", "seed": args.seed, "methods": method_names, "num_train": args.num_train,
        "noise_scale": NOISE_SCALE, "model": "mlp 1-50-50-1 relu", "prior": "gaussian(1.0)",
        "settings": {name: settings_for(name, args.epochs, overrides.get(name, {})) for name in method_names},
    }
    logger = RunLogger(args.out or default_run_dir("regression_1d"), config)
    key = jax.random.key(args.seed)
    summary: Dict[str, Dict[str, float]] = {}
    bands = {}
    for index, name in enumerate(method_names):
        start = time.perf_counter()
        options = RunOptions(logger=logger, log_fields={"method": name}, progress=args.progress)
        fitted = recipes.run(name, problem, jax.random.fold_in(key, index), options, **config["settings"][name])
        outputs = predictive.predictive_outputs(fitted.apply, fitted.samples, dataset.x_test, sample_chunk=SAMPLE_CHUNK)
        likelihood = fitted.likelihood  # the method's own (e.g. MC dropout's learned noise), which scores its outputs
        scores = {k: float(v) for k, v in predictive.evaluate(likelihood, outputs, dataset.y_test).items()}
        scores["seconds"] = time.perf_counter() - start
        scores["num_samples"] = int(outputs.shape[0])
        scores.update({k: v for k, v in fitted.diagnostics.items() if isinstance(v, (int, float))})
        logger.log({"split": "test", "method": name, **scores})
        summary[name] = scores
        mean, variance = predictive.mixture_moments(likelihood, outputs)
        bands[name] = (np.asarray(mean), np.sqrt(np.asarray(variance)))

    logger.write_summary(summary)
    plot(logger.path("predictive.png"), dataset, bands)
    print(format_table(summary))
    print(f"run directory: {logger.directory}")
    return summary


def format_table(summary: Dict[str, Dict[str, float]]) -> str:
    columns = ["rmse", "test_ll", "coverage_50", "coverage_90", "coverage_95", "seconds"]
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, scores in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{scores.get(c, float('nan')):.3f}" for c in columns) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
