"""Where a wheel-bandit agent's regret comes from: finding each quadrant's outer ring, or exploiting it afterwards.

On the wheel (Riquelme et al. 2018, §4) almost all regret is lost on outer-ring
contexts (‖x‖ > δ), where the quadrant's arm pays 50. For each episode and
quadrant q this finds the first ring context of q on which the agent played
arm q (the discovery), and reports over all episodes × 4 quadrants:

* ``quadrants_found``: how many quadrant rings were ever discovered;
* ``missed_before_discovery``: ring contexts of undiscovered quadrants (each
  costs ≈ 48.8);
* ``hit_rate_after_discovery``: the fraction of a quadrant's later ring
  contexts on which the agent played its arm (exploitation);
* ``median_discovery_step``: the median step of the discoveries.

Agents run with the wheel's defaults (``experiments.bandits.settings.BANDIT_DEFAULTS["wheel"]``)
on the same episodes as ``python -m experiments.bandits`` (keys ``split(key(seed), seeds)``).
Run from the repository root:

    python -m scripts.wheel_exploration --agents greedy,mcdropout,ensemble --seeds 20

As every script here, its last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence

import jax
import numpy as np

from experiments.bandits.environments import wheel_bandit, wheel_outside, wheel_quadrant_arm
from experiments.bandits.registry import AGENTS, make_agent
from experiments.bandits.settings import settings_for
from experiments.bandits.simulation import episode, normalised_regret, simulate


def quadrant_exploration(actions: np.ndarray, quadrant: np.ndarray, ring: np.ndarray) -> Dict[str, float]:
    """The figures above from ``actions``, each context's ``quadrant`` arm and ``ring`` flag, all ``(S, T)``."""
    actions, quadrant, ring = (np.asarray(a) for a in (actions, quadrant, ring))
    if not actions.shape == quadrant.shape == ring.shape or actions.ndim != 2:
        raise ValueError(f"actions, quadrant and ring must share one (seeds, steps) shape, got "
                         f"{actions.shape}, {quadrant.shape}, {ring.shape}")
    found = missed = hits_after = contexts_after = 0
    discovery_steps = []
    for seed in range(actions.shape[0]):
        for q in range(4):
            steps = np.flatnonzero(ring[seed] & (quadrant[seed] == q))
            hit = actions[seed, steps] == q
            if not hit.any():
                missed += len(steps)
                continue
            first = int(np.argmax(hit))
            found += 1
            missed += first
            discovery_steps.append(int(steps[first]))
            hits_after += int(hit[first + 1:].sum())
            contexts_after += len(hit) - first - 1
    return {"quadrants": 4 * actions.shape[0], "quadrants_found": found, "missed_before_discovery": missed,
            "hit_rate_after_discovery": hits_after / contexts_after if contexts_after else float("nan"),
            "median_discovery_step": float(np.median(discovery_steps)) if discovery_steps else float("nan")}


def agent_names(value: str) -> List[str]:
    """``"greedy,mcdropout"`` → ``["greedy", "mcdropout"]``, every name one of
    :data:`experiments.bandits.registry.AGENTS`."""
    names = [n for n in value.split(",") if n]
    unknown = [n for n in names if n not in AGENTS]
    if unknown:
        raise SystemExit(f"unknown agents {unknown}; choose from {list(AGENTS)}")
    return names


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m scripts.wheel_exploration", description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="greedy,mcdropout,ensemble", help=f"comma list of {list(AGENTS)}")
    parser.add_argument("--delta", type=float, default=0.95)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=2000)
    parser.add_argument("--retrain-every", type=int, default=50)
    args = parser.parse_args(argv)
    names = agent_names(args.agents)
    bandit = wheel_bandit(args.delta)
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    episodes = jax.vmap(lambda key: episode(bandit, bandit.tables, key, args.horizon))(keys)
    quadrant = np.asarray(wheel_quadrant_arm(episodes.contexts))
    ring = np.asarray(wheel_outside(episodes.contexts, args.delta))
    settings = settings_for("wheel")
    results = {}
    print(f"wheel δ={args.delta}, T={args.horizon}, {args.seeds} seeds (keys split(key({args.seed}), {args.seeds}))")
    print(f"{'agent':<14} {'regret':>7} {'found':>9} {'missed before':>14} {'hit rate after':>15} {'median step':>12}")
    for name in names:
        agent = make_agent(name, bandit, args.horizon, settings)
        trajectory = jax.tree.map(np.asarray, simulate(bandit, agent, keys, horizon=args.horizon,
                                                       retrain_every=args.retrain_every, fast_compile=True))
        figures = quadrant_exploration(trajectory.actions, quadrant, ring)
        figures["normalised_regret"] = float(normalised_regret(trajectory).mean())
        results[name] = figures
        print(f"{name:<14} {figures['normalised_regret']:7.1f} {figures['quadrants_found']:>4}/{figures['quadrants']:<4} "
              f"{figures['missed_before_discovery']:>14} {figures['hit_rate_after_discovery']:>15.3f} "
              f"{figures['median_discovery_step']:>12.0f}", flush=True)
    print(json.dumps({"delta": args.delta, "horizon": args.horizon, "seeds": args.seeds, "seed": args.seed,
                      "agents": {n: {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in f.items()}
                                 for n, f in results.items()}}))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
