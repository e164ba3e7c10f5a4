"""The training driver: whole epochs as one compiled ``lax.scan``.

:func:`fit` runs any :class:`~bdljax.core.transform.Transform`. An epoch draws a
fresh permutation of the training set (one per member for methods with
``batch_streams = K``), cuts it into ⌊N/B⌋ batches of B, and scans
``update`` over them inside a single jitted call: no host round trip per
step, one dispatch per epoch. The ``N mod B`` points left over by an epoch's
permutation are a different random subset every epoch, so every point is
seen with equal probability; nothing is dropped systematically.

Per-step infos come back stacked once per epoch and are summarised on the
host: each field is averaged over its *finite* values, and the number of
non-finite values is reported beside it (``<field>_nonfinite``), so a
diverging step is counted, never silently averaged in.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.core.transform import Transform

State = Any


class FitResult(NamedTuple):
    state: State
    history: List[Dict[str, Any]]


def check_finite(name: str, array) -> None:
    """Raise ``ValueError`` naming ``name`` when ``array`` holds NaN or inf."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(f"{name} contains {bad} NaN/inf value(s) out of {array.size}; clean or drop them before training.")


def check_training_data(method: Transform, x, y, batch_size: int) -> None:
    """Validate data against the method before anything is compiled."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; they must match.")
    check_finite("training inputs x", x)
    check_finite("training targets y", y)
    if not 1 <= batch_size <= x.shape[0]:
        raise ValueError(f"batch_size={batch_size} must lie in [1, {x.shape[0]}] (the training set size).")


def batch_orders(key, streams: int, num_steps: int, batch_size: int, num_points: int):
    """Row indices of one epoch's batches: ``(steps, B)``, or ``(steps, K, B)`` for K streams."""
    if streams:
        orders = jax.vmap(lambda k: jax.random.permutation(k, num_points))(jax.random.split(key, streams))
        orders = orders[:, : num_steps * batch_size].reshape(streams, num_steps, batch_size)
        return jnp.swapaxes(orders, 0, 1)
    order = jax.random.permutation(key, num_points)
    return order[: num_steps * batch_size].reshape(num_steps, batch_size)


def full_batch_steps(method: Transform, state, x, y, keys):
    """Steps on the whole data set, in its order: a full batch needs no permutation and no gather (they cost as
    much as a small network's step). With K streams every member gets the same full batch."""
    batch = (x, y)
    if method.batch_streams:
        batch = jax.tree.map(lambda a: jnp.broadcast_to(a, (method.batch_streams, *a.shape)), batch)
    return jax.lax.scan(lambda state, key: method.update(state, batch, key), state, keys)


def scan_steps(method: Transform, state, x, y, indices, keys):
    def step(state, inputs):
        batch_indices, key = inputs
        return method.update(state, (x[batch_indices], y[batch_indices]), key)

    return jax.lax.scan(step, state, (indices, keys))


@functools.lru_cache(maxsize=64)
def build_epoch(method: Transform, batch_size: int, num_points: int) -> Callable:
    """A jitted ``epoch(state, x, y, key) -> (state, stacked infos)``; cached per configuration."""

    def epoch(state, x, y, key):
        return epoch_steps(method, state, x, y, key, batch_size)

    return jax.jit(epoch)


def epoch_steps(method: Transform, state, x, y, key, batch_size: int):
    """One epoch of ``method.update``: ⌊N/B⌋ batches of a fresh permutation (one per stream), or, at full batch,
    the whole data set in its order. Returns the final state and the infos stacked over steps."""
    num_points = x.shape[0]
    num_steps = num_points // batch_size
    order_key, step_key = jax.random.split(key)
    step_keys = jax.random.split(step_key, num_steps)
    if batch_size == num_points:
        return full_batch_steps(method, state, x, y, step_keys)
    indices = batch_orders(order_key, method.batch_streams, num_steps, batch_size, num_points)
    return scan_steps(method, state, x, y, indices, step_keys)


# Scanned epochs run about this many steps per compiled call (at most MAX_EPOCHS_PER_CALL epochs): a full-batch
# epoch is one step, and one dispatch per step cost 6x a bare lax.scan of the same update (scripts/bench_mfvi.py).
MIN_STEPS_PER_CALL = 1024
MAX_EPOCHS_PER_CALL = 128


@functools.lru_cache(maxsize=64)
def build_epochs(method: Transform, batch_size: int, num_points: int, num_epochs: int) -> Callable:
    """A jitted ``epochs(state, x, y, key, first_epoch) -> (state, infos (num_epochs, steps, ...))`` running
    ``num_epochs`` epochs in one call; epoch ``e`` draws its order and step keys from ``fold_in(key, e)``, exactly
    as :func:`build_epoch` called once per epoch does."""

    def epochs(state, x, y, key, first_epoch):
        return jax.lax.scan(lambda state, epoch: epoch_steps(method, state, x, y, jax.random.fold_in(key, epoch),
                                                             batch_size), state, first_epoch + jnp.arange(num_epochs))

    return jax.jit(epochs)


def epochs_per_call(steps_per_epoch: int) -> int:
    """How many scanned epochs one compiled call runs: about :data:`MIN_STEPS_PER_CALL` steps, at most
    :data:`MAX_EPOCHS_PER_CALL` epochs. It depends on the epoch's size only, so every fit of one configuration
    shares the compiled function (the epochs left over, before an evaluation or at the end, run one per call)."""
    return max(1, min(MAX_EPOCHS_PER_CALL, -(-MIN_STEPS_PER_CALL // steps_per_epoch)))


def check_count(name: str, value) -> None:
    """``value`` must be a positive int: ``int()`` would truncate 10.5 silently, and a count below 1 fails deep
    in tracing."""
    if not (isinstance(value, (int, np.integer)) and value >= 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@functools.lru_cache(maxsize=64)
def build_chunked_epoch(method: Transform, batch_size: int, num_points: int, steps_per_call: int) -> Callable:
    """Like :func:`build_epoch`, but ``steps_per_call`` fully unrolled steps per compiled call.

    XLA:CPU runs convolution gradients inside a rolled ``lax.scan`` several
    times slower than the same steps unrolled (jax-ml/jax#12868): on CPU,
    conv nets train faster with short unrolled chunks and one dispatch per
    chunk. The chunk function compiles once (plus once for a shorter last
    chunk when the epoch's steps are not a multiple of ``steps_per_call``).
    """
    num_steps = num_points // batch_size
    orders = jax.jit(lambda key: batch_orders(key, method.batch_streams, num_steps, batch_size, num_points))

    @jax.jit
    def chunk(state, x, y, indices, keys):
        # A Python loop, not lax.scan(unroll=True): a scan of length 1 stays a while loop, and XLA:CPU ran the
        # CNN step inside it 16x slower (7.0 vs 0.44 CPU-s per step, scripts/bench_train_cpu.py).
        infos = []
        for batch_indices, key in zip(indices, keys):
            state, info = method.update(state, (x[batch_indices], y[batch_indices]), key)
            infos.append(info)
        return state, jax.tree.map(lambda *steps: jnp.stack(steps), *infos)

    def epoch(state, x, y, key):
        order_key, step_key = jax.random.split(key)
        indices, keys = orders(order_key), jax.random.split(step_key, num_steps)
        infos = []
        for start in range(0, num_steps, steps_per_call):
            stop = min(start + steps_per_call, num_steps)
            state, info = chunk(state, x, y, indices[start:stop], keys[start:stop])
            infos.append(info)
        return state, jax.tree.map(lambda *parts: jnp.concatenate(parts), *infos)

    return epoch


def summarise_epochs(infos) -> List[Dict[str, float]]:
    """:func:`summarise_infos` of each epoch of infos stacked ``(epochs, steps, ...)``, vectorised over epochs."""
    fields = infos._asdict() if hasattr(infos, "_asdict") else {"value": infos}
    columns: Dict[str, np.ndarray] = {}
    for name, values in fields.items():
        if values is None:
            continue
        values = np.asarray(values, dtype=np.float64).reshape(np.shape(values)[0], -1)
        finite = np.isfinite(values)
        counts = finite.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns[name] = np.where(counts > 0, np.where(finite, values, 0.0).sum(axis=1) / counts, np.nan)
        if not finite.all():
            columns[f"{name}_nonfinite"] = (~finite).sum(axis=1)
    num_epochs = len(next(iter(columns.values()))) if columns else 0
    summaries = []
    for epoch in range(num_epochs):
        summary = {}
        for name, column in columns.items():
            if name.endswith("_nonfinite"):
                if column[epoch]:
                    summary[name] = int(column[epoch])
            else:
                summary[name] = float(column[epoch])
        summaries.append(summary)
    return summaries


def summarise_infos(infos) -> Dict[str, float]:
    """Average every info field over its finite values; count the non-finite ones."""
    summary: Dict[str, float] = {}
    fields = infos._asdict() if hasattr(infos, "_asdict") else {"value": infos}
    for name, values in fields.items():
        if values is None:
            continue
        values = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(values)
        summary[name] = float(values[finite].mean()) if finite.any() else float("nan")
        if not finite.all():
            summary[f"{name}_nonfinite"] = int((~finite).sum())
    return summary


def fit(
    method: Transform,
    state: State,
    data,
    *,
    key: jax.Array,
    num_epochs: int,
    batch_size: Optional[int] = None,
    evaluate: Optional[Callable[[State], Dict[str, Any]]] = None,
    eval_every: int = 0,
    logger=None,
    log_fields: Optional[Dict[str, Any]] = None,
    progress: bool = True,
    description: str = "fit",
    steps_per_call: Optional[int] = None,
) -> FitResult:
    """Train ``method`` for ``num_epochs`` epochs on ``data = (x, y)``.

    Args:
      method: any transform.
      state: from ``method.init``.
      data: ``(x, y)`` host or device arrays; ``x`` has N rows.
      key: the run's PRNG key; epoch ``e`` uses ``fold_in(key, e)``.
      num_epochs: epochs to run.
      batch_size: B; ``None`` means full batch (B = N).
      evaluate: optional ``state -> dict`` of metrics, called every
        ``eval_every`` epochs and after the last.
      logger: optional :class:`bdljax.run.rundir.RunLogger`; every history record
        is also written to its ``metrics.jsonl``, with ``log_fields`` added.
      progress: show a tqdm bar over epochs.
      steps_per_call: ``None`` (default) runs each epoch as one compiled
        ``lax.scan``; an int runs chunks of that many unrolled steps per call
        (faster for conv nets on CPU, see :func:`build_chunked_epoch`).

    Returns:
      ``FitResult(state, history)``; history holds one ``split="train"``
      record per epoch (info means, non-finite counts, wall time) and one
      ``split="eval"`` record per evaluation.
    """
    from tqdm.auto import tqdm  # imported here so library import stays light

    x, y = data
    num_points = int(np.shape(x)[0])
    for name, value in (("batch_size", batch_size), ("steps_per_call", steps_per_call)):
        if value is not None:
            check_count(name, value)
    batch_size = num_points if batch_size is None else int(batch_size)
    check_training_data(method, x, y, batch_size)
    x, y = jnp.asarray(x), jnp.asarray(y)
    num_steps = num_points // batch_size
    per_call = epochs_per_call(num_steps)
    evaluating = evaluate is not None and eval_every
    if steps_per_call is not None:
        chunked = build_chunked_epoch(method, batch_size, num_points, int(steps_per_call))
    extra = dict(log_fields or {})
    history: List[Dict[str, Any]] = []

    def record(entry):
        entry = {**extra, **entry}
        history.append(entry)
        if logger is not None:
            logger.log(entry)

    bar = tqdm(total=num_epochs, desc=description, disable=not progress, leave=False)
    epoch = 0
    while epoch < num_epochs:
        start = time.perf_counter()
        if steps_per_call is not None:
            state, infos = chunked(state, x, y, jax.random.fold_in(key, epoch + 1))
            infos = jax.tree.map(lambda leaf: leaf[None], infos)
        else:
            # A whole call of epochs when no evaluation or the end falls inside it; else one epoch.
            until = min(num_epochs, (epoch // eval_every + 1) * eval_every) if evaluating else num_epochs
            count = per_call if until - epoch >= per_call else 1
            scanned = build_epochs(method, batch_size, num_points, count)
            state, infos = scanned(state, x, y, key, jnp.asarray(epoch + 1, jnp.int32))
        infos = jax.device_get(infos)  # the one host transfer per call
        count = jax.tree.leaves(infos)[0].shape[0]
        seconds = (time.perf_counter() - start) / count
        for summary in summarise_epochs(infos):
            epoch += 1
            summary["seconds"] = seconds
            record({"epoch": epoch, "split": "train", **summary})
            if evaluate is not None and eval_every and (epoch % eval_every == 0 or epoch == num_epochs):
                record({"epoch": epoch, "split": "eval", **{k: _to_python(v) for k, v in evaluate(state).items()}})
        bar.update(count)
        first_field = next(iter(summary))
        bar.set_postfix({first_field: f"{summary[first_field]:.4g}"})
    bar.close()
    return FitResult(state, history)


def _to_python(value):
    array = np.asarray(value)
    if array.ndim == 0:
        return array.item()
    return array.tolist()
