"""Deep-ensemble training throughput: K members vmapped in one scanned epoch vs a Python loop over K jitted members.

Both sides train the same MLP (8 → 50 → 1, Gaussian likelihood and prior) on
1000 × 8 regression data with Adam and minibatches of 32, measured in the
same process:

* bdljax: ``ensemble.build(map_estimate.build(...), K)`` run by ``training.build_epoch``'s
  compiled epoch — ``jit(lax.scan(vmap(update)))``, one dispatch per epoch.
* loop: K separate member states, one ``jax.jit(member.update)`` call per
  member per step, batches pre-sliced on the device (the usual PyTorch-style
  loop, written in JAX).

Prints member-steps per second for K = 1, 4, 16 and the ratio, then one JSON
line with every figure.

    python scripts/bench_ensemble.py [--epochs 20] [--members 1,4,16]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np
import optax

from bdljax.methods import ensemble, map_estimate as map_method
from bdljax.core import likelihoods, posterior, priors
from bdljax.nn import models
from bdljax.run import training

NUM_POINTS, NUM_FEATURES, BATCH = 1000, 8, 32


def make_member():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_POINTS, NUM_FEATURES)).astype(np.float32)
    y = (np.sin(x @ rng.normal(size=NUM_FEATURES)) + 0.1 * rng.normal(size=NUM_POINTS)).astype(np.float32)
    model = models.mlp((NUM_FEATURES,), hidden=(50,), output_dim=1)
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(0.1), priors.gaussian(1.0), NUM_POINTS)
    return model, map_method.build(log_post, optax.adam(1e-3)), x, y


def time_vmapped(member, model, x, y, num_members, epochs):
    method = ensemble.build(member, num_members)
    state = method.init(jax.random.key(0), model.init)
    epoch = training.build_epoch(method, BATCH, NUM_POINTS)
    x, y = jax.device_put(x), jax.device_put(y)
    state, _ = epoch(state, x, y, jax.random.key(1))  # compile
    jax.block_until_ready(state)
    start = time.perf_counter()
    for e in range(epochs):
        state, _ = epoch(state, x, y, jax.random.key(e))
    jax.block_until_ready(state)
    return time.perf_counter() - start


def time_loop(member, model, x, y, num_members, epochs):
    step = jax.jit(member.update)
    keys = jax.random.split(jax.random.key(0), num_members)
    states = [member.init(k, model.init) for k in keys]
    steps_per_epoch = NUM_POINTS // BATCH
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(steps_per_epoch):
        index = rng.permutation(NUM_POINTS)[:BATCH]
        batches.append((jax.device_put(x[index]), jax.device_put(y[index])))
    step_keys = list(jax.random.split(jax.random.key(1), steps_per_epoch))
    states[0], _ = step(states[0], batches[0], step_keys[0])  # compile
    jax.block_until_ready(states)
    start = time.perf_counter()
    for _ in range(epochs):
        for batch, key in zip(batches, step_keys):
            for k in range(num_members):
                states[k], _ = step(states[k], batch, key)
    jax.block_until_ready(states)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="timed epochs per configuration (default 20)")
    parser.add_argument("--members", default="1,4,16", help="comma list of ensemble sizes (default 1,4,16)")
    args = parser.parse_args()
    model, member, x, y = make_member()
    steps_per_epoch = NUM_POINTS // BATCH
    rows = []
    for num_members in [int(k) for k in args.members.split(",")]:
        member_steps = num_members * steps_per_epoch * args.epochs
        vmapped = time_vmapped(member, model, x, y, num_members, args.epochs)
        loop = time_loop(member, model, x, y, num_members, args.epochs)
        rows.append({
            "members": num_members,
            "vmapped_member_steps_per_s": member_steps / vmapped,
            "loop_member_steps_per_s": member_steps / loop,
            "ratio": loop / vmapped,
        })
    print(f"device: {jax.devices()[0].device_kind}; MLP {NUM_FEATURES}-50-1, N={NUM_POINTS}, batch {BATCH}, "
          f"{args.epochs} epochs of {steps_per_epoch} steps")
    print(f"{'K':>4} {'vmapped member-steps/s':>24} {'loop member-steps/s':>21} {'ratio':>7}")
    for row in rows:
        print(f"{row['members']:>4} {row['vmapped_member_steps_per_s']:>24.0f} {row['loop_member_steps_per_s']:>21.0f} "
              f"{row['ratio']:>7.1f}")
    print(json.dumps({"benchmark": "ensemble", "device": jax.devices()[0].device_kind, "epochs": args.epochs,
                      "steps_per_epoch": steps_per_epoch, "batch_size": BATCH, "rows": rows}))


if __name__ == "__main__":
    main()
