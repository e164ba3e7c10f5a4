"""The foundation: log posterior semantics, the protocol, MAP, ensembles, the driver, the predictive."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
import scipy.stats

from bdljax import recipes
from bdljax.methods import ensemble, map_estimate as map_method, wrappers
from bdljax.core import likelihoods, posterior, priors
from bdljax.nn import models
from bdljax.run import predictive, training
from bdljax.core.transform import Transform


def regression_problem(num_points=64, seed=0, output_dim=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_points, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=num_points)).astype(np.float32)
    model = models.mlp((3,), hidden=(16,), output_dim=output_dim)
    return model, x, y


# ---------------------------------------------------------------- likelihoods and priors


def test_likelihoods_match_scipy():
    rng = np.random.default_rng(1)
    mean, y = rng.normal(size=7), rng.normal(size=7)
    np.testing.assert_allclose(likelihoods.gaussian(0.3).log_prob(jnp.asarray(mean)[:, None], jnp.asarray(y)),
                               scipy.stats.norm(mean, 0.3).logpdf(y), rtol=1e-5)
    raw = rng.normal(size=7)
    out = jnp.stack([jnp.asarray(mean), jnp.asarray(raw)], -1)
    scale = np.log1p(np.exp(raw)) + 1e-3
    np.testing.assert_allclose(likelihoods.heteroscedastic_gaussian().log_prob(out, jnp.asarray(y)),
                               scipy.stats.norm(mean, scale).logpdf(y), rtol=1e-5)
    logits, labels = rng.normal(size=(7, 4)), rng.integers(0, 4, 7)
    probs = scipy.special.softmax(logits, -1)
    np.testing.assert_allclose(likelihoods.categorical().log_prob(jnp.asarray(logits), jnp.asarray(labels)),
                               np.log(probs[np.arange(7), labels]), rtol=1e-5)
    logit, bits = rng.normal(size=7) * 5, rng.integers(0, 2, 7)
    np.testing.assert_allclose(likelihoods.bernoulli().log_prob(jnp.asarray(logit), jnp.asarray(bits)),
                               scipy.stats.bernoulli(scipy.special.expit(logit)).logpmf(bits), rtol=1e-4)


def test_gaussian_prior_matches_scipy_with_per_leaf_scales():
    params = {"a": jnp.arange(3.0), "b": {"c": -jnp.ones((2, 2))}}
    prior = priors.gaussian(lambda path, leaf: 2.0 if path.endswith("c") else 0.5)
    expected = scipy.stats.norm(0, 0.5).logpdf(np.arange(3.0)).sum() + scipy.stats.norm(0, 2.0).logpdf(-np.ones(4)).sum()
    np.testing.assert_allclose(prior.log_prob(params), expected, rtol=1e-5)
    tree_prior = priors.gaussian({"a": 0.5, "b": {"c": 2.0}})
    np.testing.assert_allclose(tree_prior.log_prob(params), expected, rtol=1e-5)


def test_bad_labels_and_targets_fail_loudly():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        likelihoods.categorical().check_targets(np.array([0, 1, 3]), (3, 3))
    with pytest.raises(ValueError, match="NaN/inf"):
        likelihoods.gaussian(1.0).check_targets(np.array([0.0, np.nan]), (2, 1))
    with pytest.raises(ValueError, match="output_dim=2"):
        likelihoods.heteroscedastic_gaussian().check_targets(np.zeros(3), (3, 1))
    with pytest.raises(ValueError, match="unknown likelihood"):
        likelihoods.get("poisson")


# ---------------------------------------------------------------- the log posterior


def test_minibatch_log_posterior_is_unbiased_over_an_epoch():
    model, x, y = regression_problem()
    params = model.init(jax.random.key(0))
    prior = priors.gaussian(0.7)
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(0.5), prior, num_data=len(x), temperature=0.5)
    full = log_post(params, (x, y))
    permutation = np.random.default_rng(0).permutation(len(x))
    batch_values = [log_post(params, (x[idx], y[idx])) for idx in permutation.reshape(8, 8)]
    np.testing.assert_allclose(np.mean(batch_values), full, rtol=1e-5)
    # And the full-batch value is (1/T)(log prior + Σ log lik), computed independently.
    mean = np.asarray(model.apply(params, x))[:, 0]
    expected = (scipy.stats.norm(mean, 0.5).logpdf(y).sum() + prior.log_prob(params)) / 0.5
    np.testing.assert_allclose(full, expected, rtol=1e-5)


def test_full_data_log_posterior_in_chunks_equals_one_pass():
    model, x, y = regression_problem()  # 64 rows
    params = model.init(jax.random.key(0))
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(0.5), priors.gaussian(0.7), num_data=len(x),
                                       temperature=0.5)
    one_pass = log_post(params, (x, y))
    for chunk_size in (1, 10, 64, 1000):  # 10 leaves a remainder of 4; 1000 > N is one chunk
        np.testing.assert_allclose(jax.jit(lambda p: log_post.full_data(p, (x, y), chunk_size))(params), one_pass,
                                   rtol=1e-5)
    with pytest.raises(ValueError, match="whole training set"):
        log_post.full_data(params, (x[:10], y[:10]))


def test_num_data_smaller_than_batch_fails():
    model, x, y = regression_problem()
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(1.0), priors.gaussian(1.0), num_data=10)
    with pytest.raises(ValueError, match="num_data=10"):
        log_post(model.init(jax.random.key(0)), (x, y))
    with pytest.raises(ValueError, match="num_data"):
        posterior.log_posterior(model.apply, likelihoods.gaussian(1.0), priors.gaussian(1.0), num_data=0)


def test_traced_num_data_compiles_once_and_matches_static():
    model, x, y = regression_problem()
    params = model.init(jax.random.key(0))
    base = posterior.log_posterior(model.apply, likelihoods.gaussian(0.5), priors.gaussian(1.0), num_data=len(x))
    traces = []

    @jax.jit
    def grown(num_data):
        traces.append(None)
        return base._replace(num_data=num_data)(params, (x[:16], y[:16]))

    for n in (16, 100, 1000):
        static = base._replace(num_data=n)(params, (x[:16], y[:16]))
        np.testing.assert_allclose(grown(jnp.asarray(n)), static, rtol=1e-6)
    assert len(traces) == 1


# ---------------------------------------------------------------- the protocol: MAP and ensembles


def make_map(x, model, lr=1e-2):
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(0.5), priors.gaussian(1.0), num_data=len(x))
    return map_method.build(log_post, optax.adam(lr))


def test_map_states_are_pytrees_that_vmap():
    model, x, y = regression_problem()
    method = make_map(x, model)
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.vmap(method.init)(keys, jax.vmap(model.init)(keys))
    states, info = jax.vmap(method.update, in_axes=(0, None, 0))(states, (x[:8], y[:8]), keys)
    assert info.loss.shape == (3,)
    assert jax.tree.leaves(states.params)[0].shape[0] == 3


def test_vmapped_ensemble_step_equals_separate_member_steps():
    model, x, y = regression_problem()
    member = make_map(x, model)
    num_members = 4
    method = ensemble.build(member, num_members)
    key = jax.random.key(3)
    state = method.init(key, model.init)
    batch_indices = np.random.default_rng(0).integers(0, len(x), (num_members, 8))
    batch = (x[batch_indices], y[batch_indices])
    step_key = jax.random.key(5)
    new_state, info = jax.jit(method.update)(state, batch, step_key)

    member_keys = jax.random.split(step_key, num_members)
    single_update = jax.jit(member.update)
    for k in range(num_members):
        member_state = jax.tree.map(lambda leaf: leaf[k], state)
        expected_state, expected_info = single_update(member_state, (x[batch_indices[k]], y[batch_indices[k]]), member_keys[k])
        for got, want in zip(jax.tree.leaves(new_state), jax.tree.leaves(expected_state)):
            np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(info.loss[k], expected_info.loss, rtol=1e-5)
    # Members start from independent initialisations.
    kernels = jax.tree.leaves(state.params)[1]
    assert not np.allclose(kernels[0], kernels[1])


def test_ensemble_rejects_unstacked_params_and_bad_sample_counts():
    model, x, _ = regression_problem()
    method = ensemble.build(make_map(x, model), 3)
    with pytest.raises(ValueError, match="leading"):
        method.init(jax.random.key(0), model.init(jax.random.key(0)))
    state = method.init(jax.random.key(0), model.init)
    with pytest.raises(ValueError, match="multiple of the 3"):
        method.sample(state, jax.random.key(0), 4)
    assert jax.tree.leaves(method.sample(state, jax.random.key(0), 6))[0].shape[0] == 6


def test_guarded_map_skips_and_counts_nonfinite_steps():
    model, x, y = regression_problem()
    method = wrappers.skip_nonfinite(make_map(x, model))
    state = method.init(jax.random.key(0), model.init)
    bad_y = y[:8].copy()
    bad_y[0] = np.inf  # the runner refuses such data; the guarded transform itself must still not absorb it
    new_state, info = jax.jit(method.update)(state, (x[:8], bad_y), jax.random.key(1))
    assert int(new_state.num_nonfinite) == 1
    assert not np.isfinite(info.loss)
    for got, want in zip(jax.tree.leaves(new_state.inner.params), jax.tree.leaves(state.inner.params)):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- the driver


def counting(method: Transform):
    """The same method, counting how often its update is traced."""
    traces = {"update": 0}

    def update(state, batch, key):
        traces["update"] += 1
        return method.update(state, batch, key)

    return method._replace(update=update), traces


@pytest.mark.parametrize("num_members", [0, 3])
def test_training_step_compiles_once_across_epochs_and_calls(num_members):
    model, x, y = regression_problem()
    method = make_map(x, model)
    if num_members:
        method = ensemble.build(method, num_members)
    method, traces = counting(method)
    state = method.init(jax.random.key(0), model.init)
    result = training.fit(method, state, (x, y), key=jax.random.key(1), num_epochs=5, batch_size=16, progress=False)
    training.fit(method, result.state, (x, y), key=jax.random.key(2), num_epochs=3, batch_size=16, progress=False)
    assert traces["update"] == 1
    assert len(result.history) == 5 and result.history[-1]["loss"] < result.history[0]["loss"]


def test_fit_reduces_loss_and_records_history():
    model, x, y = regression_problem()
    method = make_map(x, model, lr=3e-2)
    state = method.init(jax.random.key(0), model.init)
    evaluations = []
    result = training.fit(method, state, (x, y), key=jax.random.key(1), num_epochs=30, batch_size=16, progress=False,
                       evaluate=lambda s: evaluations.append(1) or {"n": 1}, eval_every=10)
    train_losses = [h["loss"] for h in result.history if h["split"] == "train"]
    assert train_losses[-1] < 0.5 * train_losses[0]
    assert len(evaluations) == 3


def test_fit_validates_data_before_compiling():
    model, x, y = regression_problem()
    method = make_map(x, model)
    state = method.init(jax.random.key(0), model.init)
    kwargs = dict(key=jax.random.key(0), num_epochs=1, progress=False)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="1 NaN/inf"):
        training.fit(method, state, (bad, y), batch_size=8, **kwargs)
    with pytest.raises(ValueError, match="batch_size=100"):
        training.fit(method, state, (x, y), batch_size=100, **kwargs)
    with pytest.raises(ValueError, match="rows"):
        training.fit(method, state, (x, y[:10]), batch_size=8, **kwargs)


def test_fit_reports_nonfinite_losses_instead_of_averaging_them():
    infos = map_method.MAPInfo(jnp.array([1.0, jnp.nan, 3.0]), jnp.zeros(3), jnp.zeros(3), jnp.array([1.0, jnp.inf, 1.0]))
    summary = training.summarise_infos(infos)
    assert summary["loss"] == 2.0 and summary["loss_nonfinite"] == 1 and summary["grad_norm_nonfinite"] == 1


# ---------------------------------------------------------------- registry and bad input


def test_registry_rejects_unknown_names_shapes_and_hyperparameters():
    model, x, y = regression_problem()
    problem = recipes.Problem(model, likelihoods.gaussian(1.0), priors.gaussian(1.0), x, y)
    with pytest.raises(ValueError, match="unknown method 'laplace'"):
        recipes.run("laplace", problem, jax.random.key(0))
    with pytest.raises(ValueError, match="does not take \\['num_memebers'\\]"):
        recipes.run("ensemble", problem, jax.random.key(0), num_memebers=3)
    wrong_shape = problem._replace(x_train=np.zeros((64, 5), np.float32))
    with pytest.raises(ValueError, match="do not fit the model"):
        recipes.run("map", wrong_shape, jax.random.key(0), num_epochs=1)
    classification = recipes.Problem(models.mlp((3,), (8,), 3), likelihoods.categorical(), priors.gaussian(1.0),
                                     x, np.arange(64) % 4)
    with pytest.raises(ValueError, match="labels must lie"):
        recipes.run("map", classification, jax.random.key(0), num_epochs=1)


def test_plain_apply_functions_are_accepted():
    def init(key):
        return {"w": jax.random.normal(key, (3,))}

    def apply(params, x):
        return x @ params["w"]

    model = models.from_functions(init, apply)
    _, x, y = regression_problem()
    problem = recipes.Problem(model, likelihoods.gaussian(0.1), priors.gaussian(10.0), x, y)
    fitted = recipes.run("map", problem, jax.random.key(0), num_epochs=300, batch_size=None, learning_rate=0.05)
    np.testing.assert_allclose(fitted.samples["w"][0], [1.0, -2.0, 0.5], atol=0.05)


def test_learned_noise_starts_at_its_scale_and_can_be_built_under_a_trace():
    base, x, _ = regression_problem()
    likelihood = likelihoods.heteroscedastic_gaussian(min_scale=0.0)
    for scale in (0.05, 1.0, 3.0):
        model = models.with_learned_noise(base, initial_scale=scale)
        _, sigma = likelihood.mean_and_scale(model.apply(model.init(jax.random.key(0)), x[:4]))
        np.testing.assert_allclose(sigma, scale, rtol=1e-5)
    # Building the model inside jit must not touch traced values (recipes build models inside traces).
    out = jax.jit(lambda x: models.with_learned_noise(base, 0.5).apply(
        models.with_learned_noise(base, 0.5).init(jax.random.key(0)), x))(x[:2])
    np.testing.assert_allclose(out[:, 1], np.log(np.expm1(0.5)), rtol=1e-5)
    with pytest.raises(ValueError, match="initial_scale must be positive"):
        models.with_learned_noise(base, initial_scale=0.0)


# ---------------------------------------------------------------- the predictive


def test_chunked_predictive_equals_unchunked_and_reducers_match_numpy():
    model, x, y = regression_problem(output_dim=2)
    samples = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 7))
    full = predictive.predictive_outputs(model.apply, samples, x)
    chunked = predictive.predictive_outputs(model.apply, samples, x, sample_chunk=3, data_chunk=10)
    np.testing.assert_allclose(full, chunked, rtol=1e-5, atol=1e-6)
    assert full.shape == (7, 64, 2)
    likelihood = likelihoods.heteroscedastic_gaussian()
    means, scales = predictive.regression_moments(likelihood, full)
    density = scipy.stats.norm(np.asarray(means), np.asarray(scales)).pdf(y[None])
    np.testing.assert_allclose(predictive.log_predictive_density(likelihood, full, y), np.log(density.mean(0)), rtol=1e-4)
    mix_mean, mix_var = predictive.mixture_moments(likelihood, full)
    np.testing.assert_allclose(mix_mean, np.mean(means, 0), rtol=1e-5)
    np.testing.assert_allclose(mix_var, np.mean(np.asarray(scales) ** 2 + np.asarray(means) ** 2, 0) - np.mean(means, 0) ** 2,
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_running_predictive_equals_batch_predictive(kind):
    rng = np.random.default_rng(0)
    if kind == "regression":
        likelihood, outputs, y = likelihoods.heteroscedastic_gaussian(), rng.normal(size=(12, 20, 2)), rng.normal(size=20)
    else:
        likelihood, outputs, y = likelihoods.categorical(), rng.normal(size=(12, 20, 4)), rng.integers(0, 4, 20)
    outputs = jnp.asarray(outputs, jnp.float32)
    running = predictive.running_init(likelihood, 20, num_classes=4)
    for chunk in jnp.split(outputs, 4):
        running = predictive.running_update(likelihood, running, chunk, y)
    np.testing.assert_allclose(predictive.running_log_predictive_density(running),
                               predictive.log_predictive_density(likelihood, outputs, y), rtol=1e-5)
    mean, variance = predictive.running_moments(running)
    if kind == "regression":
        expected_mean, expected_var = predictive.mixture_moments(likelihood, outputs)
        np.testing.assert_allclose(variance, expected_var, rtol=1e-4)
    else:
        expected_mean = predictive.mean_probabilities(likelihood, outputs)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5)


def test_running_variance_stays_exact_for_targets_far_from_zero():
    """E[y²] − mean² cancels in float32 when |mean| ≫ spread (it went negative); the chunk-merged sum of squared
    deviations matches the centred mixture variance. Means 1000 ± 0.01, σ ≈ 1e-3, in 3 uneven chunks."""
    rng = np.random.default_rng(1)
    likelihood = likelihoods.heteroscedastic_gaussian()
    means = 1000.0 + 0.01 * rng.normal(size=(7, 23))
    raw_scales = rng.normal(-7.0, 0.3, size=(7, 23))  # softplus(−7) ≈ 1e-3
    outputs = jnp.asarray(np.stack([means, raw_scales], axis=-1), jnp.float32)
    running = predictive.running_init(likelihood, 23)
    for chunk in (outputs[:2], outputs[2:3], outputs[3:]):
        running = predictive.running_update(likelihood, running, chunk, np.zeros(23, np.float32))
    _, variance = predictive.running_moments(running)
    # float64 reference from the same float32 outputs. float32 spacing at 1000 is 6.1e-5, so a deviation of
    # ~0.01 carries up to ~0.6 % error and its square ~1.2 %: rtol 3e-2. (E[y²] − mean² was off by ~0.2, 2000x.)
    means64 = np.asarray(outputs[..., 0], np.float64)
    scales64 = np.logaddexp(0.0, np.asarray(outputs[..., 1], np.float64)) + 1e-3
    expected = means64.var(axis=0) + np.mean(scales64**2, axis=0)
    assert np.all(np.asarray(variance) > 0)
    np.testing.assert_allclose(variance, expected, rtol=3e-2)


def test_classification_nll_is_the_exact_log_mean_exp_and_bad_labels_fail():
    """evaluate's NLL is −mean log (1/S) Σ_s p_s(y) from log probabilities (the clipped probability form capped
    it at 27.6 nats); a label the gather would wrap (−1) or truncate (0.9) is refused, not scored."""
    likelihood = likelihoods.categorical()
    outputs = jnp.asarray([[[0.0, 40.0, 0.0]], [[0.0, 60.0, 0.0]]])  # S = 2 samples, 1 point, label 0
    y = np.array([0])
    expected = -(scipy.special.logsumexp([-40.0 - np.log1p(2 * np.exp(-40.0)), -60.0]) - np.log(2))
    assert float(predictive.evaluate(likelihood, outputs, y)["nll"]) == pytest.approx(expected, rel=1e-5)
    for bad in (np.array([-1]), np.array([3]), np.array([0.9])):
        with pytest.raises(ValueError, match="labels"):
            predictive.log_predictive_density(likelihood, outputs, bad)
        with pytest.raises(ValueError, match="labels"):
            predictive.running_update(likelihood, predictive.running_init(likelihood, 1, 3), outputs, bad)


# ---------------------------------------------------------------- the main command


def test_main_command_runs_end_to_end(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "regression_1d.py"
    spec = importlib.util.spec_from_file_location("regression_1d", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--method", "map,ensemble", "--epochs", "30", "--out", str(tmp_path), "--seed", "1",
                           "--set", "ensemble.num_members=3"])
    for name in ("config.json", "metrics.jsonl", "summary.json", "predictive.png"):
        assert (tmp_path / name).exists(), name
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"]["seed"] == 1 and config["environment"]["versions"]["jax"]
    assert config["environment"]["device_count"] >= 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"map", "ensemble"}
    assert all(np.isfinite(summary[m]["test_ll"]) and summary[m]["rmse"] > 0 for m in ("map", "ensemble"))
    assert summary["ensemble"]["num_samples"] == 3
    with pytest.raises(SystemExit):
        module.main(["--method", "nope", "--out", str(tmp_path / "x")])


def test_chunked_epochs_equal_one_scanned_epoch():
    model, x, y = regression_problem()
    method = ensemble.build(make_map(x, model), 2)
    state = method.init(jax.random.key(0), model.init)
    whole = training.fit(method, state, (x, y), key=jax.random.key(1), num_epochs=2, batch_size=8, progress=False)
    for steps_per_call in (1, 3):  # 8 steps per epoch: chunks of 1, or of 3, 3 and 2
        chunked = training.fit(method, state, (x, y), key=jax.random.key(1), num_epochs=2, batch_size=8,
                            progress=False, steps_per_call=steps_per_call)
        for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(chunked.state)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        assert whole.history[-1]["loss"] == pytest.approx(chunked.history[-1]["loss"], rel=1e-4)


def test_with_dropout_returns_the_same_model_for_the_same_rate():
    # jitted predictives take apply as a static argument: a fresh function per call would recompile every time.
    model = models.with_learned_noise(models.mlp((3,), hidden=(8,), output_dim=1))
    assert model.with_dropout(0.1).apply is model.with_dropout(0.1).apply
    assert model.with_dropout(0.1).apply is not model.with_dropout(0.2).apply


def test_targets_that_would_broadcast_fail_while_tracing():
    """y of shape (N, 1) against a (N,) Gaussian mean broadcast to (N, N) and summed every pair, silently."""
    model = models.mlp(input_shape=(2,), hidden=(4,), output_dim=1)
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(1.0), priors.gaussian(1.0), num_data=6)
    params = model.init(jax.random.key(0))
    x = jnp.ones((6, 2))
    assert np.isfinite(float(log_post(params, (x, jnp.zeros(6)))))
    with pytest.raises(ValueError, match=r"shape \(6, 6\), not \(6,\).*y\[:, 0\]"):
        log_post(params, (x, jnp.zeros((6, 1))))
    with pytest.raises(ValueError, match="not"):
        log_post.full_data(params, (x, jnp.zeros((6, 1))))


@pytest.mark.parametrize("bad", [{"batch_size": 2.5}, {"batch_size": 0}, {"steps_per_call": 0}, {"steps_per_call": -1}])
def test_fit_refuses_counts_that_are_not_positive_ints(bad):
    model = models.mlp(input_shape=(1,), hidden=(2,), output_dim=1)
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(1.0), priors.gaussian(1.0), num_data=8)
    method = map_method.build(log_post, optax.adam(1e-2))
    settings = {"batch_size": 4, **bad}
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a positive int"):
        training.fit(method, method.init(jax.random.key(0), model.init), (np.zeros((8, 1)), np.zeros(8)),
                  key=jax.random.key(1), num_epochs=1, progress=False, **settings)
