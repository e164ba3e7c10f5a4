"""The UCI regression benchmark: every bdljax method on every split, as the papers ran it.

Data (Hernández-Lobato & Adams 2015, "Probabilistic Backpropagation"): any folder
``<data dir>/uci/<name>/`` in the standard layout (data.txt, index files, the 20
train/test splits — 5 for protein — and the protocol files n_hidden.txt,
n_epochs.txt, dropout_rates.txt, tau_values.txt). For every split:

1. **Validation.** A random 20% of the training split is held out (the same part
   for every method; numpy generator seeded with ``(seed, split)``). Inputs and
   targets are standardised with the statistics of the remaining 80%
   (:func:`bdljax.data.standardise`). Every point of the method's hyperparameter
   grid is trained on the 80% and scored by its validation log-likelihood in
   original units; the best one is kept (Gal & Ghahramani's protocol, their
   ``experiment.py``). Deep ensembles are scored by the mean of their members'
   own validation log-likelihoods instead (``Protocol.selection``), because the
   mixture's log-mean-exp hides a diverged member (see the ensemble protocol).
2. **Retraining** with the chosen hyperparameters on the whole training split,
   standardised with its own statistics.
3. **Test**: RMSE, the test log-likelihood of the predictive mixture
   (1/S) Σ_s N(y | μ_s, σ_s²) and the coverage of its central 50/90/95% intervals,
   all in original units (:func:`bdljax.run.predictive.evaluate`), plus the method's
   diagnostics (non-finite steps, MCMC acceptance / R̂ / ESS where it reports them).

Model for every method: an MLP with one hidden layer of n_hidden.txt units (50;
100 for protein), ReLU, on standardised inputs and targets.

Protocols (``PROTOCOLS``; a method without an entry gets ``DEFAULT_PROTOCOL``, so
a new method runs unchanged). "Epochs" is n_epochs.txt (40; 20 for protein) times
``--epochs-multiplier``.

* ``map``: Gaussian likelihood with a learned homoscedastic noise
  (:func:`bdljax.nn.models.with_learned_noise`), isotropic Gaussian prior N(0, s²)
  on all weights with s validated on {0.3, 1, 3}; Adam (lr 1e-2), batch 100.
* ``ensemble``: Lakshminarayanan, Pritzel & Blundell (2017), "Simple and
  Scalable Predictive Uncertainty Estimation using Deep Ensembles": 5 networks
  with a heteroscedastic Gaussian output [μ, σ] trained on its negative
  log-likelihood, Adam, batch 100, the same epochs; predictions are the uniform
  mixture of the 5 Gaussians. bdljax's choices where the paper is not followed:
  Adam's learning rate is validated on {1e-3, 3e-3, 1e-2} together with the
  prior scale; every member trains on the shared log posterior, so it has a
  prior, whose scale is validated on {0.3, 1, 3} like MAP's (the paper uses no
  regulariser); adversarial training (their optional extra) is not used. The
  validation score is the members' mean log-likelihood (1/M) Σ_m (1/N) Σ_n
  log N(y_n | μ_m, σ_m²), not the mixture's: with a learning rate too large
  for a dataset one member of five can diverge (naval at 1e-2: one member's
  RMSE 50× the others'), and the mixture's log-mean-exp charges that at most
  log(5/4) nats per point, so the mixture score does not reject the rate.
* ``mcdropout``: Gal & Ghahramani (2016), "Dropout as a Bayesian Approximation",
  as their code (github.com/yaringal/DropoutUncertaintyExps, net/net.py):
  dropout before every dense layer (input included), Adam (Keras defaults:
  lr 1e-3), batch 128, grid over dropout_rates.txt × tau_values.txt, prior length
  scale l = 1e-2 (the recipe's ``length_scale``: :func:`bdljax.recipes.gal.gal_prior`).
  Their training loss is the mean squared error on *standardised* targets plus
  weight decay λ = l²(1 − p)/(2Nτ) with τ from tau_values.txt, i.e. the log
  posterior with a Gaussian likelihood of precision τ on the standardised
  targets: that is the likelihood the problem gets (``likelihood="tau"``), so it
  depends on no split statistic. The test log-likelihood, as theirs, uses
  precision τ in *original* units: log (1/T) Σ_t N(y | ŷ_t, τ⁻¹), with T = 1000
  weight samples (dropout masks) instead of their 10000 passes. Which numbers
  this protocol is comparable with: the paper's Table 1 came from an earlier
  protocol (τ found by Bayesian optimisation with Spearmint, their
  ``experiment_BO.py``, and a fixed rate per dataset in ``net.py``), and the
  README's "10x epochs" column from ``experiment_10x_epochs.py``, which trains
  ``n_epochs * 100`` epochs with that BO τ. Their grid script
  (``experiment.py``), which this one follows, logged concrete −3.13 (10x) and
  −2.98 (100x) (``experiments/published_uci.csv``). ``--set
  mcdropout.concrete=True`` learns the rates instead (concrete dropout,
  :mod:`bdljax.methods.concrete_dropout`; the grid's rate is then the initial one).
* ``mfvi``, ``sgld``, ``sghmc``: the same network and learned noise as MAP, prior
  scale validated on {0.3, 1, 3}, batch 100; the recipes' own defaults for the rest.
* ``hmc``, ``nuts``: the same network and learned noise, full-batch; the prior
  scale is fixed at 1 (validating it would triple the cost of the most expensive
  method; ``--grid hmc.prior_scale=0.3,1,3`` turns validation on). Every chain
  starts at its own MAP solution (Adam, lr 1e-2, batch 100, the recipe's
  ``map_epochs``), as Izmailov et al. (2021) start HMC from SGD solutions.

Hyperparameters: ``--set METHOD.KEY=VALUE`` fixes a value (a recipe
hyperparameter such as ``ensemble.num_members=10``, or a problem-level key:
``prior_scale``, ``tau``, ``n_hidden``); a fixed value is
taken out of the validation grid. ``--grid METHOD.KEY=v1,v2`` replaces a grid.

Splits as a batch dimension: all splits of a dataset have the same sizes, so
the runs of a phase -- every split, and every validation grid point × split --
whose plans share one structure train as ONE compiled program
(:func:`bdljax.run.batched.execute_batched`): init, every epoch and the
posterior samples of all runs vmapped over a leading run axis. Runs are grouped
by their untraced settings and data shapes; the settings a method's recipe
declares traceable (:class:`bdljax.recipes.Recipe`: the learning rate, and the
prior scale and τ where the recipe reads the problem only inside JAX) enter the
program as batched inputs, the others separate the groups. A plan of chains
(HMC/NUTS) runs plan by plan. Each run gives the numbers it gives alone
(tested). ``--split-mode loop`` (alias ``--split-loop``) runs the same compiled
program one run at a time, ``--split-mode recipe`` executes every run's plan on
its own: the same numbers, other wall times. Every summary records its
``split_mode``, the traced settings and the number of compiled groups.

Outputs in the run directory (``--out``): config.json; metrics.jsonl with one
record per (split, grid point) of validation, per epoch of the final training
and per split of the test; ``summary_<method>.json`` per method in the shape
``{"dataset", "method", "splits", "rmse": {"mean", "stderr"}, "test_ll": {...},
"coverage_95": {...}, ...}``; and ``summary.json``, the JSON list of those
per-method summaries (what ``scripts/uci_table.py`` reads). stderr is the
standard error over splits, std(ddof=1)/√n.

    python experiments/uci.py --dataset concrete --method map,ensemble
    python experiments/uci.py --dataset wine-quality-red --method mcdropout --splits 0-4 --epochs-multiplier 10
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import itertools
import json
import math
import time
import zlib
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bdljax import data


from bdljax import recipes
from bdljax.core import likelihoods, priors
from bdljax.evaluate import regression
from bdljax.nn import models
from bdljax.run import batched, predictive
from bdljax.run.runner import execute
from bdljax.run.rundir import RunLogger, default_run_dir, to_json

# ----------------------------------------------------------------------------- protocols

# Keys the script consumes to build the problem; every other key goes to the recipe.
PROBLEM_KEYS = ("prior_scale", "tau", "n_hidden")
# Grid values given as a file name are read from the dataset folder.
FOLDER_GRIDS = {"dropout_rates.txt": "dropout_rates", "tau_values.txt": "tau_values"}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How the benchmark runs one method.

    Attributes:
      likelihood: ``"learned_noise"`` (homoscedastic Gaussian, noise learned with
        the weights), ``"heteroscedastic"`` (network outputs [μ, σ]) or ``"tau"``
        (Gaussian of fixed precision τ, Gal's protocol; see the module docstring).
      prior: ``"isotropic"`` (N(0, prior_scale²) on every parameter) or
        ``"recipe"`` (the recipe builds its prior from its own hyperparameters,
        e.g. MC dropout's ``length_scale``; the problem carries N(0, 1)).
      grid: hyperparameter -> candidate values, validated per split; a value
        that is a file name (``"dropout_rates.txt"``) reads the dataset folder.
      fixed: hyperparameter -> value for every run. Recipe hyperparameters in
        ``fixed`` apply where the method's recipe takes them.
      selection: the validation score that picks a grid point: ``"predictive"``
        (the test log-likelihood of the whole predictive) or ``"members"`` (the
        mean over posterior samples of each sample's own log-likelihood,
        :func:`bdljax.evaluate.regression.component_log_likelihoods`; for ensembles).
      reference: the paper the protocol follows.
    """

    likelihood: str = "learned_noise"
    prior: str = "isotropic"
    grid: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    selection: str = "predictive"
    reference: str = ""


PRIOR_SCALE_GRID = (0.3, 1.0, 3.0)

DEFAULT_PROTOCOL = Protocol(
    likelihood="learned_noise", prior="isotropic", grid={"prior_scale": PRIOR_SCALE_GRID},
    fixed={"batch_size": 100},
    reference="bdljax default: the MAP network, learned noise, validated prior scale",
)

PROTOCOLS: Dict[str, Protocol] = {
    "map": Protocol(
        likelihood="learned_noise", prior="isotropic", grid={"prior_scale": PRIOR_SCALE_GRID},
        fixed={"batch_size": 100, "learning_rate": 1e-2, "optimizer": "adam"},
        reference="MAP baseline on the Hernández-Lobato & Adams (2015) network",
    ),
    "ensemble": Protocol(
        likelihood="heteroscedastic", prior="isotropic",
        grid={"prior_scale": PRIOR_SCALE_GRID, "learning_rate": (1e-3, 3e-3, 1e-2)},
        fixed={"num_members": 5, "batch_size": 100, "optimizer": "adam"}, selection="members",
        reference="Lakshminarayanan, Pritzel & Blundell (2017), deep ensembles",
    ),
    "mcdropout": Protocol(
        likelihood="tau", prior="recipe",
        grid={"dropout_rate": "dropout_rates.txt", "tau": "tau_values.txt"},
        fixed={"batch_size": 128, "learning_rate": 1e-3, "optimizer": "adam", "length_scale": 1e-2,
               "num_samples": 1000},
        reference="Gal & Ghahramani (2016), MC dropout, DropoutUncertaintyExps protocol",
    ),
    "mfvi": Protocol(
        likelihood="learned_noise", prior="isotropic", grid={"prior_scale": PRIOR_SCALE_GRID},
        fixed={"batch_size": 100},
        reference="mean-field VI (Blundell et al. 2015) on the same network, validated prior scale",
    ),
    "sgld": Protocol(
        likelihood="learned_noise", prior="isotropic", grid={"prior_scale": PRIOR_SCALE_GRID},
        fixed={"batch_size": 100},
        reference="SGLD (Welling & Teh 2011) on the same network, validated prior scale",
    ),
    "sghmc": Protocol(
        likelihood="learned_noise", prior="isotropic", grid={"prior_scale": PRIOR_SCALE_GRID},
        fixed={"batch_size": 100},
        reference="SGHMC (Chen et al. 2014) on the same network, validated prior scale",
    ),
    "hmc": Protocol(
        likelihood="learned_noise", prior="isotropic", grid={},
        fixed={"prior_scale": 1.0, "init": "map", "map_learning_rate": 1e-2, "map_batch_size": 100},
        reference="full-batch HMC (Neal 1996; Izmailov et al. 2021) on the same network",
    ),
    "nuts": Protocol(
        likelihood="learned_noise", prior="isotropic", grid={},
        fixed={"prior_scale": 1.0, "init": "map", "map_learning_rate": 1e-2, "map_batch_size": 100},
        reference="NUTS (Hoffman & Gelman 2014) on the same network",
    ),
}

LIKELIHOODS = ("learned_noise", "heteroscedastic", "tau")
PRIORS = ("isotropic", "recipe")
SELECTIONS = ("predictive", "members")


def protocol_for(name: str) -> Protocol:
    """The protocol of ``name``: its entry in ``PROTOCOLS``, else ``DEFAULT_PROTOCOL``."""
    return PROTOCOLS.get(name, DEFAULT_PROTOCOL)


class ResolvedProtocol(NamedTuple):
    """A protocol made concrete for one method and dataset."""

    protocol: Protocol
    grid: Dict[str, Tuple[Any, ...]]  # validated per split; empty: no validation
    fixed: Dict[str, Any]  # values used by every run (problem keys and recipe hyperparameters)
    not_taken: List[str]  # protocol hyperparameters this method's recipe does not accept


def resolve_protocol(name: str, dataset: data.UCIDataset, *, overrides: Mapping[str, Any] = (),
                     grids: Mapping[str, Sequence[Any]] = (), epochs_multiplier: float = 1.0) -> ResolvedProtocol:
    """Concrete grid and fixed values for method ``name`` on ``dataset``.

    ``overrides`` (from ``--set``) fix values and take them out of the grid;
    ``grids`` (from ``--grid``) replace grids. Epochs are n_epochs.txt (or the
    protocol's ``num_epochs``) times ``epochs_multiplier`` when the recipe takes
    ``num_epochs``; an explicit ``--set num_epochs`` is used as given.

    Raises:
      ValueError: a ``--set``/``--grid`` key or a grid key is neither a problem key
        nor a hyperparameter of the recipe (naming the accepted ones), or a grid is empty.
    """
    protocol = protocol_for(name)
    if protocol.selection not in SELECTIONS:
        raise ValueError(f"protocol of {name!r}: unknown selection {protocol.selection!r}; choose one of {SELECTIONS}")
    accepted = recipes.hyperparameters(name)
    overrides, grids = dict(overrides), {k: tuple(v) for k, v in dict(grids).items()}

    def known(key):
        return key in PROBLEM_KEYS or key in accepted

    for origin, keys in (("--set", overrides), ("--grid", grids), ("the protocol's grid", protocol.grid)):
        unknown = sorted(k for k in keys if not known(k))
        if unknown:
            raise ValueError(
                f"{origin} for method {name!r} names {unknown}, which is neither a problem key {list(PROBLEM_KEYS)} "
                f"nor a hyperparameter of its recipe {sorted(accepted)}"
            )
    grid: Dict[str, Tuple[Any, ...]] = {}
    for key, values in {**protocol.grid, **grids}.items():
        if isinstance(values, str):
            if values not in FOLDER_GRIDS:
                raise ValueError(f"grid {key}={values!r}: a file grid must be one of {sorted(FOLDER_GRIDS)}")
            values = getattr(dataset, FOLDER_GRIDS[values])
        values = tuple(values)
        if not values:
            raise ValueError(f"the grid of {name}.{key} is empty")
        grid[key] = values
    fixed = {}
    not_taken = []
    for key, value in protocol.fixed.items():
        if known(key):
            fixed[key] = value
        else:
            not_taken.append(key)
    if "num_epochs" in accepted and "num_epochs" not in overrides:
        base = fixed.get("num_epochs", dataset.n_epochs)
        fixed["num_epochs"] = max(1, int(round(base * epochs_multiplier)))
    fixed.update(overrides)
    for key in overrides:
        grid.pop(key, None)
    for key in grid:
        fixed.pop(key, None)
    return ResolvedProtocol(protocol, grid, fixed, not_taken)


def grid_points(resolved: ResolvedProtocol) -> List[Dict[str, Any]]:
    """Every combination of the grid, in the grid's key order (one empty point when there is no grid)."""
    keys = list(resolved.grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(resolved.grid[k] for k in keys))]


# ----------------------------------------------------------------------------- problem


def build_model(protocol: Protocol, input_dim: int, n_hidden: int) -> models.Model:
    """The MLP D → n_hidden → output (ReLU) with the protocol's output head.

    Cached: every grid point and split shares one model object, hence one ``apply``
    (a static argument of the compiled predictive) and no model built inside a trace.
    """
    return _build_model(protocol.likelihood, int(input_dim), int(n_hidden))


@functools.lru_cache(maxsize=None)
def _build_model(likelihood: str, input_dim: int, n_hidden: int) -> models.Model:
    if likelihood == "learned_noise":
        return models.with_learned_noise(models.mlp((input_dim,), (n_hidden,), 1))
    if likelihood == "heteroscedastic":
        return models.mlp((input_dim,), (n_hidden,), 2)
    if likelihood == "tau":
        return models.mlp((input_dim,), (n_hidden,), 1)
    raise ValueError(f"unknown protocol likelihood {likelihood!r}; choose one of {LIKELIHOODS}")


def training_likelihood(protocol: Protocol, config: Mapping[str, Any]) -> likelihoods.Likelihood:
    """The likelihood the method trains with, on standardised targets.

    For ``"tau"`` this is precision τ on the standardised targets: Gal's training
    objective (see the module docstring). It depends on no split statistic, so
    one compiled program serves every split (τ may be a traced value).
    """
    if protocol.likelihood in ("learned_noise", "heteroscedastic"):
        return likelihoods.heteroscedastic_gaussian()
    return fixed_noise_gaussian(_positive(config, "tau") ** -0.5)  # a host float unless τ itself is traced


def fixed_noise_gaussian(scale) -> likelihoods.Likelihood:
    """``likelihoods.gaussian(scale)`` for a scale that may be a traced value (that one checks ``scale > 0``
    on the host, which a tracer cannot answer; the caller has checked it)."""
    reference = likelihoods.gaussian(1.0)  # its target checks depend on shapes only

    def mean_and_scale(output):
        mean = output[..., 0] if output.ndim > 1 and output.shape[-1] == 1 else output
        return mean, jnp.broadcast_to(jnp.asarray(scale, mean.dtype), mean.shape)

    def log_prob(output, y):
        mean, sigma = mean_and_scale(output)
        return -0.5 * jnp.square((y - mean) / sigma) - jnp.log(sigma) - 0.5 * likelihoods.LOG_2PI

    return likelihoods.Likelihood("gaussian", "regression", log_prob, reference.check_targets, mean_and_scale)


def evaluation_likelihood(protocol: Protocol, config: Mapping[str, Any], y_std: float) -> likelihoods.Likelihood:
    """The likelihood the predictive is scored with, on standardised targets.

    Identical to the training likelihood except for ``"tau"``, where, as in Gal's
    ``net.predict``, τ is the precision in original units: σ = 1/(√τ · y_std)
    standardised, i.e. τ^{-1/2} once mapped back.
    """
    if protocol.likelihood == "tau":
        return likelihoods.gaussian(1.0 / (math.sqrt(float(config["tau"])) * y_std))
    return training_likelihood(protocol, config)


def build_prior(protocol: Protocol, config: Mapping[str, Any]) -> priors.Prior:
    """``"isotropic"``: N(0, prior_scale²) on every parameter (the scale may be a traced value).
    ``"recipe"``: N(0, 1), replaced by the recipe's own prior (MC dropout's ``length_scale``)."""
    if protocol.prior == "isotropic":
        scale = _positive(config, "prior_scale")  # a function of the leaf, so that the scale may be traced
        return priors.gaussian(lambda path, leaf: scale)
    if protocol.prior == "recipe":
        return priors.gaussian(1.0)
    raise ValueError(f"unknown protocol prior {protocol.prior!r}; choose one of {PRIORS}")


def _positive(config: Mapping[str, Any], key: str):
    """``config[key]``, checked positive when it is a concrete number (traced values were checked on the host)."""
    if key not in config:
        raise ValueError(f"the protocol needs a value for {key!r}; give it with --set METHOD.{key}=VALUE")
    value = config[key]
    if isinstance(value, jax.core.Tracer):
        return value
    value = float(value)
    if not value > 0:
        raise ValueError(f"{key} must be positive, got {value}")
    return value


def build_problem(protocol: Protocol, config: Mapping[str, Any], dataset: data.UCIDataset, x, y) -> recipes.Problem:
    """The problem on standardised training data ``(x, y)``: nothing in it depends on the split
    except the data, which is what lets one compiled program train every split."""
    n_hidden = int(config.get("n_hidden", dataset.n_hidden))
    model = build_model(protocol, x.shape[1], n_hidden)
    return recipes.Problem(model, training_likelihood(protocol, config), build_prior(protocol, config), x, y)


def recipe_hyperparameters(name: str, config: Mapping[str, Any]) -> Dict[str, Any]:
    """The part of ``config`` that goes to the method's recipe."""
    accepted = recipes.hyperparameters(name)
    return {k: v for k, v in config.items() if k in accepted and k not in PROBLEM_KEYS}


# ----------------------------------------------------------------------------- splits as a batch axis


class Run(NamedTuple):
    """One training run: a configuration, standardised training data and the run's key."""

    config: Dict[str, Any]
    x: np.ndarray
    y: np.ndarray
    key: jax.Array


def traced_keys(name: str, protocol: Protocol) -> Tuple[str, ...]:
    """The configuration values that may enter one compiled program as batched inputs, as the method's recipe
    declares them (:class:`bdljax.recipes.Recipe`): its own traceable hyperparameters, and the problem-level
    prior scale and noise precision when the recipe reads the problem's prior and likelihood only inside JAX."""
    entry = recipes.RECIPES[name]
    problem_keys = ("prior_scale", "tau") if entry.traceable_problem else ()
    return tuple(entry.traceable) + problem_keys


class Runner:
    """Fits one method on many runs (splits, or grid points × splits), batched where the plans allow.

    Runs are grouped by their untraced settings and data shapes. A group whose
    plan trains by epochs is one compiled program (:func:`bdljax.run.batched.execute_batched`:
    the traced settings and each run's data are batched inputs); a group of
    chains (HMC/NUTS) runs plan by plan. ``mode``: ``vmap`` (all runs of a
    group per call, or ``chunk`` at a time), ``loop`` (one run per call through
    the same program) or ``recipe`` (every run its own :func:`bdljax.run.runner.execute`).
    """

    def __init__(self, name: str, resolved: ResolvedProtocol, dataset: data.UCIDataset, mode: str, chunk: int):
        self.name, self.resolved, self.dataset, self.mode = name, resolved, dataset, mode
        self.chunk = 1 if mode == "loop" else chunk
        self.traced = traced_keys(name, resolved.protocol) if mode != "recipe" else ()
        self.compiled_groups = 0
        self.batched = False

    def plan(self, config: Mapping[str, Any], x, y) -> recipes.Plan:
        """The run's plan; ``config`` may hold traced values for :attr:`traced` keys."""
        problem = build_problem(self.resolved.protocol, config, self.dataset, x, y)
        return recipes.get(self.name)(problem, **recipe_hyperparameters(self.name, config))

    def fit(self, runs: Sequence[Run]) -> List[recipes.Fitted]:
        for run in runs:  # every run's problem is checked before anything compiles
            recipes.check_problem(build_problem(self.resolved.protocol, run.config, self.dataset, run.x, run.y))
        groups: Dict[str, List[int]] = {}
        for i, run in enumerate(runs):
            static = {k: v for k, v in run.config.items() if k not in self.traced}
            groups.setdefault(json.dumps([to_json(static), np.shape(run.x), np.shape(run.y)], sort_keys=True),
                              []).append(i)
        fitted: List[Optional[recipes.Fitted]] = [None] * len(runs)
        for members in groups.values():
            for i, result in zip(members, self._fit_group([runs[i] for i in members])):
                fitted[i] = result
        return fitted

    def _fit_group(self, runs: Sequence[Run]) -> List[recipes.Fitted]:
        first = runs[0]
        traced = [k for k in self.traced if k in first.config]
        static = {k: v for k, v in first.config.items() if k not in traced}
        reference = self.plan(first.config, first.x, first.y)
        if self.mode == "recipe" or not batched.batchable(reference):
            return [execute(self.plan(run.config, run.x, run.y), run.key) for run in runs]
        self.batched = True
        self.compiled_groups += 1
        return batched.execute_batched(
            lambda values, data: self.plan({**static, **values}, *data),
            {k: [float(run.config[k]) for run in runs] for k in traced}, [(run.x, run.y) for run in runs],
            jnp.stack([run.key for run in runs]), chunk=self.chunk)


# ----------------------------------------------------------------------------- evaluation

# Compiled once per (samples, points) shape; the likelihood is applied outside, so a new
# likelihood object (one per grid point, or per split for τ in original units) never recompiles it.
_regression_metrics = jax.jit(regression.regression_metrics)


def evaluate(fitted: recipes.Fitted, likelihood: likelihoods.Likelihood, x, y, y_mean: float, y_std: float,
             sample_chunk: int = 256, per_sample: bool = False) -> Dict[str, float]:
    """RMSE, test log-likelihood and coverage in original units, plus the fit's scalar diagnostics.

    Same numbers as :func:`bdljax.run.predictive.evaluate`: per-sample means and scales
    of the predictive mixture, mapped back to original units (μ·y_std + y_mean, σ·y_std).
    ``per_sample`` adds each sample's (ensemble member's) own log-likelihood as
    ``sample_ll_mean``/``_min``/``_max``.
    """
    outputs = predictive.predictive_outputs(fitted.apply, fitted.samples, jnp.asarray(x), sample_chunk=sample_chunk)
    means, scales = predictive.regression_moments(likelihood, outputs)
    y = jnp.asarray(y)
    means, scales, y = means * y_std + y_mean, scales * y_std, y * y_std + y_mean
    scores = {k: float(v) for k, v in _regression_metrics(means, scales, y).items()}
    if per_sample:
        sample_ll = np.asarray(regression.component_log_likelihoods(means, scales, y))
        scores.update(sample_ll_mean=float(sample_ll.mean()), sample_ll_min=float(sample_ll.min()),
                      sample_ll_max=float(sample_ll.max()))
    scores["num_samples"] = int(outputs.shape[0])
    scores.update(scalar_diagnostics(fitted.diagnostics))
    return scores


def scalar_diagnostics(diagnostics: Mapping[str, Any]) -> Dict[str, float]:
    """Scalars as they are; arrays (per-parameter R̂, ESS, per-chain acceptance) as their mean, min and max."""
    out: Dict[str, float] = {}
    for key, value in diagnostics.items():
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if array.size == 0:
            continue
        if array.ndim == 0:
            out[key] = float(array)
        else:
            finite = array[np.isfinite(array)]
            if finite.size:
                out[f"{key}_mean"], out[f"{key}_min"], out[f"{key}_max"] = (
                    float(finite.mean()), float(finite.min()), float(finite.max()))
    return out


def mean_and_stderr(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """Mean and standard error std(ddof=1)/√n over splits (stderr None for one split)."""
    values = np.asarray(values, dtype=np.float64)
    stderr = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else None
    return {"mean": float(values.mean()), "stderr": stderr}


# ----------------------------------------------------------------------------- the benchmark


class SplitData(NamedTuple):
    index: int
    train: data.StandardisedSplit  # whole training split vs test split
    validation: data.StandardisedSplit  # 80% of the training split vs the other 20%


def prepare_splits(dataset: data.UCIDataset, split_indices: Sequence[int], seed: int,
                   validation_fraction: float) -> List[SplitData]:
    prepared = []
    for index in split_indices:
        raw = data.uci_split(dataset, index)
        held_out = data.validation_split(raw.x_train, raw.y_train, validation_fraction,
                                         key_or_seed=np.random.default_rng([seed, index]))
        prepared.append(SplitData(index, data.standardise(raw), data.standardise(held_out)))
    return prepared


def method_key(seed: int, name: str) -> jax.Array:
    """A key per method that does not depend on which other methods run."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def run_method(name: str, resolved: ResolvedProtocol, dataset: data.UCIDataset, splits: Sequence[SplitData],
               args, logger: RunLogger, log: Callable[[str], None]) -> Dict[str, Any]:
    """Validation, retraining and test of one method on every split; returns its summary."""
    start = time.perf_counter()
    runner = Runner(name, resolved, dataset, args.split_mode, args.split_chunk)
    keys = [jax.random.fold_in(method_key(args.seed, name), split.index) for split in splits]
    points = grid_points(resolved)
    for point in points:  # fail on a bad grid value before anything compiles
        for key in ("prior_scale", "tau"):
            if key in point:
                _positive(point, key)
    per_sample = resolved.protocol.selection == "members"
    chosen: List[Dict[str, Any]] = [dict(points[0]) for _ in splits]
    train_seconds = 0.0
    if len(points) > 1:
        # Every grid point on every split's 80% part: one batch of runs.
        runs = [Run({**resolved.fixed, **point}, s.validation.x_train, s.validation.y_train,
                    jax.random.fold_in(jax.random.fold_in(k, 1), c))
                for c, point in enumerate(points) for s, k in zip(splits, keys)]
        tic = time.perf_counter()
        fits = runner.fit(runs)
        train_seconds += time.perf_counter() - tic
        best = [(-math.inf, None)] * len(splits)
        for r, (run, fitted) in enumerate(zip(runs, fits)):
            c, i = divmod(r, len(splits))
            v = splits[i].validation
            scores = evaluate(fitted, evaluation_likelihood(resolved.protocol, run.config, v.y_std),
                              v.x_test, v.y_test, v.y_mean, v.y_std, per_sample=per_sample)
            score = scores["sample_ll_mean"] if per_sample else scores["test_ll"]
            logger.log({"dataset": dataset.name, "method": name, "uci_split": splits[i].index, "split": "validation",
                        "grid_point": c, **points[c], **scores, "selection_score": score})
            if score > best[i][0]:  # NaN never wins
                best[i] = (score, points[c])
        for i, (value, point) in enumerate(best):
            if point is None:
                raise RuntimeError(f"{name}: no grid point gave a finite validation score ({resolved.protocol.selection}) on split "
                                   f"{splits[i].index}; see metrics.jsonl")
            chosen[i] = point
        log(f"  {name}: validated {len(points)} grid points x {len(splits)} splits in {time.perf_counter() - tic:.1f}s")

    # Retrain on the whole training split with each split's chosen point.
    runs = [Run({**resolved.fixed, **chosen[i]}, s.train.x_train, s.train.y_train, jax.random.fold_in(keys[i], 2))
            for i, s in enumerate(splits)]
    tic = time.perf_counter()
    fits = runner.fit(runs)
    train_seconds += time.perf_counter() - tic
    log(f"  {name}: retrained {len(splits)} splits in {time.perf_counter() - tic:.1f}s")
    results: List[Dict[str, Any]] = []
    for i, (run, fitted) in enumerate(zip(runs, fits)):
        t = splits[i].train
        for record in fitted.history:
            logger.log({"dataset": dataset.name, "method": name, "uci_split": splits[i].index, **record})
        scores = evaluate(fitted, evaluation_likelihood(resolved.protocol, run.config, t.y_std),
                          t.x_test, t.y_test, t.y_mean, t.y_std, per_sample=per_sample)
        logger.log({"dataset": dataset.name, "method": name, "uci_split": splits[i].index, "split": "test",
                    "selected": chosen[i], **scores})
        results.append(scores)
    seconds = time.perf_counter() - start

    metric_names = [k for k in results[0] if all(isinstance(r.get(k), (int, float)) for r in results)]
    summary: Dict[str, Any] = {"dataset": dataset.name, "method": name, "splits": [s.index for s in splits],
                               "num_splits": len(splits)}
    for metric in ("rmse", "test_ll", "coverage_50", "coverage_90", "coverage_95"):
        summary[metric] = mean_and_stderr([r[metric] for r in results])
    summary["per_split"] = {m: [r[m] for r in results] for m in metric_names}
    summary["selected"] = chosen
    summary["protocol"] = {"likelihood": resolved.protocol.likelihood, "prior": resolved.protocol.prior,
                           "selection": resolved.protocol.selection, "grid": resolved.grid, "fixed": resolved.fixed, "reference": resolved.protocol.reference,
                           "not_taken_by_recipe": resolved.not_taken}
    summary["epochs_multiplier"] = args.epochs_multiplier
    summary["split_mode"] = args.split_mode if runner.batched else "recipe"
    summary["traced_settings"] = list(runner.traced) if runner.batched else []
    summary["compiled_groups"] = runner.compiled_groups
    summary["train_seconds"] = train_seconds
    summary["seconds"] = seconds
    return summary


def parse_splits(text: str, num_splits: int) -> List[int]:
    """``"all"`` or a list of indices and ranges, ``"0-4,7"``; every index must exist."""
    if text.strip().lower() == "all":
        return list(range(num_splits))
    indices: List[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                if high < low:
                    raise ValueError
                indices.extend(range(low, high + 1))
            else:
                indices.append(int(part))
        except ValueError:
            raise ValueError(f"--splits: cannot read {part!r}; use 'all' or indices and ranges like 0-4,7") from None
    if not indices:
        raise ValueError("--splits selects no split")
    bad = sorted({i for i in indices if not 0 <= i < num_splits})
    if bad:
        raise ValueError(f"--splits: split(s) {bad} out of range; this dataset has splits 0..{num_splits - 1}")
    return sorted(set(indices))


def parse_methods(values: Sequence[str]) -> List[str]:
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in recipes.RECIPES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {recipes.names()}")
    return list(dict.fromkeys(names))


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_assignments(values: Sequence[str], flag: str, as_list: bool) -> Dict[str, Dict[str, Any]]:
    """``METHOD.KEY=VALUE`` (``as_list``: ``VALUE`` is a comma list) → ``{method: {key: value}}``."""
    out: Dict[str, Dict[str, Any]] = {}
    for item in values:
        try:
            target, value = item.split("=", 1)
            method, key = target.split(".", 1)
        except ValueError:
            raise ValueError(f"{flag} expects METHOD.KEY=VALUE, got {item!r}") from None
        parsed = tuple(_literal(v.strip()) for v in value.split(",") if v.strip()) if as_list else _literal(value)
        out.setdefault(method.strip(), {})[key.strip()] = parsed
    return out


def format_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    def pm(entry):
        stderr = entry["stderr"]
        return f"{entry['mean']:.3f} ± {stderr:.3f}" if stderr is not None else f"{entry['mean']:.3f}"

    lines = ["| dataset | method | splits | RMSE | test LL | coverage 95% | mode | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['dataset']} | {s['method']} | {s['num_splits']} | {pm(s['rmse'])} | {pm(s['test_ll'])} | "
                     f"{pm(s['coverage_95'])} | {s['split_mode']} | {s['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="folder name under <data dir>/uci, e.g. concrete")
    parser.add_argument("--method", action="append", default=None,
                        help=f"method(s), repeatable or comma-separated, from {recipes.names()} (default map,ensemble)")
    parser.add_argument("--splits", default="all", help="'all' (default) or indices and ranges, e.g. 0-4,7")
    parser.add_argument("--data-dir", default=None,
                        help=f"data root holding uci/ (default ${data.DATA_DIR_ENV_VAR}, else ../shared/data)")
    parser.add_argument("--out", default=None, help="run directory (default runs/uci-<dataset>-<time>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation parts and every method (default 0)")
    parser.add_argument("--epochs-multiplier", type=float, default=1.0,
                        help="multiply the epochs of n_epochs.txt (Gal's follow-up used 10); default 1")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="fix a hyperparameter, e.g. --set ensemble.num_members=10 or --set map.prior_scale=1")
    parser.add_argument("--grid", action="append", default=[], metavar="METHOD.KEY=V1,V2",
                        help="replace a validation grid, e.g. --grid map.prior_scale=0.1,1")
    parser.add_argument("--validation-fraction", type=float, default=0.2,
                        help="share of each training split held out for validation (default 0.2)")
    parser.add_argument("--split-mode", choices=("vmap", "loop", "recipe"), default="vmap",
                        help="vmap: splits as a batch axis of one compiled program (default); loop: the same program "
                             "split after split; recipe: bdljax.recipes.run per split")
    parser.add_argument("--split-loop", action="store_true", help="alias of --split-mode loop")
    parser.add_argument("--split-chunk", type=int, default=0,
                        help="at most this many splits per vmapped program, to bound memory (default 0: all)")
    args = parser.parse_args(argv)
    if args.split_loop:
        args.split_mode = "loop"
    try:  # bad flags and bad data fail here, before anything compiles, with the message alone
        setup = prepare(args)
    except (ValueError, data.DataNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    return run(args, *setup)


def prepare(args):
    """Validate flags, load the dataset and its splits, resolve the protocols."""
    method_names = parse_methods(args.method or ["map,ensemble"])
    overrides = parse_assignments(args.set, "--set", as_list=False)
    grids = parse_assignments(args.grid, "--grid", as_list=True)
    for name in list(overrides) + list(grids):
        if name not in method_names:
            raise ValueError(f"--set/--grid names method {name!r}, which is not among --method {method_names}")
    dataset = data.load_uci(args.dataset, args.data_dir)
    split_indices = parse_splits(args.splits, dataset.num_splits)
    resolved = {name: resolve_protocol(name, dataset, overrides=overrides.get(name, {}), grids=grids.get(name, {}),
                                       epochs_multiplier=args.epochs_multiplier) for name in method_names}
    splits = prepare_splits(dataset, split_indices, args.seed, args.validation_fraction)
    if len({s.train.x_train.shape for s in splits}) > 1 and args.split_mode == "vmap":
        args.split_mode = "loop"  # splits of unequal sizes cannot share a batch axis
    return method_names, dataset, splits, resolved


def run(args, method_names, dataset, splits, resolved) -> List[Dict[str, Any]]:
    """Run every method on every split and write the run directory."""
    config = {
        "experiment": "uci", "dataset": dataset.name, "data_directory": str(dataset.directory), "methods": method_names,
        "splits": [s.index for s in splits], "seed": args.seed, "epochs_multiplier": args.epochs_multiplier,
        "validation_fraction": args.validation_fraction, "split_mode": args.split_mode,
        "split_chunk": args.split_chunk, "n_hidden": dataset.n_hidden, "n_epochs": dataset.n_epochs,
        "model": f"mlp {dataset.x.shape[1]}-{dataset.n_hidden}-out relu",
        "protocols": {name: {"likelihood": r.protocol.likelihood, "prior": r.protocol.prior,
                             "selection": r.protocol.selection, "grid": r.grid,
                             "fixed": r.fixed, "not_taken_by_recipe": r.not_taken, "reference": r.protocol.reference}
                      for name, r in resolved.items()},
    }
    out = args.out or default_run_dir(f"uci-{dataset.name}")
    logger = RunLogger(out, config)

    def log(message: str) -> None:
        print(message, flush=True)

    log(f"[uci] {dataset.name}: {len(splits)} split(s), methods {method_names}, run directory {logger.directory}")
    summaries = []
    for name in method_names:
        summary = run_method(name, resolved[name], dataset, splits, args, logger, log)
        (logger.directory / f"summary_{name}.json").write_text(json.dumps(to_json(summary), indent=2))
        summaries.append(summary)
        log(f"[uci] {dataset.name} {name}: test LL {summary['test_ll']['mean']:.3f}, RMSE {summary['rmse']['mean']:.3f} "
            f"({summary['seconds']:.1f}s, {summary['split_mode']})")
    logger.write_summary(summaries)  # a list: one summary per method
    print(format_table(summaries))
    print(f"run directory: {logger.directory}")
    print(json.dumps(to_json([{k: s[k] for k in ("dataset", "method", "num_splits", "rmse", "test_ll", "coverage_95",
                                                  "split_mode", "train_seconds", "seconds")} for s in summaries])))
    return summaries


if __name__ == "__main__":
    main()
