"""Benchmark: bdljax HMC/NUTS against hand-written BlackJAX, a bare gradient loop and NumPyro.

All on one BNN: 1000 × 8 synthetic regression (targets from a random 8-50-1
tanh teacher plus noise 0.1), an 8 → 50 → 1 ReLU MLP (501 parameters),
Gaussian likelihood (σ = 0.1) and Gaussian prior N(0, 1), i.e. one
:class:`bdljax.posterior.LogPosterior`, full batch.

1. HMC transitions per second (10 leapfrog steps, fixed step size, one
   chain): ``bdljax.hmc.sample_chains`` (draws kept, traces for diagnostics
   recorded) against a hand-written ``blackjax.hmc`` step under ``jit`` +
   ``lax.scan`` and against a bare ``lax.scan`` of 10 ``value_and_grad``
   evaluations per transition (the floor: what the gradients alone cost).
   Each timed after a compiling run; best of ``--repeats``.
2. NUTS (500 warm-up, 1000 draws, one chain, target acceptance 0.8,
   diagonal mass matrix, tree depth ≤ 10) against NumPyro's NUTS given the
   *same* potential (−log posterior on the same parameter pytree) and the
   same start: effective samples per second of the predictive mean at 5
   test points (bulk ESS, smallest over the points), timed after compilation.
   Skipped with a message when NumPyro is not installed (``pip install numpyro``).
3. Chains: total gradient evaluations per second of bdljax HMC with 1, 4
   and 16 chains, vmapped (``chain_method="vectorized"``) and mapped one
   after another inside the compiled step (``"sequential"``, the CPU default).

Prints a table, then one JSON line with every figure and ratio (last line).

    python scripts/bench_hmc.py                # full settings
    python scripts/bench_hmc.py --quick        # small settings (smoke)
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import blackjax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from bdljax import diagnostics as diag
from bdljax import hmc, likelihoods, models, posterior, predictive, priors
from bdljax.transform import repeat_params

NUM_DATA, NUM_FEATURES, HIDDEN, NOISE = 1000, 8, 50, 0.1


def make_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_DATA, NUM_FEATURES)).astype(np.float32)
    w1, w2 = rng.normal(size=(NUM_FEATURES, HIDDEN)) / np.sqrt(NUM_FEATURES), rng.normal(size=(HIDDEN, 1)) / np.sqrt(HIDDEN)
    y = (np.tanh(x @ w1) @ w2)[:, 0] + NOISE * rng.normal(size=NUM_DATA)
    x_test = rng.normal(size=(5, NUM_FEATURES)).astype(np.float32)
    model = models.mlp((NUM_FEATURES,), (HIDDEN,), 1)
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(NOISE), priors.gaussian(1.0), NUM_DATA)
    return x, y.astype(np.float32), x_test, model, log_post


def best_time(fn, repeats):
    """Best wall time of ``repeats`` calls of ``fn`` (which blocks on its result)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


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
    t_bdljax = best_time(run_bdljax, repeats)

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
    t_blackjax = best_time(lambda: jax.block_until_ready(run_blackjax(state0, jax.random.key(2))), repeats)

    # (c) the floor: the same number of value_and_grad evaluations and nothing else.
    value_and_grad = jax.value_and_grad(log_density)

    @jax.jit
    def run_gradients(p):
        def step(p, _):
            value, grad = value_and_grad(p)
            return jax.tree.map(lambda a, g: a + 1e-9 * g, p, grad), value

        return jax.lax.scan(step, p, None, length=10 * num_transitions)

    jax.block_until_ready(run_gradients(params))
    t_floor = best_time(lambda: jax.block_until_ready(run_gradients(params)), repeats)
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


def bench_nuts(x, y, x_test, model, log_post, *, num_warmup, num_draws):
    data = (jnp.asarray(x), jnp.asarray(y))
    params = model.init(jax.random.key(0))
    results = {"nuts_warmup": num_warmup, "nuts_draws": num_draws}

    mcmc = hmc.sampler(log_post, (x, y), algorithm="nuts", num_warmup=num_warmup, target_acceptance_rate=0.8)
    start = repeat_params(params, 1)
    chunk = max(num_warmup, num_draws) if num_draws % num_warmup and num_warmup % num_draws else min(num_warmup, num_draws)

    def run_bdljax(seed):
        return hmc.sample_chains(mcmc, jax.random.split(jax.random.key(seed), 1), start, num_draws=num_draws,
                                 chunk_size=chunk, diagnose=False, warn=False)

    tic = time.perf_counter()
    run_bdljax(10)  # compiles
    results["bdljax_nuts_first_run_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    run = run_bdljax(11)
    seconds = time.perf_counter() - tic
    draws = predictions(model, hmc.flatten_chains(run.samples), x_test)
    ess = float(np.min(diag.ess_bulk(draws[None])))
    results.update({
        "bdljax_nuts_seconds": seconds, "bdljax_nuts_ess_min": ess, "bdljax_nuts_ess_per_s": ess / seconds,
        "bdljax_nuts_mean_leapfrog_steps": run.diagnostics["num_integration_steps"],
        "bdljax_nuts_step_size": run.diagnostics["step_size"], "bdljax_nuts_divergences": run.diagnostics["divergences"],
    })

    try:
        import numpyro
        from numpyro.infer import MCMC, NUTS
    except ImportError:
        print("NumPyro is not installed: skipping the NumPyro NUTS baseline (pip install numpyro)")
        results["numpyro"] = "not installed"
        return results
    results["numpyro_version"] = numpyro.__version__

    def potential(p):  # the very same log posterior, negated
        return -log_post(p, data)

    def run_numpyro(seed, sampler=None):
        sampler = sampler or MCMC(NUTS(potential_fn=potential, target_accept_prob=0.8, max_tree_depth=10),
                                  num_warmup=num_warmup, num_samples=num_draws, progress_bar=False)
        sampler.run(jax.random.key(seed), init_params=params, extra_fields=("num_steps", "diverging"))
        jax.block_until_ready(sampler.get_samples())
        return sampler

    tic = time.perf_counter()
    sampler = run_numpyro(10)  # compiles
    results["numpyro_nuts_first_run_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    sampler = run_numpyro(11, sampler)  # the same MCMC object reuses its compiled kernel
    seconds = time.perf_counter() - tic
    draws = predictions(model, sampler.get_samples(), x_test)
    ess = float(np.min(diag.ess_bulk(draws[None])))
    extra = sampler.get_extra_fields()
    results.update({
        "numpyro_nuts_seconds": seconds, "numpyro_nuts_ess_min": ess, "numpyro_nuts_ess_per_s": ess / seconds,
        "numpyro_nuts_mean_leapfrog_steps": float(np.mean(extra["num_steps"])),
        "numpyro_nuts_divergences": int(np.sum(extra["diverging"])),
        "bdljax_over_numpyro_ess_per_s": results["bdljax_nuts_ess_per_s"] / (ess / seconds),
    })
    return results


def bench_chains(x, y, model, log_post, *, num_transitions, step_size, repeats, chain_counts=(1, 4, 16)):
    """Total gradient evaluations per second with C chains, vmapped and mapped one after another."""
    mcmc = hmc.sampler(log_post, (x, y), algorithm="hmc", step_size=step_size, num_integration_steps=10, num_warmup=0)
    results = {}
    for method in ("vectorized", "sequential"):
        for num_chains in chain_counts:
            keys = jax.random.split(jax.random.key(3), num_chains)

            def run():
                return hmc.sample_chains(mcmc, keys, model.init, num_draws=num_transitions, chunk_size=num_transitions,
                                         chain_method=method, diagnose=False, warn=False)

            run()
            seconds = best_time(run, repeats)
            results[f"gradients_per_s_{method}_{num_chains}_chains"] = num_chains * num_transitions * 10 / seconds
        base = results[f"gradients_per_s_{method}_{chain_counts[0]}_chains"]
        for num_chains in chain_counts[1:]:
            results[f"chain_speedup_{method}_{num_chains}"] = results[f"gradients_per_s_{method}_{num_chains}_chains"] / base
    results["chain_method_auto"] = hmc.resolve_chain_method("auto")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small settings for a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best taken (default 3)")
    parser.add_argument("--skip-nuts", action="store_true", help="skip the NUTS/NumPyro comparison")
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
        results.update(bench_nuts(x, y, x_test, model, log_post, num_warmup=warmup, num_draws=draws))
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
                  f"{results['bdljax_nuts_seconds']:.1f} s, {results['bdljax_nuts_mean_leapfrog_steps']:.0f} steps)")]
    if "numpyro_nuts_ess_per_s" in results:
        rows += [("NUTS: NumPyro ESS/s", f"{results['numpyro_nuts_ess_per_s']:.2f} (ESS {results['numpyro_nuts_ess_min']:.0f} "
                  f"in {results['numpyro_nuts_seconds']:.1f} s, {results['numpyro_nuts_mean_leapfrog_steps']:.0f} steps)"),
                 ("bdljax / NumPyro ESS/s (target >= 1)", f"{results['bdljax_over_numpyro_ess_per_s']:.3f}")]
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
