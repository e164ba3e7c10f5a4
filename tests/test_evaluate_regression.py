"""Tests of bdljax.evaluate.regression against scipy.stats.norm (densities, CDFs, quantiles), scipy.optimize.brentq
(mixture quantiles) and NumPy counts (interval coverage). Random inputs come from a few fixed seeds."""

import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats

from bdljax.evaluate import regression
from evaluate_inputs import NUM_OUTPUTS, NUM_REGRESSION_POINTS, NUM_SAMPLES, SEEDS, assert_close, assert_jit_matches_direct_call


def random_mixture(seed, point_shape, num_components=NUM_SAMPLES):
    """Mixture parameters (float32) and targets drawn from that mixture."""
    rng = np.random.default_rng(seed)
    shape = (num_components,) + point_shape
    means = rng.normal(0.0, 1.5, size=shape).astype(np.float32)
    scales = rng.uniform(0.3, 2.0, size=shape).astype(np.float32)
    component = rng.integers(num_components, size=point_shape)
    chosen_mean = np.take_along_axis(means, component[None], axis=0)[0]
    chosen_scale = np.take_along_axis(scales, component[None], axis=0)[0]
    y = (chosen_mean + chosen_scale * rng.normal(size=point_shape)).astype(np.float32)
    return means, scales, y


POINT_SHAPES = [(NUM_REGRESSION_POINTS,), (NUM_REGRESSION_POINTS, NUM_OUTPUTS)]


def reference_mixture_log_likelihood(means, scales, y):
    log_pdf = scipy.stats.norm.logpdf(np.float64(y)[None], np.float64(means), np.float64(scales))
    if log_pdf.ndim == 3:
        log_pdf = log_pdf.sum(axis=-1)
    return np.log(np.mean(np.exp(log_pdf), axis=0))


def reference_mixture_quantile(means, scales, q):
    """Quantile of each scalar mixture (one per point/dimension) by brentq.

    The mixture CDF uses scipy.special.ndtr, the standard normal CDF behind
    scipy.stats.norm.cdf, without the latter's per-call overhead.
    """
    means = np.float64(means).reshape(means.shape[0], -1)
    scales = np.float64(scales).reshape(scales.shape[0], -1)
    quantiles = []
    for mu, sigma in zip(means.T, scales.T):
        def cdf_minus_q(x, mu=mu, sigma=sigma):
            return scipy.special.ndtr((x - mu) / sigma).mean() - q

        lower = np.min(mu - 10 * sigma)
        upper = np.max(mu + 10 * sigma)
        quantiles.append(scipy.optimize.brentq(cdf_minus_q, lower, upper, xtol=1e-12))
    return np.array(quantiles)


def reference_coverage(means, scales, y, level):
    """Fraction of targets inside the central interval, counted in NumPy.

    F is continuous and increasing, so ``F^-1((1-l)/2) <= y <= F^-1((1+l)/2)``
    iff ``(1-l)/2 <= F(y) <= (1+l)/2``: the count needs only the mixture CDF
    (scipy.stats.norm.cdf), not the quantiles the library bisects for.
    """
    cdf = scipy.stats.norm.cdf(np.float64(y)[None], np.float64(means), np.float64(scales)).mean(axis=0)
    return np.mean(((1 - level) / 2 <= cdf) & (cdf <= (1 + level) / 2))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point_shape", POINT_SHAPES)
def test_rmse_matches_numpy(seed, point_shape):
    means, _, y = random_mixture(seed, point_shape)
    expected = np.sqrt(np.mean((np.float64(means[0]) - y) ** 2))
    assert_close(regression.rmse(means[0], y), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point_shape", POINT_SHAPES)
def test_mixture_log_likelihood_matches_scipy(seed, point_shape):
    means, scales, y = random_mixture(seed, point_shape)
    expected = reference_mixture_log_likelihood(means, scales, y)
    per_point = regression.gaussian_mixture_log_likelihood(means, scales, y)
    assert per_point.shape == point_shape[:1]
    assert_close(per_point, expected)
    assert_close(regression.mean_test_log_likelihood(means, scales, y), expected.mean())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point_shape", POINT_SHAPES)
def test_component_log_likelihoods_match_scipy(seed, point_shape):
    means, scales, y = random_mixture(seed, point_shape)
    log_pdf = scipy.stats.norm.logpdf(np.float64(y)[None], np.float64(means), np.float64(scales))
    expected = log_pdf.reshape(log_pdf.shape[0], log_pdf.shape[1], -1).sum(-1).mean(-1)
    assert_close(regression.component_log_likelihoods(means, scales, y), expected)


def test_component_log_likelihoods_expose_a_bad_member_the_mixture_hides():
    # Four exact members and one far off: the mixture loses only log(5/4) per point,
    # the bad member's own log-likelihood is hundreds of nats lower.
    y = np.linspace(-1.0, 1.0, 50)
    means = np.stack([y] * 4 + [y + 10.0])
    scales = np.full_like(means, 0.1)
    good = scipy.stats.norm.logpdf(0.0, 0.0, 0.1)
    mixture = float(regression.mean_test_log_likelihood(means, scales, y))
    assert abs(mixture - (good + np.log(4 / 5))) < 1e-4
    members = np.asarray(regression.component_log_likelihoods(means, scales, y))
    np.testing.assert_allclose(members[:4], good, rtol=1e-5)
    np.testing.assert_allclose(members[4], scipy.stats.norm.logpdf(10.0, 0.0, 0.1), rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_single_gaussian_log_likelihood_is_norm_logpdf(seed):
    means, scales, y = random_mixture(seed, (NUM_REGRESSION_POINTS,), num_components=1)
    expected = scipy.stats.norm.logpdf(np.float64(y), np.float64(means[0]), np.float64(scales[0]))
    assert_close(regression.gaussian_mixture_log_likelihood(means, scales, y), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point_shape", POINT_SHAPES)
def test_mixture_mean_variance_matches_scipy_moments(seed, point_shape):
    means, scales, _ = random_mixture(seed, point_shape)
    components = scipy.stats.norm(np.float64(means), np.float64(scales))
    expected_mean = components.mean().mean(axis=0)
    expected_second_moment = components.moment(2).mean(axis=0)
    mean, var = regression.mixture_mean_variance(means, scales)
    assert_close(mean, expected_mean)
    assert_close(var, expected_second_moment - expected_mean**2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_unstandardise_gaussian_shifts_log_likelihood(seed):
    rng = np.random.default_rng(seed)
    y_mean, y_std = rng.normal(size=NUM_OUTPUTS), rng.uniform(0.5, 5.0, size=NUM_OUTPUTS)
    mean_z = rng.normal(size=(NUM_REGRESSION_POINTS, NUM_OUTPUTS))
    var_z = rng.uniform(0.2, 2.0, size=(NUM_REGRESSION_POINTS, NUM_OUTPUTS))
    z = rng.normal(size=(NUM_REGRESSION_POINTS, NUM_OUTPUTS))
    y = y_mean + y_std * z

    mean_y, var_y = regression.unstandardise_gaussian(mean_z, var_z, y_mean, y_std)
    original_ll = scipy.stats.norm.logpdf(y, np.asarray(mean_y), np.sqrt(np.asarray(var_y))).sum(-1)
    standardised_ll = scipy.stats.norm.logpdf(z, mean_z, np.sqrt(var_z)).sum(-1)
    assert_close(standardised_ll + regression.log_likelihood_shift(y_std), original_ll, rtol=1e-5)
    assert_close(regression.log_likelihood_shift(2.0), -np.log(2.0))


@pytest.mark.parametrize("seed", SEEDS)
def test_unstandardise_mixture_matches_shifted_log_likelihood(seed):
    means, scales, z = random_mixture(seed, (NUM_REGRESSION_POINTS,))
    y_mean, y_std = 3.0, 4.0
    means_y, scales_y = regression.unstandardise_mixture(means, scales, y_mean, y_std)
    y = y_mean + y_std * z
    expected = reference_mixture_log_likelihood(means, scales, z) - np.log(y_std)
    assert_close(regression.gaussian_mixture_log_likelihood(means_y, scales_y, y), expected, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("q", [0.025, 0.3, 0.9])
def test_mixture_quantile_matches_brentq(seed, q):
    means, scales, _ = random_mixture(seed, (40, NUM_OUTPUTS))
    expected = reference_mixture_quantile(means, scales, q).reshape(40, NUM_OUTPUTS)
    assert_close(regression.mixture_quantile(means, scales, q), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_single_gaussian_quantile_is_norm_ppf(seed):
    means, scales, _ = random_mixture(seed, (NUM_REGRESSION_POINTS,), num_components=1)
    q = np.array([0.05, 0.5, 0.95])
    expected = scipy.stats.norm.ppf(q[:, None], np.float64(means[0]), np.float64(scales[0]))
    assert_close(regression.mixture_quantile(means, scales, q), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "num_components, point_shape",
    [
        (1, (NUM_REGRESSION_POINTS,)),
        (NUM_SAMPLES, (NUM_REGRESSION_POINTS,)),
        (NUM_SAMPLES, (40, NUM_OUTPUTS)),
    ],
)
def test_interval_coverage_matches_numpy_counts(seed, num_components, point_shape):
    means, scales, y = random_mixture(seed, point_shape, num_components=num_components)
    levels = (0.5, 0.9, 0.95)
    coverage = regression.interval_coverage(means, scales, y, levels)
    assert set(coverage) == set(levels)
    for level in levels:
        expected = reference_coverage(means, scales, y, level)
        assert float(coverage[level]) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_components", [1, NUM_SAMPLES])
def test_interval_coverage_counts_targets_between_the_quantiles(seed, num_components):
    # Independent of the CDF identity the library uses: the interval ends themselves (scipy's for one
    # component, the bisected mixture quantiles otherwise) and a count of the targets between them.
    means, scales, y = random_mixture(seed, (NUM_REGRESSION_POINTS,), num_components=num_components)
    levels = (0.5, 0.9, 0.95)
    coverage = regression.interval_coverage(means, scales, y, levels)
    for level in levels:
        if num_components == 1:
            lower, upper = scipy.stats.norm.interval(level, np.float64(means[0]), np.float64(scales[0]))
        else:
            lower, upper = np.asarray(regression.mixture_quantile(means, scales, np.array([(1 - level) / 2, (1 + level) / 2])))
        expected = np.mean((lower <= y) & (y <= upper))
        assert float(coverage[level]) == pytest.approx(expected, abs=1.5 / NUM_REGRESSION_POINTS)


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_metrics_dict(seed):
    means, scales, y = random_mixture(seed, (NUM_REGRESSION_POINTS,))
    result = regression.regression_metrics(means, scales, y)
    assert set(result) == {"rmse", "test_ll", "coverage_50", "coverage_90", "coverage_95"}
    mixture_mean = np.float64(means).mean(axis=0)
    assert_close(result["rmse"], np.sqrt(np.mean((mixture_mean - y) ** 2)))
    assert_close(result["test_ll"], reference_mixture_log_likelihood(means, scales, y).mean())
    for level in (0.5, 0.9, 0.95):
        expected = reference_coverage(means, scales, y, level)
        assert float(result[f"coverage_{round(100 * level)}"]) == pytest.approx(expected, abs=1e-7)


def test_regression_shape_and_level_errors():
    means, scales, y = random_mixture(0, (10,))
    with pytest.raises(ValueError, match="same shape"):
        regression.gaussian_mixture_log_likelihood(means, scales[:, :5], y)
    with pytest.raises(ValueError, match="do not match"):
        regression.gaussian_mixture_log_likelihood(means, scales, y[:5])
    with pytest.raises(ValueError, match=r"\(S, N\)"):
        regression.mixture_mean_variance(means[0], scales[0])
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        regression.interval_coverage(means, scales, y, levels=(0.5, 1.0))
    with pytest.raises(ValueError, match="shape"):
        regression.rmse(y, y[:5])


# The array functions are jax.jit-decorated, so every test above already runs them compiled. regression_metrics
# (plain Python around them, levels normalised to a hashable tuple) must trace inside an enclosing jit too.
def test_jit_matches_direct_call():
    assert_jit_matches_direct_call(regression.regression_metrics, random_mixture(0, (NUM_REGRESSION_POINTS,)))
