"""Benchmark: bdljax HMC/NUTS against hand-written BlackJAX, a bare gradient loop and NumPyro.

All on one BNN: 1000 × 8 synthetic regression (targets from a random 8-50-1
tanh teacher plus noise 0.1), an 8 → 50 → 1 ReLU MLP (501 parameters),
Gaussian likelihood (σ = 0.1) and Gaussian prior N(0, 1), i.e. one
:class:`bdljax.core.posterior.LogPosterior`, full batch.

1. HMC transitions per second (10 leapfrog steps, fixed step size, one
   chain): the ``hmc`` recipe's plan run by ``bdljax.run.chains.sample_chains``
   (draws kept, traces for diagnostics recorded) against a hand-written ``blackjax.hmc`` step under ``jit`` +
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
3. NUTS mixing against NumPyro on a posterior both samplers mix on: a 1-16-1
   tanh MLP on the 1-D regression toy, 4 chains from the same starts, tree
   depth 8: smallest bulk ESS over 8 test points of the predictive mean per
   second of a whole run (warm-up included; split-R̂ reported alongside).
   NumPyro's time includes the fixed cost of each ``MCMC.run`` call (in a
   ``--quick`` run a timed call took half as long as the compiling one), so
   on short runs the ratio favours bdljax.
   Skipped without NumPyro, or with ``--skip-mixing``.
4. Chains: total gradient evaluations per second of bdljax HMC with 1, 4
   and 16 chains, vmapped (``chain_method="vectorized"``, the default for
   several chains on GPU/TPU) and mapped one after another inside the
   compiled step (``"sequential"``, the default on CPU; see
   ``bdljax.run.chains.resolve_chain_method``).

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

from bdljax import recipes
from bdljax.core import likelihoods, priors
from bdljax.core.tree import repeat as repeat_params
from bdljax.data import make_regression_1d
from bdljax.evaluate import diagnostics as diag
from bdljax.nn import models
from bdljax.run import chains, predictive

NUM_DATA, NUM_FEATURES, HIDDEN, NOISE = 1000, 8, 50, 0.1


def make_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_DATA, NUM_FEATURES)).astype(np.float32)
    w1 = rng.normal(size=(NUM_FEATURES, HIDDEN)) / np.sqrt(NUM_FEATURES)
    w2 = rng.normal(size=(HIDDEN, 1)) / np.sqrt(HIDDEN)
    y = (np.tanh(x @ w1) @ w2)[:, 0] + NOISE * rng.normal(size=NUM_DATA)
    x_test = rng.normal(size=(5, NUM_FEATURES)).astype(np.float32)
    model = models.mlp((NUM_FEATURES,), (HIDDEN,), 1)
    problem = recipes.Problem(model, likelihoods.gaussian(NOISE), priors.gaussian(1.0), x, y.astype(np.float32))
    return problem, x_test


def run_plan(plan, keys, start, chain_method="auto"):
    """The plan's chains with these keys from ``start`` (stacked per chain), without R̂/ESS (timed)."""
    plan = plan._replace(schedule=plan.schedule._replace(chain_method=chain_method))
    return chains.sample_chains(plan, keys, start, diagnose=False, warn=False)


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


def hmc_plan(problem, *, num_chains, num_transitions, step_size):
    """The ``hmc`` recipe at a fixed ε without jitter (as the hand-written loop), no warm-up, one chunk."""
    return recipes.plan("hmc", problem, num_chains=num_chains, num_warmup=0, num_samples=num_transitions,
                        step_size=step_size, num_integration_steps=10, step_size_jitter=0.0,
                        chunk_size=num_transitions)


def bench_hmc(problem, *, num_transitions, step_size, repeats):
    data = (jnp.asarray(problem.x_train), jnp.asarray(problem.y_train))
    params = problem.model.init(jax.random.key(0))
    log_post = problem.log_posterior()

    def log_density(p):
        return log_post(p, data)

    # (a) bdljax: the sampler as the runner runs it (one chain, draws kept, traces recorded).
    plan = hmc_plan(problem, num_chains=1, num_transitions=num_transitions, step_size=step_size)
    start = repeat_params(params, 1)

    def run_bdljax():
        return run_plan(plan, jax.random.split(jax.random.key(1), 1), start)

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


def bench_nuts(problem, x_test, *, num_warmup, num_draws, repeats, max_num_doublings):
    """bdljax NUTS and NumPyro NUTS on the same potential and start; runs alternate (after one compiling
    run each) so that both see the same machine load; ESS/s pools the timed runs of each."""
    model, log_post = problem.model, problem.log_posterior()
    data = (jnp.asarray(problem.x_train), jnp.asarray(problem.y_train))
    params = model.init(jax.random.key(0))
    results = {"nuts_warmup": num_warmup, "nuts_draws": num_draws, "nuts_timed_runs": repeats,
               "nuts_max_num_doublings": max_num_doublings}

    plan = recipes.plan("nuts", problem, num_chains=1, num_warmup=num_warmup, num_samples=num_draws,
                        target_acceptance_rate=0.8, max_num_doublings=max_num_doublings,
                        chunk_size=math.gcd(num_warmup, num_draws))  # one chunk length: one compilation
    start = repeat_params(params, 1)

    def run_bdljax(seed):
        run = run_plan(plan, jax.random.split(jax.random.key(seed), 1), start)
        draws = predictions(model, chains.flatten_chains(run.samples), x_test)
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


def bench_nuts_mixing(*, num_chains, num_warmup, num_draws, max_num_doublings, repeats):
    """NUTS where both samplers mix: a 1-16-1 tanh MLP on the 1-D regression toy (40 points, noise 0.1,
    prior N(0, 1)), ``num_chains`` chains from the same random starts for bdljax (its ``nuts`` plan, chains
    as the runner maps them on this backend) and NumPyro (the same chain method). Smallest bulk ESS over
    8 test points of the predictive mean (split-R̂ across chains alongside), per second of a whole run
    (warm-up included) after a compiling run; the two samplers' runs alternate."""
    toy = make_regression_1d(seed=0)
    model = models.mlp((1,), (16,), 1, activation="tanh")
    problem = recipes.Problem(model, likelihoods.gaussian(0.1), priors.gaussian(1.0), toy.x_train, toy.y_train)
    x_test = np.linspace(-1.5, 1.5, 8, dtype=np.float32)[:, None]
    starts = jax.vmap(model.init)(jax.random.split(jax.random.key(0), num_chains))
    plan = recipes.plan("nuts", problem, num_chains=num_chains, num_warmup=num_warmup, num_samples=num_draws,
                        max_num_doublings=max_num_doublings, chunk_size=math.gcd(num_warmup, num_draws))
    chain_method = chains.resolve_chain_method("auto", num_chains)

    def per_chain(samples):  # (C, S, ...) draws -> predictive means (C, S, 8)
        flat = jax.tree.map(lambda leaf: leaf.reshape((-1, *leaf.shape[2:])), samples)
        return predictions(model, flat, x_test).reshape(num_chains, num_draws, -1)

    def run_bdljax(seed):
        run = run_plan(plan, jax.random.split(jax.random.key(seed), num_chains), starts, chain_method)
        return per_chain(run.samples), float(np.mean(run.infos["num_integration_steps"]))

    runners = {"bdljax": run_bdljax}
    results = {"mixing_chains": num_chains, "mixing_warmup": num_warmup, "mixing_draws": num_draws,
               "mixing_max_num_doublings": max_num_doublings, "mixing_chain_method": chain_method}
    try:
        from numpyro.infer import MCMC, NUTS
    except ImportError:
        print("NumPyro is not installed: skipping the mixing comparison (pip install numpyro)")
        return results
    log_post, data = problem.log_posterior(), (jnp.asarray(toy.x_train), jnp.asarray(toy.y_train))
    sampler = MCMC(NUTS(potential_fn=lambda p: -log_post(p, data), target_accept_prob=0.8,
                        max_tree_depth=max_num_doublings), num_warmup=num_warmup, num_samples=num_draws,
                   num_chains=num_chains, chain_method=chain_method, progress_bar=False)

    def run_numpyro(seed):
        sampler.run(jax.random.key(seed), init_params=starts, extra_fields=("num_steps",))
        samples = jax.block_until_ready(sampler.get_samples(group_by_chain=True))
        return per_chain(samples), float(np.mean(sampler.get_extra_fields()["num_steps"]))

    runners["numpyro"] = run_numpyro
    for runner in runners.values():
        runner(10)  # compiles
    for name, runner in runners.items():
        results.update({f"{name}_mixing_seconds": 0.0, f"{name}_mixing_ess_min": 0.0, f"{name}_mixing_rhat_max": 0.0})
    for repeat in range(repeats):
        for name, runner in runners.items():
            tic = time.perf_counter()
            draws, steps = runner(11 + repeat)
            results[f"{name}_mixing_seconds"] += (time.perf_counter() - tic) / repeats
            results[f"{name}_mixing_ess_min"] += float(np.min(diag.ess_bulk(draws))) / repeats
            rhat = float(np.max(diag.rhat(draws)))
            results[f"{name}_mixing_rhat_max"] = max(results[f"{name}_mixing_rhat_max"], rhat)
            results[f"{name}_mixing_mean_leapfrog_steps"] = steps
    for name in runners:
        results[f"{name}_mixing_ess_per_s"] = results[f"{name}_mixing_ess_min"] / results[f"{name}_mixing_seconds"]
    results["bdljax_over_numpyro_mixing_ess_per_s"] = (results["bdljax_mixing_ess_per_s"]
                                                       / results["numpyro_mixing_ess_per_s"])
    return results


def bench_chains(problem, *, num_transitions, step_size, repeats, chain_counts=(1, 4, 16)):
    """Total gradient evaluations per second with C chains, vmapped and mapped one after another."""
    results = {}
    methods = ("vectorized", "sequential")
    for num_chains in chain_counts:
        plan = hmc_plan(problem, num_chains=num_chains, num_transitions=num_transitions, step_size=step_size)
        keys = jax.random.split(jax.random.key(3), num_chains)
        runs = [lambda method=method: run_plan(plan, keys, problem.model.init, method) for method in methods]
        for run in runs:
            run()
        for method, seconds in zip(methods, best_times(runs, repeats)):
            results[f"gradients_per_s_{method}_{num_chains}_chains"] = num_chains * num_transitions * 10 / seconds
    for method in methods:
        base = results[f"gradients_per_s_{method}_{chain_counts[0]}_chains"]
        for num_chains in chain_counts[1:]:
            speed = results[f"gradients_per_s_{method}_{num_chains}_chains"]
            results[f"chain_speedup_{method}_{num_chains}"] = speed / base
    results["chain_method_auto"] = {count: chains.resolve_chain_method("auto", count) for count in chain_counts}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small settings for a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best taken (default 3)")
    parser.add_argument("--nuts-repeats", type=int, default=1, help="timed NUTS runs per sampler (default 1)")
    parser.add_argument("--skip-nuts", action="store_true", help="skip the NUTS/NumPyro comparison")
    parser.add_argument("--skip-mixing", action="store_true", help="skip the NUTS mixing comparison with NumPyro")
    parser.add_argument("--nuts-max-doublings", type=int, default=6,
                        help="NUTS tree depth limit for both samplers (default 6: at most 63 leapfrog steps)")
    args = parser.parse_args(argv)
    transitions = 20 if args.quick else 500
    warmup, draws = (20, 20) if args.quick else (500, 1000)
    step_size = 1e-3  # accepts ~0.93 of 10-step trajectories from the initialisation

    problem, x_test = make_problem()
    results = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "jax": jax.__version__,
               "blackjax": blackjax.__version__, "platform": platform.platform(), "quick": args.quick}
    results.update(bench_hmc(problem, num_transitions=transitions, step_size=step_size, repeats=args.repeats))
    if not args.skip_nuts:
        results.update(bench_nuts(problem, x_test, num_warmup=warmup, num_draws=draws, repeats=args.nuts_repeats,
                                  max_num_doublings=args.nuts_max_doublings))
    if not args.skip_mixing:
        results.update(bench_nuts_mixing(num_chains=4, num_warmup=warmup, num_draws=draws, repeats=args.nuts_repeats,
                                         max_num_doublings=8))
    results.update(bench_chains(problem, num_transitions=max(transitions // 5, 10), step_size=step_size,
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
    if "numpyro_mixing_ess_per_s" in results:
        for name, label in (("bdljax", "bdljax"), ("numpyro", "NumPyro")):
            rows.append((f"NUTS mixing, 4 chains, tanh 1-16-1: {label} ESS/s",
                         f"{results[f'{name}_mixing_ess_per_s']:.2f} (ESS {results[f'{name}_mixing_ess_min']:.0f} in "
                         f"{results[f'{name}_mixing_seconds']:.1f} s, R-hat {results[f'{name}_mixing_rhat_max']:.3f}, "
                         f"{results[f'{name}_mixing_mean_leapfrog_steps']:.0f} steps)"))
        rows.append(("bdljax / NumPyro mixing ESS/s", f"{results['bdljax_over_numpyro_mixing_ess_per_s']:.3f}"))
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
