"""Benchmark: bdljax HMC/NUTS against hand-written BlackJAX, a bare gradient loop and NumPyro.

All on one BNN: 1000 × 8 synthetic regression (targets from a random 8-50-1
tanh teacher plus noise 0.1), an 8 → 50 → 1 ReLU MLP (501 parameters),
Gaussian likelihood (σ = 0.1) and Gaussian prior N(0, 1), i.e. one
:class:`bdljax.core.posterior.LogPosterior`, full batch.

1. HMC transitions per second (10 leapfrog steps, fixed step size, one
   chain): ``bdljax.methods.hmc.sample_chains`` (draws kept, traces for diagnostics
   recorded) against a hand-written ``blackjax.hmc`` step under ``jit`` +
   ``lax.scan`` and against a bare ``lax.scan`` of 10 ``value_and_grad``
   evaluations per transition (the floor: what the gradients alone cost).
   Each timed after a compiling run; best of ``--repeats``.
2. NUTS (500 warm-up, 1000 draws, one chain, target acceptance 0.8,
   diagonal mass matrix, the same tree depth limit for both, ``--nuts-max-doublings``,
   default 6, i.e. at most 63 leapfrog steps: on this posterior (noise 0.1, 1000 points) both
   samplers fill every tree to the limit, so depth 10 would cost 16x the time for
   the same comparison) against NumPyro's NUTS given the
   *same* potential (−log posterior on the same parameter pytree) and the
   same start: effective samples per second of the predictive mean at 5
   test points (bulk ESS, smallest over the points; warm-up included in the
   time), timed after a compiling run, the two samplers' runs alternating;
   plus gradient evaluations per second (implementation speed, independent
   of how the adaptation turned out).
   Skipped with a message when NumPyro is not installed (``pip install numpyro``).
3. Chains: total gradient evaluations per second of bdljax HMC with 1, 4
   and 16 chains, vmapped (``chain_method="vectorized"``, the default for
   several chains on GPU/TPU) and mapped one after another inside the
   compiled step (``"sequential"``, the default on CPU; see
   ``bdljax.methods.hmc.resolve_chain_method``).

Prints a table, then one JSON line with every figure and ratio (last line).

    python scripts/bench_hmc.py                # full settings
    python scripts/bench_hmc.py --quick        # small settings (smoke)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import blackjax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from bdljax.evaluate import diagnostics as diag
from bdljax.methods import hmc
from bdljax.core import likelihoods, posterior, priors
from bdljax.nn import models
from bdljax.run import predictive
from bdljax.core.tree import repeat as repeat_params

NUM_DATA, NUM_FEATURES, HIDDEN, NOISE = 1000, 8, 50, 0.1


def make_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_DATA, NUM_FEATURES)).astype(np.float32)
    w1 = rng.normal(size=(NUM_FEATURES, HIDDEN)) / np.sqrt(NUM_FEATURES)
    w2 = rng.normal(size=(HIDDEN, 1)) / np.sqrt(HIDDEN)
    y = (np.tanh(x @ w1) @ w2)[:, 0] + NOISE * rng.normal(size=NUM_DATA)
    x_test = rng.normal(size=(5, NUM_FEATURES)).astype(np.float32)
    model = models.mlp((NUM_FEATURES,), (HIDDEN,), 1)
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(NOISE), priors.gaussian(1.0), NUM_DATA)
    return x, y.astype(np.float32), x_test, model, log_post


def best_time(fn, repeats):
    """Best wall time of ``repeats`` calls of ``fn`` (which blocks on its result)."""
    return best_times([fn], repeats)[0]


def best_times(fns, repeats):
    """Best wall time of each of ``fns`` over ``repeats`` rounds, the functions interleaved within a round
    so that a change in the machine's load (shared CPUs) hits all of them alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def bench_hmc(x, y, model, log_post, *, num_transitions, step_size, repeats):
    data = (jnp.asarray(x), jnp.asarray(y))
    params = model.init(jax.random.key(0))

    def log_density(p):
        return log_post(p, data)

    # (a) bdljax: the sampler as the recipes run it (one chain, draws kept, traces recorded).
    mcmc = hmc.sampler(log_post, (x, y), algorithm="hmc", step_size=step_size, num_integration_steps=10, num_warmup=0)
    start = repeat_params(params, 1)

    def run_bdljax():
        run = hmc.sample_chains(mcmc, jax.random.split(jax.random.key(1), 1), start, num_draws=num_transitions,
                                chunk_size=num_transitions, diagnose=False, warn=False)
        return run

    first = run_bdljax()
    acceptance = first.diagnostics["acceptance"]

    # (b) hand-written BlackJAX loop: jit + lax.scan over hmc.step.
    flat, _ = jax.flatten_util.ravel_pytree(params)
    kernel = blackjax.hmc(log_density, step_size, jnp.ones(flat.shape[0]), 10)

    @jax.jit
    def run_blackjax(state, key):
        def step(state, key):
            state, info = kernel.step(key, state)
            return state, (state.position, info.acceptance_rate)

        return jax.lax.scan(step, state, jax.random.split(key, num_transitions))

    state0 = kernel.init(params)
    jax.block_until_ready(run_blackjax(state0, jax.random.key(2)))

    # (c) the floor: the same number of value_and_grad evaluations and nothing else.
    value_and_grad = jax.value_and_grad(log_density)

    @jax.jit
    def run_gradients(p):
        def step(p, _):
            value, grad = value_and_grad(p)
            return jax.tree.map(lambda a, g: a + 1e-9 * g, p, grad), value

        return jax.lax.scan(step, p, None, length=10 * num_transitions)

    jax.block_until_ready(run_gradients(params))
    t_bdljax, t_blackjax, t_floor = best_times([
        run_bdljax,
        lambda: jax.block_until_ready(run_blackjax(state0, jax.random.key(2))),
        lambda: jax.block_until_ready(run_gradients(params)),
    ], repeats)
    return {
        "hmc_transitions": num_transitions,
        "hmc_acceptance": acceptance,
        "bdljax_hmc_transitions_per_s": num_transitions / t_bdljax,
        "blackjax_hmc_transitions_per_s": num_transitions / t_blackjax,
        "gradient_floor_transitions_per_s": num_transitions / t_floor,
        "bdljax_over_blackjax": t_blackjax / t_bdljax,
        "bdljax_over_floor": t_floor / t_bdljax,
    }


def predictions(model, samples, x_test):
    """Predictive mean at the test points for every draw: (S, 5)."""
    return np.asarray(predictive.predictive_outputs(model.apply, samples, jnp.asarray(x_test))[..., 0])


def bench_nuts(x, y, x_test, model, log_post, *, num_warmup, num_draws, repeats, max_num_doublings):
    """bdljax NUTS and NumPyro NUTS on the same potential and start; runs alternate (after one compiling
    run each) so that both see the same machine load; ESS/s pools the timed runs of each."""
    data = (jnp.asarray(x), jnp.asarray(y))
    params = model.init(jax.random.key(0))
    results = {"nuts_warmup": num_warmup, "nuts_draws": num_draws, "nuts_timed_runs": repeats,
               "nuts_max_num_doublings": max_num_doublings}

    mcmc = hmc.sampler(log_post, (x, y), algorithm="nuts", num_warmup=num_warmup, target_acceptance_rate=0.8,
                       max_num_doublings=max_num_doublings)
    start = repeat_params(params, 1)
    chunk = math.gcd(num_warmup, num_draws)  # one chunk length for warm-up and draws: one compilation

    def run_bdljax(seed):
        run = hmc.sample_chains(mcmc, jax.random.split(jax.random.key(seed), 1), start, num_draws=num_draws,
                                chunk_size=chunk, diagnose=False, warn=False)
        draws = predictions(model, hmc.flatten_chains(run.samples), x_test)
        steps = np.concatenate([run.warmup_infos["num_integration_steps"], run.infos["num_integration_steps"]], 1)
        return draws, float(np.sum(steps)), run.diagnostics

    runners = {"bdljax": run_bdljax}
    try:
        import numpyro
        from numpyro.infer import MCMC, NUTS
    except ImportError:
        print("NumPyro is not installed: skipping the NumPyro NUTS baseline (pip install numpyro)")
        results["numpyro"] = "not installed"
        numpyro = None
    if numpyro is not None:
        results["numpyro_version"] = numpyro.__version__

        def potential(p):  # the very same log posterior, negated
            return -log_post(p, data)

        sampler = MCMC(NUTS(potential_fn=potential, target_accept_prob=0.8, max_tree_depth=max_num_doublings),
                       num_warmup=num_warmup, num_samples=num_draws, progress_bar=False)

        def run_numpyro(seed):
            # The same MCMC object reuses its compiled kernel from the first run.
            sampler.run(jax.random.key(seed), init_params=params, extra_fields=("num_steps", "diverging"))
            draws = predictions(model, jax.block_until_ready(sampler.get_samples()), x_test)
            extra = sampler.get_extra_fields()
            # extra fields cover the kept draws only; warm-up steps are not reported by NumPyro.
            info = {"divergences": int(np.sum(extra["diverging"])),
                    "num_integration_steps": float(np.mean(extra["num_steps"]))}
            return draws, float(np.sum(extra["num_steps"])), info

        runners["numpyro"] = run_numpyro

    for name, runner in runners.items():
        tic = time.perf_counter()
        runner(10)  # compiles
        results[f"{name}_nuts_first_run_s"] = time.perf_counter() - tic
    totals = {name: {"seconds": 0.0, "ess": 0.0, "draw_steps": 0.0} for name in runners}
    for repeat in range(repeats):
        for name, runner in runners.items():
            tic = time.perf_counter()
            draws, steps, info = runner(11 + repeat)
            totals[name]["seconds"] += time.perf_counter() - tic
            totals[name]["ess"] += float(np.min(diag.ess_bulk(draws[None])))
            totals[name]["mean_steps"] = info["num_integration_steps"]
            totals[name]["divergences"] = info["divergences"]
    for name, total in totals.items():
        results.update({
            f"{name}_nuts_seconds": total["seconds"] / repeats, f"{name}_nuts_ess_min": total["ess"] / repeats,
            f"{name}_nuts_ess_per_s": total["ess"] / total["seconds"],
            f"{name}_nuts_mean_leapfrog_steps": total["mean_steps"], f"{name}_nuts_divergences": total["divergences"],
            # warm-up + draws at the kept draws' mean trajectory length: gradient throughput of the implementation
            f"{name}_nuts_gradients_per_s": (num_warmup + num_draws) * total["mean_steps"] * repeats / total["seconds"],
        })
    if "numpyro" in totals:
        results["bdljax_over_numpyro_ess_per_s"] = results["bdljax_nuts_ess_per_s"] / results["numpyro_nuts_ess_per_s"]
        results["bdljax_over_numpyro_gradients_per_s"] = (results["bdljax_nuts_gradients_per_s"]
                                                          / results["numpyro_nuts_gradients_per_s"])
    return results


def bench_chains(x, y, model, log_post, *, num_transitions, step_size, repeats, chain_counts=(1, 4, 16)):
    """Total gradient evaluations per second with C chains, vmapped and mapped one after another."""
    mcmc = hmc.sampler(log_post, (x, y), algorithm="hmc", step_size=step_size, num_integration_steps=10, num_warmup=0)
    results = {}
    methods = ("vectorized", "sequential")
    for num_chains in chain_counts:
        keys = jax.random.split(jax.random.key(3), num_chains)
        runs = [lambda method=method: hmc.sample_chains(mcmc, keys, model.init, num_draws=num_transitions,
                                                        chunk_size=num_transitions, chain_method=method,
                                                        diagnose=False, warn=False) for method in methods]
        for run in runs:
            run()
        for method, seconds in zip(methods, best_times(runs, repeats)):
            results[f"gradients_per_s_{method}_{num_chains}_chains"] = num_chains * num_transitions * 10 / seconds
    for method in methods:
        base = results[f"gradients_per_s_{method}_{chain_counts[0]}_chains"]
        for num_chains in chain_counts[1:]:
            speed = results[f"gradients_per_s_{method}_{num_chains}_chains"]
            results[f"chain_speedup_{method}_{num_chains}"] = speed / base
    results["chain_method_auto"] = {count: hmc.resolve_chain_method("auto", count) for count in chain_counts}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small settings for a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best taken (default 3)")
    parser.add_argument("--nuts-repeats", type=int, default=1, help="timed NUTS runs per sampler (default 1)")
    parser.add_argument("--skip-nuts", action="store_true", help="skip the NUTS/NumPyro comparison")
    parser.add_argument("--nuts-max-doublings", type=int, default=6,
                        help="NUTS tree depth limit for both samplers (default 6: at most 63 leapfrog steps)")
    args = parser.parse_args(argv)
    transitions = 20 if args.quick else 500
    warmup, draws = (20, 20) if args.quick else (500, 1000)
    step_size = 1e-3  # accepts ~0.93 of 10-step trajectories from the initialisation

    x, y, x_test, model, log_post = make_problem()
    results = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "jax": jax.__version__,
               "blackjax": blackjax.__version__, "platform": platform.platform(), "quick": args.quick}
    results.update(bench_hmc(x, y, model, log_post, num_transitions=transitions, step_size=step_size,
                             repeats=args.repeats))
    if not args.skip_nuts:
        results.update(bench_nuts(x, y, x_test, model, log_post, num_warmup=warmup, num_draws=draws,
                                  repeats=args.nuts_repeats, max_num_doublings=args.nuts_max_doublings))
    results.update(bench_chains(x, y, model, log_post, num_transitions=max(transitions // 5, 10), step_size=step_size,
                                repeats=args.repeats))

    rows = [
        ("HMC, 10 leapfrog steps: bdljax", f"{results['bdljax_hmc_transitions_per_s']:.1f} transitions/s"),
        ("HMC: hand-written BlackJAX jit+scan", f"{results['blackjax_hmc_transitions_per_s']:.1f} transitions/s"),
        ("HMC: bare value_and_grad floor", f"{results['gradient_floor_transitions_per_s']:.1f} transitions/s"),
        ("bdljax / BlackJAX (target >= 0.95)", f"{results['bdljax_over_blackjax']:.3f}"),
        ("bdljax / floor", f"{results['bdljax_over_floor']:.3f}"),
    ]
    if "bdljax_nuts_ess_per_s" in results:
        rows += [("NUTS: bdljax ESS/s (min over 5 test points)",
                  f"{results['bdljax_nuts_ess_per_s']:.2f} (ESS {results['bdljax_nuts_ess_min']:.0f} in "
                  f"{results['bdljax_nuts_seconds']:.1f} s, {results['bdljax_nuts_mean_leapfrog_steps']:.0f} steps, "
                  f"{results['bdljax_nuts_gradients_per_s']:.0f} gradients/s)")]
    if "numpyro_nuts_ess_per_s" in results:
        rows += [("NUTS: NumPyro ESS/s",
                  f"{results['numpyro_nuts_ess_per_s']:.2f} (ESS {results['numpyro_nuts_ess_min']:.0f} in "
                  f"{results['numpyro_nuts_seconds']:.1f} s, {results['numpyro_nuts_mean_leapfrog_steps']:.0f} steps, "
                  f"{results['numpyro_nuts_gradients_per_s']:.0f} gradients/s)"),
                 ("bdljax / NumPyro ESS/s (target >= 1)", f"{results['bdljax_over_numpyro_ess_per_s']:.3f}"),
                 ("bdljax / NumPyro gradients/s", f"{results['bdljax_over_numpyro_gradients_per_s']:.3f}")]
    for count in (1, 4, 16):
        rows.append((f"HMC, {count} chain(s): vmapped | sequential",
                     f"{results[f'gradients_per_s_vectorized_{count}_chains']:.0f} | "
                     f"{results[f'gradients_per_s_sequential_{count}_chains']:.0f} gradients/s"))
    width = max(len(name) for name, _ in rows)
    print(f"bdljax HMC benchmark on {results['device']} ({results['backend']}), {NUM_DATA}x{NUM_FEATURES} data, "
          f"8-50-1 MLP")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
