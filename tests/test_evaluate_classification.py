"""Tests of bdljax.evaluate.classification against sklearn.metrics (accuracy, log loss) and NumPy loops / one-hot
arithmetic / counts (Brier, ECE, reliability bins). Random inputs come from a few fixed seeds."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from bdljax.evaluate import classification
from evaluate_inputs import (NUM_CLASSES, NUM_CLASSIFICATION_POINTS, NUM_SAMPLES, SEEDS, assert_close,
                             assert_jit_matches_direct_call, random_mean_probs, random_sample_probs)


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


# ---------------------------------------------------------------------------
# Classification: point metrics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_matches_sklearn(seed):
    probs, labels = random_mean_probs(seed)
    expected = sklearn.metrics.accuracy_score(labels, probs.argmax(-1))
    assert_close(classification.accuracy(probs, labels), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_nll_matches_sklearn_log_loss(seed):
    probs, labels = random_mean_probs(seed)
    probs64 = np.float64(probs) / np.float64(probs).sum(-1, keepdims=True)
    expected = sklearn.metrics.log_loss(labels, probs64, labels=np.arange(NUM_CLASSES))
    assert_close(classification.nll(probs, labels), expected, rtol=1e-5)


def test_nll_clips_zero_probability_at_eps():
    probs = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    labels = jnp.array([1, 0])
    expected = (-np.log(classification.PROB_EPS) - np.log(0.5)) / 2
    assert_close(classification.nll(probs, labels), expected, rtol=1e-6)
    assert np.isfinite(classification.nll(probs, labels))


@pytest.mark.parametrize("seed", SEEDS)
def test_brier_matches_numpy_one_hot(seed):
    probs, labels = random_mean_probs(seed)
    one_hot = np.eye(NUM_CLASSES)[labels]
    expected = np.mean(np.sum((np.float64(probs) - one_hot) ** 2, axis=-1))
    assert_close(classification.brier(probs, labels), expected)


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
    assert_close(classification.ece(HAND_PROBS, HAND_LABELS, num_bins=4, binning="equal_width"), 0.30)
    bins = classification.reliability_diagram_data(HAND_PROBS, HAND_LABELS, num_bins=4)
    np.testing.assert_array_equal(bins.count, [0, 0, 2, 2])
    assert_close(bins.confidence, [np.nan, np.nan, 0.70, 0.90])
    assert_close(bins.accuracy, [np.nan, np.nan, 0.5, 0.5])


def test_ece_hand_computed_equal_mass():
    assert_close(classification.ece(HAND_PROBS, HAND_LABELS, num_bins=3, binning="equal_mass"), 0.325)
    bins = classification.reliability_diagram_data(HAND_PROBS, HAND_LABELS, num_bins=3, binning="equal_mass")
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
    assert_close(classification.ece(probs, labels, num_bins, binning), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("binning, num_bins", BINNING_CASES)
def test_reliability_diagram_matches_numpy_loop(seed, binning, num_bins):
    probs, labels = random_mean_probs(seed)
    counts, confidence, accuracy_ = reference_bins(probs, labels, num_bins, binning)
    bins = classification.reliability_diagram_data(probs, labels, num_bins, binning)
    np.testing.assert_array_equal(bins.count, counts)
    assert_close(bins.confidence, confidence)
    assert_close(bins.accuracy, accuracy_)


def test_equal_mass_with_fewer_points_than_bins():
    probs, labels = random_mean_probs(3, num_points=7)
    bins = classification.reliability_diagram_data(probs, labels, 10, "equal_mass")
    np.testing.assert_array_equal(bins.count, [1] * 7 + [0] * 3)


def test_unknown_binning_names_allowed_values():
    probs, labels = random_mean_probs(0, num_points=10)
    for call in (classification.ece, classification.reliability_diagram_data, classification.classification_metrics):
        with pytest.raises(ValueError, match="equal_width.*equal_mass"):
            call(probs, labels, 15, "quantile")
    with pytest.raises(ValueError, match="equal_width.*equal_mass"):
        classification.ece_descriptor(15, "uniform")
    with pytest.raises(ValueError, match="num_bins"):
        classification.ece(probs, labels, 0)


def test_ece_descriptor():
    assert classification.ece_descriptor() == "equal_width-15"
    assert classification.ece_descriptor(10, "equal_mass") == "equal_mass-10"


@pytest.mark.parametrize("seed", SEEDS)
def test_log_predictive_density_from_log_probs(seed):
    rng = np.random.default_rng(seed)
    sample_log_probs = rng.normal(-2.0, 1.0, size=(NUM_SAMPLES, NUM_CLASSIFICATION_POINTS))
    expected = np.log(np.mean(np.exp(sample_log_probs), axis=0))
    result = classification.log_predictive_density_from_log_probs(sample_log_probs.astype(np.float32))
    assert_close(result, expected, rtol=1e-5)
    # Stable where exp underflows: a constant offset passes straight through.
    offset = -1000.0
    shifted = classification.log_predictive_density_from_log_probs((sample_log_probs + offset).astype(np.float32))
    assert_close(shifted, expected + offset, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_dict(seed):
    sample_probs, labels = random_sample_probs(seed)
    mean_probs = np.float64(sample_probs).mean(0)
    mean_probs /= mean_probs.sum(-1, keepdims=True)  # float32 round-off upsets log_loss
    result = classification.classification_metrics(sample_probs, labels, num_bins=10, binning="equal_mass")
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

    mean_only = classification.classification_metrics(sample_probs.mean(0), labels)
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
        classification.classification_metrics(probs, labels)
    with pytest.raises(ValueError, match=message):
        classification.check_labels(labels, NUM_CLASSES, 4)


@pytest.mark.parametrize("bad", [-1, NUM_CLASSES])
def test_point_metrics_reject_out_of_range_labels_they_can_see(bad):
    """A gather inside jit clamps or wraps indices: −1 would score the last class. Concrete labels are checked."""
    probs, labels = random_mean_probs(0, num_points=10)
    labels = np.asarray(labels).copy()
    labels[3] = bad
    for metric in (classification.accuracy, classification.nll, classification.brier, classification.ece, classification.reliability_diagram_data):
        with pytest.raises(ValueError, match=r"\[0, 5\)"):
            metric(probs, labels)
    jax.jit(classification.nll)(probs, labels)  # traced labels: only the static checks run (the caller's job)


def test_point_metrics_reject_mismatched_shapes():
    probs, labels = random_mean_probs(0, num_points=10)
    for metric in (classification.accuracy, classification.nll, classification.brier, classification.ece):
        with pytest.raises(ValueError, match="labels for 10 predictions"):  # the host check, labels concrete
            metric(probs, labels[:5])
        with pytest.raises(ValueError, match="labels must have shape"):  # the kernel's static check, under jit
            jax.jit(metric)(probs, labels[:5])
        with pytest.raises(ValueError, match=r"\(N, C\)"):
            metric(probs[None], labels)


# The array functions are jax.jit-decorated, so every test above already runs them compiled. classification_metrics
# (plain Python around them, validating labels host-side) must trace inside an enclosing jit too.
CLASSIFICATION_METRICS = functools.partial(classification.classification_metrics, num_bins=10, binning="equal_mass")


def test_jit_matches_direct_call():
    assert_jit_matches_direct_call(CLASSIFICATION_METRICS, random_sample_probs(0))


def test_check_labels_skipped_under_jit():
    function = CLASSIFICATION_METRICS
    sample_probs, labels = random_sample_probs(0)
    out_of_range = labels.copy()
    out_of_range[0] = NUM_CLASSES
    # Values cannot be inspected while tracing, so the jitted call must not raise
    # (reusing the compiled function above); the direct call must.
    jax.jit(function)(sample_probs, out_of_range)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        function(sample_probs, out_of_range)
