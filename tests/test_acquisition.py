"""Acquisition functions against hand-computed values and scipy on small probability tables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bdljax.evaluate import acquisition, metrics

# Two samples, three pool points, two classes, chosen so each score has a simple closed form:
#   point 0: samples agree and are certain        -> every score 0
#   point 1: samples agree on (1/2, 1/2)          -> entropy log 2, BALD 0 (pure aleatoric)
#   point 2: samples are certain but disagree     -> entropy log 2, BALD log 2 (pure epistemic)
TABLE = np.array([
    [[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]],
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]],
], dtype=np.float32)
LOG2 = np.log(2.0)


def random_table(seed, num_samples=7, num_points=11, num_classes=4):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(num_classes, 0.7), size=(num_samples, num_points)).astype(np.float32)


def test_hand_computed_values():
    np.testing.assert_allclose(acquisition.max_entropy(TABLE), [0.0, LOG2, LOG2], atol=1e-6)
    np.testing.assert_allclose(acquisition.bald(TABLE), [0.0, 0.0, LOG2], atol=1e-6)
    np.testing.assert_allclose(acquisition.variation_ratios(TABLE), [0.0, 0.5, 0.5], atol=1e-6)
    # Mean std: point 2 has per-class std sqrt(E[p²] − E[p]²) = sqrt(1/2 − 1/4) = 1/2 for both classes.
    np.testing.assert_allclose(acquisition.mean_std(TABLE), [0.0, 0.0, 0.5], atol=1e-6)


def test_asymmetric_hand_computed_point():
    # One point, samples (0.9, 0.1) and (0.3, 0.7): mean (0.6, 0.4).
    table = np.array([[[0.9, 0.1]], [[0.3, 0.7]]], dtype=np.float32)
    h = lambda p: -sum(v * np.log(v) for v in p)  # noqa: E731
    expected_entropy = h([0.6, 0.4])
    np.testing.assert_allclose(acquisition.max_entropy(table), [expected_entropy], rtol=1e-6)
    np.testing.assert_allclose(acquisition.bald(table), [expected_entropy - (h([0.9, 0.1]) + h([0.3, 0.7])) / 2], rtol=1e-5)
    np.testing.assert_allclose(acquisition.variation_ratios(table), [0.4], rtol=1e-6)
    np.testing.assert_allclose(acquisition.mean_std(table), [0.3], rtol=1e-5)  # |0.9 − 0.3| / 2 for both classes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scipy_entropy(seed):
    table = random_table(seed)
    mean = table.mean(axis=0)
    entropy_of_mean = scipy.stats.entropy(mean, axis=-1)
    mean_of_entropies = scipy.stats.entropy(table, axis=-1).mean(axis=0)
    np.testing.assert_allclose(acquisition.max_entropy(table), entropy_of_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acquisition.bald(table), entropy_of_mean - mean_of_entropies, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(acquisition.variation_ratios(table), 1 - mean.max(axis=-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acquisition.mean_std(table), table.std(axis=0).mean(axis=-1), rtol=1e-4, atol=1e-6)
    # Agreement with the metrics module's decomposition, and BALD ≥ 0 (concavity of H).
    np.testing.assert_allclose(acquisition.bald(table), metrics.mutual_information(table), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(acquisition.bald(table)) >= -1e-6)


def test_point_estimate_has_no_epistemic_score():
    table = random_table(3, num_samples=1)
    np.testing.assert_allclose(acquisition.bald(table), 0.0, atol=1e-6)
    np.testing.assert_allclose(acquisition.mean_std(table), 0.0, atol=1e-6)
    # ... but its entropy is that of its single prediction.
    np.testing.assert_allclose(acquisition.max_entropy(table), scipy.stats.entropy(table[0], axis=-1), rtol=1e-5)


def test_random_scores_are_uniform_and_keyed():
    table = jnp.zeros((1, 4000, 3))
    scores = acquisition.random(table, jax.random.key(0))
    assert scores.shape == (4000,)
    # Uniform(0, 1): mean 1/2 with standard error sqrt(1/12 / 4000) ≈ 0.0046; 5 standard errors.
    assert abs(float(scores.mean()) - 0.5) < 5 * np.sqrt(1 / 12 / 4000)
    assert np.all((np.asarray(scores) >= 0) & (np.asarray(scores) < 1))
    np.testing.assert_array_equal(scores, acquisition.random(table, jax.random.key(0)))
    assert not np.array_equal(scores, acquisition.random(table, jax.random.key(1)))
    with pytest.raises(ValueError, match="PRNG key"):
        acquisition.random(table, None)


def test_registry_and_uniform_signature():
    table = random_table(4)
    assert acquisition.names() == ["bald", "max_entropy", "variation_ratios", "mean_std", "random"]
    for name in acquisition.names():
        scores = jax.jit(acquisition.get(name))(table, jax.random.key(0))
        assert scores.shape == (table.shape[1],) and bool(jnp.all(jnp.isfinite(scores)))
    np.testing.assert_allclose(acquisition.get("bald")(table, None), acquisition.bald(table))
    with pytest.raises(ValueError, match="unknown acquisition function 'entropy'"):
        acquisition.get("entropy")


def test_bad_shapes_fail_with_a_fix():
    with pytest.raises(ValueError, match=r"\(S, N, C\)"):
        acquisition.bald(np.ones((5, 3), np.float32) / 3)


def test_select_top_skips_unavailable_points():
    scores = jnp.array([0.9, 0.1, 0.8, 0.7, 0.95])
    available = jnp.array([True, True, True, True, False])
    np.testing.assert_array_equal(acquisition.select_top(scores, available, 2), [0, 2])
    np.testing.assert_array_equal(acquisition.select_top(scores, jnp.ones(5, bool), 3), [4, 0, 2])


def test_scores_vmap_over_pools():
    tables = np.stack([random_table(s) for s in range(3)])  # (pools, S, N, C)
    batched = jax.vmap(acquisition.bald)(tables)
    np.testing.assert_allclose(batched[1], acquisition.bald(tables[1]), rtol=1e-6)
