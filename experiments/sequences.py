"""Bayesian recurrent networks on two real sequence tasks.

(a) ``mnist_rows``: MNIST read row by row, 28 steps of 28 pixels, classified
    from the last hidden state of an LSTM (or GRU). Test accuracy, NLL, Brier
    and ECE on MNIST, and out-of-distribution detection of Fashion-MNIST read
    the same way: AUROC/AUPR of the predictive entropy H[E_θ p(y|x,θ)] and of
    the mutual information H[E_θ p] − E_θ H[p] (epistemic part).

(b) ``co2``: the Mauna Loa atmospheric CO2 series (Keeling et al.; weekly
    1958–2001, shipped in ``statsmodels.datasets.co2``), resampled to monthly
    means (the 5 months with no weekly reading are interpolated in time). The
    network reads a window of the last ``window`` standardised monthly
    increments and predicts the next increment with a heteroscedastic
    Gaussian; predicting increments (differencing) lets a network trained on
    1958–1991 forecast levels above anything it saw. The last
    ``test_months`` months are the test period. Scored in ppm:

    * one-step forecasts from the observed past: RMSE, test log-likelihood,
      coverage of the central 50/90/95% intervals;
    * iterated multi-step forecasts from every test origin: each posterior
      sample draws ``paths_per_sample`` trajectories, feeding its sampled
      increments back in (:func:`experiments.forecasting.autoregressive_forecast`);
      the h-step predictive is the mixture of all trajectories' step-h
      Gaussians; metrics per horizon h = 1..``horizon``;
    * a free-running forecast over the whole test period from its start,
      and a figure of its band, and of the one-step band, against the truth.

Every method goes through ``bdljax.recipes.run`` on one shared
:class:`~bdljax.recipes.Problem`, predicts through
:func:`bdljax.run.predictive.predictive_outputs` and is scored by
:mod:`bdljax.run.predictive` / :mod:`bdljax.evaluate`. MC dropout gets the
variational RNN of Gal & Ghahramani (2016) through ``model.with_dropout``.

Example::

    python experiments/sequences.py --task all --method map --method ensemble --epochs 5
    python -m experiments.sequences --task co2 --method map          # the same, as a module
    python experiments/sequences.py --task co2 --method map,ensemble --set ensemble.num_members=5

Writes ``config.json``, ``metrics.jsonl`` (training curves and test
metrics), ``summary.json`` and figures (``co2_forecast.png``,
``mnist_rows_ood.png``) into ``--out``; prints a table per task and, as its
last line, the summary as one JSON object.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

if not __package__:  # run as a file (python experiments/sequences.py): import experiments/ as `python -m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bdljax import data, recipes  # noqa: E402
from bdljax.core import likelihoods, priors  # noqa: E402
from bdljax.evaluate import classification, ood, regression, uncertainty  # noqa: E402
from bdljax.nn import recurrent  # noqa: E402
from bdljax.run import predictive  # noqa: E402
from bdljax.run.options import RunOptions  # noqa: E402
from bdljax.run.rundir import RunLogger, default_run_dir, to_json  # noqa: E402
from experiments import forecasting  # noqa: E402

TASKS = ("mnist_rows", "co2")

# Per-task defaults; the command line overrides them for every task it runs.
TASK_DEFAULTS: Dict[str, Dict[str, Any]] = {
    # 20000 training images: the size of the reported run (runs/sequences-mnist-20k-seed0, 96-97 % accuracy);
    # the full 60000 would triple the fit on the 2 shared CPU cores.
    # dropout_input: MC dropout's time-tied mask on the network's input features (Gal & Ghahramani 2016). Off for
    # the univariate CO2 series: its one input feature is the whole window, so the mask would hide all the data
    # from a fraction p of the passes, not drop some of the weights.
    "mnist_rows": {"epochs": 5, "train_size": 20000, "hidden": (64,), "batch_size": 128, "learning_rate": 2e-3,
                   "dropout_input": True},
    "co2": {"epochs": 150, "train_size": None, "hidden": (32,), "batch_size": 32, "learning_rate": 3e-3,
            "dropout_input": False},
}
COMMON_HYPERPARAMETERS = ("num_epochs", "batch_size", "learning_rate")
COVERAGE_LEVELS = (0.5, 0.9, 0.95)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=(*TASKS, "all"), default="all")
    parser.add_argument("--method", action="append", default=None,
                        help="method name (repeatable or comma list); one of bdljax.recipes.names(). Default: map, ensemble")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default per task: mnist_rows 5, co2 150)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="training examples: MNIST digits drawn at random (default 20000), or the most recent CO2 "
                             "windows before the test period (default all)")
    parser.add_argument("--test-size", type=int, default=10000, help="MNIST and Fashion-MNIST test images (mnist_rows)")
    parser.add_argument("--cell", choices=recurrent.CELLS, default="lstm")
    parser.add_argument("--hidden", type=str, default=None,
                        help="recurrent layer widths, comma list (default: mnist_rows 64, co2 32)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--dropout-input", choices=("on", "off"), default=None,
                        help="mcdropout: also mask the input features, one mask per sequence (default per task: "
                             "mnist_rows on, co2 off, whose single feature is the whole window)")
    parser.add_argument("--prior-scale", type=float, default=1.0,
                        help="Gaussian prior: std of biases, and × 1/√fan_in for kernels (Neal 1996)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="a method-specific hyperparameter, e.g. ensemble.num_members=5 (repeatable)")
    parser.add_argument("--window", type=int, default=24, help="co2: months of past increments the network reads")
    parser.add_argument("--horizon", type=int, default=12, help="co2: multi-step forecast horizon (months)")
    parser.add_argument("--test-months", type=int, default=120, help="co2: length of the test period (months)")
    parser.add_argument("--paths-per-sample", type=int, default=20, help="co2: forecast trajectories per posterior sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=str, default=None, help="run directory (default runs/sequences-<time>)")
    parser.add_argument("--data-dir", type=str, default=None,
                        help="benchmark data root (default: BDLJAX_DATA_DIR or ../shared/data)")
    parser.add_argument("--progress", action="store_true", help="show per-epoch progress bars")
    args = parser.parse_args(argv)

    args.methods = parse_methods(args.method)
    args.tasks = list(TASKS) if args.task == "all" else [args.task]
    args.hyperparameter_overrides = parse_overrides(args.overrides, args.methods)
    if args.hidden is not None:
        args.hidden = parse_widths(args.hidden)
    for name in ("epochs", "train_size", "test_size", "batch_size", "window", "horizon", "test_months", "paths_per_sample"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return args


def parse_methods(values: Optional[List[str]]) -> List[str]:
    """Method names from repeated / comma-separated ``--method``, validated against the registry."""
    names = [name.strip() for value in (values or ["map", "ensemble"]) for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in recipes.names()]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {recipes.names()}")
    return list(dict.fromkeys(names))


def parse_widths(text: str) -> tuple:
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SystemExit(f"--hidden must be a comma list of integers such as 64 or 64,64; got {text!r}") from None
    if not widths or min(widths) < 1:
        raise SystemExit(f"--hidden needs positive widths, got {text!r}")
    return widths


def parse_overrides(items: List[str], method_names: List[str]) -> Dict[str, Dict[str, Any]]:
    """``["ensemble.num_members=5"]`` -> ``{"ensemble": {"num_members": 5}}`` (values parsed as Python literals)."""
    overrides: Dict[str, Dict[str, Any]] = {name: {} for name in method_names}
    for item in items:
        target, sep, text = item.partition("=")
        method, dot, name = target.partition(".")
        if not sep or not dot or not name:
            raise SystemExit(f"--set expects METHOD.NAME=VALUE, got {item!r}")
        if method not in overrides:
            raise SystemExit(f"--set {item!r}: method {method!r} is not among the methods run ({method_names})")
        accepted = recipes.hyperparameters(method)
        if name not in accepted:
            raise SystemExit(f"--set {item!r}: {method} does not take {name!r}; it accepts {sorted(accepted)}")
        try:
            overrides[method][name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[method][name] = text  # a bare word such as an optimiser name
    return overrides


def task_settings(args: argparse.Namespace, task: str) -> Dict[str, Any]:
    """The task's defaults with the command line's choices on top."""
    settings = dict(TASK_DEFAULTS[task])
    for name in ("epochs", "train_size", "batch_size", "learning_rate", "hidden"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.dropout_input is not None:
        settings["dropout_input"] = args.dropout_input == "on"
    return settings


def method_hyperparameters(name: str, settings: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Shared settings a method's recipe accepts, then its ``--set`` overrides."""
    accepted = recipes.hyperparameters(name)
    common = {"num_epochs": settings["epochs"], "batch_size": settings["batch_size"], "learning_rate": settings["learning_rate"]}
    config = {key: value for key, value in common.items() if key in accepted}
    config.update(overrides)
    return config


def fit(name: str, problem: recipes.Problem, key, settings, args, logger, task: str):
    """``recipes.run`` with the shared settings; returns the :class:`~bdljax.recipes.Fitted`, its seconds and the
    hyperparameters used."""
    config = method_hyperparameters(name, settings, args.hyperparameter_overrides[name])
    print(f"[{task}] fitting {name} with {config}", flush=True)
    options = RunOptions(logger=logger, log_fields={"task": task, "method": name}, progress=args.progress)
    start = time.perf_counter()
    fitted = recipes.run(name, problem, key, options, **config)
    jax.block_until_ready(fitted.samples)
    return fitted, time.perf_counter() - start, config


def predict(fitted: recipes.Fitted, x, key) -> jax.Array:
    """Per-sample outputs ``(S, N, ...)``; chunked so that memory stays bounded on a CPU."""
    num_samples = predictive.num_samples_of(fitted.samples)
    return predictive.predictive_outputs(fitted.apply, fitted.samples, jnp.asarray(x), key,
                                         sample_chunk=min(num_samples, 10), data_chunk=2000)


def scalars(values: Dict[str, Any]) -> Dict[str, Any]:
    """Arrays to Python floats (scalars) or lists of floats, in one host transfer."""
    values = jax.device_get(values)
    return {str(k): float(v) if np.ndim(v) == 0 else np.asarray(v, dtype=float).tolist() for k, v in values.items()}


# ---------------------------------------------------------------------------
# (a) MNIST read row by row
# ---------------------------------------------------------------------------


def run_mnist_rows(args, key, logger) -> Dict[str, Any]:
    settings = task_settings(args, "mnist_rows")
    mnist = data.load_mnist(args.data_dir, "mnist")
    fashion = data.load_mnist(args.data_dir, "fashion_mnist")
    rng = np.random.default_rng(args.seed)
    train_size = min(settings["train_size"], mnist.x_train.shape[0])
    test_size = min(args.test_size, mnist.x_test.shape[0], fashion.x_test.shape[0])
    train_index = rng.permutation(mnist.x_train.shape[0])[:train_size]
    test_index = rng.permutation(mnist.x_test.shape[0])[:test_size]
    # (N, 28, 28): 28 time steps of one 28-pixel row each.
    x_train, y_train = mnist.x_train[train_index, ..., 0], mnist.y_train[train_index]
    x_test, y_test = mnist.x_test[test_index, ..., 0], mnist.y_test[test_index]
    x_ood = fashion.x_test[test_index, ..., 0]

    classification.check_labels(y_test, 10, test_size)  # on the host: under jit the value check is skipped
    model = recurrent.rnn(args.cell, (28, 28), settings["hidden"], output_dim=10, dropout_input=settings["dropout_input"])
    likelihood = likelihoods.categorical()
    prior = priors.gaussian(priors.fan_in_scales(args.prior_scale))
    problem = recipes.Problem(model, likelihood, prior, x_train, y_train)

    results = {}
    scores = {}
    for index, name in enumerate(args.methods):
        fit_key, predict_key = jax.random.split(jax.random.fold_in(key, index))
        fitted, fit_seconds, used = fit(name, problem, fit_key, settings, args, logger, "mnist_rows")
        start = time.perf_counter()
        in_key, out_key = jax.random.split(predict_key)
        outputs_in, outputs_out = predict(fitted, x_test, in_key), predict(fitted, x_ood, out_key)
        test_metrics, (entropy_in, entropy_out), (mutual_in, mutual_out) = jax.device_get(
            score_classification(likelihood, outputs_in, outputs_out, y_test))
        result = scalars(test_metrics)
        result.update({
            "ood_auroc_entropy": ood.auroc(entropy_in, entropy_out),
            "ood_aupr_entropy": ood.aupr(entropy_in, entropy_out),
            "ood_auroc_mutual_information": ood.auroc(mutual_in, mutual_out),
            "ood_mean_entropy": float(np.mean(entropy_out)),
            "num_samples": int(outputs_in.shape[0]),
            "fit_seconds": fit_seconds,
            "predict_seconds": time.perf_counter() - start,
            "hyperparameters": used,
            **fitted.diagnostics,
        })
        results[name] = result
        scores[name] = (np.asarray(entropy_in), np.asarray(entropy_out))
        logger.log({"task": "mnist_rows", "method": name, "split": "test", **result})
    plot_entropy_histograms(scores, logger.path("mnist_rows_ood.png"))
    return {"settings": {**settings, "train_size": train_size, "test_size": test_size, "cell": args.cell}, "methods": results}


@functools.partial(jax.jit, static_argnums=0)
def _compiled_scores(likelihood, outputs_in, outputs_out, labels):
    probs_in = predictive.sample_probabilities(likelihood, outputs_in)
    probs_out = predictive.sample_probabilities(likelihood, outputs_out)
    entropies = tuple(uncertainty.predictive_entropy(jnp.mean(p, axis=0)) for p in (probs_in, probs_out))
    return predictive.evaluate(likelihood, outputs_in, labels), entropies


def score_classification(likelihood, outputs_in, outputs_out, labels):
    """Test metrics on in-distribution outputs ``(S, N, C)``, and the OOD scores of both sets.

    Returns ``(metrics, (entropy_in, entropy_out), (mutual_information_in, mutual_information_out))``:
    predictive entropy H[(1/S) Σ_s p_s] (compiled once with the metrics) and mutual information
    H[(1/S) Σ_s p_s] − (1/S) Σ_s H[p_s] per point, in float64 on the host from the logits, where float32
    cannot resolve it for confident points (:func:`bdljax.evaluate.uncertainty.mutual_information_from_logits`).
    """
    test_metrics, entropies = _compiled_scores(likelihood, outputs_in, outputs_out, labels)
    mutual = tuple(uncertainty.mutual_information_from_logits(o) for o in (outputs_in, outputs_out))
    return test_metrics, entropies, mutual


def plot_entropy_histograms(scores: Dict[str, tuple], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(4 * len(scores), 3), squeeze=False)
    bins = np.linspace(0.0, np.log(10.0), 31)
    for ax, (name, (inside, outside)) in zip(axes[0], scores.items()):
        ax.hist(inside, bins=bins, alpha=0.6, density=True, label="MNIST (in)")
        ax.hist(outside, bins=bins, alpha=0.6, density=True, label="Fashion-MNIST (out)")
        ax.set_title(f"{name}: predictive entropy")
        ax.set_xlabel("nats")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------
# (b) Mauna Loa CO2 forecasting
# ---------------------------------------------------------------------------


def load_co2_monthly():
    """Monthly mean CO2 (ppm) and month stamps from ``statsmodels.datasets.co2``; gaps interpolated in time."""
    try:
        from statsmodels.datasets import co2
    except ImportError as error:
        raise SystemExit(
            "the co2 task needs the Mauna Loa series shipped with statsmodels: pip install statsmodels "
            f"(import failed: {error})"
        ) from error
    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate(method="time")
    values = monthly.to_numpy(dtype=np.float64)
    data.check_finite("co2 monthly series", values)
    return values, monthly.index.to_numpy()


class CO2Windows:
    """Windows of standardised increments → next increment, with the levels needed to score in ppm.

    With levels y_0..y_{M−1} and increments d_k = y_{k+1} − y_k, standardised
    with the training increments' mean μ and std σ as z_k = (d_k − μ)/σ, the
    window at origin t is z_{t−L..t−1}, its target z_t, and the level forecast
    is y_{t+1} = y_t + μ + σ z_t: scoring in ppm uses ``y_mean = y_t + μ``
    (per origin) and ``y_std = σ`` in :func:`bdljax.run.predictive.evaluate`.
    """

    def __init__(self, levels: np.ndarray, window: int, test_months: int, train_size: Optional[int]):
        num_levels = levels.shape[0]
        if test_months + window + 2 > num_levels:
            raise SystemExit(f"--test-months {test_months} and --window {window} leave no training data in {num_levels} months")
        increments = np.diff(levels)
        first_test_origin = num_levels - test_months - 1  # its target y_{t+1} is the first test month
        self.mean = float(increments[:first_test_origin].mean())
        self.std = float(increments[:first_test_origin].std())
        self.levels, self.window, self.first_test_origin = levels, window, first_test_origin
        self.z = ((increments - self.mean) / self.std).astype(np.float32)
        train_origins = np.arange(window, first_test_origin)
        if train_size is not None:
            train_origins = train_origins[-train_size:]
        self.train_origins = train_origins
        self.test_origins = np.arange(first_test_origin, num_levels - 1)

    def windows(self, origins: np.ndarray) -> np.ndarray:
        return np.stack([self.z[t - self.window:t] for t in origins])

    def targets(self, origins: np.ndarray) -> np.ndarray:
        return self.z[origins]


@jax.jit
def level_forecast(forecast: forecasting.Forecast, last_levels, mean, std):
    """Step-h Gaussians in ppm, each ``(P, N, H)``, from a :class:`~experiments.forecasting.Forecast` of standardised increments.

    Along a trajectory the level before step h is y_t + Σ_{k<h} (μ + σ draw_k),
    so step h's level is Gaussian with mean that level + μ + σ·mean_h and scale σ·scale_h.
    """
    increments = mean + std * forecast.draws
    before = last_levels[None, :, None] + jnp.cumsum(increments, axis=-1) - increments
    return before + mean + std * forecast.means, std * forecast.scales


def run_co2(args, key, logger) -> Dict[str, Any]:
    settings = task_settings(args, "co2")
    levels, months = load_co2_monthly()
    series = CO2Windows(levels, args.window, args.test_months, settings["train_size"])
    x_train, y_train = series.windows(series.train_origins), series.targets(series.train_origins)
    x_test, y_test = series.windows(series.test_origins), series.targets(series.test_origins)
    last_test_levels = levels[series.test_origins]
    horizon = min(args.horizon, args.test_months)
    multi_origins = series.test_origins[: len(series.test_origins) - horizon + 1]
    multi_truth = np.stack([levels[t + 1:t + 1 + horizon] for t in multi_origins])  # (N, H)
    free_origin = series.test_origins[:1]
    free_truth = levels[free_origin[0] + 1:]

    model = recurrent.rnn(args.cell, (args.window,), settings["hidden"], output_dim=2,
                          dropout_input=settings["dropout_input"])
    likelihood = likelihoods.heteroscedastic_gaussian()
    prior = priors.gaussian(priors.fan_in_scales(args.prior_scale))
    problem = recipes.Problem(model, likelihood, prior, x_train, y_train)

    results, bands = {}, {}
    for index, name in enumerate(args.methods):
        fit_key, predict_key = jax.random.split(jax.random.fold_in(key, 1000 + index))
        fitted, fit_seconds, used = fit(name, problem, fit_key, settings, args, logger, "co2")
        start = time.perf_counter()
        one_key, multi_key, free_key = jax.random.split(predict_key, 3)
        outputs = predict(fitted, x_test, one_key)
        one_step, (one_means, one_scales) = score_one_step(likelihood, outputs, jnp.asarray(y_test),
                                                           jnp.asarray(last_test_levels + series.mean), series.std)
        one_step = scalars(one_step)

        forecast = forecasting.autoregressive_forecast(
            fitted.apply, likelihood, fitted.samples, jnp.asarray(series.windows(multi_origins)), multi_key,
            horizon=horizon, paths_per_sample=args.paths_per_sample)
        means, scales = level_forecast(forecast, levels[multi_origins], series.mean, series.std)
        per_horizon = scalars(score_per_step(means, scales, jnp.asarray(multi_truth)))  # each (H,)
        per_horizon = {h: {k: v[h] for k, v in per_horizon.items()} for h in range(horizon)}
        free = forecasting.autoregressive_forecast(
            fitted.apply, likelihood, fitted.samples, jnp.asarray(series.windows(free_origin)), free_key,
            horizon=len(free_truth), paths_per_sample=args.paths_per_sample)
        free_means, free_scales = level_forecast(free, levels[free_origin], series.mean, series.std)
        free_means, free_scales = free_means[:, 0, :], free_scales[:, 0, :]  # (P, months): one origin, every month
        free_metrics = scalars(score_points(free_means, free_scales, jnp.asarray(free_truth)))

        result = {
            "one_step": one_step,
            "multi_step": {f"h{h + 1}": per_horizon[h] for h in range(horizon)},
            "multi_step_mean_over_horizons": {k: float(np.mean([m[k] for m in per_horizon.values()])) for k in per_horizon[0]},
            "free_running": free_metrics,
            "num_samples": int(outputs.shape[0]),
            "num_paths": int(forecast.means.shape[0]),
            "fit_seconds": fit_seconds,
            "predict_seconds": time.perf_counter() - start,
            "hyperparameters": used,
            **fitted.diagnostics,
        }
        results[name] = result
        logger.log({"task": "co2", "method": name, "split": "test", **result})
        bands[name] = {"one_step": interval_bands(one_means, one_scales), "free_running": interval_bands(free_means, free_scales)}

    test_months = months[series.first_test_origin + 1:]
    plot_co2(bands, months, levels, test_months, logger.path("co2_forecast.png"))
    return {
        "settings": {**settings, "cell": args.cell, "window": args.window, "horizon": horizon,
                     "test_months": args.test_months, "paths_per_sample": args.paths_per_sample,
                     "num_train_windows": int(x_train.shape[0]), "num_test_windows": int(x_test.shape[0]),
                     "num_multi_step_origins": int(multi_origins.shape[0]),
                     "increment_mean_ppm": series.mean, "increment_std_ppm": series.std},
        "methods": results,
    }


@functools.partial(jax.jit, static_argnums=0)
def score_one_step(likelihood, outputs, y, y_mean, y_std):
    """One-step metrics in ppm (:func:`bdljax.run.predictive.evaluate`) and the mixtures' means and scales in ppm."""
    means, scales = predictive.regression_moments(likelihood, outputs)
    scores = predictive.evaluate(likelihood, outputs, y, y_mean=y_mean, y_std=y_std)
    return scores, (means * y_std + y_mean[None], scales * y_std)


@jax.jit
def score_points(means, scales, y):
    """:func:`bdljax.evaluate.regression.regression_metrics` of the mixtures ``(P, N)`` against ``y`` ``(N,)``, compiled once."""
    return regression.regression_metrics(means, scales, y, COVERAGE_LEVELS)


@jax.jit
def score_per_step(means, scales, y):
    """Regression metrics per forecast step: mixtures ``(P, N, H)``, truth ``(N, H)`` -> dict of ``(H,)``."""
    return jax.vmap(score_points, in_axes=(2, 2, 1))(means, scales, y)


@jax.jit
def _band_quantiles(means, scales):
    return regression.mixture_quantile(means, scales, jnp.asarray([0.025, 0.25, 0.5, 0.75, 0.975]))


def interval_bands(means, scales) -> Dict[str, np.ndarray]:
    """Mixture median and central 50% / 95% intervals per point, for plotting."""
    quantiles = np.asarray(_band_quantiles(means, scales))
    return {name: quantiles[i] for i, name in enumerate(("q025", "q25", "median", "q75", "q975"))}


def plot_co2(bands, months, levels, test_months, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(bands)
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 3.2 * len(names)), squeeze=False, sharey="row")
    context = slice(max(0, len(levels) - len(test_months) - 36), None)
    for row, name in enumerate(names):
        for col, (kind, title) in enumerate((("one_step", "one-step forecasts"),
                                             ("free_running", "free-running forecast from the test start"))):
            ax, band = axes[row][col], bands[name][kind]
            ax.plot(months[context], levels[context], color="black", lw=1, label="observed")
            ax.fill_between(test_months, band["q025"], band["q975"], color="C0", alpha=0.25, label="95%")
            ax.fill_between(test_months, band["q25"], band["q75"], color="C0", alpha=0.45, label="50%")
            ax.plot(test_months, band["median"], color="C0", lw=1, label="median")
            ax.set_title(f"{name}: {title}")
            ax.set_ylabel("CO2 (ppm)")
    axes[0][0].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------
# Tables and entry point
# ---------------------------------------------------------------------------


def print_tables(summary: Dict[str, Any]) -> None:
    if "mnist_rows" in summary:
        print("\nMNIST read row by row (in-distribution test) and Fashion-MNIST OOD")
        print(f"{'method':<11}{'acc':>8}{'nll':>8}{'ece':>8}{'brier':>8}{'AUROC(H)':>10}{'AUROC(MI)':>11}{'fit s':>8}")
        for name, r in summary["mnist_rows"]["methods"].items():
            print(f"{name:<11}{r['accuracy']:>8.4f}{r['nll']:>8.4f}{r['ece']:>8.4f}{r['brier']:>8.4f}"
                  f"{r['ood_auroc_entropy']:>10.4f}{r['ood_auroc_mutual_information']:>11.4f}{r['fit_seconds']:>8.1f}")
    if "co2" in summary:
        horizon = summary["co2"]["settings"]["horizon"]
        print("\nMauna Loa CO2 (ppm): one-step, h-step (every test origin) and free-running forecasts")
        print(f"{'method':<11}{'forecast':<14}{'rmse':>8}{'test ll':>9}{'cov50':>7}{'cov90':>7}{'cov95':>7}")
        for name, r in summary["co2"]["methods"].items():
            rows = [("one-step", r["one_step"]), (f"h={horizon}", r["multi_step"][f"h{horizon}"]),
                    ("free-running", r["free_running"])]
            for label, m in rows:
                print(f"{name:<11}{label:<14}{m['rmse']:>8.3f}{m['test_ll']:>9.3f}"
                      f"{m['coverage_50']:>7.3f}{m['coverage_90']:>7.3f}{m['coverage_95']:>7.3f}")


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    out = args.out or default_run_dir("sequences")
    config = {k: v for k, v in vars(args).items() if k not in ("method", "overrides")}
    config["task_settings"] = {task: task_settings(args, task) for task in args.tasks}
    logger = RunLogger(out, config)
    key = jax.random.key(args.seed)
    runners = {"mnist_rows": run_mnist_rows, "co2": run_co2}
    summary = {task: runners[task](args, jax.random.fold_in(key, i), logger) for i, task in enumerate(args.tasks)}
    summary = to_json(summary)
    logger.write_summary(summary)
    print_tables(summary)
    print(f"\nrun directory: {out}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
