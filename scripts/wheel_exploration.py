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

Agents run with the wheel's defaults of ``experiments/bandits.py``
(``BANDIT_DEFAULTS["wheel"]``) on the same episodes as that script (keys
``split(key(seed), seeds)``).

    python scripts/wheel_exploration.py --agents greedy,mcdropout,ensemble --seeds 20

As every script here, its last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]


def quadrant_exploration(actions: np.ndarray, quadrant: np.ndarray, ring: np.ndarray) -> Dict[str, float]:
    """The figures above from ``actions``, each context's ``quadrant`` arm and ``ring`` flag, all ``(S, T)``."""
    actions, quadrant, ring = (np.asarray(a) for a in (actions, quadrant, ring))
    if not actions.shape == quadrant.shape == ring.shape or actions.ndim != 2:
        raise ValueError(f"actions, quadrant and ring must share one (seeds, steps) shape, got "
                         f"{actions.shape}, {quadrant.shape}, {ring.shape}")
    found = missed = hits_after = contexts_after = 0
    discovery_steps = []
    for episode in range(actions.shape[0]):
        for q in range(4):
            steps = np.flatnonzero(ring[episode] & (quadrant[episode] == q))
            hit = actions[episode, steps] == q
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


def wheel_settings():
    """``AgentSettings`` with the wheel's defaults of ``experiments/bandits.py``."""
    from bdljax import bandits

    spec = importlib.util.spec_from_file_location("bandits_experiment", REPOSITORY / "experiments" / "bandits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fields = bandits.AgentSettings._fields
    return bandits.AgentSettings()._replace(**{k: v for k, v in module.BANDIT_DEFAULTS["wheel"].items() if k in fields})


def agent_names(value: str) -> List[str]:
    """``"greedy,mcdropout"`` → ``["greedy", "mcdropout"]``, every name one of :data:`bdljax.bandits.AGENTS`."""
    from bdljax import bandits

    names = [n for n in value.split(",") if n]
    unknown = [n for n in names if n not in bandits.AGENTS]
    if unknown:
        raise SystemExit(f"unknown agents {unknown}; choose from {list(bandits.AGENTS)}")
    return names


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    import jax

    from bdljax import bandits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="greedy,mcdropout,ensemble", help="comma list of bandits.AGENTS")
    parser.add_argument("--delta", type=float, default=0.95)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=2000)
    parser.add_argument("--retrain-every", type=int, default=50)
    args = parser.parse_args(argv)
    names = agent_names(args.agents)
    bandit = bandits.wheel_bandit(args.delta)
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    episodes = jax.vmap(lambda key: bandits.episode(bandit, bandit.tables, key, args.horizon))(keys)
    quadrant = np.asarray(bandits.wheel_quadrant_arm(episodes.contexts))
    ring = np.asarray(bandits.wheel_outside(episodes.contexts, args.delta))
    settings = wheel_settings()
    results = {}
    print(f"wheel δ={args.delta}, T={args.horizon}, {args.seeds} seeds (keys split(key({args.seed}), {args.seeds}))")
    print(f"{'agent':<14} {'regret':>7} {'found':>9} {'missed before':>14} {'hit rate after':>15} {'median step':>12}")
    for name in names:
        agent = bandits.make_agent(name, bandit, args.horizon, settings)
        trajectory = jax.tree.map(np.asarray, bandits.simulate(bandit, agent, keys, horizon=args.horizon,
                                                               retrain_every=args.retrain_every, fast_compile=True))
        figures = quadrant_exploration(trajectory.actions, quadrant, ring)
        figures["normalised_regret"] = float(bandits.normalised_regret(trajectory).mean())
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
