"""MC dropout (bdljax.methods.mcdropout): masks as weight samples, the paper's predictive, the prior mapping, compile counts.

Compilation dominates the cost of these tests on CPU, so parameters are drawn
with NumPy (no initialiser to compile), networks are shared between tests and
test inputs are NumPy arrays.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
import scipy.stats

from bdljax import data, recipes
from bdljax.core import likelihoods, priors
from bdljax.core.tree import repeat as repeat_params
from bdljax.methods import mcdropout
from bdljax.nn import dropout, models
from bdljax.recipes import gal
from bdljax.run import predictive
from bdljax.run.runner import RunOptions, execute

INPUT_DIM = 3
HIDDEN = (16, 8)
RATE = 0.2


def _random_params(model, seed, scale=0.5):
    """Parameters of ``model``'s shapes drawn with NumPy: no initialiser to compile."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


@functools.lru_cache(maxsize=None)
def _setup(dropout_input=True, per_point_masks=False, hidden=HIDDEN, rate=RATE):
    """A dropout MLP, its parameters and dropout structure, built once per configuration."""
    model = models.mlp((INPUT_DIM,), hidden, 1, dropout_input=dropout_input).with_dropout(rate)
    params = _random_params(model, 0)
    structure = dropout.dropout_structure(model.apply, params, _inputs(), per_point_masks=per_point_masks)
    return model, params, structure


def _inputs(num_points=7, seed=2):
    """Test inputs, the first three identical (to tell shared from per-point masks)."""
    x = np.random.default_rng(seed).normal(size=(num_points, INPUT_DIM)).astype(np.float32)
    x[1:3] = x[0]
    return x


def _transform(model, structure):
    problem = recipes.Problem(model, likelihoods.gaussian(1.0), priors.gaussian(1.0),
                              np.zeros((8, INPUT_DIM), np.float32), np.zeros(8, np.float32))
    return mcdropout.build(problem.log_posterior(), optax.sgd(1e-2), structure)


def _toy_problem(model=None, seed=0, num_train=48):
    toy = data.make_regression_1d(seed, num_train=num_train, num_test=20)
    model = model or models.mlp((1,), (16,), 1)
    return recipes.Problem(model, likelihoods.gaussian(0.1), priors.gaussian(1.0), toy.x_train, toy.y_train), toy


def _numpy_forward(params, x, masks, dropout_input=True):
    """The dropout MLP by hand, masks on the activations: h ← relu((h ∘ m) W + b) (the reference)."""
    layers = params["params"]
    names = sorted(layers, key=lambda name: int(name.split("_")[1]))
    h = np.asarray(x, np.float64)
    masks = list(masks)
    for depth, name in enumerate(names):
        if depth > 0 or dropout_input:
            h = h * np.asarray(masks.pop(0), np.float64)
        h = h @ np.asarray(layers[name]["kernel"], np.float64) + np.asarray(layers[name]["bias"], np.float64)
        if depth < len(names) - 1:
            h = np.maximum(h, 0.0)
    assert not masks
    return h


# ---------------------------------------------------------------------------
# Structure: which kernel rows each Dropout feeds
# ---------------------------------------------------------------------------


def test_structure_finds_the_kernel_rows_each_dropout_feeds():
    _, params, structure = _setup()
    assert structure.form == "weight_sample", structure.reason
    kernels = [i for i, leaf in enumerate(jax.tree.leaves(params)) if leaf.ndim == 2]
    assert [leaf for leaf, _ in structure.folded] == kernels  # dropout before every Dense, the input layer's too
    assert structure.mask_shapes == ((INPUT_DIM,), (HIDDEN[0],), (HIDDEN[1],))
    _, params, structure = _setup(dropout_input=False)
    assert [leaf for leaf, _ in structure.folded] == kernels[1:]  # no input dropout: first kernel unmasked


class _SkipNet(nn.Module):
    """Dropout whose output feeds a Dense *and* a skip connection: folding into the kernel is not enough."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, train=False):
        h = nn.Dropout(self.rate, deterministic=not train)(x)
        return nn.Dense(1)(h) + jnp.sum(h, axis=-1, keepdims=True)


class _SequenceNet(nn.Module):
    """Dropout on (B, S, D) inputs of a Dense: a mask over (S, D) is no kernel-row mask."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, train=False):
        h = nn.Dropout(self.rate, deterministic=not train)(x.reshape((x.shape[0], 3, -1)))
        return nn.Dense(1)(h).sum(axis=1)


@pytest.mark.parametrize("module", [_SkipNet, _SequenceNet])
def test_unfoldable_dropout_falls_back_to_shared_masks_by_key(module):
    x = np.repeat(np.random.default_rng(0).normal(size=(1, 6)).astype(np.float32), 3, axis=0)
    model = models.from_flax(module(0.0), x, rebuild=module).with_dropout(0.4)
    params = _random_params(model, 1)
    structure = dropout.dropout_structure(model.apply, params, x)
    assert structure.form == "shared_mask" and structure.reason
    samples = dropout.MCDropoutSample(repeat_params(params, 6), jax.random.split(jax.random.key(0), 6))
    outputs = np.asarray(predictive.predictive_outputs(dropout.sample_apply(model.apply, structure), samples, x))
    np.testing.assert_allclose(outputs, np.repeat(outputs[:, :1], 3, axis=1), rtol=1e-6)  # one mask for all points
    assert len(np.unique(outputs[:, 0, 0].round(5))) > 1  # a different one per pass


@pytest.mark.slow
def test_cnn_dropout_before_convolutions_uses_shared_masks():
    cnn = models.cnn(features=(2, 2), hidden=4, input_shape=(8, 8, 1)).with_dropout(0.3)
    structure = dropout.dropout_structure(cnn.apply, _random_params(cnn, 0), jnp.ones((2, 8, 8, 1)))
    assert structure.form == "shared_mask" and len(structure.rates) == 3
    assert len(structure.folded) == 1  # only the dropout before the last Dense folds


# ---------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dropout_input", [True, False])
def test_weight_sample_equals_dropout_network_with_the_same_shared_mask(dropout_input):
    model, params, structure = _setup(dropout_input)
    x = _inputs(11, seed=7)

    @jax.jit
    def three_ways(key):
        masks = dropout.dropout_masks(key, structure)
        folded = model.apply(dropout.weight_sample(params, key, structure), x)
        intercepted = dropout.shared_mask_apply(model.apply, structure)(dropout.MCDropoutSample(params, key), x)
        return masks, folded, intercepted

    for seed in range(3):
        masks, folded, intercepted = three_ways(jax.random.key(seed))
        for mask in masks:  # inverted dropout: entries 0 or 1/(1 − p)
            mask = np.asarray(mask)
            assert np.all(np.isclose(mask, 0.0) | np.isclose(mask, 1 / (1 - RATE)))
        by_hand = _numpy_forward(params, x, masks, dropout_input)
        np.testing.assert_allclose(folded, by_hand, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(intercepted, by_hand, rtol=1e-5, atol=1e-5)
        no_dropout = _numpy_forward(params, x, [np.ones(np.shape(m)) for m in masks], dropout_input)
        assert not np.allclose(folded, no_dropout, atol=1e-3)  # the masks did something


def test_linear_model_dropout_moments_match_closed_form():
    """One Dense layer after input dropout: f = Σ_j x_j w_j m_j + b, m_j ∈ {0, 1/(1−p)}.

    E[f] = x·w + b and Var[f] = p/(1−p) Σ_j x_j² w_j²: the mean and variance
    of T weight samples' outputs must match within 5 Monte Carlo standard
    errors, for several parameter draws.
    """
    rate, num_passes, dim = 0.25, 4000, 6
    model = models.mlp((dim,), (), 1).with_dropout(rate)
    structure = dropout.dropout_structure(model.apply, _random_params(model, 0), np.ones((1, dim), np.float32))
    draw = jax.jit(jax.vmap(dropout.weight_sample, in_axes=(None, 0, None)), static_argnums=2)
    for seed in range(3):
        params = _random_params(model, seed, scale=1.0)
        x = np.random.default_rng(seed + 10).normal(size=(1, dim)).astype(np.float32)
        samples = draw(params, jax.random.split(jax.random.key(seed), num_passes), structure)
        outputs = np.asarray(predictive.predictive_outputs(model.apply, samples, x))[:, 0, 0].astype(np.float64)
        w = np.asarray(params["params"]["Dense_0"]["kernel"][:, 0], np.float64)
        b = float(params["params"]["Dense_0"]["bias"][0])
        mean, variance = x[0] @ w + b, rate / (1 - rate) * np.sum(x[0].astype(np.float64) ** 2 * w**2)
        assert abs(outputs.mean() - mean) < 5 * math.sqrt(variance / num_passes)
        fourth = np.mean((outputs - outputs.mean()) ** 4)  # Var of the sample variance ≈ (μ₄ − σ⁴)/T
        assert abs(outputs.var() - variance) < 5 * math.sqrt((fourth - variance**2) / num_passes)


def test_passes_use_different_masks_and_vmap_equals_loop():
    num_passes = 12
    model, params, structure = _setup()
    transform = _transform(model, structure)
    state = transform.init(jax.random.key(0), params)
    samples = jax.jit(transform.sample, static_argnums=2)(state, jax.random.key(1), num_passes)
    apply = dropout.sample_apply(model.apply, structure)
    x = _inputs()
    vmapped = np.asarray(predictive.predictive_outputs(apply, samples, x))
    single_pass = jax.jit(apply)
    looped = np.stack([single_pass(jax.tree.map(lambda leaf: leaf[t], samples), x) for t in range(num_passes)])
    np.testing.assert_allclose(vmapped, looped, rtol=1e-5, atol=1e-6)
    # The masks, read back off the kernels' rows: T different ones, each keeping about 1 − p of the rows.
    kernels = [(samples["params"][name]["kernel"][:, :, 0], params["params"][name]["kernel"][:, 0])
               for name in ("Dense_0", "Dense_1", "Dense_2")]
    kept = np.concatenate([np.asarray(sample / kernel[None]) for sample, kernel in kernels], axis=1) * (1 - RATE)
    np.testing.assert_allclose(kept, np.round(kept), atol=1e-4)
    assert len({tuple(row) for row in np.round(kept).astype(int)}) == num_passes
    assert abs(kept.mean() - (1 - RATE)) < 5 * math.sqrt(RATE * (1 - RATE) / kept.size)
    # One mask per pass: identical inputs (the first three) get identical outputs within a pass.
    np.testing.assert_allclose(vmapped[:, :3], np.repeat(vmapped[:, :1], 3, axis=1), rtol=1e-6)
    # With p > 0 the spread of the passes adds to τ⁻¹.
    tau = 10.0
    assert np.all(np.asarray(gal.regression_predictive(vmapped, np.zeros(x.shape[0]), tau).variance) > 1 / tau)


def test_per_point_masks_vmap_equals_loop_with_the_same_keys():
    num_passes = 6
    # One dropout layer: the random-bit code of training-mode dropout is slow to compile on CPU.
    model, params, structure = _setup(dropout_input=False, per_point_masks=True, hidden=(16,))
    assert structure.form == "per_point"
    transform = _transform(model, structure)
    samples = transform.sample(transform.init(jax.random.key(0), params), jax.random.key(1), num_passes)
    assert isinstance(samples, dropout.MCDropoutSample)
    x = _inputs()
    vmapped = np.asarray(predictive.predictive_outputs(dropout.sample_apply(model.apply, structure), samples, x))
    single_pass = jax.jit(lambda p, x, key: model.apply(p, x, rng=key, train=True))
    looped = np.stack([single_pass(params, x, samples.key[t]) for t in range(num_passes)])
    np.testing.assert_allclose(vmapped, looped, rtol=1e-5, atol=1e-6)
    assert len({tuple(row) for row in looped[:, :, 0].round(5)}) == num_passes
    # Independent masks per point: identical inputs get different outputs within a pass.
    assert not np.allclose(vmapped[:, :3], np.repeat(vmapped[:, :1], 3, axis=1))


# ---------------------------------------------------------------------------
# The paper's predictive and objective
# ---------------------------------------------------------------------------


def test_regression_predictive_against_scipy():
    rng = np.random.default_rng(0)
    num_passes, num_points, tau, y_mean, y_std = 7, 5, 3.0, 1.5, 2.5
    outputs = rng.normal(size=(num_passes, num_points, 1)).astype(np.float32)
    y = rng.normal(size=num_points).astype(np.float32)
    result = gal.regression_predictive(outputs, y, tau, y_mean, y_std)
    predictions = y_mean + y_std * outputs[..., 0].astype(np.float64)
    targets = y_mean + y_std * y.astype(np.float64)
    noise_scale = y_std / math.sqrt(tau)  # τ in original units is τ / y_std²
    log_components = scipy.stats.norm.logpdf(targets[None], loc=predictions, scale=noise_scale)
    expected_ll = scipy.special.logsumexp(log_components, axis=0) - math.log(num_passes)
    np.testing.assert_allclose(result.log_likelihood, expected_ll, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.test_log_likelihood, expected_ll.mean(), rtol=1e-5)
    np.testing.assert_allclose(result.mean, predictions.mean(0), rtol=1e-5)
    np.testing.assert_allclose(result.variance, noise_scale**2 + predictions.var(0), rtol=1e-5)
    np.testing.assert_allclose(result.rmse, np.sqrt(np.mean((predictions.mean(0) - targets) ** 2)), rtol=1e-5)


def test_gal_objective_is_the_shared_log_posterior():
    """−N τ · [(1/N) Σ ½(y − ŷ)² + Σ_k λ_k ‖M_k‖²] and log p(θ|D) differ by a constant only."""
    length_scale, tau, num_data = 0.5, 4.0, 32
    model, params, structure = _setup()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(num_data, INPUT_DIM)).astype(np.float32)
    y = rng.normal(size=num_data).astype(np.float32)
    prior = gal.gal_prior(params, structure, length_scale)
    log_posterior = recipes.Problem(model, likelihoods.gaussian(tau**-0.5), prior, x, y).log_posterior()
    decay_kernel = gal.weight_decay(RATE, length_scale, tau, num_data)
    decay_other = gal.weight_decay(0.0, length_scale, tau, num_data)  # biases: no dropout, no (1 − p)
    assert gal.prior_precision_from_weight_decay(decay_kernel, tau, num_data) == pytest.approx(
        gal.prior_scale(RATE, length_scale) ** -2)

    @jax.jit
    def both(p):
        # train=False: the deterministic part of both objectives (dropout on, both average the same masks).
        shared = log_posterior.log_likelihood(p, (x, y), train=False) + log_posterior.log_prior(p)
        squared = jnp.mean(jnp.square(y - model.apply(p, x)[:, 0]))
        decay = sum(jnp.sum(jnp.square(leaf)) * (decay_kernel if leaf.ndim == 2 else decay_other)
                    for leaf in jax.tree.leaves(p))
        return shared, -num_data * tau * (0.5 * squared + decay)

    (shared_0, gal_0), (shared_1, gal_1) = both(params), both(_random_params(model, 5))
    np.testing.assert_allclose(shared_0 - shared_1, gal_0 - gal_1, rtol=1e-4)


# ---------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------


def test_zero_rate_collapses_to_the_deterministic_network():
    model, params, structure = _setup(rate=0.0)
    assert structure.form == "weight_sample" and not structure.rates  # p = 0: no Dropout layer at all
    transform = _transform(model, structure)
    samples = transform.sample(transform.init(jax.random.key(0), params), jax.random.key(1), 7)
    x = _inputs()
    outputs = predictive.predictive_outputs(dropout.sample_apply(model.apply, structure), samples, x)
    deterministic = _numpy_forward(params, x, [np.ones(width) for width in (INPUT_DIM, *HIDDEN)])
    np.testing.assert_allclose(outputs, np.broadcast_to(deterministic, outputs.shape), rtol=1e-5, atol=1e-6)
    tau, y_mean, y_std = 50.0, 0.3, 2.0
    result = gal.regression_predictive(outputs, np.zeros(x.shape[0], np.float32), tau, y_mean, y_std)
    np.testing.assert_allclose(result.mean, y_mean + y_std * deterministic[:, 0], rtol=1e-5)
    np.testing.assert_allclose(result.variance, y_std**2 / tau, rtol=1e-6)  # τ⁻¹ alone, in original units


def test_recipe_compiles_training_and_prediction_once():
    """Through the runner: one trace of the update and of the training network over all epochs and two executions
    of the plan, one trace of the predictive."""
    traces = {"train": 0, "predict": 0, "update": 0}
    base = models.mlp((1,), (8,), 1)

    def counting(model):
        def apply(params, x, rng=None, train=False):
            traces["train" if train else "predict"] += 1
            return model.apply(params, x, rng=rng, train=train)

        return models.Model(model.init, apply, lambda rate: counting(base.with_dropout(rate)))

    problem, toy = _toy_problem(counting(base))
    plan = recipes.plan("mcdropout", problem, dropout_rate=0.1, tau=50.0, length_scale=1e-2, num_epochs=4,
                        batch_size=16, num_samples=5)
    update = plan.transform.update

    def counting_update(state, batch, key):
        traces["update"] += 1
        return update(state, batch, key)

    plan = plan._replace(transform=plan.transform._replace(update=counting_update))
    options = RunOptions(eval_data=(toy.x_test, toy.y_test), eval_every=2)
    first, fitted = (execute(plan, jax.random.key(seed), options) for seed in (1, 0))
    assert traces["update"] == 1 and not np.array_equal(first.samples["params"]["Dense_0"]["bias"],
                                                        fitted.samples["params"]["Dense_0"]["bias"])
    assert [r["split"] for r in fitted.history] == ["train", "train", "eval", "train", "train", "eval"]
    assert fitted.diagnostics["tau"] == pytest.approx(50.0, rel=1e-5) and fitted.diagnostics["form"] == "weight_sample"
    # The evaluation during training scored the predictive with the τ it trained with, as the paper's formula does.
    outputs = predictive.predictive_outputs(fitted.apply, fitted.samples, toy.x_test)
    paper = gal.regression_predictive(outputs, toy.y_test, 50.0)
    np.testing.assert_allclose(fitted.history[-1]["test_ll"], paper.test_log_likelihood, rtol=1e-4)
    assert traces["train"] == 1  # the epoch, compiled once for all four epochs and both executions
    after_fit = traces["predict"]
    for seed in range(3):  # new inputs and new samples of the same shapes: no new trace
        samples = jax.tree.map(lambda leaf: leaf * (1.0 + seed), fitted.samples)
        predictive.predictive_outputs(fitted.apply, samples, toy.x_test + seed)
    assert traces["predict"] == after_fit


def test_recipe_rejects_bad_inputs():
    problem, _ = _toy_problem()
    assert {"dropout_rate", "tau", "length_scale", "num_samples", "per_point_masks"} <= set(
        recipes.hyperparameters("mcdropout"))
    with pytest.raises(ValueError, match="dropout_rate"):
        recipes.run("mcdropout", problem, jax.random.key(0), dropout_rate=1.0)
    with pytest.raises(ValueError, match="tau"):
        recipes.run("mcdropout", problem._replace(likelihood=likelihoods.heteroscedastic_gaussian(),
                                                   model=models.mlp((1,), (4,), 2)), jax.random.key(0), tau=2.0)
    with pytest.raises(ValueError, match="with_dropout"):
        recipes.run("mcdropout", problem._replace(model=models.from_functions(problem.model.init, problem.model.apply)),
                    jax.random.key(0))


def test_protocol_grid_from_the_dataset_folder(shared_data_dir):
    dataset = data.load_uci("concrete", shared_data_dir)
    grid = gal.protocol_grid(dataset, y_std=2.0, epochs_multiplier=10)
    assert len(grid) == len(dataset.dropout_rates) * len(dataset.tau_values)
    assert {g["dropout_rate"] for g in grid} == set(dataset.dropout_rates)
    assert sorted({gal.tau_original(g["tau"], 2.0) for g in grid}) == pytest.approx(sorted(dataset.tau_values))
    assert all(g["num_epochs"] == 10 * dataset.n_epochs and g["length_scale"] == 1e-2 for g in grid)
    assert set(grid[0]) <= set(recipes.hyperparameters("mcdropout"))
