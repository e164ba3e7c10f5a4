"""Interval coverage of a Gaussian-mixture predictive: CDF at the target vs bisected interval ends.

``regression.interval_coverage`` counts a target as covered when a <= F(y) <= b (F the mixture CDF, strictly
increasing), one CDF evaluation per target. The baseline measured in the same run finds the interval ends
F^{-1}(a), F^{-1}(b) by bisection (``regression.mixture_quantile``, 50 steps) and counts the targets between them,
which is what the library did before. Shape: T = 1000 samples x 1475 points (kin8nm's validation part), levels
0.5 / 0.9 / 0.95.

    python scripts/bench_coverage.py [--samples 1000] [--points 1475] [--repeats 3]

Prints a table and, as its last line, one JSON object with every figure and the ratio.
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.evaluate import regression

LEVELS = (0.5, 0.9, 0.95)


def bisected_coverage(means, scales, y):
    levels = jnp.asarray(LEVELS)
    ends = regression.mixture_quantile(means, scales, jnp.stack([(1 - levels) / 2, (1 + levels) / 2]))
    return jnp.mean(((ends[0] <= y) & (y <= ends[1])).reshape(len(LEVELS), -1), axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--points", type=int, default=1475)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    means = jnp.asarray(rng.normal(size=(args.samples, args.points)), jnp.float32)
    scales = jnp.asarray(rng.uniform(0.5, 1.5, (args.samples, args.points)), jnp.float32)
    y = jnp.asarray(rng.normal(size=args.points), jnp.float32)
    candidates = {
        "bisected interval ends (baseline)": jax.jit(bisected_coverage),
        "CDF at the target (bdljax)": lambda m, s, t: jnp.stack(list(regression.interval_coverage(m, s, t, LEVELS).values())),
    }
    results = {}
    for name, fn in candidates.items():
        coverage = np.asarray(jax.block_until_ready(fn(means, scales, y)))  # compile and warm up
        start = time.perf_counter()
        for _ in range(args.repeats):
            jax.block_until_ready(fn(means, scales, y))
        results[name] = {"ms": 1e3 * (time.perf_counter() - start) / args.repeats, "coverage": coverage.round(6).tolist()}
    baseline, ours = results.values()
    print(f"| method | ms per call | coverage at {LEVELS} |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ms']:.1f} | {r['coverage']} |")
    print(json.dumps({"samples": args.samples, "points": args.points, "levels": LEVELS, "results": results,
                      "speedup": baseline["ms"] / ours["ms"],
                      "same_coverage": bool(np.allclose(baseline["coverage"], ours["coverage"], atol=1.5 / args.points))}))


if __name__ == "__main__":
    main()
