"""CNN training step on CPU: a rolled ``lax.scan`` epoch vs ``fit(steps_per_call=k)`` chunks vs a bare step.

XLA:CPU runs a convolution's gradient inside a while loop (a rolled
``lax.scan``, including a scan of length one) many times slower than the same
computation outside a loop (jax-ml/jax#12868). ``bdljax.run.training.fit`` therefore
offers ``steps_per_call=k``: k steps unrolled by a Python loop inside one
jitted call, which the runner uses for a conv net on CPU
(:func:`bdljax.run.execution.choose`; ``RunOptions(execution=Execution(steps_per_call=k))``
overrides it). This script measures, in one process, the CPU seconds per MAP
step (batch 128) of the MNIST CNN (``bdljax.nn.models.cnn``, features 32,64,
dense 128) for:

* ``floor``: ``jit(value_and_grad)`` of the log posterior plus nothing else
  (no optimiser, no batch gathering),
* ``scan``: :func:`bdljax.run.training.build_epoch` (one rolled ``lax.scan`` per epoch),
* ``chunks k``: :func:`bdljax.run.training.build_chunked_epoch` for each k given.

Process CPU time is reported beside wall time because a shared machine
inflates wall time; run it with ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"`` for single-thread figures. Prints a table,
then one JSON line with every figure and the ratios to the rolled scan.

    python scripts/bench_train_cpu.py [--steps 6] [--chunks 1,5] [--features 32,64]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import optax

from bdljax.core import likelihoods, posterior, priors
from bdljax.methods import map_estimate as map_method
from bdljax.nn import models
from bdljax.run import training

BATCH = 128


def timed(run, repeats: int = 1):
    """(CPU seconds, wall seconds) of ``repeats`` calls after one compiling call."""
    jax.block_until_ready(run())
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(run())
    return (time.process_time() - cpu) / repeats, (time.perf_counter() - wall) / repeats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per timed epoch")
    parser.add_argument("--chunks", default="1,5", help="steps_per_call values to time")
    parser.add_argument("--features", default="32,64", help="conv widths of the CNN")
    args = parser.parse_args(argv)

    num_points = BATCH * args.steps
    x = jax.random.uniform(jax.random.key(0), (num_points, 28, 28, 1))
    y = jnp.arange(num_points) % 10
    model = models.cnn(10, features=tuple(int(f) for f in args.features.split(",")), hidden=128)
    log_post = posterior.log_posterior(model.apply, likelihoods.categorical(), priors.gaussian(1.0), num_data=60000)
    method = map_method.build(log_post, optax.adam(1e-3))
    state = method.init(jax.random.key(1), model.init)

    grad = jax.jit(jax.value_and_grad(log_post))
    rows = {"floor": timed(lambda: grad(state.params, (x[:BATCH], y[:BATCH])), repeats=args.steps)}
    epoch = training.build_epoch(method, BATCH, num_points)
    cpu, wall = timed(lambda: epoch(state, x, y, jax.random.key(2)))
    rows["scan"] = (cpu / args.steps, wall / args.steps)
    for k in (int(c) for c in args.chunks.split(",")):
        chunked = training.build_chunked_epoch(method, BATCH, num_points, k)
        cpu, wall = timed(lambda: chunked(state, x, y, jax.random.key(2)))
        rows[f"chunks {k}"] = (cpu / args.steps, wall / args.steps)

    print(f"CNN {args.features} MAP step, batch {BATCH}, {args.steps} steps per epoch, backend {jax.default_backend()}")
    print(f"{'variant':<12}{'CPU s/step':>12}{'wall s/step':>13}{'scan / variant (CPU)':>22}")
    for name, (cpu, wall) in rows.items():
        print(f"{name:<12}{cpu:>12.3f}{wall:>13.3f}{rows['scan'][0] / cpu:>22.1f}")
    figures = {"features": args.features, "batch": BATCH, "steps": args.steps, "backend": jax.default_backend(),
               "jax": jax.__version__}
    for name, (cpu, wall) in rows.items():
        key = name.replace(" ", "_")
        figures.update({f"{key}_cpu_s_per_step": cpu, f"{key}_wall_s_per_step": wall,
                        f"scan_over_{key}_cpu": rows["scan"][0] / cpu})
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
