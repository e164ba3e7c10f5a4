"""Mean-field VI (bdljax.methods.mfvi) and its Bayesian layers (bdljax.nn.bayesian_layers), against closed forms.

The reference problem is conjugate Bayesian linear regression with
correlated inputs: prior θ ~ N(0, diag s²), y | θ ~ N(Φθ, σ² I), so the
posterior is N(m, Λ⁻¹) with Λ = ΦᵀΦ/σ² + diag(1/s²), m = Λ⁻¹Φᵀy/σ². The
tempered target p_T ∝ (likelihood · prior)^{1/T} is N(m, TΛ⁻¹), and the
optimum of mean-field VI against it is known: mean m, variances T/Λ_jj.

Tolerances: trained optima are compared across R independent runs
(vmapped): the mean over runs must lie within Z standard errors of the
closed form (the standard error estimated from the runs' spread), and every
run must have converged to a small fraction of the posterior width (so
that a large spread cannot make the first check vacuous). Monte Carlo
identities use standard errors estimated from the draws themselves.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from bdljax import recipes
from bdljax.core import likelihoods, posterior, priors
from bdljax.core.posterior import LogPosterior
from bdljax.methods import ensemble, mfvi, wrappers
from bdljax.nn import bayesian_layers, models
from bdljax.run import training
from bdljax.run.runner import RunOptions, execute

Z = 5.0  # standard errors allowed for Monte Carlo comparisons
NOISE = 0.5
NUM_POINTS = 40
NUM_FEATURES = 3
PRIOR_W, PRIOR_B = 1.0, 2.0


def prior_scale(path, leaf):
    return PRIOR_B if path.split("/")[-1] in ("b", "bias") else PRIOR_W


PRIOR = priors.gaussian(prior_scale)
LIKELIHOOD = likelihoods.gaussian(NOISE)


def regression_data(num_points=NUM_POINTS, seed=0, correlated=True):
    """Inputs with correlations 0.9/0.5/0.7 and an offset, so the posterior is strongly correlated.

    ``correlated=False``: independent centred inputs, a well-conditioned posterior that
    optimisers reach quickly (for tests about scaling rather than about correlation).
    """
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.9, 0.5], [0.9, 1.0, 0.7], [0.5, 0.7, 1.0]]) if correlated else np.eye(NUM_FEATURES)
    x = rng.normal(size=(num_points, NUM_FEATURES)) @ np.linalg.cholesky(cov).T + (0.5 if correlated else 0.0)
    y = x @ np.array([1.0, -1.0, 0.5]) + 0.3 + NOISE * rng.normal(size=num_points)
    return x.astype(np.float32), y.astype(np.float32)


def exact_posterior(x, y, num_data=None):
    """(m, Λ) of the posterior over [w, b], float64; ``num_data`` rescales the likelihood by num_data/len(x)."""
    weight = 1.0 if num_data is None else num_data / len(x)
    phi = np.concatenate([x, np.ones((len(x), 1))], 1).astype(np.float64)
    precision = weight * phi.T @ phi / NOISE**2 + np.diag([PRIOR_W**-2] * NUM_FEATURES + [PRIOR_B**-2])
    mean = np.linalg.solve(precision, weight * phi.T @ y.astype(np.float64) / NOISE**2)
    return mean, precision


def log_joint(theta, x, y):
    """log p(y|θ) + log p(θ) for the linear model, float64."""
    phi = np.concatenate([x, np.ones((len(x), 1))], 1).astype(np.float64)
    resid = y - phi @ theta
    log_lik = np.sum(-0.5 * (resid / NOISE) ** 2 - math.log(NOISE) - 0.5 * math.log(2 * math.pi))
    scales = np.array([PRIOR_W] * NUM_FEATURES + [PRIOR_B])
    log_prior = np.sum(-0.5 * (theta / scales) ** 2 - np.log(scales) - 0.5 * math.log(2 * math.pi))
    return log_lik + log_prior


# The linear "network" as a plain pair of functions, and the same network from a Bayesian Dense layer.
LINEAR = models.from_functions(
    lambda key: {"w": jnp.zeros(NUM_FEATURES), "b": jnp.zeros(())}, lambda params, x: x @ params["w"] + params["b"]
)

# A bare Bayesian layer is a whole network: x ↦ x W + b.
BAYESIAN_LINEAR = bayesian_layers.from_flax(bayesian_layers.Dense(1), jnp.zeros((1, NUM_FEATURES)))


def flat_linear(tree):
    """[w, b] along the last axis (leading axes kept) for either linear network."""
    if "w" in tree:
        return jnp.concatenate([tree["w"], tree["b"][..., None]], -1)
    dense = tree["params"]
    return jnp.concatenate([dense["kernel"][..., 0], dense["bias"]], -1)


def unflat_linear(model, vector):
    vector = jnp.asarray(vector, jnp.float32)
    if model is LINEAR:
        return {"w": vector[:NUM_FEATURES], "b": vector[NUM_FEATURES]}
    return {"params": {"kernel": vector[:NUM_FEATURES, None], "bias": vector[NUM_FEATURES:]}}


def assert_converged_to(runs, target, scale, max_error=0.25, num_checks=48, what=""):
    """Runs (R, d) against a closed-form target (d,).

    The mean over runs must lie within a Student-t multiple of its standard error
    (estimated from the runs' spread; family-wise false-alarm rate 1e-3 over
    ``num_checks`` such comparisons in this file), and every run within
    ``max_error``·scale of the target.
    """
    runs = np.asarray(runs, np.float64)
    num_runs = runs.shape[0]
    standard_error = runs.std(0, ddof=1) / math.sqrt(num_runs)
    multiple = scipy.stats.t.ppf(1 - 1e-3 / (2 * num_checks), num_runs - 1)
    np.testing.assert_array_less(np.abs(runs.mean(0) - target), multiple * standard_error + 1e-6 * np.abs(target),
                                 err_msg=f"{what}: mean over runs is off the closed form by more than {multiple:.1f} SE")
    np.testing.assert_array_less(np.abs(runs - target), np.broadcast_to(max_error * scale, runs.shape),
                                 err_msg=f"{what}: a run did not converge to within {max_error} of the scale")


NUM_RUNS = 16
NUM_STEPS = 1000
TEMPERATURES = (1.0, 0.5)


def train_runs(model, variational_apply=None, scale_transform="softplus", x=None, y=None, num_data=NUM_POINTS):
    """R independent full-batch VI runs per temperature, as ONE compiled program: vmap over (T, seed) of a scan."""
    x, y = (regression_data() if x is None else (x, y))
    traces = []

    def run(temperature, key):
        traces.append(1)
        # Temperature is traced here so that every (T, seed) pair shares one compilation.
        log_post = LogPosterior(model.apply, LIKELIHOOD, PRIOR, num_data, temperature)
        method = mfvi.build(log_post, optax.adam(optax.cosine_decay_schedule(0.05, NUM_STEPS)), num_mc_samples=4,
                            init_scale=0.1, scale_transform=scale_transform, variational_apply=variational_apply)
        state = method.init(key, unflat_linear(model, jnp.zeros(NUM_FEATURES + 1)))  # every run from the same start
        state, infos = jax.lax.scan(lambda s, k: method.update(s, (x, y), k), state, jax.random.split(key, NUM_STEPS))
        return state, infos

    temperatures = jnp.repeat(jnp.asarray(TEMPERATURES), NUM_RUNS)
    keys = jax.random.split(jax.random.key(17), temperatures.shape[0])
    state, infos = jax.jit(jax.vmap(run))(temperatures, keys)
    assert len(traces) == 1  # one trace, one compilation, for all runs and temperatures
    means = np.asarray(flat_linear(state.mean)).reshape(len(TEMPERATURES), NUM_RUNS, -1)
    variances = np.asarray(flat_linear(mfvi.constrain_scale(state.raw_scale, scale_transform)) ** 2)
    variances = variances.reshape(len(TEMPERATURES), NUM_RUNS, -1)
    return means, variances, state, infos


@pytest.mark.parametrize("model_name, estimator, scale_transform", [
    ("linear", None, "exp"),
    # The Bayesian-layer estimators end to end (their output distributions are checked exactly, and fast, below).
    pytest.param("bayesian_linear", bayesian_layers.FLIPOUT, "softplus", marks=pytest.mark.slow),
    pytest.param("bayesian_linear", bayesian_layers.LOCAL_REPARAMETERIZATION, "softplus", marks=pytest.mark.slow),
])
def test_mfvi_reaches_the_closed_form_optimum_of_conjugate_regression(model_name, estimator, scale_transform):
    model = LINEAR if model_name == "linear" else BAYESIAN_LINEAR
    variational_apply = None if estimator is None else bayesian_layers.variational_apply(model, estimator)
    means, variances, state, infos = train_runs(model, variational_apply, scale_transform)
    assert np.all(np.isfinite(flat_linear(state.mean)))
    exact_mean, precision = exact_posterior(*regression_data())
    assert np.max(np.abs(np.corrcoef(np.linalg.inv(precision))[np.triu_indices(4, 1)])) > 0.8  # really correlated
    for index, temperature in enumerate(TEMPERATURES):
        optimal_variance = temperature / np.diag(precision)
        posterior_sd = np.sqrt(optimal_variance)
        assert_converged_to(means[index], exact_mean, posterior_sd, what=f"mean, T={temperature}")
        assert_converged_to(variances[index], optimal_variance, optimal_variance, what=f"variance, T={temperature}")
    # The optimum is not the posterior's marginal variances (which mean-field cannot reach): the test discriminates.
    assert np.all(np.diag(np.linalg.inv(precision)) > 1.5 / np.diag(precision))
    # The reported ELBO rose during training.
    elbo = np.asarray(infos.elbo)
    assert np.all(elbo[:, -100:].mean(1) > elbo[:, :10].mean(1))


def test_elbo_at_the_optimum_is_log_evidence_minus_kl_to_the_posterior():
    """ELBO_T(q*) = log Z_T − KL(q* ‖ p_T), everything but the ELBO estimate in closed form (T = 1: log p(D))."""
    x, y = regression_data()
    exact_mean, precision = exact_posterior(x, y)
    dim = len(exact_mean)
    # log Z at T = 1 two ways: the Gaussian integral and the marginal N(y; 0, σ²I + Φ S Φᵀ).
    phi = np.concatenate([x, np.ones((len(x), 1))], 1).astype(np.float64)
    marginal_cov = NOISE**2 * np.eye(len(x)) + phi @ np.diag([PRIOR_W**2] * 3 + [PRIOR_B**2]) @ phi.T
    _, logdet_marginal = np.linalg.slogdet(marginal_cov)
    log_evidence = -0.5 * (y @ np.linalg.solve(marginal_cov, y) + logdet_marginal + len(x) * math.log(2 * math.pi))

    def log_z(temperature):
        _, logdet = np.linalg.slogdet(precision / temperature)
        return log_joint(exact_mean, x, y) / temperature + 0.5 * dim * math.log(2 * math.pi) - 0.5 * logdet

    np.testing.assert_allclose(log_z(1.0), log_evidence, rtol=1e-10)

    num_keys = 512

    def elbo_estimates(temperature, mean, scale, key):
        log_post = LogPosterior(LINEAR.apply, LIKELIHOOD, PRIOR, NUM_POINTS, temperature)
        method = mfvi.build(log_post, optax.sgd(0.0), num_mc_samples=4)
        state = method.init(key, unflat_linear(LINEAR, mean))
        state = state._replace(raw_scale=mfvi.unconstrain_scale(unflat_linear(LINEAR, scale)))
        _, info = jax.vmap(method.update, in_axes=(None, None, 0))(state, (x, y), jax.random.split(key, num_keys))
        return info.elbo

    for index, temperature in enumerate(TEMPERATURES):
        optimal_variance = temperature / np.diag(precision)
        target_cov = temperature * np.linalg.inv(precision)
        kl_to_posterior = 0.5 * (np.trace(np.linalg.solve(target_cov, np.diag(optimal_variance))) - dim
                                 + np.linalg.slogdet(target_cov)[1] - np.sum(np.log(optimal_variance)))
        assert kl_to_posterior > 0.5  # a correlated posterior: mean-field pays a visible price
        estimates = np.asarray(jax.jit(elbo_estimates)(temperature, exact_mean, np.sqrt(optimal_variance),
                                                       jax.random.key(index)), np.float64)
        standard_error = estimates.std(ddof=1) / math.sqrt(num_keys)
        assert abs(estimates.mean() - (log_z(temperature) - kl_to_posterior)) < Z * standard_error + 1e-4 * abs(log_z(temperature))


def test_closed_form_kl_equals_its_monte_carlo_estimate():
    keys = jax.random.split(jax.random.key(3), 3)
    params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    prior = priors.gaussian(priors.fan_in_scales(1.5))

    @jax.jit
    def estimates(key):
        mean_key, scale_key, sample_key = jax.random.split(key, 3)
        mean = jax.tree.map(lambda m: m + jax.random.normal(mean_key, m.shape), params)
        scale = jax.tree.map(lambda m: jax.random.uniform(scale_key, m.shape, minval=0.2, maxval=1.5), params)
        closed = mfvi.gaussian_kl(mean, scale, prior.scales(mean))

        def log_ratio(noise):
            theta = jax.tree.map(lambda m, s, e: m + s * e, mean, scale, noise)
            log_q = sum(jnp.sum(-0.5 * ((t - m) / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi))
                        for t, m, s in zip(*(jax.tree.leaves(tree) for tree in (theta, mean, scale))))
            return log_q - prior.log_prob(theta)

        return closed, jax.vmap(log_ratio)(mfvi.gaussian_noise(sample_key, mean, 20000))

    for key in keys:
        closed, draws = estimates(key)
        draws = np.asarray(draws, np.float64)
        assert abs(draws.mean() - float(closed)) < Z * draws.std(ddof=1) / math.sqrt(draws.size)


def test_monte_carlo_kl_path_estimates_the_same_tempered_objective():
    """kl='monte_carlo' (and 'auto' for a prior without scales) estimates the same L_T and KL, at T ≠ 1 too."""
    x, y = regression_data()
    scales_free = priors.Prior("gaussian without scales", PRIOR.log_prob, None, PRIOR.sample)
    temperature = 0.5
    log_post = posterior.log_posterior(LINEAR.apply, LIKELIHOOD, PRIOR, NUM_POINTS, temperature)
    closed = mfvi.elbo_objective(log_post, num_mc_samples=4, kl="closed_form")
    monte_carlo = mfvi.elbo_objective(log_post._replace(prior=scales_free), num_mc_samples=4)  # 'auto' → MC
    variational = mfvi.VariationalParams(unflat_linear(LINEAR, [0.8, -0.7, 0.4, 0.2]),
                                         mfvi.unconstrain_scale(unflat_linear(LINEAR, [0.3, 0.2, 0.25, 0.6])))

    @jax.jit
    def draws(key):
        keys = jax.random.split(key, 2000)
        return (jax.vmap(closed, in_axes=(None, None, 0))(variational, (x, y), keys),
                jax.vmap(monte_carlo, in_axes=(None, None, 0))(variational, (x, y), keys))

    (closed_elbo, closed_terms), (mc_elbo, mc_terms) = draws(jax.random.key(0))
    assert np.ptp(np.asarray(closed_terms.kl)) < 1e-4 * abs(float(closed_terms.kl[0]))  # closed form: no noise
    assert np.ptp(np.asarray(mc_terms.kl)) > 0.1  # Monte Carlo: noisy
    for got, want, what in ((mc_terms.kl, float(closed_terms.kl[0]), "kl"), (mc_elbo, float(np.mean(closed_elbo)), "elbo")):
        got = np.asarray(got, np.float64)
        standard_error = got.std(ddof=1) / math.sqrt(got.size)
        if what == "elbo":
            standard_error = math.hypot(standard_error, np.std(closed_elbo, ddof=1) / math.sqrt(closed_elbo.size))
        assert abs(got.mean() - want) < Z * standard_error, what
    with pytest.raises(ValueError, match="kl='monte_carlo'"):
        mfvi.elbo_objective(log_post._replace(prior=scales_free), kl="closed_form")


def test_duplicated_data_equals_doubled_num_data_and_minibatches_reach_the_same_optimum():
    x, y = regression_data(20, correlated=False)
    x_twice, y_twice = np.concatenate([x, x]), np.concatenate([y, y])
    optimizer = optax.adam(1e-2)

    def method(num_data):
        return mfvi.build(posterior.log_posterior(LINEAR.apply, LIKELIHOOD, PRIOR, num_data), optimizer, num_mc_samples=2)

    # One full-batch step: the same objective, the same draws (same key), the same update.
    state = method(40).init(jax.random.key(0), LINEAR.init)
    state_twice, info_twice = jax.jit(method(40).update)(state, (x_twice, y_twice), jax.random.key(1))
    state_scaled, info_scaled = jax.jit(method(40).update)(state, (x, y), jax.random.key(1))
    for got, want in zip(jax.tree.leaves((state_twice, info_twice)), jax.tree.leaves((state_scaled, info_scaled))):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)

    # Minibatch training (KL once, likelihood ×N/|B|) on the doubled data reaches its closed form:
    # R vmapped runs as an ensemble; a second fit of the same transform compiles nothing.
    exact_mean, precision = exact_posterior(x_twice, y_twice)
    num_epochs, num_runs, batch_size = 256, 8, 10  # two fits of 128 epochs: whole calls of scanned epochs
    schedule = optax.cosine_decay_schedule(0.03, num_epochs * 4)
    log_post = posterior.log_posterior(LINEAR.apply, LIKELIHOOD, PRIOR, len(x_twice))
    members = mfvi.build(log_post, optax.adam(schedule), num_mc_samples=4, init_scale=0.1)
    traces = []
    counted = members._replace(update=lambda s, b, k: traces.append(1) or members.update(s, b, k))
    runs = ensemble.build(counted, num_runs)
    state = runs.init(jax.random.key(2), LINEAR.init)
    half = training.fit(runs, state, (x_twice, y_twice), key=jax.random.key(3), num_epochs=num_epochs // 2,
                        batch_size=batch_size, progress=False)
    compiled = len(traces)  # one trace per compiled function: a call of scanned epochs, and one for leftover epochs
    result = training.fit(runs, half.state, (x_twice, y_twice), key=jax.random.key(4), num_epochs=num_epochs // 2,
                          batch_size=batch_size, progress=False)
    assert len(traces) == compiled <= 2  # the second fit compiles nothing
    optimal_variance = 1.0 / np.diag(precision)
    assert_converged_to(flat_linear(result.state.mean), exact_mean, np.sqrt(optimal_variance), max_error=0.3,
                        what="mean, batch 10 of 40")
    variances = flat_linear(mfvi.variational_scales(result.state)) ** 2
    assert_converged_to(variances, optimal_variance, optimal_variance, max_error=0.3, what="variance, batch 10 of 40")


def test_states_vmap_and_samples_follow_q():
    x, y = regression_data()
    method = mfvi.build(posterior.log_posterior(LINEAR.apply, LIKELIHOOD, PRIOR, NUM_POINTS), optax.adam(1e-2),
                        init_scale={"w": 0.3, "b": 0.05})
    num_samples = 20000

    @jax.jit
    def run(key):
        init_key, update_key, sample_key = jax.random.split(key, 3)
        states = jax.vmap(method.init, in_axes=(0, None))(jax.random.split(init_key, 3), unflat_linear(LINEAR, [1, 2, 3, 4]))
        initial_scales = mfvi.variational_scales(states)
        states, infos = jax.vmap(method.update, in_axes=(0, None, 0))(states, (x, y), jax.random.split(update_key, 3))
        state = jax.tree.map(lambda leaf: leaf[0], states)
        return initial_scales, infos, state, method.sample(state, sample_key, num_samples)

    initial_scales, infos, state, samples = run(jax.random.key(0))
    np.testing.assert_allclose(flat_linear(initial_scales), [[0.3, 0.3, 0.3, 0.05]] * 3, rtol=1e-5)
    assert infos.elbo.shape == (3,) and np.all(np.isfinite(infos.elbo))
    samples = flat_linear(samples)
    assert samples.shape == (num_samples, 4)
    mean, scale = flat_linear(mfvi.mean_params(state)), flat_linear(mfvi.variational_scales(state))
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), Z * scale / math.sqrt(num_samples))
    np.testing.assert_array_less(np.abs(samples.std(0) / scale - 1), Z * math.sqrt(0.5 / num_samples))


def test_nonfinite_steps_are_skipped_and_counted():
    x, y = regression_data()
    method = wrappers.skip_nonfinite(
        mfvi.build(posterior.log_posterior(LINEAR.apply, LIKELIHOOD, PRIOR, NUM_POINTS), optax.adam(1e-2)))
    state = method.init(jax.random.key(0), LINEAR.init)
    bad_y = y.copy()
    bad_y[3] = np.nan
    new_state, info = jax.jit(method.update)(state, (x, bad_y), jax.random.key(1))
    assert int(new_state.num_nonfinite) == 1 and not np.isfinite(info.elbo)
    new_state, state = new_state.inner, state.inner
    for got, want in zip(jax.tree.leaves((new_state.mean, new_state.raw_scale, new_state.opt_state)),
                         jax.tree.leaves((state.mean, state.raw_scale, state.opt_state))):
        np.testing.assert_array_equal(got, want)


def test_bad_configuration_fails_loudly():
    log_post = posterior.log_posterior(LINEAR.apply, LIKELIHOOD, PRIOR, NUM_POINTS)
    with pytest.raises(ValueError, match="num_mc_samples"):
        mfvi.build(log_post, optax.adam(1e-2), num_mc_samples=0)
    with pytest.raises(ValueError, match="init_scale must be positive"):
        mfvi.build(log_post, optax.adam(1e-2), init_scale=0.0)
    with pytest.raises(ValueError, match="scale_transform"):
        mfvi.build(log_post, optax.adam(1e-2), scale_transform="relu")
    with pytest.raises(ValueError, match="kl='monte_carlo'"):
        mfvi.build(log_post._replace(prior=priors.flat()), optax.adam(1e-2), kl="closed_form")
    with pytest.raises(ValueError, match="Bayesian layers"):
        bayesian_layers.variational_apply(LINEAR, "flipout")
    with pytest.raises(ValueError, match="unknown estimator"):
        bayesian_layers.variational_apply(BAYESIAN_LINEAR, "lrt")


# ---------------------------------------------------------------- Bayesian layers


def test_bayesian_layers_are_flax_layers_with_the_same_parameters():
    key, rng = jax.random.key(0), np.random.default_rng(0)
    image, rows = jnp.asarray(rng.normal(size=(3, 8, 8, 1)), jnp.float32), jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
    cases = [
        (bayesian_layers.Conv(3, (3, 3), strides=2, padding="VALID"), nn.Conv(3, (3, 3), strides=2, padding="VALID"), image),
        (bayesian_layers.Conv(3, (2, 2), padding=1, use_bias=False), nn.Conv(3, (2, 2), padding=1, use_bias=False), image),
        (bayesian_layers.Dense(5), nn.Dense(5), image),
        (bayesian_layers.mlp((3,), (8, 8), 2), models.mlp((3,), (8, 8), 2), rows),
        (bayesian_layers.cnn(4, (2, 3), 5, input_shape=(8, 8, 1)), models.cnn(4, (2, 3), 5, input_shape=(8, 8, 1)), image),
    ]
    params, applies = [], []
    for ours, theirs, inputs in cases:  # parameter shapes, without compiling anything
        if isinstance(theirs, models.Model):
            shapes, our_shapes = jax.eval_shape(theirs.init, key), jax.eval_shape(ours.init, key)
            applies.append((ours.apply, theirs.apply))
        else:
            shapes, our_shapes = jax.eval_shape(theirs.init, key, inputs), jax.eval_shape(ours.init, key, inputs)
            applies.append((ours.apply, theirs.apply))
        assert our_shapes == shapes
        params.append(random_like(shapes, rng))

    @jax.jit
    def outputs(params):  # one compilation for every comparison
        return [(ours(p, inputs), theirs(p, inputs)) for (ours, theirs), p, (_, _, inputs) in zip(applies, params, cases)]

    for got, want in outputs(params):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def two_sample_z(first, second):
    """Per-statistic z of the difference of two Monte Carlo means (draws on axis 0)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    se = np.sqrt(first.var(0, ddof=1) / len(first) + second.var(0, ddof=1) / len(second))
    return np.abs(first.mean(0) - second.mean(0)) / se


def random_like(tree, rng, low=None, high=None):
    """Host-side random values shaped like a tree of ShapeDtypeStructs (no compiled initialiser needed)."""
    if low is None:
        return jax.tree.map(lambda leaf: jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype), tree)
    return jax.tree.map(lambda leaf: jnp.asarray(rng.uniform(low, high, size=leaf.shape), leaf.dtype), tree)


def test_output_sampling_estimators_give_each_example_its_distribution_under_q():
    """First and second moments, across units and across positions of one example, equal those of weight sampling.

    Weight sampling (the definition of q) is the reference, drawn in the same run.
    """
    cases = [
        (bayesian_layers.Dense(3), (4, 5), bayesian_layers.LOCAL_REPARAMETERIZATION),
        # Flipout, for dense layers shared over positions and for convolutions (asked for LRT, they use Flipout):
        (bayesian_layers.Dense(3), (2, 3, 5), bayesian_layers.LOCAL_REPARAMETERIZATION),
        (bayesian_layers.Conv(2, (3, 3)), (2, 4, 4, 2), bayesian_layers.FLIPOUT),
    ]
    num_draws = 4000
    rng = np.random.default_rng(0)
    inputs = [jnp.asarray(rng.normal(size=shape), jnp.float32) for _, shape, _ in cases]
    shapes = [jax.eval_shape(layer.init, jax.random.key(0), x) for (layer, _, _), x in zip(cases, inputs)]
    means = [jax.tree.map(lambda p: p + 0.3, random_like(shape, rng)) for shape in shapes]
    scales = [random_like(shape, rng, 0.2, 0.7) for shape in shapes]

    @jax.jit
    def draws(key):  # one compilation for all cases
        results = []
        for index, ((layer, _, estimator), x, mean, scale) in enumerate(zip(cases, inputs, means, scales)):
            sample_key, weight_key = jax.random.split(jax.random.fold_in(key, index))
            apply_under_q = bayesian_layers.variational_apply(bayesian_layers.BayesianApply(layer), estimator)
            if x.ndim == 2 and estimator == bayesian_layers.LOCAL_REPARAMETERIZATION:
                # Independent noise per example: one call on tiled inputs gives independent draws.
                tiled = jnp.tile(x, (num_draws, 1))
                sampled = apply_under_q(mean, scale, mean, tiled, sample_key).reshape(num_draws, x.shape[0], -1)
            else:
                # Flipout shares one ΔW across the batch: copies of an example are uncorrelated, not independent.
                keys = jax.random.split(sample_key, num_draws)
                sampled = jax.vmap(lambda k: apply_under_q(mean, scale, mean, x, k))(keys)
            noise = mfvi.gaussian_noise(weight_key, mean, num_draws)
            weights = jax.tree.map(lambda m, s, e: m + s * e, mean, scale, noise)
            results.append((sampled, jax.vmap(lambda p: layer.apply(p, x))(weights)))
        return results

    def statistics(out):
        flat = out.reshape(num_draws, out.shape[1], -1)  # (draws, examples, positions × units)
        cross = flat[:, :, :, None] * flat[:, :, None, :]  # within one example
        return np.concatenate([flat.reshape(num_draws, -1), cross.reshape(num_draws, -1)], 1)

    for (layer, input_shape, estimator), (sampled, reference) in zip(cases, draws(jax.random.key(3))):
        sampled, reference = np.asarray(sampled, np.float64), np.asarray(reference, np.float64)
        assert sampled.shape == reference.shape and sampled.shape[:2] == (num_draws, input_shape[0])
        z = two_sample_z(statistics(sampled), statistics(reference))
        assert np.max(z) < Z + 1.0, (type(layer).__name__, input_shape, estimator)  # ~10³ statistics each


@pytest.mark.slow
def test_output_sampling_lowers_the_gradient_variance():
    """The benchmark's claim, small: LRT/Flipout gradients of the expected log-likelihood vary less than pytree ones."""
    model = bayesian_layers.mlp((NUM_FEATURES,), (16,), 1)
    x, y = regression_data(64)
    log_post = posterior.log_posterior(model.apply, LIKELIHOOD, PRIOR, 1000)
    params = model.init(jax.random.key(0))
    variational = mfvi.VariationalParams(params, mfvi.unconstrain_scale(jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)))
    variances = {}
    for name in ("reparameterization",) + bayesian_layers.ESTIMATORS:
        variational_apply = None if name == "reparameterization" else bayesian_layers.variational_apply(model, name)
        objective = mfvi.elbo_objective(log_post, variational_apply=variational_apply)
        grads = jax.jit(jax.vmap(jax.grad(lambda v, k: objective(v, (x, y), k)[0]), in_axes=(None, 0)))(
            variational, jax.random.split(jax.random.key(1), 256))
        variances[name] = float(sum(jnp.sum(jnp.var(g, axis=0)) for g in jax.tree.leaves(grads.mean)))
    assert variances["local_reparameterization"] < 0.5 * variances["reparameterization"]
    assert variances["flipout"] < 0.5 * variances["reparameterization"]


# ---------------------------------------------------------------- the recipe


def test_recipe_end_to_end_with_pretraining_estimators_and_mean_prediction():
    x, y = regression_data(48, correlated=False)
    problem = recipes.Problem(BAYESIAN_LINEAR, LIKELIHOOD, PRIOR, x, y)
    assert {"num_mc_samples", "num_samples", "pretrain_epochs", "estimator", "predict_with_mean"} <= set(
        recipes.hyperparameters("mfvi"))
    fitted = recipes.run("mfvi", problem, jax.random.key(0), num_epochs=2, batch_size=16, learning_rate=0.05,
                         pretrain_epochs=30, num_samples=7, estimator="flipout", num_mc_samples=2,
                         predict_with_mean=True, options=RunOptions(log_fields={"method": "mfvi"}))
    stages = [record.get("stage") for record in fitted.history if record["split"] == "train"]
    assert stages == ["map_pretrain"] * 30 + [None] * 2
    assert all(record["method"] == "mfvi" for record in fitted.history)
    assert {"elbo", "expected_log_likelihood", "kl"} <= set(fitted.history[-1])
    assert fitted.diagnostics["map_pretrain_nonfinite_steps"] == fitted.diagnostics["nonfinite_steps"] == 0
    # MFVI started from the MAP solution: 6 Adam steps of 0.05 cannot reach it from a random initialisation.
    exact_mean, _ = exact_posterior(x, y)
    distance = np.linalg.norm(flat_linear(fitted.state.inner.mean) - exact_mean)
    assert distance < 0.2 and np.linalg.norm(flat_linear(BAYESIAN_LINEAR.init(jax.random.key(0))) - exact_mean) > 1.0
    # Predicting with the mean weights: one "sample", the mean.
    assert jax.tree.leaves(fitted.samples)[0].shape[0] == 1
    for got, want in zip(jax.tree.leaves(fitted.samples), jax.tree.leaves(fitted.state.inner.mean)):
        np.testing.assert_array_equal(got[0], want)
    with pytest.raises(ValueError, match="Bayesian layers"):
        recipes.run("mfvi", problem._replace(model=LINEAR), jax.random.key(0), estimator="local_reparameterization")
    with pytest.raises(ValueError, match="unknown estimator"):
        recipes.run("mfvi", problem, jax.random.key(0), estimator="lrt")



def test_the_runner_compiles_once_and_counts_the_steps_skip_nonfinite_undid():
    """A network whose output is NaN on one (finite) input: every step whose batch holds it is undone and counted,
    the others train; a second execution of the same plan traces MFVI's update no more (a refit never
    recompiles; with a MAP first stage too: tests/test_runner.py)."""
    x, y = regression_data(16, correlated=False)
    x[3, 0] = 1e4  # marks the poisoned example
    poisoned = models.from_functions(
        LINEAR.init, lambda params, x: jnp.where(x[:, 0] > 1e3, jnp.nan, LINEAR.apply(params, x)))
    plan = recipes.plan("mfvi", recipes.Problem(poisoned, LIKELIHOOD, PRIOR, x, y), num_epochs=3, batch_size=8,
                        num_samples=2, learning_rate=1e-2)
    traces = []
    update = plan.transform.update
    plan = plan._replace(transform=plan.transform._replace(
        update=lambda state, batch, key: traces.append(1) or update(state, batch, key)))
    first, second = (execute(plan, jax.random.key(seed)) for seed in (0, 1))
    assert len(traces) == 1
    for fitted in (first, second):
        # Each epoch cuts a permutation into two batches of 8: one holds the poisoned example, the other trains.
        assert fitted.diagnostics["nonfinite_steps"] == int(fitted.state.num_nonfinite) == 3
        assert [record["elbo_nonfinite"] for record in fitted.history] == [1, 1, 1]
        assert all(np.isfinite(record["elbo"]) for record in fitted.history)
        assert np.all(np.isfinite(flat_linear(fitted.samples)))
        assert np.all(flat_linear(fitted.state.inner.mean) != 0)  # the finite steps trained (LINEAR starts at 0)
    assert not np.array_equal(flat_linear(first.samples), flat_linear(second.samples))

@pytest.mark.slow
def test_benchmark_script_runs_end_to_end(capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_mfvi.py"
    spec = importlib.util.spec_from_file_location("bench_mfvi", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--quick", "--no-torch"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == json.loads(json.dumps(summary))
    assert all(value > 0 for value in summary["steps_per_second"].values())
    assert summary["ratios"]["grad_var_reduction_local_reparameterization_mean_b1000"] > 2
