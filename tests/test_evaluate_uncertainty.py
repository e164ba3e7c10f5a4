"""Tests of bdljax.evaluate.uncertainty: uncertainty decompositions against scipy.stats.entropy and vote counts,
the float64 mutual information against an independent KL form, and the acquisition functions against hand-computed
values and scipy on small probability tables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from bdljax.evaluate import uncertainty
from evaluate_inputs import NUM_CLASSES, NUM_CLASSIFICATION_POINTS, NUM_SAMPLES, SEEDS, assert_close, random_sample_probs

# Two samples, three pool points, two classes, chosen so each score has a simple closed form:
#   point 0: samples agree and are certain        -> every score 0
#   point 1: samples agree on (1/2, 1/2)          -> entropy log 2, BALD 0 (pure aleatoric)
#   point 2: samples are certain but disagree     -> entropy log 2, BALD log 2 (pure epistemic)
TABLE = np.array([
    [[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]],
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]],
], dtype=np.float32)
LOG2 = np.log(2.0)


# ---------------------------------------------------------------------------
# Uncertainty decompositions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_entropies_and_mutual_information_match_scipy(seed):
    sample_probs, _ = random_sample_probs(seed)
    samples64 = np.float64(sample_probs)
    mean_probs = samples64.mean(axis=0)
    expected_total = scipy.stats.entropy(mean_probs, axis=-1)
    expected_aleatoric = scipy.stats.entropy(samples64, axis=-1).mean(axis=0)

    assert_close(uncertainty.predictive_entropy(mean_probs.astype(np.float32)), expected_total, rtol=1e-5)
    assert_close(uncertainty.expected_entropy(sample_probs), expected_aleatoric, rtol=1e-5)
    assert_close(
        uncertainty.mutual_information(sample_probs), expected_total - expected_aleatoric, atol=1e-5
    )


def test_entropy_of_one_hot_is_zero_and_uniform_is_log_c():
    probs = jnp.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert_close(uncertainty.predictive_entropy(probs), [0.0, np.log(3.0)])


@pytest.mark.parametrize("seed", SEEDS)
def test_max_probability_and_variation_ratio(seed):
    sample_probs, _ = random_sample_probs(seed)
    assert_close(uncertainty.max_probability(sample_probs.mean(0)), sample_probs.mean(0).max(-1))

    votes = sample_probs.argmax(-1)  # (S, N)
    expected = np.array(
        [1.0 - np.bincount(votes[:, n], minlength=NUM_CLASSES).max() / NUM_SAMPLES
         for n in range(NUM_CLASSIFICATION_POINTS)]
    )
    assert_close(uncertainty.variation_ratio(sample_probs), expected)


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
    resolved = uncertainty.mutual_information_from_logits(logits)
    np.testing.assert_allclose(resolved, reference, rtol=1e-6, atol=1e-15)
    assert np.all(resolved >= 0) and np.median(reference) < 1e-6
    single = np.asarray(uncertainty.mutual_information(jax.nn.softmax(jnp.asarray(logits), axis=-1)))
    assert np.max(np.abs(single - reference)) > 10 * np.median(reference)  # why the float64 form exists
    assert np.all(uncertainty.mutual_information_from_logits(logits[:1]) == 0.0)  # one sample: no disagreement
    with pytest.raises(ValueError, match=r"\(S, N, C\)"):
        uncertainty.mutual_information_from_logits(logits[0])


# ---------------------------------------------------------------------------
# Acquisition functions
# ---------------------------------------------------------------------------


def random_table(seed, num_samples=7, num_points=11, num_classes=4):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(num_classes, 0.7), size=(num_samples, num_points)).astype(np.float32)


def test_hand_computed_values():
    np.testing.assert_allclose(uncertainty.max_entropy(TABLE), [0.0, LOG2, LOG2], atol=1e-6)
    np.testing.assert_allclose(uncertainty.mutual_information(TABLE), [0.0, 0.0, LOG2], atol=1e-6)
    np.testing.assert_allclose(uncertainty.least_confidence(TABLE), [0.0, 0.5, 0.5], atol=1e-6)
    # Freeman's vote count differs on point 1: both samples vote for class 0 (argmax of a tie), so no disagreement.
    np.testing.assert_allclose(uncertainty.variation_ratio(TABLE), [0.0, 0.0, 0.5], atol=1e-6)
    # Mean std: point 2 has per-class std sqrt(E[p²] − E[p]²) = sqrt(1/2 − 1/4) = 1/2 for both classes.
    np.testing.assert_allclose(uncertainty.mean_std(TABLE), [0.0, 0.0, 0.5], atol=1e-6)


def test_asymmetric_hand_computed_point():
    # One point, samples (0.9, 0.1) and (0.3, 0.7): mean (0.6, 0.4).
    table = np.array([[[0.9, 0.1]], [[0.3, 0.7]]], dtype=np.float32)
    h = lambda p: -sum(v * np.log(v) for v in p)  # noqa: E731
    expected_entropy = h([0.6, 0.4])
    np.testing.assert_allclose(uncertainty.max_entropy(table), [expected_entropy], rtol=1e-6)
    np.testing.assert_allclose(uncertainty.mutual_information(table), [expected_entropy - (h([0.9, 0.1]) + h([0.3, 0.7])) / 2], rtol=1e-5)
    np.testing.assert_allclose(uncertainty.least_confidence(table), [0.4], rtol=1e-6)
    np.testing.assert_allclose(uncertainty.mean_std(table), [0.3], rtol=1e-5)  # |0.9 − 0.3| / 2 for both classes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scipy_entropy(seed):
    table = random_table(seed)
    mean = table.mean(axis=0)
    entropy_of_mean = scipy.stats.entropy(mean, axis=-1)
    mean_of_entropies = scipy.stats.entropy(table, axis=-1).mean(axis=0)
    np.testing.assert_allclose(uncertainty.max_entropy(table), entropy_of_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(uncertainty.mutual_information(table), entropy_of_mean - mean_of_entropies, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(uncertainty.least_confidence(table), 1 - mean.max(axis=-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(uncertainty.mean_std(table), table.std(axis=0).mean(axis=-1), rtol=1e-4, atol=1e-6)
    # BALD ≥ 0 (concavity of H).
    assert np.all(np.asarray(uncertainty.mutual_information(table)) >= -1e-6)


def test_point_estimate_has_no_epistemic_score():
    table = random_table(3, num_samples=1)
    np.testing.assert_allclose(uncertainty.mutual_information(table), 0.0, atol=1e-6)
    np.testing.assert_allclose(uncertainty.mean_std(table), 0.0, atol=1e-6)
    # ... but its entropy is that of its single prediction.
    np.testing.assert_allclose(uncertainty.max_entropy(table), scipy.stats.entropy(table[0], axis=-1), rtol=1e-5)


def test_random_scores_are_uniform_and_keyed():
    table = jnp.zeros((1, 4000, 3))
    scores = uncertainty.random(table, jax.random.key(0))
    assert scores.shape == (4000,)
    # Uniform(0, 1): mean 1/2 with standard error sqrt(1/12 / 4000) ≈ 0.0046; 5 standard errors.
    assert abs(float(scores.mean()) - 0.5) < 5 * np.sqrt(1 / 12 / 4000)
    assert np.all((np.asarray(scores) >= 0) & (np.asarray(scores) < 1))
    np.testing.assert_array_equal(scores, uncertainty.random(table, jax.random.key(0)))
    assert not np.array_equal(scores, uncertainty.random(table, jax.random.key(1)))
    with pytest.raises(ValueError, match="PRNG key"):
        uncertainty.random(table, None)


def test_registry_and_uniform_signature():
    table = random_table(4)
    assert uncertainty.names() == ["bald", "max_entropy", "variation_ratios", "mean_std", "random"]
    for name in uncertainty.names():
        scores = jax.jit(uncertainty.get(name))(table, jax.random.key(0))
        assert scores.shape == (table.shape[1],) and bool(jnp.all(jnp.isfinite(scores)))
    np.testing.assert_allclose(uncertainty.get("bald")(table, None), uncertainty.mutual_information(table))
    with pytest.raises(ValueError, match="unknown acquisition function 'entropy'"):
        uncertainty.get("entropy")


def test_bad_shapes_fail_with_a_fix():
    with pytest.raises(ValueError, match=r"\(S, N, C\)"):
        uncertainty.mutual_information(np.ones((5, 3), np.float32) / 3)


def test_select_top_skips_unavailable_points():
    scores = jnp.array([0.9, 0.1, 0.8, 0.7, 0.95])
    available = jnp.array([True, True, True, True, False])
    np.testing.assert_array_equal(uncertainty.select_top(scores, available, 2), [0, 2])
    np.testing.assert_array_equal(uncertainty.select_top(scores, jnp.ones(5, bool), 3), [4, 0, 2])


def test_scores_vmap_over_pools():
    tables = np.stack([random_table(s) for s in range(3)])  # (pools, S, N, C)
    batched = jax.vmap(uncertainty.mutual_information)(tables)
    np.testing.assert_allclose(batched[1], uncertainty.mutual_information(tables[1]), rtol=1e-6)
