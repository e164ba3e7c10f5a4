"""Before any ring reward: how often does a wheel-bandit agent try the quadrant's arm on an outer-ring context?

On the wheel (Riquelme et al. 2018, §4) an agent only learns that a quadrant's
outer ring (‖x‖ > δ) pays 50 after it has played that quadrant's arm there
once; until then every observation says that arms 0–3 pay 1 and the safe arm
1.2. Thompson sampling finds the ring only if its posterior draws sometimes
rank the quadrant's arm first on ring contexts it has no data near. This
script measures exactly that probability, apart from everything else a run
mixes in:

1. log ``n`` observations inside the ring-free disc ‖x‖ ≤ δ with uniformly
   random arms (rewards N(1, σ²), safe arm N(1.2, σ²));
2. feed them to the agent as a run would (``observe`` every step,
   ``retrain`` after every block of ``retrain_every``);
3. on ``contexts`` fresh ring contexts, take ``draws`` decisions each
   (``act`` with fresh keys) and count how often the quadrant's arm wins.

A greedy agent's decision is a deterministic function of its fit, so its
probability is the fraction of ring contexts where its extrapolation happens to
favour the quadrant's arm; a posterior sampler's should stay well above zero
while nothing near the ring is known. Agents use the wheel's defaults
(``experiments.bandits.settings.BANDIT_DEFAULTS["wheel"]``); figures are the
mean and standard error over seeds. Run from the repository root:

    python -m scripts.wheel_ring_probe --agents greedy,mcdropout,mfvi,ensemble --num-data 50,200,1000

As every script here, its last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bandits.agents import Buffer
from experiments.bandits.environments import (WHEEL_SAFE_ARM, wheel_bandit, wheel_contexts, wheel_quadrant_arm,
                                              wheel_rewards)
from experiments.bandits.registry import AGENTS, make_agent
from experiments.bandits.settings import settings_for
from scripts.wheel_exploration import agent_names


def ring_contexts(key, num: int, delta: float):
    """``num`` contexts uniform on the annulus δ < ‖x‖ ≤ 1 (r² uniform on (δ², 1], angle uniform)."""
    radius_key, angle_key = jax.random.split(key)
    radius = jnp.sqrt(jax.random.uniform(radius_key, (num,), minval=delta**2, maxval=1.0))
    angle = jax.random.uniform(angle_key, (num,), minval=0.0, maxval=2 * jnp.pi)
    return jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)


def logged_inner_data(bandit, key, num_data: int, delta: float):
    """A :class:`~experiments.bandits.agents.Buffer` of ``num_data`` uniformly random pulls on contexts uniform in
    ‖x‖ ≤ δ."""
    context_key, action_key, reward_key = jax.random.split(key, 3)
    contexts = delta * wheel_contexts(context_key, num_data)  # uniform on the disc of radius δ
    actions = jax.random.randint(action_key, (num_data,), 0, bandit.num_arms).astype(jnp.int32)
    rewards = wheel_rewards(reward_key, contexts, delta)
    return Buffer(contexts, actions, jnp.take_along_axis(rewards, actions[:, None], axis=-1)[:, 0])


def fit_on_buffer(agent, buffer, retrain_every: int, key):
    """The agent's state after seeing every buffer row as a run would: observe each, retrain after each block."""
    num_data = buffer.actions.shape[0]
    if num_data % retrain_every:
        raise ValueError(f"num_data={num_data} must be a multiple of retrain_every={retrain_every}")
    init_key, observe_key, retrain_key = jax.random.split(key, 3)

    def block(state, b):
        def step(state, t):
            return agent.observe(state, t, buffer.contexts[t], buffer.actions[t], buffer.rewards[t],
                                 jax.random.fold_in(observe_key, t)), None

        state, _ = jax.lax.scan(step, state, b * retrain_every + jnp.arange(retrain_every))
        return agent.retrain(state, buffer, (b + 1) * retrain_every, jax.random.fold_in(retrain_key, b)), None

    state, _ = jax.lax.scan(block, agent.init(init_key), jnp.arange(num_data // retrain_every))
    return state


def probe(bandit, agent, key, *, num_data: int, delta: float, retrain_every: int, contexts: int, draws: int):
    """(P(quadrant's arm), P(safe arm)) over ring contexts × draws, for one seed key (jit and vmap it)."""
    data_key, fit_key, ring_key, act_key = jax.random.split(key, 4)
    state = fit_on_buffer(agent, logged_inner_data(bandit, data_key, num_data, delta), retrain_every, fit_key)
    ring = ring_contexts(ring_key, contexts, delta)
    keys = jax.random.split(act_key, (contexts, draws))
    arms = jax.vmap(lambda x, ks: jax.vmap(lambda k: agent.act(state, x, k))(ks))(ring, keys)  # (contexts, draws)
    quadrant = wheel_quadrant_arm(ring)[:, None]
    return jnp.mean(arms == quadrant), jnp.mean(arms == WHEEL_SAFE_ARM)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
    parser = argparse.ArgumentParser(prog="python -m scripts.wheel_ring_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="uniform,greedy,mcdropout,mfvi,ensemble,bootstrap,neural_linear,lints",
                        help=f"comma list of {list(AGENTS)}")
    parser.add_argument("--delta", type=float, default=0.95)
    parser.add_argument("--num-data", default="50,200,1000", help="comma list of logged observations n")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contexts", type=int, default=100, help="ring contexts probed per seed")
    parser.add_argument("--draws", type=int, default=20, help="decisions per ring context")
    parser.add_argument("--retrain-every", type=int, default=50)
    args = parser.parse_args(argv)
    names = agent_names(args.agents)
    try:
        sizes = [int(n) for n in args.num_data.split(",") if n]
    except ValueError:
        raise SystemExit(f"--num-data expects comma-separated integers, got {args.num_data!r}") from None
    if not sizes or any(n < args.retrain_every or n % args.retrain_every for n in sizes):
        raise SystemExit(f"--num-data: every n must be a positive multiple of --retrain-every={args.retrain_every}")
    if not 0.0 < args.delta < 1.0:
        raise SystemExit(f"--delta must lie in (0, 1), got {args.delta}")

    bandit = wheel_bandit(args.delta)
    settings = settings_for("wheel")
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    print(f"wheel δ={args.delta}: P(quadrant's arm) on ring contexts after n inside-only observations; "
          f"{args.seeds} seeds × {args.contexts} contexts × {args.draws} draws (mean ± s.e. over seeds)")
    print(f"{'agent':<14}" + "".join(f"{f'n = {n}':>22}" for n in sizes))
    for name in names:
        results[name] = {}
        row = f"{name:<14}"
        for n in sizes:
            agent = make_agent(name, bandit, n, settings)
            run = jax.jit(jax.vmap(lambda key: probe(bandit, agent, key, num_data=n, delta=args.delta,
                                                     retrain_every=args.retrain_every, contexts=args.contexts,
                                                     draws=args.draws)))
            quadrant, safe = (np.asarray(a, np.float64) for a in run(keys))
            figures = {"p_quadrant_arm": float(quadrant.mean()),
                       "p_quadrant_arm_stderr": float(quadrant.std(ddof=1) / np.sqrt(len(quadrant))) if len(quadrant) > 1 else None,
                       "p_safe_arm": float(safe.mean()),
                       "seeds_never_trying": int((quadrant == 0).sum())}
            results[name][str(n)] = figures
            row += f"{figures['p_quadrant_arm']:>14.3f} ± {figures['p_quadrant_arm_stderr'] or 0:.3f}"
        print(row, flush=True)
    print(json.dumps({"delta": args.delta, "num_data": sizes, "seeds": args.seeds, "seed": args.seed,
                      "contexts": args.contexts, "draws": args.draws, "agents": results}))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
