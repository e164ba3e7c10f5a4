"""Benchmark: a bandit run as one compiled program vs. a step-by-step Python loop.

Both run the same pieces with the same keys (:mod:`experiments.bandits.simulation`):

* ``scan``: :func:`experiments.bandits.simulation.simulate` — acting, buffer
  updates and retraining inside ``lax.scan`` over time, vmapped over seeds,
  one jitted call for the whole run;
* ``loop``: :func:`experiments.bandits.simulation.simulate_python_loop` — a Python ``for``
  over time steps, each step one jitted, seed-vmapped call, and each
  retraining another (the time step passed as an array, so nothing retraces).

Each is called once to compile (that first call's time is reported too)
and then ``--repeats`` times; the fastest repeat is the run time (the
machine may be shared, and the minimum is the least disturbed). Also reported: the fraction of identical actions (the two
compiled programs may round differently, and one flipped argmax changes the
rest of an episode, so neural agents may agree less than 100%).

Run from the repository root (it imports the ``experiments.bandits`` package):

    python -m scripts.bench_bandits                         # wheel δ=0.95, T=500, 4 seeds
    python -m scripts.bench_bandits --agents uniform,lints --horizon 1000

Prints a table, then as its last line one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from experiments.bandits.environments import wheel_bandit
from experiments.bandits.registry import make_agent
from experiments.bandits.settings import AgentSettings
from experiments.bandits.simulation import normalised_regret, simulate, simulate_python_loop


def timed(function):
    start = time.perf_counter()
    result = jax.block_until_ready(function())
    return result, time.perf_counter() - start


def best_of(function, repeats):
    runs = [timed(function) for _ in range(max(repeats, 1))]
    return runs[0][0], min(seconds for _, seconds in runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="uniform,lints,greedy,neural_linear,ensemble")
    parser.add_argument("--delta", type=float, default=0.95)
    parser.add_argument("--horizon", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--retrain-every", type=int, default=50)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--hidden", default="50")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the fastest counts (default 3)")
    args = parser.parse_args(argv)
    names = [name for name in args.agents.split(",") if name]
    bandit = wheel_bandit(args.delta)
    settings = AgentSettings(hidden=tuple(int(h) for h in args.hidden.split(",")), train_steps=args.train_steps)
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    run_args = dict(horizon=args.horizon, retrain_every=args.retrain_every)

    results = {}
    for name in names:
        agent = make_agent(name, bandit, args.horizon, settings)
        scan = lambda: simulate(bandit, agent, keys, **run_args)  # noqa: E731
        loop = lambda: simulate_python_loop(bandit, agent, keys, **run_args)  # noqa: E731
        _, scan_first = timed(scan)
        scan_result, scan_seconds = best_of(scan, args.repeats)
        _, loop_first = timed(loop)
        loop_result, loop_seconds = best_of(loop, args.repeats)
        results[name] = {
            "scan_seconds": scan_seconds, "loop_seconds": loop_seconds, "speedup": loop_seconds / scan_seconds,
            "scan_first_call_seconds": scan_first, "loop_first_call_seconds": loop_first,
            "action_agreement": float(np.mean(np.asarray(scan_result.actions) == np.asarray(loop_result.actions))),
            "scan_regret": float(np.mean(normalised_regret(scan_result))),
            "loop_regret": float(np.mean(normalised_regret(loop_result))),
        }
        print(f"{name}: scan {scan_seconds:.3f}s loop {loop_seconds:.3f}s", flush=True)

    print(f"\nwheel δ={args.delta}, T={args.horizon}, {args.seeds} seeds vmapped, retrain every {args.retrain_every} "
          f"({args.train_steps} steps); device {jax.devices()[0].device_kind}; run times exclude compilation "
          f"(fastest of {args.repeats})")
    print(f"{'agent':<14} {'scan s':>8} {'loop s':>8} {'speedup':>8} {'1st scan s':>11} {'1st loop s':>11} {'same actions':>13}")
    for name, r in results.items():
        print(f"{name:<14} {r['scan_seconds']:>8.3f} {r['loop_seconds']:>8.3f} {r['speedup']:>7.1f}x "
              f"{r['scan_first_call_seconds']:>11.2f} {r['loop_first_call_seconds']:>11.2f} {r['action_agreement']:>13.3f}")
    print(json.dumps({"benchmark": "bandits_scan_vs_python_loop", "bandit": bandit.name, "horizon": args.horizon,
                      "seeds": args.seeds, "retrain_every": args.retrain_every, "train_steps": args.train_steps, "repeats": args.repeats,
                      "device": jax.devices()[0].device_kind, "agents": results}))


if __name__ == "__main__":
    main()
