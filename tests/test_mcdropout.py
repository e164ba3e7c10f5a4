"""MC dropout (bdljax.mcdropout): masks, weight samples, the paper's predictive, compile counts."""

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

from bdljax import data, likelihoods, mcdropout, methods, models, predictive, priors
from bdljax.train import fit

INPUT_DIM = 3
HIDDEN = (16, 8)


RATE = 0.2


@functools.lru_cache(maxsize=None)
def _setup(dropout_input=True, per_point_masks=False):
    """A dropout MLP, its parameters and dropout structure, built once per configuration (compiles are slow)."""
    model = models.mlp((INPUT_DIM,), HIDDEN, 1, dropout_input=dropout_input).with_dropout(RATE)
    params = jax.jit(model.init)(jax.random.key(0))
    x = jax.random.normal(jax.random.key(100), (4, INPUT_DIM))
    return model, params, mcdropout.dropout_structure(model.apply, params, x, per_point_masks=per_point_masks)


def _toy_problem(seed=0, num_train=48):
    toy = data.make_regression_1d(seed, num_train=num_train, num_test=20)
    model = models.mlp((1,), (16,), 1)
    return methods.Problem(model, likelihoods.gaussian(0.1), priors.gaussian(1.0), toy.x_train, toy.y_train), toy


def _inputs_with_repeats():
    """Seven test inputs, the first three identical."""
    x = jax.random.normal(jax.random.key(2), (7, INPUT_DIM))
    return x.at[1:3].set(x[0])


def _log_posterior(model):
    return methods.Problem(model, likelihoods.gaussian(1.0), priors.gaussian(1.0), np.zeros((8, INPUT_DIM)),
                           np.zeros(8)).log_posterior()


def _sgd():
    return optax.sgd(1e-2)


def _numpy_forward(params, x, masks, dropout_input=True):
    """The dropout MLP by hand: h ← relu((h ∘ m) W + b), the masks applied to activations (reference)."""
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


def test_structure_finds_the_kernel_rows_each_dropout_feeds():
    _, params, structure = _setup()
    assert structure.form == "weight_sample", structure.reason
    kernels = [i for i, leaf in enumerate(jax.tree.leaves(params)) if leaf.ndim == 2]
    assert [leaf for leaf, _ in structure.folded] == kernels  # dropout before every Dense, input layer included
    assert structure.mask_shapes == ((INPUT_DIM,), (HIDDEN[0],), (HIDDEN[1],))
    # Without input dropout the first kernel is not masked.
    _, params, structure = _setup(dropout_input=False)
    assert [leaf for leaf, _ in structure.folded] == kernels[1:]


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
    x = jax.random.normal(jax.random.key(0), (4, 6))
    model = models.from_flax(module(0.0), x, rebuild=lambda rate: module(rate)).with_dropout(0.4)
    params = model.init(jax.random.key(1))
    structure = mcdropout.dropout_structure(model.apply, params, x)
    assert structure.form == "shared_mask" and structure.reason
    apply = mcdropout.sample_apply(model.apply, structure)
    same = jnp.repeat(x[:1], 3, axis=0)
    outputs = [apply(mcdropout.MCDropoutSample(params, jax.random.key(seed)), same) for seed in range(4)]
    for output in outputs:  # one mask per pass, shared by every test point
        np.testing.assert_allclose(output, output[:1].repeat(3, axis=0), rtol=1e-6)
    assert len({round(float(o[0, 0]), 5) for o in outputs}) > 1  # and a different one per key


@pytest.mark.slow
def test_cnn_dropout_before_convolutions_uses_shared_masks():
    cnn = models.cnn(features=(2, 2), hidden=4, input_shape=(8, 8, 1)).with_dropout(0.3)
    params = jax.jit(cnn.init)(jax.random.key(0))
    structure = mcdropout.dropout_structure(cnn.apply, params, jnp.ones((2, 8, 8, 1)))
    assert structure.form == "shared_mask" and len(structure.rates) == 3
    assert len(structure.folded) == 1  # only the dropout before the last Dense folds


@pytest.mark.parametrize("dropout_input", [True, False])
def test_weight_sample_equals_dropout_network_with_the_same_shared_mask(dropout_input):
    rate = RATE
    model, params, structure = _setup(dropout_input)
    x = jax.random.normal(jax.random.key(7), (11, INPUT_DIM))
    masks_of = jax.jit(mcdropout.dropout_masks, static_argnums=1)
    folded_apply = jax.jit(lambda p, x, key: model.apply(mcdropout.weight_sample(p, key, structure), x))
    intercepted_apply = jax.jit(lambda p, x, key: mcdropout.shared_mask_apply(model.apply, structure)(
        mcdropout.MCDropoutSample(p, key), x))
    for seed in range(3):
        key = jax.random.key(seed)
        masks = masks_of(key, structure)
        for mask in masks:  # inverted dropout: entries 0 or 1/(1 − p)
            mask = np.asarray(mask)
            assert np.all(np.isclose(mask, 0.0) | np.isclose(mask, 1 / (1 - rate)))
        folded = folded_apply(params, x, key)
        by_hand = _numpy_forward(params, x, masks, dropout_input)
        by_interception = intercepted_apply(params, x, key)
        np.testing.assert_allclose(folded, by_hand, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(by_interception, by_hand, rtol=1e-5, atol=1e-5)
        assert not np.allclose(folded, _numpy_forward(params, x, [np.ones(m.shape) for m in masks], dropout_input),
                               atol=1e-3)  # the masks did something


def test_linear_model_dropout_moments_match_closed_form():
    """One Dense layer after input dropout: f = Σ_j x_j w_j m_j + b with m_j ∈ {0, 1/(1−p)}.

    E[f] = x·w + b and Var[f] = p/(1−p) Σ_j x_j² w_j²; MC estimates from T
    weight samples must match within 5 Monte Carlo standard errors.
    """
    rate, num_passes, dim = 0.25, 4000, 6
    model = models.mlp((dim,), (), 1).with_dropout(rate)
    init = jax.jit(model.init)
    draw = jax.jit(jax.vmap(mcdropout.weight_sample, in_axes=(None, 0, None)), static_argnums=2)
    structure = mcdropout.dropout_structure(model.apply, init(jax.random.key(0)), jnp.ones((1, dim)))
    for seed in range(3):
        params = init(jax.random.key(seed))
        x = jax.random.normal(jax.random.key(seed + 10), (1, dim))
        samples = draw(params, jax.random.split(jax.random.key(seed + 20), num_passes), structure)
        outputs = np.asarray(predictive.predictive_outputs(model.apply, samples, x))[:, 0, 0].astype(np.float64)
        w = np.asarray(params["params"]["Dense_0"]["kernel"][:, 0], np.float64)
        b = float(params["params"]["Dense_0"]["bias"][0])
        xs = np.asarray(x[0], np.float64)
        mean, variance = xs @ w + b, rate / (1 - rate) * np.sum(xs**2 * w**2)
        assert abs(outputs.mean() - mean) < 5 * math.sqrt(variance / num_passes)
        # Var of the sample variance ≈ (μ4 − σ⁴)/T; bound μ4 by the empirical fourth central moment.
        fourth = np.mean((outputs - outputs.mean()) ** 4)
        assert abs(outputs.var() - variance) < 5 * math.sqrt(max(fourth - variance**2, 1e-12) / num_passes)


def test_passes_use_different_masks_and_vmap_equals_loop():
    rate, num_passes = RATE, 12
    model, params, structure = _setup()
    transform = mcdropout.build(_log_posterior(model), _sgd(), structure)
    state = transform.init(jax.random.key(0), params)
    samples = transform.sample(state, jax.random.key(1), num_passes)
    apply = mcdropout.sample_apply(model.apply, structure)
    x = _inputs_with_repeats()
    vmapped = predictive.predictive_outputs(apply, samples, x)
    single_pass = jax.jit(apply)
    looped = np.stack([single_pass(jax.tree.map(lambda leaf: leaf[t], samples), x) for t in range(num_passes)])
    np.testing.assert_allclose(vmapped, looped, rtol=1e-5, atol=1e-6)
    # The masks, read back off the kernels' rows: T different ones, each keeping about 1 − p of the rows.
    masks = np.concatenate([
        np.asarray(samples["params"][name]["kernel"][:, :, 0] / params["params"][name]["kernel"][None, :, 0])
        for name in ("Dense_0", "Dense_1", "Dense_2")
    ], axis=1) * (1 - rate)
    assert np.allclose(masks, np.round(masks), atol=1e-4)
    assert len({tuple(row) for row in np.round(masks).astype(int)}) == num_passes
    kept, size = masks.sum(), masks.size
    assert abs(kept / size - (1 - rate)) < 5 * math.sqrt(rate * (1 - rate) / size)
    # With p > 0 the spread of the passes adds to τ⁻¹.
    tau = 10.0
    variance = mcdropout.regression_predictive(vmapped, jnp.zeros(x.shape[0]), tau).variance
    assert np.all(variance > 1 / tau)
    # One mask per pass: identical test inputs (the first three) get identical outputs within a pass.
    np.testing.assert_allclose(vmapped[:, :3], np.repeat(vmapped[:, :1], 3, axis=1), rtol=1e-6)


def test_per_point_masks_vmap_equals_loop_with_the_same_keys():
    num_passes = 6
    model, params, structure = _setup(per_point_masks=True)
    assert structure.form == "per_point"
    x = _inputs_with_repeats()
    transform = mcdropout.build(_log_posterior(model), _sgd(), structure)
    samples = transform.sample(transform.init(jax.random.key(0), params), jax.random.key(1), num_passes)
    assert isinstance(samples, mcdropout.MCDropoutSample)
    apply = mcdropout.sample_apply(model.apply, structure)
    vmapped = predictive.predictive_outputs(apply, samples, x)
    single_pass = jax.jit(lambda p, x, key: model.apply(p, x, rng=key, train=True))
    looped = np.stack([single_pass(params, x, samples.key[t]) for t in range(num_passes)])
    np.testing.assert_allclose(vmapped, looped, rtol=1e-5, atol=1e-6)
    assert len({tuple(np.round(row, 5)) for row in looped[:, :, 0]}) == num_passes
    # Independent masks per point: identical inputs get different outputs within a pass.
    assert not np.allclose(vmapped[:, :3], np.repeat(vmapped[:, :1], 3, axis=1))


def test_zero_rate_collapses_to_the_deterministic_network():
    problem, toy = _toy_problem()
    tau, y_mean, y_std = 50.0, 0.3, 2.0
    fitted = methods.run("mcdropout", problem, jax.random.key(0), dropout_rate=0.0, tau=tau, num_epochs=2,
                         batch_size=16, num_samples=7)
    assert fitted.diagnostics["form"] == "weight_sample" and fitted.diagnostics["tau"] == pytest.approx(tau)
    outputs = predictive.predictive_outputs(fitted.apply, fitted.samples, toy.x_test)
    deterministic = problem.model.apply(fitted.state.params, toy.x_test)
    np.testing.assert_allclose(outputs, jnp.broadcast_to(deterministic, outputs.shape), rtol=1e-6, atol=1e-7)
    result = mcdropout.regression_predictive(outputs, toy.y_test, tau, y_mean, y_std)
    np.testing.assert_allclose(result.mean, y_mean + y_std * deterministic[:, 0], rtol=1e-6)
    np.testing.assert_allclose(result.variance, y_std**2 / tau, rtol=1e-6)


def test_regression_predictive_against_scipy():
    rng = np.random.default_rng(0)
    num_passes, num_points, tau, y_mean, y_std = 7, 5, 3.0, 1.5, 2.5
    outputs = rng.normal(size=(num_passes, num_points, 1)).astype(np.float32)
    y = rng.normal(size=num_points).astype(np.float32)
    result = mcdropout.regression_predictive(outputs, y, tau, y_mean, y_std)
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
    # The same numbers through the shared predictive with the Gaussian likelihood of precision τ.
    shared = predictive.evaluate(likelihoods.gaussian(tau**-0.5), jnp.asarray(outputs), jnp.asarray(y),
                                 y_mean=y_mean, y_std=y_std)
    np.testing.assert_allclose(shared["test_ll"], expected_ll.mean(), rtol=1e-5)


def test_gal_objective_is_the_shared_log_posterior():
    """−N τ · [(1/N) Σ ½(y − ŷ)² + Σ_k λ_k ‖M_k‖²] differs from log p(θ|D) by a constant only."""
    rate, length_scale, tau, num_data = RATE, 0.5, 4.0, 32
    model, params, structure = _setup()
    x = np.asarray(jax.random.normal(jax.random.key(3), (num_data, INPUT_DIM)))
    y = np.asarray(jax.random.normal(jax.random.key(4), (num_data,)))
    problem = methods.Problem(model, likelihoods.gaussian(tau**-0.5), mcdropout.gal_prior(params, structure, length_scale),
                              x, y)
    log_posterior = problem.log_posterior()
    decay_kernel = mcdropout.weight_decay(rate, length_scale, tau, num_data)
    decay_bias = mcdropout.weight_decay(0.0, length_scale, tau, num_data)
    assert mcdropout.prior_precision_from_weight_decay(decay_kernel, tau, num_data) == pytest.approx(
        mcdropout.prior_scale(rate, length_scale) ** -2)

    def gal_objective(p):
        squared = jnp.mean(jnp.square(y - model.apply(p, x)[:, 0]))
        decay = sum(jnp.sum(jnp.square(leaf)) * (decay_kernel if leaf.ndim == 2 else decay_bias)
                    for leaf in jax.tree.leaves(p))
        return 0.5 * squared + decay

    other = jax.tree.map(lambda leaf: leaf + 0.3 * jnp.sign(leaf + 0.1), params)
    # train=False: the objective's deterministic part; with dropout on both sides average the same masks.
    shared_objective = jax.jit(lambda p: log_posterior.log_likelihood(p, (x, y), train=False) + log_posterior.log_prior(p))
    shared = [shared_objective(p) for p in (params, other)]
    gal = [-num_data * tau * jax.jit(gal_objective)(p) for p in (params, other)]
    np.testing.assert_allclose(shared[0] - shared[1], gal[0] - gal[1], rtol=1e-4)


def test_one_compilation_for_training_and_one_for_prediction():
    traces = {"apply": 0}
    base = models.mlp((1,), (8,), 1).with_dropout(0.1)

    def counting_apply(params, x, rng=None, train=False):
        traces["apply"] += 1
        return base.apply(params, x, rng=rng, train=train)

    model = models.Model(base.init, counting_apply)
    problem, toy = _toy_problem(num_train=40)
    problem = problem._replace(model=model)
    params = model.init(jax.random.key(0))
    structure = mcdropout.dropout_structure(model.apply, params, toy.x_train)
    transform = mcdropout.build(problem.log_posterior(), _sgd(), structure)
    state = transform.init(jax.random.key(0), params)
    traces["apply"] = 0
    state, _ = fit(transform, state, (toy.x_train, toy.y_train), key=jax.random.key(1), num_epochs=1,
                   batch_size=10, progress=False)
    after_one = traces["apply"]
    state, history = fit(transform, state, (toy.x_train, toy.y_train), key=jax.random.key(2), num_epochs=4,
                         batch_size=10, progress=False)
    assert after_one == 1 and traces["apply"] == 1 and len(history) == 4
    apply = mcdropout.sample_apply(model.apply, structure)
    sample = jax.jit(transform.sample, static_argnums=2)
    for seed in range(3):
        outputs = predictive.predictive_outputs(apply, sample(state, jax.random.key(seed), 20), toy.x_test)
    assert outputs.shape == (20, toy.x_test.shape[0], 1)
    assert traces["apply"] == 2  # one more trace for every prediction call together


def test_recipe_end_to_end_and_bad_inputs():
    problem, toy = _toy_problem()
    fitted = methods.run("mcdropout", problem, jax.random.key(0), dropout_rate=0.1, length_scale=1e-2, num_epochs=3,
                         batch_size=16, num_samples=5, eval_data=(toy.x_test, toy.y_test), eval_every=3)
    assert [r["split"] for r in fitted.history] == ["train", "train", "train", "eval"]
    assert np.isfinite(fitted.history[-1]["test_ll"])
    assert fitted.diagnostics["tau"] == pytest.approx(100.0, rel=1e-5)  # the problem's σ = 0.1
    assert set(methods.hyperparameters("mcdropout")) >= {"dropout_rate", "tau", "length_scale", "num_samples",
                                                         "per_point_masks"}
    with pytest.raises(ValueError, match="dropout_rate"):
        methods.run("mcdropout", problem, jax.random.key(0), dropout_rate=1.0)
    with pytest.raises(ValueError, match="tau"):
        methods.run("mcdropout", problem._replace(likelihood=likelihoods.heteroscedastic_gaussian(),
                                                   model=models.mlp((1,), (4,), 2)),
                    jax.random.key(0), tau=2.0)
    with pytest.raises(ValueError, match="with_dropout"):
        methods.run("mcdropout", problem._replace(model=models.from_functions(problem.model.init, problem.model.apply)),
                    jax.random.key(0))


def test_protocol_grid_from_the_dataset_folder(shared_data_dir):
    dataset = data.load_uci("concrete", shared_data_dir)
    grid = mcdropout.protocol_grid(dataset, y_std=2.0, epochs_multiplier=10)
    assert len(grid) == len(dataset.dropout_rates) * len(dataset.tau_values)
    assert {g["dropout_rate"] for g in grid} == set(dataset.dropout_rates)
    assert sorted({mcdropout.tau_original(g["tau"], 2.0) for g in grid}) == pytest.approx(sorted(dataset.tau_values))
    assert all(g["num_epochs"] == 10 * dataset.n_epochs and g["length_scale"] == 1e-2 for g in grid)
    assert set(grid[0]) <= set(methods.hyperparameters("mcdropout"))
