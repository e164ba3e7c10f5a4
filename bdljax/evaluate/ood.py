"""Out-of-distribution detection: how well a per-point score separates in- from out-of-distribution inputs.

OOD is the positive class and a higher score means "more likely out of
distribution" (predictive entropy, mutual information, 1 - max probability:
see :mod:`bdljax.evaluate.uncertainty`). Host-side NumPy, evaluated once at
the end (not jit-able): auroc, aupr.
"""

from __future__ import annotations

import numpy as np
import scipy.stats


def _pooled_ood_scores(scores_in, scores_out):
    scores_in = np.asarray(scores_in, dtype=np.float64).ravel()
    scores_out = np.asarray(scores_out, dtype=np.float64).ravel()
    if scores_in.size == 0 or scores_out.size == 0:
        raise ValueError(
            f"need at least one in- and one out-of-distribution score, got "
            f"{scores_in.size} and {scores_out.size}"
        )
    if not (np.all(np.isfinite(scores_in)) and np.all(np.isfinite(scores_out))):
        raise ValueError("OOD scores must be finite")
    scores = np.concatenate([scores_in, scores_out])
    is_out = np.concatenate([np.zeros(scores_in.size), np.ones(scores_out.size)])
    return scores, is_out


def auroc(scores_in, scores_out) -> float:
    """Area under the ROC curve for OOD detection; OOD is the positive class.

    Higher score = more likely out-of-distribution. Computed as the
    Mann-Whitney statistic with average ranks for ties,
    ``AUROC = (R_out - n_out (n_out + 1) / 2) / (n_in n_out)`` with ``R_out``
    the sum of the OOD points' ranks in the pooled sample -- i.e.
    ``P(s_out > s_in) + P(s_out = s_in) / 2``, equal to scikit-learn's
    ``roc_auc_score``.

    Host-side NumPy (evaluated once at the end; not jit-able). Inputs: 1-D
    arrays (flattened), at least one of each. Returns a Python float.
    """
    scores, is_out = _pooled_ood_scores(scores_in, scores_out)
    num_out = is_out.sum()
    num_in = is_out.size - num_out
    rank_sum_out = scipy.stats.rankdata(scores, method="average")[is_out == 1].sum()
    return float((rank_sum_out - num_out * (num_out + 1) / 2) / (num_in * num_out))


def aupr(scores_in, scores_out) -> float:
    """Average precision for OOD detection; OOD is the positive class.

    Higher score = more likely out-of-distribution. Step-wise AP as in
    scikit-learn's ``average_precision_score``:
    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds in
    decreasing order, where ``P_k``/``R_k`` are precision/recall when flagging
    every point with score >= threshold k (tied scores enter together) and
    ``R_0 = 0``. No interpolation.

    Host-side NumPy (evaluated once at the end; not jit-able). Returns a
    Python float.
    """
    scores, is_out = _pooled_ood_scores(scores_in, scores_out)
    order = np.argsort(-scores, kind="stable")
    scores, is_out = scores[order], is_out[order]
    # Last index of each run of tied scores = one threshold.
    threshold_ends = np.flatnonzero(np.diff(scores, append=-np.inf))
    true_positives = np.cumsum(is_out)[threshold_ends]
    flagged = threshold_ends + 1
    precision = true_positives / flagged
    recall = true_positives / is_out.sum()
    recall_gain = np.diff(recall, prepend=0.0)
    return float(np.sum(recall_gain * precision))
