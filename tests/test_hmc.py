"""HMC and NUTS (bdljax.methods.hmc) against the exact posterior of a conjugate Bayesian linear regression.

Target: y = w·x + b + ε, ε ~ N(0, 0.5²), prior θ = (w, b) ~ N(0, I), with two
inputs correlated at 0.8, so the posterior N(μ, Σ),
Σ = (XᵀX/σ² + I)⁻¹, μ = Σ Xᵀy/σ², has a correlation of about −0.8 between
the weights. Every posterior mean and covariance entry is a posterior mean of
some f(θ) (θ_i − μ_i, or (θ_i − μ_i)(θ_j − μ_j)); each is checked to lie
within 4 Monte Carlo standard errors, MCSE = sd(f)/√ESS(f) with the ESS
measured on the draws, separately for three seeds (three independent groups
of four chains, run as one vmapped batch). A sampler with the wrong
temperature, a doubled likelihood or a broken Metropolis step misses these
tolerances by many MCSEs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conjugate_regression
from bdljax.evaluate import diagnostics as diag
from bdljax import recipes
from bdljax.methods import hmc
from bdljax.core import likelihoods, posterior, priors
from bdljax.run import chains, predictive
from bdljax.run.options import RunOptions
from bdljax.run.plan import Chains, Plan

NUM_DATA, NOISE, PRIOR_SCALE = 100, 0.5, 1.0
SEEDS, CHAINS_PER_SEED = (0, 1, 2), 4
Z = 4.0  # tolerance in Monte Carlo standard errors


def linear_problem(seed=0):
    x, y, model, mean, covariance = conjugate_regression.linear_problem(seed, NUM_DATA, NOISE, PRIOR_SCALE)
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(NOISE), priors.gaussian(PRIOR_SCALE), NUM_DATA)
    return x, y, model, log_post, mean, covariance


X, Y, MODEL, LOG_POSTERIOR, EXACT_MEAN, EXACT_COV = linear_problem()


def seed_keys():
    return jnp.concatenate([jax.random.split(jax.random.key(seed), CHAINS_PER_SEED) for seed in SEEDS])


def theta(samples):
    return np.concatenate([np.asarray(samples["w"], np.float64), np.asarray(samples["b"], np.float64)[..., None]], -1)


def check_against_exact(draws):
    """draws (C, S, 3) of one seed: means and covariances within Z MCSEs of the exact ones."""
    centred = draws - EXACT_MEAN
    rows, cols = np.triu_indices(3)
    functions = np.concatenate([centred, centred[..., rows] * centred[..., cols]], axis=-1)  # (C, S, 9)
    targets = np.concatenate([np.zeros(3), EXACT_COV[rows, cols]])
    ess = diag.effective_sample_size(functions)
    assert ess.min() > 150, f"too few effective draws to test anything: ESS {ess.round()}"
    error = functions.reshape(-1, 9).mean(0) - targets
    mcse = diag.monte_carlo_standard_error(functions)
    assert np.all(np.abs(error) <= Z * mcse), f"errors in MCSEs: {(error / mcse).round(2)} (ESS {ess.round()})"
    assert diag.rhat(draws).max() < 1.05


def sampler(data=None, **settings):
    """A chain's transition on the test posterior, and the warm-up and float64 setting its chains need."""
    transform = hmc.build(LOG_POSTERIOR, (X, Y) if data is None else data, **settings)
    return transform, settings.get("num_warmup", 500), settings.get("float64", False)


def run_chains(mcmc, keys, init_params, num_draws, chunk_size=100, chain_method="auto", **kwargs):
    """``len(keys)`` chains with these keys (the runner would split them from one key)."""
    transform, num_warmup, float64 = mcmc
    schedule = Chains(len(keys), num_warmup, num_draws, 1, chunk_size, chain_method, float64)
    plan = Plan("test", transform, init_params, (X, Y), MODEL.apply, likelihoods.gaussian(NOISE), schedule,
                len(keys) * num_draws)
    return chains.sample_chains(plan, keys, init_params, **kwargs)


@pytest.fixture(scope="module")
def nuts_run():
    mcmc = sampler(algorithm="nuts", num_warmup=300)
    run = run_chains(mcmc, seed_keys(), MODEL.init, num_draws=600, chunk_size=300, chain_method="sequential",
                     diagnose=False, warn=False)
    return mcmc, run


@pytest.fixture(scope="module")
def hmc64():
    """HMC in float64 with a fixed ε = 0.02 (ε√λ_max ≈ 0.5), jittered by ±20 % so that the trajectory
    (L = 10) cannot sit on a period of the posterior, after 300 transitions of burn-in.

    NUTS above covers window adaptation; a fixed step size keeps this run free
    of adaptation's chaotic sensitivity to rounding, so it is also the
    reference for the vmap check below.
    """
    return sampler(algorithm="hmc", step_size=0.02, num_integration_steps=10, step_size_jitter=0.2, num_warmup=300,
                   float64=True)


@pytest.fixture(scope="module")
def hmc64_run(hmc64):
    return run_chains(hmc64, seed_keys(), MODEL.init, num_draws=600, chunk_size=300, chain_method="vectorized",
                      diagnose=False, warn=False)


@pytest.mark.parametrize("run_name", ["nuts_run", "hmc64_run"])
def test_matches_exact_posterior_mean_and_covariance(run_name, request):
    run = request.getfixturevalue(run_name)
    run = run if isinstance(run, chains.ChainRun) else run[1]  # nuts_run also carries its sampler
    draws = theta(run.samples)
    for group in range(len(SEEDS)):
        check_against_exact(draws[group * CHAINS_PER_SEED:(group + 1) * CHAINS_PER_SEED])
    assert run.diagnostics["divergences"] == 0
    assert 0.6 < run.diagnostics["acceptance"] <= 1.0


def test_float64_chains_return_float32_draws_and_exact_log_density(hmc64_run):
    assert jax.tree.leaves(hmc64_run.state.chain.position)[0].dtype == jnp.float64
    assert hmc64_run.samples["w"].dtype == np.float32
    # The traced log density is the float64 log posterior at the draw.
    with jax.enable_x64(True):
        position = jax.tree.map(lambda leaf: leaf[0], hmc64_run.state.chain.position)
        data64 = (jnp.asarray(X, jnp.float64), jnp.asarray(Y, jnp.float64))
        expected = LOG_POSTERIOR(position, data64)
    np.testing.assert_allclose(hmc64_run.traces["log_density"][0, -1], expected, rtol=1e-12)


def test_sequential_chains_equal_chains_run_alone_exactly(nuts_run):
    """Chains mapped one after another (the CPU default) compute each chain unbatched: a chain run
    alone reproduces its batch draws bit for bit, window adaptation and NUTS included."""
    mcmc, batch = nuts_run
    keys = seed_keys()
    for chain in (0, 9):
        alone = run_chains(mcmc, keys[chain:chain + 1], MODEL.init, num_draws=600, chunk_size=300,
                           chain_method="sequential", diagnose=False)
        np.testing.assert_array_equal(alone.samples["w"][0], batch.samples["w"][chain])
        np.testing.assert_array_equal(alone.warmup_infos["step_size"][0], batch.warmup_infos["step_size"][chain])


def test_vmapped_chains_equal_chains_run_alone(hmc64, hmc64_run):
    """Vmapped chains: chain c depends only on its key and initialisation, so run alone it gives the
    draws it gave in the batch.

    XLA sums batched and unbatched products in different orders, so the two
    agree to rounding, not bit for bit. Window adaptation amplifies rounding
    chaotically (dual averaging reacts to every acceptance rate), so this uses
    the fixed-step float64 run, where rounding stays near 1e-13 for all 900
    transitions; a chain given another chain's key or start would differ at
    once by O(1).
    """
    keys = seed_keys()
    for chain in (0, 7):
        alone = run_chains(hmc64, keys[chain:chain + 1], MODEL.init, num_draws=600, chunk_size=300,
                           chain_method="vectorized", diagnose=False)
        np.testing.assert_allclose(alone.traces["log_density"][0], hmc64_run.traces["log_density"][chain], rtol=1e-10)
        np.testing.assert_allclose(alone.samples["w"][0], hmc64_run.samples["w"][chain], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(alone.infos["is_divergent"][0], hmc64_run.infos["is_divergent"][chain])
    other = hmc64_run.samples["w"]
    assert np.abs(other[0] - other[1]).max() > 0.1  # distinct chains really differ


@pytest.fixture(scope="module")
def diverging():
    """Fixed ε = 0.5, far above the leapfrog stability limit 2/√λ_max ≈ 0.07 of this posterior."""
    mcmc = sampler(algorithm="hmc", step_size=0.5, num_integration_steps=10, num_warmup=20)
    mode = {"w": jnp.asarray(EXACT_MEAN[:2], jnp.float32), "b": jnp.asarray(EXACT_MEAN[2], jnp.float32)}
    start = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (2, *leaf.shape)), mode)
    runs = []
    with pytest.warns(diag.ConvergenceWarning, match="divergent"):
        for seed in (0, 1):
            runs.append(run_chains(mcmc, jax.random.split(jax.random.key(seed), 2), start, num_draws=25,
                                   chunk_size=10, diagnose=False))
    return start, runs


def test_divergences_are_counted_and_rejected(diverging):
    start, runs = diverging
    for run in runs:
        assert run.diagnostics["divergences"] == 2 * 25 == int(run.infos["is_divergent"].sum())
        assert run.diagnostics["warmup_divergences"] == 2 * 20
        assert run.diagnostics["divergences_per_chain"] == [25, 25]
        assert run.diagnostics["acceptance"] < 1e-6
        # Every divergent proposal was rejected: no draw moved from the start.
        np.testing.assert_array_equal(run.samples["w"], np.broadcast_to(np.asarray(start["w"])[:, None], (2, 25, 2)))
        assert any("divergent" in warning for warning in run.diagnostics["warnings"])


@pytest.mark.filterwarnings("ignore::bdljax.evaluate.diagnostics.ConvergenceWarning")  # 20-draw chains
def test_runner_compiles_the_chunk_once_per_configuration():
    """Through the runner: warm-up and draws share one chunk function (thinning 1), so two runs of a plan in
    chunks of one length trace the transition once; a run that also needs a shorter last chunk, once more."""
    problem = recipes.Problem(MODEL, likelihoods.gaussian(NOISE), priors.gaussian(PRIOR_SCALE), X, Y)
    plan = recipes.plan("hmc", problem, num_chains=2, num_warmup=20, num_samples=20, chunk_size=10, step_size=0.01)
    traces, update = [], plan.transform.update

    def counting(state, batch, key):
        traces.append(1)
        return update(state, batch, key)

    plan = plan._replace(transform=plan.transform._replace(update=counting))
    eval_data = (X[:10], Y[:10])
    for seed in (0, 1):
        recipes.execute(plan, jax.random.key(seed), RunOptions(eval_data=eval_data, eval_every=1))
    assert len(traces) == 1
    recipes.execute(plan._replace(schedule=plan.schedule._replace(num_draws=25)), jax.random.key(2),
                    RunOptions(eval_data=eval_data, eval_every=1))  # chunks 10, 10, 5
    assert len(traces) == 2


def test_settings_fail_early():
    with pytest.raises(ValueError, match="num_warmup"):
        sampler(step_size=None, num_warmup=0)
    with pytest.raises(ValueError, match="trajectory_length"):
        sampler(algorithm="nuts", trajectory_length=1.0)
    with pytest.raises(ValueError, match="num_data"):
        sampler(data=(X[:50], Y[:50]))
    mcmc = sampler(step_size=0.01, num_warmup=0)
    with pytest.raises(ValueError, match="leading axis of 3 chains"):
        run_chains(mcmc, jax.random.split(jax.random.key(0), 3), MODEL.init(jax.random.key(0)), num_draws=10)


def test_recipe_streams_the_predictive_it_returns():
    """recipes.run("hmc") from MAP initialisations: stacked samples, diagnostics, and a running
    predictive equal to the predictive of the returned samples."""
    problem = recipes.Problem(MODEL, likelihoods.gaussian(NOISE), priors.gaussian(PRIOR_SCALE), X, Y)
    eval_data = (X[:30], Y[:30])
    fitted = recipes.run("hmc", problem, jax.random.key(0), num_chains=2, num_warmup=20, num_samples=20, chunk_size=10,
                         init="map", map_epochs=3, options=RunOptions(eval_data=eval_data, eval_every=1))
    assert {leaf.shape[0] for leaf in jax.tree.leaves(fitted.samples)} == {40}
    for key in ("acceptance", "divergences", "step_size", "num_integration_steps", "rhat_log_density",
                "ess_log_density", "rhat_predictions", "rhat_max", "ess_min", "warnings"):
        assert key in fitted.diagnostics
    assert sum(record["split"] == "eval" for record in fitted.history) == 2
    outputs = predictive.predictive_outputs(fitted.apply, fitted.samples, jnp.asarray(eval_data[0]))
    streamed = predictive.running_log_predictive_density(fitted.state.running)
    np.testing.assert_allclose(streamed, predictive.log_predictive_density(problem.likelihood, outputs, eval_data[1]),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="init must be"):
        recipes.run("nuts", problem, jax.random.key(0), init="prior")


def _load_experiment(name):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    if name in sys.modules:  # shared with other test files (uci.py's dataclasses need it registered)
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Tiny settings: the end-to-end path (registry, CLI --set, predictive, figure), not the quality of the bands.
TINY_1D = {
    "hmc": ["hmc.num_chains=2", "hmc.num_warmup=10", "hmc.num_samples=10", "hmc.chunk_size=10"],
    "nuts": ["nuts.num_chains=2", "nuts.num_warmup=10", "nuts.num_samples=10", "nuts.chunk_size=10",
             "nuts.max_num_doublings=4"],
    "sgld": ["sgld.num_chains=2", "sgld.num_samples=5"],
    "sghmc": ["sghmc.num_chains=2", "sghmc.num_samples=5"],
}


# Slow: ~40 s of CPU per pair (compiling the 1-50-50-1 samplers dominates). The recipes themselves run in
# the default suite (test_recipe_streams_the_predictive_it_returns, tests/test_sgmcmc.py); this checks the script.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::bdljax.evaluate.diagnostics.ConvergenceWarning")  # 10-draw chains do not mix
@pytest.mark.parametrize("names", [("hmc", "sgld"), ("nuts", "sghmc")])
def test_regression_1d_script_runs_every_mcmc_method(names, tmp_path):
    """``experiments/regression_1d.py --method hmc,sgld`` and ``nuts,sghmc``: one figure panel (band) per
    method, finite scores and the MCMC diagnostics logged with them."""
    module = _load_experiment("regression_1d")
    argv = ["--method", ",".join(names), "--epochs", "20", "--out", str(tmp_path)]
    for name in names:
        argv += [item for setting in TINY_1D[name] for item in ("--set", setting)]
    summary = module.main(argv)
    for name in ("config.json", "metrics.jsonl", "summary.json", "predictive.png"):
        assert (tmp_path / name).exists(), name
    for name in names:
        assert np.isfinite(summary[name]["test_ll"]) and summary[name]["rmse"] > 0
        assert summary[name]["num_samples"] == (20 if name in ("hmc", "nuts") else 10)
        assert "rhat_max" in summary[name] and "ess_min" in summary[name]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::bdljax.evaluate.diagnostics.ConvergenceWarning")
def test_uci_script_runs_nuts_from_map_initialisations(tmp_path, shared_data_dir):
    """``experiments/uci.py --method nuts`` on one concrete split: its MAP initialisations train batched
    over splits (the recipe builds under a trace), the sampler runs, and the summary carries R̂ and ESS."""
    module = _load_experiment("uci")
    summaries = module.main([
        "--dataset", "concrete", "--method", "nuts", "--splits", "0", "--data-dir", str(shared_data_dir),
        "--out", str(tmp_path), "--set", "nuts.num_chains=2", "--set", "nuts.num_warmup=10",
        "--set", "nuts.num_samples=10", "--set", "nuts.chunk_size=10", "--set", "nuts.max_num_doublings=3",
        "--set", "nuts.map_epochs=2"])
    summary = summaries[0]
    assert summary["split_mode"] == "recipe"  # chains run plan by plan
    assert np.isfinite(summary["test_ll"]["mean"]) and summary["rmse"]["mean"] > 0
    for key in ("rhat_max", "ess_min", "divergences", "acceptance"):
        assert key in summary["per_split"], key
