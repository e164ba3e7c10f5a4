"""How wide are MC dropout's Thompson draws on the wheel, inside the data and on the unexplored outer ring?

The companion of ``scripts/wheel_ring_probe.py``, which finds that after 200
inside-only observations MC dropout (like greedy) never tries a ring arm. This
script measures why, on the same logged data (n uniformly random pulls inside
‖x‖ ≤ δ, fed to the wheel-default MC dropout agent as a run feeds it): for
ring contexts and for inside contexts, over ``draws`` dropout masks,

* ``gap``: the mean of f_safe − f_q, what a draw must overcome to try the
  quadrant's arm q (the rewards say 1.2 − 1 = 0.2);
* ``sd_q``, ``sd_safe``, ``sd_diff``: the draws' standard deviations of f_q,
  f_safe and f_q − f_safe (median over contexts);
* ``p_try``: the fraction of draws with f_q > every other arm;
* ``reference_se``: σ/√(n/A), the standard error of one arm's mean reward from
  its n/A pulls — the width an exact posterior of a per-arm constant would have
  at the data, before any extrapolation to the ring.

``--dropout-masks shared`` is the network's own dropout (one mask for all
arms), ``per_arm`` an independent output-layer mask per arm
(:func:`experiments.bandits.networks.per_arm_weight_sample`); both have the
same trained network. Run from the repository root:

    python -m scripts.mcdropout_spread --num-data 200 --seeds 8 --dropout-masks shared,per_arm

As every script here, its last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Optional, Sequence

import jax
import numpy as np

from bdljax.nn import dropout

from experiments.bandits.environments import WHEEL_SAFE_ARM, wheel_bandit, wheel_contexts, wheel_quadrant_arm
from experiments.bandits.networks import DROPOUT_MASKS, mcdropout_network, per_arm_weight_sample
from experiments.bandits.registry import agent_network, make_agent
from experiments.bandits.settings import settings_for
from scripts.wheel_ring_probe import fit_on_buffer, logged_inner_data, ring_contexts


def draw_spread(outputs, arms) -> Dict[str, float]:
    """The figures above from sampled ``outputs (draws, contexts, A)`` and each context's quadrant ``arms``."""
    outputs, arms = np.asarray(outputs, np.float64), np.asarray(arms)
    if outputs.ndim != 3 or arms.shape != outputs.shape[1:2]:
        raise ValueError(f"outputs must be (draws, contexts, arms) and arms (contexts,), got {outputs.shape}, {arms.shape}")
    quadrant = np.take_along_axis(outputs, arms[None, :, None], axis=-1)[..., 0]
    safe = outputs[..., WHEEL_SAFE_ARM]
    return {"gap": float((safe - quadrant).mean()),
            "sd_q": float(np.median(quadrant.std(axis=0, ddof=1))),
            "sd_safe": float(np.median(safe.std(axis=0, ddof=1))),
            "sd_diff": float(np.median((quadrant - safe).std(axis=0, ddof=1))),
            "p_try": float((outputs.argmax(-1) == arms[None]).mean())}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
    parser = argparse.ArgumentParser(prog="python -m scripts.mcdropout_spread", description=__doc__.splitlines()[0])
    parser.add_argument("--delta", type=float, default=0.95)
    parser.add_argument("--num-data", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contexts", type=int, default=200, help="ring and inside contexts per seed")
    parser.add_argument("--draws", type=int, default=500, help="dropout masks per seed")
    parser.add_argument("--retrain-every", type=int, default=50)
    parser.add_argument("--dropout-masks", default="shared,per_arm", help=f"comma list of {list(DROPOUT_MASKS)}")
    args = parser.parse_args(argv)
    forms = [f for f in args.dropout_masks.split(",") if f]
    if not forms or any(f not in DROPOUT_MASKS for f in forms):
        raise SystemExit(f"--dropout-masks: choose from {list(DROPOUT_MASKS)}, got {args.dropout_masks!r}")
    if args.num_data < args.retrain_every or args.num_data % args.retrain_every:
        raise SystemExit(f"--num-data must be a positive multiple of --retrain-every={args.retrain_every}")
    if args.draws < 2:
        raise SystemExit("--draws must be at least 2")

    bandit = wheel_bandit(args.delta)
    settings = settings_for("wheel")
    agent = make_agent("mcdropout", bandit, args.num_data, settings)
    net, structure = mcdropout_network(agent_network("mcdropout", bandit, settings), settings.dropout_rate,
                                       bandit.context_dim)
    samplers = {"shared": lambda params, key: dropout.weight_sample(params, key, structure),
                "per_arm": lambda params, key: per_arm_weight_sample(params, key, structure, bandit.num_arms)}

    def seed_outputs(key, sample):
        """One seed: fit on its logged data, then the draws' outputs on its ring and inside contexts."""
        data_key, fit_key = jax.random.split(key)
        context_key, draw_key = jax.random.split(jax.random.fold_in(key, 1))
        params = fit_on_buffer(agent, logged_inner_data(bandit, data_key, args.num_data, args.delta),
                               args.retrain_every, fit_key).method.inner.params
        contexts = {"ring": ring_contexts(context_key, args.contexts, args.delta),
                    "inside": args.delta * wheel_contexts(context_key, args.contexts)}
        draws = jax.vmap(lambda k: sample(params, k))(jax.random.split(draw_key, args.draws))
        return {where: (jax.vmap(lambda p: net.apply(p, x))(draws), wheel_quadrant_arm(x))
                for where, x in contexts.items()}

    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    reference_se = settings.noise_scale / np.sqrt(args.num_data / bandit.num_arms)
    print(f"wheel δ={args.delta}, MC dropout p={settings.dropout_rate} after n={args.num_data} inside-only pulls; "
          f"{args.seeds} seeds × {args.contexts} contexts × {args.draws} masks; medians over contexts, means over seeds; "
          f"reference σ/√(n/A) = {reference_se:.3f}")
    print(f"{'masks':<9} {'where':<7} {'gap':>7} {'sd f_q':>8} {'sd f_safe':>10} {'sd diff':>8} {'P(try q)':>9}")
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    for form in forms:
        # The same keys for every form: the same data, fits, contexts and mask keys; only the draw differs.
        per_seed = jax.jit(jax.vmap(lambda key, form=form: seed_outputs(key, samplers[form])))(keys)
        results[form] = {}
        for where, (outputs, arms) in per_seed.items():
            seeds = [draw_spread(outputs[i], arms[i]) for i in range(args.seeds)]
            results[form][where] = f = {k: float(np.mean([seed[k] for seed in seeds])) for k in seeds[0]}
            print(f"{form:<9} {where:<7} {f['gap']:7.3f} {f['sd_q']:8.3f} {f['sd_safe']:10.3f} {f['sd_diff']:8.3f} "
                  f"{f['p_try']:9.4f}", flush=True)
    print(json.dumps({"delta": args.delta, "num_data": args.num_data, "seeds": args.seeds, "seed": args.seed,
                      "contexts": args.contexts, "draws": args.draws, "dropout_rate": settings.dropout_rate,
                      "reference_se": reference_se, "masks": results}))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
