"""Tests of bdljax.evaluate.ood against sklearn.metrics (ROC AUC, average precision), with and without ties."""

import numpy as np
import pytest
import sklearn.metrics

from bdljax.evaluate import ood
from evaluate_inputs import SEEDS


def sklearn_ood_labels(scores_in, scores_out):
    y_true = np.concatenate([np.zeros(len(scores_in)), np.ones(len(scores_out))])
    return y_true, np.concatenate([scores_in, scores_out])


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
    assert ood.auroc(scores_in, scores_out) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_ties", [False, True])
def test_aupr_matches_sklearn(seed, with_ties):
    scores_in, scores_out = random_ood_scores(seed, with_ties)
    expected = sklearn.metrics.average_precision_score(*sklearn_ood_labels(scores_in, scores_out))
    assert ood.aupr(scores_in, scores_out) == pytest.approx(expected, abs=1e-12)


def test_ood_metrics_extremes_and_errors():
    assert ood.auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert ood.auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert ood.auroc([1.0, 1.0], [1.0]) == 0.5
    assert ood.aupr([0.0, 1.0], [2.0, 3.0]) == 1.0
    with pytest.raises(ValueError, match="at least one"):
        ood.auroc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        ood.aupr([np.nan], [1.0])
