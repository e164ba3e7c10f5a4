"""Tests for bdljax.evaluate.metrics against independent references.

References: scipy.stats.norm (Gaussian densities, CDFs, quantiles),
scipy.optimize.brentq (mixture quantiles), scipy.stats.entropy,
sklearn.metrics (accuracy, log loss, ROC AUC, average precision), and plain
NumPy loops / one-hot arithmetic / counts for Brier, ECE, interval coverage
and variation ratio. Random inputs come from a few fixed seeds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats
import sklearn.metrics

from bdljax.evaluate import metrics

SEEDS = [0, 1, 2]
NUM_SAMPLES, NUM_CLASSIFICATION_POINTS, NUM_OUTPUTS, NUM_CLASSES = 6, 201, 3, 5
# XLA compilation dominates the run time (one per function, shape and static
# option), so tests share a few input shapes.
NUM_REGRESSION_POINTS = 120

# float32 computation compared with float64 references.
RTOL, ATOL = 2e-5, 2e-6


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# Random inputs
# ---------------------------------------------------------------------------


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


def random_sample_probs(seed, num_points=NUM_CLASSIFICATION_POINTS):
    """Per-sample softmax probabilities (float32) and uniform random labels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(NUM_SAMPLES, num_points, NUM_CLASSES))
    sample_probs = scipy.special.softmax(logits, axis=-1).astype(np.float32)
    labels = rng.integers(NUM_CLASSES, size=num_points).astype(np.int32)
    return sample_probs, labels


def random_mean_probs(seed, **kwargs):
    sample_probs, labels = random_sample_probs(seed, **kwargs)
    return sample_probs.mean(axis=0), labels


# ---------------------------------------------------------------------------
# NumPy / SciPy reference implementations
# ---------------------------------------------------------------------------


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


def reference_bins(probs, labels, num_bins, binning):
    """Per-bin (count, mean confidence, accuracy) by explicit loops."""
    confidence = np.float64(probs).max(axis=-1)
    correct = (np.argmax(probs, axis=-1) == labels).astype(np.float64)
    if binning == "equal_width":
        edges = np.linspace(0.0, 1.0, num_bins + 1)
        members = [
            np.flatnonzero((confidence > lo) & (confidence <= hi))
            for lo, hi in zip(edges[:-1], edges[1:])
        ]
    else:
        members = np.array_split(np.argsort(confidence, kind="stable"), num_bins)
    counts = np.array([len(m) for m in members])
    bin_confidence = np.array([confidence[m].mean() if len(m) else np.nan for m in members])
    bin_accuracy = np.array([correct[m].mean() if len(m) else np.nan for m in members])
    return counts, bin_confidence, bin_accuracy


def reference_ece(probs, labels, num_bins, binning):
    counts, bin_confidence, bin_accuracy = reference_bins(probs, labels, num_bins, binning)
    total = 0.0
    for count, conf, acc in zip(counts, bin_confidence, bin_accuracy):
        if count:
            total += count / counts.sum() * abs(acc - conf)
    return total


def sklearn_ood_labels(scores_in, scores_out):
    y_true = np.concatenate([np.zeros(len(scores_in)), np.ones(len(scores_out))])
    return y_true, np.concatenate([scores_in, scores_out])


# ---------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point_shape", POINT_SHAPES)
def test_rmse_matches_numpy(seed, point_shape):
    means, _, y = random_mixture(seed, point_shape)
    expected = np.sqrt(np.mean((np.float64(means[0]) - y) ** 2))
    assert_close(metrics.rmse(means[0], y), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point_shape", POINT_SHAPES)
def test_mixture_log_likelihood_matches_scipy(seed, point_shape):
    means, scales, y = random_mixture(seed, point_shape)
    expected = reference_mixture_log_likelihood(means, scales, y)
    per_point = metrics.gaussian_mixture_log_likelihood(means, scales, y)
    assert per_point.shape == point_shape[:1]
    assert_close(per_point, expected)
    assert_close(metrics.mean_test_log_likelihood(means, scales, y), expected.mean())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point_shape", POINT_SHAPES)
def test_component_log_likelihoods_match_scipy(seed, point_shape):
    means, scales, y = random_mixture(seed, point_shape)
    log_pdf = scipy.stats.norm.logpdf(np.float64(y)[None], np.float64(means), np.float64(scales))
    expected = log_pdf.reshape(log_pdf.shape[0], log_pdf.shape[1], -1).sum(-1).mean(-1)
    assert_close(metrics.component_log_likelihoods(means, scales, y), expected)


def test_component_log_likelihoods_expose_a_bad_member_the_mixture_hides():
    # Four exact members and one far off: the mixture loses only log(5/4) per point,
    # the bad member's own log-likelihood is hundreds of nats lower.
    y = np.linspace(-1.0, 1.0, 50)
    means = np.stack([y] * 4 + [y + 10.0])
    scales = np.full_like(means, 0.1)
    good = scipy.stats.norm.logpdf(0.0, 0.0, 0.1)
    mixture = float(metrics.mean_test_log_likelihood(means, scales, y))
    assert abs(mixture - (good + np.log(4 / 5))) < 1e-4
    members = np.asarray(metrics.component_log_likelihoods(means, scales, y))
    np.testing.assert_allclose(members[:4], good, rtol=1e-5)
    np.testing.assert_allclose(members[4], scipy.stats.norm.logpdf(10.0, 0.0, 0.1), rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_single_gaussian_log_likelihood_is_norm_logpdf(seed):
    means, scales, y = random_mixture(seed, (NUM_REGRESSION_POINTS,), num_components=1)
    expected = scipy.stats.norm.logpdf(np.float64(y), np.float64(means[0]), np.float64(scales[0]))
    assert_close(metrics.gaussian_mixture_log_likelihood(means, scales, y), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point_shape", POINT_SHAPES)
def test_mixture_mean_variance_matches_scipy_moments(seed, point_shape):
    means, scales, _ = random_mixture(seed, point_shape)
    components = scipy.stats.norm(np.float64(means), np.float64(scales))
    expected_mean = components.mean().mean(axis=0)
    expected_second_moment = components.moment(2).mean(axis=0)
    mean, var = metrics.mixture_mean_variance(means, scales)
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

    mean_y, var_y = metrics.unstandardise_gaussian(mean_z, var_z, y_mean, y_std)
    original_ll = scipy.stats.norm.logpdf(y, np.asarray(mean_y), np.sqrt(np.asarray(var_y))).sum(-1)
    standardised_ll = scipy.stats.norm.logpdf(z, mean_z, np.sqrt(var_z)).sum(-1)
    assert_close(standardised_ll + metrics.log_likelihood_shift(y_std), original_ll, rtol=1e-5)
    assert_close(metrics.log_likelihood_shift(2.0), -np.log(2.0))


@pytest.mark.parametrize("seed", SEEDS)
def test_unstandardise_mixture_matches_shifted_log_likelihood(seed):
    means, scales, z = random_mixture(seed, (NUM_REGRESSION_POINTS,))
    y_mean, y_std = 3.0, 4.0
    means_y, scales_y = metrics.unstandardise_mixture(means, scales, y_mean, y_std)
    y = y_mean + y_std * z
    expected = reference_mixture_log_likelihood(means, scales, z) - np.log(y_std)
    assert_close(metrics.gaussian_mixture_log_likelihood(means_y, scales_y, y), expected, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("q", [0.025, 0.3, 0.9])
def test_mixture_quantile_matches_brentq(seed, q):
    means, scales, _ = random_mixture(seed, (40, NUM_OUTPUTS))
    expected = reference_mixture_quantile(means, scales, q).reshape(40, NUM_OUTPUTS)
    assert_close(metrics.mixture_quantile(means, scales, q), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_single_gaussian_quantile_is_norm_ppf(seed):
    means, scales, _ = random_mixture(seed, (NUM_REGRESSION_POINTS,), num_components=1)
    q = np.array([0.05, 0.5, 0.95])
    expected = scipy.stats.norm.ppf(q[:, None], np.float64(means[0]), np.float64(scales[0]))
    assert_close(metrics.mixture_quantile(means, scales, q), expected, rtol=1e-5, atol=1e-5)


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
    coverage = metrics.interval_coverage(means, scales, y, levels)
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
    coverage = metrics.interval_coverage(means, scales, y, levels)
    for level in levels:
        if num_components == 1:
            lower, upper = scipy.stats.norm.interval(level, np.float64(means[0]), np.float64(scales[0]))
        else:
            lower, upper = np.asarray(metrics.mixture_quantile(means, scales, np.array([(1 - level) / 2, (1 + level) / 2])))
        expected = np.mean((lower <= y) & (y <= upper))
        assert float(coverage[level]) == pytest.approx(expected, abs=1.5 / NUM_REGRESSION_POINTS)


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_metrics_dict(seed):
    means, scales, y = random_mixture(seed, (NUM_REGRESSION_POINTS,))
    result = metrics.regression_metrics(means, scales, y)
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
        metrics.gaussian_mixture_log_likelihood(means, scales[:, :5], y)
    with pytest.raises(ValueError, match="do not match"):
        metrics.gaussian_mixture_log_likelihood(means, scales, y[:5])
    with pytest.raises(ValueError, match=r"\(S, N\)"):
        metrics.mixture_mean_variance(means[0], scales[0])
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        metrics.interval_coverage(means, scales, y, levels=(0.5, 1.0))
    with pytest.raises(ValueError, match="shape"):
        metrics.rmse(y, y[:5])


# ---------------------------------------------------------------------------
# Classification: point metrics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_matches_sklearn(seed):
    probs, labels = random_mean_probs(seed)
    expected = sklearn.metrics.accuracy_score(labels, probs.argmax(-1))
    assert_close(metrics.accuracy(probs, labels), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_nll_matches_sklearn_log_loss(seed):
    probs, labels = random_mean_probs(seed)
    probs64 = np.float64(probs) / np.float64(probs).sum(-1, keepdims=True)
    expected = sklearn.metrics.log_loss(labels, probs64, labels=np.arange(NUM_CLASSES))
    assert_close(metrics.nll(probs, labels), expected, rtol=1e-5)


def test_nll_clips_zero_probability_at_eps():
    probs = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    labels = jnp.array([1, 0])
    expected = (-np.log(metrics.PROB_EPS) - np.log(0.5)) / 2
    assert_close(metrics.nll(probs, labels), expected, rtol=1e-6)
    assert np.isfinite(metrics.nll(probs, labels))


@pytest.mark.parametrize("seed", SEEDS)
def test_brier_matches_numpy_one_hot(seed):
    probs, labels = random_mean_probs(seed)
    one_hot = np.eye(NUM_CLASSES)[labels]
    expected = np.mean(np.sum((np.float64(probs) - one_hot) ** 2, axis=-1))
    assert_close(metrics.brier(probs, labels), expected)


# ---------------------------------------------------------------------------
# Classification: calibration
# ---------------------------------------------------------------------------

# Four points worked out by hand (top-label confidence, correct?):
#   A [0.95, 0.05] y=0 -> 0.95, correct     B [0.15, 0.85] y=0 -> 0.85, wrong
#   C [0.75, 0.25] y=0 -> 0.75, correct     D [0.35, 0.65] y=0 -> 0.65, wrong
# equal_width, 4 bins (edges 0, .25, .5, .75, 1 -- exact in binary; bins are
# right-closed, so C at exactly .75 belongs to (.5, .75]):
#   (.75, 1]: A, B  conf .90 acc .5 -> 2/4 * .40 = .20
#   (.5, .75]: C, D conf .70 acc .5 -> 2/4 * .20 = .10       ECE = .30
# equal_mass, 3 bins, split like numpy.array_split (sizes 2, 1, 1) of the
# confidence-sorted points D, C | B | A:
#   {D, C} conf .70 acc .5 -> 2/4 * .20 = .1000
#   {B}    conf .85 acc 0  -> 1/4 * .85 = .2125
#   {A}    conf .95 acc 1  -> 1/4 * .05 = .0125              ECE = .325
HAND_PROBS = np.array([[0.95, 0.05], [0.15, 0.85], [0.75, 0.25], [0.35, 0.65]], np.float32)
HAND_LABELS = np.array([0, 0, 0, 0], np.int32)


def test_ece_hand_computed_equal_width():
    assert_close(metrics.ece(HAND_PROBS, HAND_LABELS, num_bins=4, binning="equal_width"), 0.30)
    bins = metrics.reliability_diagram_data(HAND_PROBS, HAND_LABELS, num_bins=4)
    np.testing.assert_array_equal(bins.count, [0, 0, 2, 2])
    assert_close(bins.confidence, [np.nan, np.nan, 0.70, 0.90])
    assert_close(bins.accuracy, [np.nan, np.nan, 0.5, 0.5])


def test_ece_hand_computed_equal_mass():
    assert_close(metrics.ece(HAND_PROBS, HAND_LABELS, num_bins=3, binning="equal_mass"), 0.325)
    bins = metrics.reliability_diagram_data(HAND_PROBS, HAND_LABELS, num_bins=3, binning="equal_mass")
    np.testing.assert_array_equal(bins.count, [2, 1, 1])
    assert_close(bins.confidence, [0.70, 0.85, 0.95])
    assert_close(bins.accuracy, [0.5, 0.0, 1.0])


# One bin count per binning: each (binning, num_bins) pair is a separate XLA compile.
BINNING_CASES = [("equal_width", 15), ("equal_mass", 10)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("binning, num_bins", BINNING_CASES)
def test_ece_matches_numpy_loop(seed, binning, num_bins):
    probs, labels = random_mean_probs(seed)
    expected = reference_ece(probs, labels, num_bins, binning)
    assert_close(metrics.ece(probs, labels, num_bins, binning), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("binning, num_bins", BINNING_CASES)
def test_reliability_diagram_matches_numpy_loop(seed, binning, num_bins):
    probs, labels = random_mean_probs(seed)
    counts, confidence, accuracy_ = reference_bins(probs, labels, num_bins, binning)
    bins = metrics.reliability_diagram_data(probs, labels, num_bins, binning)
    np.testing.assert_array_equal(bins.count, counts)
    assert_close(bins.confidence, confidence)
    assert_close(bins.accuracy, accuracy_)


def test_equal_mass_with_fewer_points_than_bins():
    probs, labels = random_mean_probs(3, num_points=7)
    bins = metrics.reliability_diagram_data(probs, labels, 10, "equal_mass")
    np.testing.assert_array_equal(bins.count, [1] * 7 + [0] * 3)


def test_unknown_binning_names_allowed_values():
    probs, labels = random_mean_probs(0, num_points=10)
    for call in (metrics.ece, metrics.reliability_diagram_data, metrics.classification_metrics):
        with pytest.raises(ValueError, match="equal_width.*equal_mass"):
            call(probs, labels, 15, "quantile")
    with pytest.raises(ValueError, match="equal_width.*equal_mass"):
        metrics.ece_descriptor(15, "uniform")
    with pytest.raises(ValueError, match="num_bins"):
        metrics.ece(probs, labels, 0)


def test_ece_descriptor():
    assert metrics.ece_descriptor() == "equal_width-15"
    assert metrics.ece_descriptor(10, "equal_mass") == "equal_mass-10"


# ---------------------------------------------------------------------------
# Classification: uncertainty decompositions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_entropies_and_mutual_information_match_scipy(seed):
    sample_probs, _ = random_sample_probs(seed)
    samples64 = np.float64(sample_probs)
    mean_probs = samples64.mean(axis=0)
    expected_total = scipy.stats.entropy(mean_probs, axis=-1)
    expected_aleatoric = scipy.stats.entropy(samples64, axis=-1).mean(axis=0)

    assert_close(metrics.predictive_entropy(mean_probs.astype(np.float32)), expected_total, rtol=1e-5)
    assert_close(metrics.expected_entropy(sample_probs), expected_aleatoric, rtol=1e-5)
    assert_close(
        metrics.mutual_information(sample_probs), expected_total - expected_aleatoric, atol=1e-5
    )


def test_entropy_of_one_hot_is_zero_and_uniform_is_log_c():
    probs = jnp.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert_close(metrics.predictive_entropy(probs), [0.0, np.log(3.0)])


@pytest.mark.parametrize("seed", SEEDS)
def test_max_probability_and_variation_ratio(seed):
    sample_probs, _ = random_sample_probs(seed)
    assert_close(metrics.max_probability(sample_probs.mean(0)), sample_probs.mean(0).max(-1))

    votes = sample_probs.argmax(-1)  # (S, N)
    expected = np.array(
        [1.0 - np.bincount(votes[:, n], minlength=NUM_CLASSES).max() / NUM_SAMPLES
         for n in range(NUM_CLASSIFICATION_POINTS)]
    )
    assert_close(metrics.variation_ratio(sample_probs), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_log_predictive_density_from_log_probs(seed):
    rng = np.random.default_rng(seed)
    sample_log_probs = rng.normal(-2.0, 1.0, size=(NUM_SAMPLES, NUM_CLASSIFICATION_POINTS))
    expected = np.log(np.mean(np.exp(sample_log_probs), axis=0))
    result = metrics.log_predictive_density_from_log_probs(sample_log_probs.astype(np.float32))
    assert_close(result, expected, rtol=1e-5)
    # Stable where exp underflows: a constant offset passes straight through.
    offset = -1000.0
    shifted = metrics.log_predictive_density_from_log_probs((sample_log_probs + offset).astype(np.float32))
    assert_close(shifted, expected + offset, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_dict(seed):
    sample_probs, labels = random_sample_probs(seed)
    mean_probs = np.float64(sample_probs).mean(0)
    mean_probs /= mean_probs.sum(-1, keepdims=True)  # float32 round-off upsets log_loss
    result = metrics.classification_metrics(sample_probs, labels, num_bins=10, binning="equal_mass")
    assert set(result) == {"accuracy", "nll", "brier", "ece", "predictive_entropy", "mutual_information"}
    assert_close(result["accuracy"], sklearn.metrics.accuracy_score(labels, mean_probs.argmax(-1)))
    expected_nll = sklearn.metrics.log_loss(labels, mean_probs, labels=np.arange(NUM_CLASSES))
    assert_close(result["nll"], expected_nll, rtol=1e-5)
    assert_close(result["brier"], np.mean(np.sum((mean_probs - np.eye(NUM_CLASSES)[labels]) ** 2, -1)))
    assert_close(result["ece"], reference_ece(mean_probs, labels, 10, "equal_mass"))
    expected_total = scipy.stats.entropy(mean_probs, axis=-1)
    expected_aleatoric = scipy.stats.entropy(np.float64(sample_probs), axis=-1).mean(0)
    assert_close(result["predictive_entropy"], expected_total.mean(), rtol=1e-5)
    assert_close(result["mutual_information"], (expected_total - expected_aleatoric).mean(), atol=1e-5)

    mean_only = metrics.classification_metrics(sample_probs.mean(0), labels)
    assert "mutual_information" not in mean_only
    assert_close(mean_only["ece"], reference_ece(mean_probs, labels, 15, "equal_width"))


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([0, 1, 5, 2]), r"\[0, 5\)"),
        (np.array([0, -1, 2, 2]), r"\[0, 5\)"),
        (np.array([0, 1, 2]), "4 predictions"),
        (np.array([[0, 1, 2, 3]]), "1-D"),
        (np.array([0.0, 1.0, 2.0, 3.0]), "integer dtype"),
    ],
)
def test_classification_metrics_rejects_bad_labels(labels, message):
    probs, _ = random_mean_probs(0, num_points=4)
    with pytest.raises(ValueError, match=message):
        metrics.classification_metrics(probs, labels)
    with pytest.raises(ValueError, match=message):
        metrics.check_labels(labels, NUM_CLASSES, 4)


@pytest.mark.parametrize("bad", [-1, NUM_CLASSES])
def test_point_metrics_reject_out_of_range_labels_they_can_see(bad):
    """A gather inside jit clamps or wraps indices: −1 would score the last class. Concrete labels are checked."""
    probs, labels = random_mean_probs(0, num_points=10)
    labels = np.asarray(labels).copy()
    labels[3] = bad
    for metric in (metrics.accuracy, metrics.nll, metrics.brier, metrics.ece, metrics.reliability_diagram_data):
        with pytest.raises(ValueError, match=r"\[0, 5\)"):
            metric(probs, labels)
    jax.jit(metrics.nll)(probs, labels)  # traced labels: only the static checks run (the caller's job)


def test_mutual_information_from_logits_resolves_confident_points():
    """MI = H[p̄] − E_s H[p_s] against the independent form E_s KL(p_s ‖ p̄), both float64. On confident points
    (MI ~ 1e-8) the float32 form is dominated by round-off; the float64 one is exact and non-negative."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 400, NUM_CLASSES)) * 3.0
    base[..., 0] += 18.0  # p(class 0) ≈ 1 − 1e-7
    logits = (base + 0.05 * rng.normal(size=(20, 400, NUM_CLASSES))).astype(np.float32)
    log_probs = scipy.special.log_softmax(logits.astype(np.float64), axis=-1)
    log_mean = scipy.special.logsumexp(log_probs, axis=0) - np.log(logits.shape[0])
    reference = np.mean(np.sum(np.exp(log_probs) * (log_probs - log_mean), axis=-1), axis=0)
    resolved = metrics.mutual_information_from_logits(logits)
    np.testing.assert_allclose(resolved, reference, rtol=1e-6, atol=1e-15)
    assert np.all(resolved >= 0) and np.median(reference) < 1e-6
    single = np.asarray(metrics.mutual_information(jax.nn.softmax(jnp.asarray(logits), axis=-1)))
    assert np.max(np.abs(single - reference)) > 10 * np.median(reference)  # why the float64 form exists
    assert np.all(metrics.mutual_information_from_logits(logits[:1]) == 0.0)  # one sample: no disagreement
    with pytest.raises(ValueError, match=r"\(S, N, C\)"):
        metrics.mutual_information_from_logits(logits[0])


def test_point_metrics_reject_mismatched_shapes():
    probs, labels = random_mean_probs(0, num_points=10)
    for metric in (metrics.accuracy, metrics.nll, metrics.brier, metrics.ece):
        with pytest.raises(ValueError, match="labels for 10 predictions"):  # the host check, labels concrete
            metric(probs, labels[:5])
        with pytest.raises(ValueError, match="labels must have shape"):  # the kernel's static check, under jit
            jax.jit(metric)(probs, labels[:5])
        with pytest.raises(ValueError, match=r"\(N, C\)"):
            metric(probs[None], labels)
    with pytest.raises(ValueError, match=r"\(S, N, C\)"):
        metrics.mutual_information(probs)


# ---------------------------------------------------------------------------
# OOD detection
# ---------------------------------------------------------------------------


def random_ood_scores(seed, with_ties):
    rng = np.random.default_rng(seed)
    scores_in = rng.normal(0.0, 1.0, size=200)
    scores_out = rng.normal(0.8, 1.2, size=150)
    if with_ties:  # coarse rounding creates many cross-class ties
        scores_in, scores_out = np.round(scores_in * 2) / 2, np.round(scores_out * 2) / 2
    return scores_in, scores_out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_ties", [False, True])
def test_auroc_matches_sklearn(seed, with_ties):
    scores_in, scores_out = random_ood_scores(seed, with_ties)
    expected = sklearn.metrics.roc_auc_score(*sklearn_ood_labels(scores_in, scores_out))
    assert metrics.auroc(scores_in, scores_out) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_ties", [False, True])
def test_aupr_matches_sklearn(seed, with_ties):
    scores_in, scores_out = random_ood_scores(seed, with_ties)
    expected = sklearn.metrics.average_precision_score(*sklearn_ood_labels(scores_in, scores_out))
    assert metrics.aupr(scores_in, scores_out) == pytest.approx(expected, abs=1e-12)


def test_ood_metrics_extremes_and_errors():
    assert metrics.auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert metrics.auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert metrics.auroc([1.0, 1.0], [1.0]) == 0.5
    assert metrics.aupr([0.0, 1.0], [2.0, 3.0]) == 1.0
    with pytest.raises(ValueError, match="at least one"):
        metrics.auroc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        metrics.aupr([np.nan], [1.0])


# ---------------------------------------------------------------------------
# jit compatibility
# ---------------------------------------------------------------------------
# The array functions are jax.jit-decorated, so every test above already runs
# them compiled. Here the plain-Python wrappers (which call them and, for
# classification, validate labels host-side) must trace inside an enclosing
# jit and give the direct-call result. Only the two dict builders are traced
# because they cover the other wrappers and XLA compiles dominate test time.


def _jit_cases():
    means, scales, y = random_mixture(0, (NUM_REGRESSION_POINTS,))
    sample_probs, labels = random_sample_probs(0)
    return {
        "regression_metrics": (metrics.regression_metrics, (means, scales, y)),
        "classification_metrics": (
            functools.partial(metrics.classification_metrics, num_bins=10, binning="equal_mass"),
            (sample_probs, labels),
        ),
    }


JIT_CASES = _jit_cases()


@pytest.mark.parametrize("name", sorted(JIT_CASES))
def test_jit_matches_direct_call(name):
    function, args = JIT_CASES[name]
    direct = function(*args)
    jitted = jax.jit(function)(*args)
    assert jax.tree_util.tree_structure(direct) == jax.tree_util.tree_structure(jitted)
    for direct_leaf, jitted_leaf in zip(jax.tree_util.tree_leaves(direct), jax.tree_util.tree_leaves(jitted)):
        np.testing.assert_allclose(np.asarray(jitted_leaf), np.asarray(direct_leaf), rtol=1e-6, atol=1e-6)


def test_check_labels_skipped_under_jit():
    function, (sample_probs, labels) = JIT_CASES["classification_metrics"]
    out_of_range = labels.copy()
    out_of_range[0] = NUM_CLASSES
    # Values cannot be inspected while tracing, so the jitted call must not raise
    # (reusing the compiled function above); the direct call must.
    jax.jit(function)(sample_probs, out_of_range)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        function(sample_probs, out_of_range)
