"""Shared inputs and checks of the bdljax.evaluate tests: fixed seeds, a few shapes, float32-vs-float64 tolerances.

XLA compilation dominates the run time of those tests (one per function, shape and static option), so they share
a few input shapes.
"""

import jax
import numpy as np
import scipy.special

SEEDS = [0, 1, 2]
NUM_SAMPLES, NUM_CLASSIFICATION_POINTS, NUM_OUTPUTS, NUM_CLASSES = 6, 201, 3, 5
NUM_REGRESSION_POINTS = 120

# float32 computation compared with float64 references.
RTOL, ATOL = 2e-5, 2e-6


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


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


def assert_jit_matches_direct_call(function, args):
    """``function(*args)`` traces inside an enclosing ``jax.jit`` and gives the direct call's result."""
    direct = function(*args)
    jitted = jax.jit(function)(*args)
    assert jax.tree_util.tree_structure(direct) == jax.tree_util.tree_structure(jitted)
    for direct_leaf, jitted_leaf in zip(jax.tree_util.tree_leaves(direct), jax.tree_util.tree_leaves(jitted)):
        np.testing.assert_allclose(np.asarray(jitted_leaf), np.asarray(direct_leaf), rtol=1e-6, atol=1e-6)
