"""Classification metrics of a posterior predictive: accuracy, NLL, Brier score, calibration.

Inputs are predictive-mean probabilities ``(N, C)`` (``classification_metrics``
also takes per-sample probabilities ``(S, N, C)``) and integer labels ``(N,)``:
    accuracy, nll, brier, ece, reliability_diagram_data, ece_descriptor,
    log_predictive_density_from_log_probs, classification_metrics, check_labels.

Array functions are wrapped in ``jax.jit`` with their option arguments
(``num_bins``, ``binning``) static, so eager calls compile once per input shape
and they compose with an enclosing ``jit``. ``classification_metrics`` (which
validates concrete labels on the host) is plain Python around jitted kernels and
is itself traceable under ``jit``.

Shape problems, unknown option names and (for concrete inputs) out-of-range
labels raise ``ValueError``. Shape checks use static shapes, so they also run
under ``jax.jit``; value checks on labels run on the host whenever the labels
are concrete (``accuracy``, ``nll``, ``brier``, ``ece`` and
``reliability_diagram_data`` check before calling their jitted kernels) and are
skipped while tracing.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from bdljax.evaluate.uncertainty import mutual_information, predictive_entropy

# Lower clip for probabilities inside logarithms: log(1e-12) ~ -27.6 bounds the
# penalty of a single confidently wrong prediction instead of returning inf.
PROB_EPS = 1e-12

ECE_BINNINGS = ("equal_width", "equal_mass")


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_labels(labels, num_classes: int, num_points: int | None = None) -> None:
    """Validate integer class labels; raises ``ValueError`` naming the problem.

    Checks: 1-D, integer dtype, length ``num_points`` (if given), and, when
    ``labels`` is concrete (not a jit tracer), every value in ``[0, num_classes)``.
    The value check transfers ``labels`` to the host, so it is meant for
    once-per-evaluation use, not inside hot loops.
    """
    if not _is_traced(labels):
        labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D of shape (N,), got shape {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    if num_points is not None and labels.shape[0] != num_points:
        raise ValueError(f"got {labels.shape[0]} labels for {num_points} predictions")
    if _is_traced(labels) or labels.size == 0:
        return
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for {num_classes} classes, "
            f"got values in [{low}, {high}]"
        )


def _checks_concrete_labels(jitted):
    """Wrap a jitted ``metric(probs, labels, ...)`` so that concrete labels are value-checked on the host first.

    Inside ``jit`` the kernel sees only shapes, and a gather clamps or wraps out-of-range indices (a label −1
    would silently score the last class); so the public function checks the values whenever they are known.
    Under an enclosing ``jit`` the labels are tracers and only the kernel's static checks run.
    """

    @functools.wraps(jitted)
    def metric(probs, labels, *args, **kwargs):
        shape = np.shape(probs)
        if not _is_traced(labels) and len(shape) == 2:
            check_labels(labels, shape[-1], shape[0])
        return jitted(probs, labels, *args, **kwargs)

    return metric


def _check_probs(probs):
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got {probs.shape}")


def _check_probs_and_label_shapes(probs, labels):
    """Static checks only (rank, dtype, length): safe under jit and free."""
    _check_probs(probs)
    if labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise ValueError(
            f"labels must have shape ({probs.shape[0]},) to match probs {probs.shape}, "
            f"got {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")


@_checks_concrete_labels
@jax.jit
def accuracy(probs, labels):
    """Fraction of points whose arg-max class equals the label.

    Args:
        probs: ``(N, C)`` predictive (mean) probabilities.
        labels: ``(N,)`` integers in ``[0, C)``.

    Returns:
        Scalar in [0, 1]. Ties in ``probs`` resolve to the lowest class index.
    """
    probs, labels = jnp.asarray(probs), jnp.asarray(labels)
    _check_probs_and_label_shapes(probs, labels)
    return jnp.mean(jnp.argmax(probs, axis=-1) == labels)


def _true_class_probs(probs, labels):
    return jnp.take_along_axis(probs, labels[:, None], axis=-1)[:, 0]


@_checks_concrete_labels
@jax.jit
def nll(probs, labels, eps: float = PROB_EPS):
    """Mean negative log predictive probability of the true label.

    ``NLL = -(1/N) sum_n log max(p_n[y_n], eps)``; the clip at ``eps``
    (default ``PROB_EPS = 1e-12``) keeps a single zero-probability label from
    making the mean infinite. Pass per-sample log probabilities through
    ``log_predictive_density_from_log_probs`` instead when probabilities
    underflow.

    Args:
        probs: ``(N, C)`` predictive (mean) probabilities.
        labels: ``(N,)`` integers in ``[0, C)``.

    Returns:
        Scalar, nats per point.
    """
    probs, labels = jnp.asarray(probs), jnp.asarray(labels)
    _check_probs_and_label_shapes(probs, labels)
    return -jnp.mean(jnp.log(jnp.maximum(_true_class_probs(probs, labels), eps)))


@_checks_concrete_labels
@jax.jit
def brier(probs, labels):
    """Multi-class Brier score (Brier, 1950), summed over classes.

    ``BS = (1/N) sum_n sum_c (p_nc - 1[y_n = c])^2``, in [0, 2]. Note that
    scikit-learn's binary ``brier_score_loss`` is half of this for C = 2.

    Args:
        probs: ``(N, C)`` predictive (mean) probabilities.
        labels: ``(N,)`` integers in ``[0, C)``.

    Returns:
        Scalar.
    """
    probs, labels = jnp.asarray(probs), jnp.asarray(labels)
    _check_probs_and_label_shapes(probs, labels)
    one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    return jnp.mean(jnp.sum(jnp.square(probs - one_hot), axis=-1))


class ReliabilityBins(NamedTuple):
    """Per-bin statistics for a reliability diagram, each of shape ``(num_bins,)``.

    ``confidence`` and ``accuracy`` are bin means (NaN for empty bins, which
    plotting libraries skip); ``count`` is the number of points per bin.
    """

    confidence: jax.Array
    accuracy: jax.Array
    count: jax.Array


def _check_binning(num_bins, binning):
    if binning not in ECE_BINNINGS:
        raise ValueError(f"unknown binning {binning!r}; allowed values are {ECE_BINNINGS}")
    if not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")


def _equal_width_bin_index(confidence, num_bins):
    """Bins ``(k/B, (k+1)/B]``, right-closed as in Guo et al. (2017); 0 goes to bin 0."""
    inner_edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=confidence.dtype)[1:-1]
    return jnp.searchsorted(inner_edges, confidence, side="left")


def _equal_mass_bin_index(confidence, num_bins):
    """Sort by confidence and split like ``numpy.array_split``.

    With ``N = q B + r`` the first ``r`` bins hold ``q + 1`` points and the rest
    ``q``; points with tied confidence may fall into neighbouring bins (the
    stable sort keeps their input order).
    """
    num_points = confidence.shape[0]
    small_size, num_large = divmod(num_points, num_bins)
    large_size = small_size + 1
    rank = jnp.arange(num_points)
    num_in_large_bins = num_large * large_size
    bin_of_rank = jnp.where(
        rank < num_in_large_bins,
        rank // large_size,
        # max(.., 1) only guards the masked-out branch when N < B.
        num_large + (rank - num_in_large_bins) // max(small_size, 1),
    )
    order = jnp.argsort(confidence, stable=True)
    return jnp.zeros(num_points, dtype=bin_of_rank.dtype).at[order].set(bin_of_rank)


def _top_label_bin_sums(probs, labels, num_bins, binning):
    """Per-bin count, summed confidence and summed correctness (top label)."""
    probs, labels = jnp.asarray(probs), jnp.asarray(labels)
    _check_probs_and_label_shapes(probs, labels)
    _check_binning(num_bins, binning)
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    if binning == "equal_width":
        bin_index = _equal_width_bin_index(confidence, num_bins)
    else:
        bin_index = _equal_mass_bin_index(confidence, num_bins)

    def per_bin_sum(values):
        return jnp.zeros(num_bins, dtype=probs.dtype).at[bin_index].add(values)

    return per_bin_sum(jnp.ones_like(confidence)), per_bin_sum(confidence), per_bin_sum(correct)


@_checks_concrete_labels
@functools.partial(jax.jit, static_argnames=("num_bins", "binning"))
def ece(probs, labels, num_bins: int = 15, binning: str = "equal_width"):
    """Expected calibration error of the top-label confidence.

    ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` where, for the points in bin b,
    ``conf_b`` is the mean of ``max_c p_nc`` and ``acc_b`` the fraction whose
    arg-max equals the label (Naeini et al., 2015; Guo et al., 2017).
    Empty bins contribute zero.

    Binnings (``binning``, static):
        ``"equal_width"``: ``num_bins`` intervals ``(k/B, (k+1)/B]`` on [0, 1].
        ``"equal_mass"``: ``num_bins`` bins of (nearly) equal point counts,
        split like ``numpy.array_split`` after sorting by confidence.

    Args:
        probs: ``(N, C)`` predictive (mean) probabilities.
        labels: ``(N,)`` integers in ``[0, C)``.
        num_bins: static positive int.
        binning: ``"equal_width"`` or ``"equal_mass"``; anything else raises
            ``ValueError``.

    Returns:
        Scalar in [0, 1]. ``ece_descriptor(num_bins, binning)`` gives a label
        such as ``"equal_width-15"`` for tables.
    """
    count, confidence_sum, correct_sum = _top_label_bin_sums(probs, labels, num_bins, binning)
    # n_b |acc_b - conf_b| = |sum correct - sum conf| in bin b: no division needed.
    return jnp.sum(jnp.abs(correct_sum - confidence_sum)) / jnp.sum(count)


@_checks_concrete_labels
@functools.partial(jax.jit, static_argnames=("num_bins", "binning"))
def reliability_diagram_data(probs, labels, num_bins: int = 15, binning: str = "equal_width"):
    """Per-bin mean confidence, accuracy and count behind ``ece`` (for figures).

    Same arguments and binning as ``ece``; returns ``ReliabilityBins`` with
    arrays of shape ``(num_bins,)`` (NaN confidence/accuracy in empty bins).
    ``ece == sum(count * |accuracy - confidence|) / sum(count)`` over
    non-empty bins.
    """
    count, confidence_sum, correct_sum = _top_label_bin_sums(probs, labels, num_bins, binning)
    safe_count = jnp.where(count > 0, count, 1.0)
    empty = count == 0
    return ReliabilityBins(
        confidence=jnp.where(empty, jnp.nan, confidence_sum / safe_count),
        accuracy=jnp.where(empty, jnp.nan, correct_sum / safe_count),
        count=count.astype(jnp.int32),
    )


def ece_descriptor(num_bins: int = 15, binning: str = "equal_width") -> str:
    """Human-readable ECE setting, e.g. ``"equal_width-15"`` (host-side string)."""
    _check_binning(num_bins, binning)
    return f"{binning}-{num_bins}"


@jax.jit
def log_predictive_density_from_log_probs(sample_log_probs):
    """Log of the Monte Carlo predictive density from per-sample log densities.

    ``log p(y) ~= log (1/S) sum_s p(y | theta_s) = logsumexp_s(l_s) - log S``,
    computed stably in log space.

    ``sample_log_probs``: ``(S, ...)``, e.g. ``(S, N)`` log-likelihoods of the
    observed labels/targets; returns ``(...)``.
    """
    sample_log_probs = jnp.asarray(sample_log_probs)
    return logsumexp(sample_log_probs, axis=0) - jnp.log(sample_log_probs.shape[0])


def classification_metrics(probs, labels, num_bins: int = 15, binning: str = "equal_width"):
    """Standard classification summary as a dict of scalar arrays.

    Args:
        probs: ``(N, C)`` predictive-mean probabilities, or ``(S, N, C)``
            per-sample probabilities (averaged over S for the point metrics).
        labels: ``(N,)`` integers in ``[0, C)``; validated with
            ``check_labels`` when concrete (skipped under jit).
        num_bins, binning: static ECE settings (see ``ece``); use
            ``ece_descriptor`` for the matching label string.

    Returns:
        ``accuracy``, ``nll``, ``brier``, ``ece``, ``predictive_entropy``
        (mean over points) and, when a sample axis is present,
        ``mutual_information`` (mean over points).
    """
    probs = jnp.asarray(probs)
    if probs.ndim not in (2, 3):
        raise ValueError(f"probs must have shape (N, C) or (S, N, C), got {probs.shape}")
    # Validate everything before any metric is computed (or compiled).
    _check_binning(num_bins, binning)
    check_labels(labels, probs.shape[-1], probs.shape[-2])
    labels = jnp.asarray(labels)
    mean_probs = jnp.mean(probs, axis=0) if probs.ndim == 3 else probs
    # The labels were checked once above: call the jitted kernels (__wrapped__) without checking them again.
    summary = {
        "accuracy": accuracy.__wrapped__(mean_probs, labels),
        "nll": nll.__wrapped__(mean_probs, labels),
        "brier": brier.__wrapped__(mean_probs, labels),
        "ece": ece.__wrapped__(mean_probs, labels, num_bins, binning),
        "predictive_entropy": jnp.mean(predictive_entropy(mean_probs)),
    }
    if probs.ndim == 3:
        summary["mutual_information"] = jnp.mean(mutual_information(probs))
    return summary
