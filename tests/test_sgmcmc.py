"""SGLD and SGHMC (bdljax.methods.sgmcmc) against the exact posterior of a conjugate Bayesian linear regression.

Same target as tests/test_hmc.py (two inputs correlated at 0.8, posterior
correlation ≈ −0.8), sampled on minibatches of 50 of the 100 points with the
shared N/|B| scaling. SG-MCMC has no Metropolis correction, so its draws are
biased by the discretisation and the minibatch noise. With SGLD's ε = 7·10⁻⁵
(SGHMC: ε = 7·10⁻³, α = 100, the same effective Langevin step ε/α), the
stiffest posterior direction has ελ_max ≈ 0.05 and the predicted variance
inflation (ελ_max/2 from the Euler step, ε·Var[∇Û]/2 from the minibatches)
is about 2.5 % + 2.5 %. The stated tolerance is therefore looser than for
HMC: every posterior mean and covariance entry within 4 Monte Carlo standard
errors (ESS measured on the draws) **plus 10 % of the exact posterior scale**
(sd_i for means, sd_i·sd_j for covariances), for each of three seeds (96
chains each, started from the model's random initialisation). The ESS is
required to exceed 250, which makes 4 MCSE of a variance (4·√2/√250 ≈ 0.36
of it) plus 10 % smaller than the factor-2 change a missing or doubled
N/|B| factor, or a wrong temperature, would cause; the gradient itself is
checked against a hand-written one below.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conjugate_regression
from bdljax.evaluate import diagnostics as diag
from bdljax import recipes
from bdljax.methods import ensemble, sgmcmc, wrappers
from bdljax.core import likelihoods, posterior, priors

NUM_DATA, BATCH, NOISE, PRIOR_SCALE = 100, 50, 0.5, 1.0
SEEDS, CHAINS_PER_SEED = (0, 1, 2), 96
NUM_STEPS, NUM_BURNIN, THINNING = 4000, 1500, 25
NUM_KEPT = (NUM_STEPS - NUM_BURNIN) // THINNING  # 100 draws per chain
Z, BIAS = 4.0, 0.10


X, Y, MODEL, EXACT_MEAN, EXACT_COV = conjugate_regression.linear_problem(0, NUM_DATA, NOISE, PRIOR_SCALE)


def log_posterior(temperature=1.0):
    return posterior.log_posterior(MODEL.apply, likelihoods.gaussian(NOISE), priors.gaussian(PRIOR_SCALE), NUM_DATA,
                                   temperature)


def chain(sampler, schedule, num_burnin, thinning, num_kept, **kwargs):
    """One chain as the recipes compose it: the sampler, non-finite steps undone, draws kept after burn-in."""
    return wrappers.keep_draws(wrappers.skip_nonfinite(sampler(log_posterior(kwargs.pop("temperature", 1.0)),
                                                               schedule, **kwargs)),
                               num_kept, thinning=thinning, num_burnin=num_burnin, exploring=schedule.exploring)


def position(state):
    """The sampler's position inside the wrapped state."""
    return state.inner.inner.position


def run_chains(member, key):
    """All seeds' chains as one vmapped ensemble, each chain on its own minibatches (drawn with replacement)."""
    num_chains = len(SEEDS) * CHAINS_PER_SEED
    method = ensemble.build(member, num_chains)
    x, y = jnp.asarray(X), jnp.asarray(Y)

    @jax.jit
    def run(key):
        init_key, run_key = jax.random.split(key)
        state = method.init(init_key, MODEL.init)

        def step(state, key):
            batch_key, step_key = jax.random.split(key)
            index = jax.random.randint(batch_key, (num_chains, BATCH), 0, NUM_DATA)
            return method.update(state, (x[index], y[index]), step_key)[0], None

        state, _ = jax.lax.scan(step, state, jax.random.split(run_key, NUM_STEPS))
        return state, method.sample(state, init_key, num_chains * NUM_KEPT)

    state, samples = run(key)
    draws = np.concatenate([np.asarray(samples["w"], np.float64), np.asarray(samples["b"], np.float64)[:, None]], -1)
    return state, draws.reshape(num_chains, -1, 3)



@pytest.mark.parametrize("name", ["sgld", "sghmc"])
def test_matches_exact_posterior_within_stated_tolerance(name):
    schedule = sgmcmc.constant(7e-5 if name == "sgld" else 7e-3)
    settings = dict(num_burnin=NUM_BURNIN, thinning=THINNING, num_kept=NUM_KEPT)
    member = (chain(sgmcmc.sgld, schedule, **settings) if name == "sgld"
              else chain(sgmcmc.sghmc, schedule, friction=100.0, **settings))
    state, draws = run_chains(member, jax.random.key(11))
    assert np.all(np.asarray(state.num_stored) == NUM_KEPT) and wrappers.num_nonfinite(state) == 0
    scale = np.sqrt(np.diag(EXACT_COV))
    rows, cols = np.triu_indices(3)
    for group in range(len(SEEDS)):
        chains = draws[group * CHAINS_PER_SEED:(group + 1) * CHAINS_PER_SEED]
        centred = chains - EXACT_MEAN
        functions = np.concatenate([centred, centred[..., rows] * centred[..., cols]], axis=-1)
        targets = np.concatenate([np.zeros(3), EXACT_COV[rows, cols]])
        allowed_bias = BIAS * np.concatenate([scale, scale[rows] * scale[cols]])
        ess = diag.effective_sample_size(functions)
        assert ess.min() > 250, f"too few effective draws to catch a factor-2 variance error: ESS {ess.round()}"
        error = functions.reshape(-1, 9).mean(0) - targets
        tolerance = Z * diag.monte_carlo_standard_error(functions) + allowed_bias
        assert np.all(np.abs(error) <= tolerance), f"error / tolerance: {(error / tolerance).round(2)}"


@pytest.fixture(scope="module")
def tempered_sgld():
    """SGLD at T = 2 whose step 0 explores (no noise); from step 2 on every 2nd step is kept in a buffer of 3."""
    schedule = sgmcmc.cyclical(1e-3, num_steps=100, num_cycles=1, exploration_fraction=0.01)
    method = chain(sgmcmc.sgld, schedule, num_burnin=2, thinning=2, num_kept=3, temperature=2.0)
    return method, jax.jit(method.init), jax.jit(method.update)


BATCH_10 = (jnp.asarray(X[:10]), jnp.asarray(Y[:10]))


def test_gradient_is_the_log_posteriors_scaled_once_and_tempered(tempered_sgld):
    """Without noise one SGLD step is θ + ε ∇Û, Û = (1/T)[log p(θ) + (N/|B|) Σ_B log p(y|θ)]."""
    method, init, update = tempered_sgld
    temperature, eps = 2.0, 1e-3
    params = {"w": jnp.array([0.3, -0.2]), "b": jnp.array(0.1)}
    new_state, info = update(init(jax.random.key(0), params), BATCH_10, jax.random.key(1))

    def by_hand(theta):  # written out, not through LogPosterior
        w, b = theta[:2], theta[2]
        residual = BATCH_10[1] - (BATCH_10[0] @ w + b)
        log_lik = jnp.sum(-0.5 * (residual / NOISE) ** 2 - jnp.log(NOISE) - 0.5 * jnp.log(2 * jnp.pi))
        log_prior = jnp.sum(-0.5 * theta**2 - 0.5 * jnp.log(2 * jnp.pi))
        return (log_prior + NUM_DATA / 10 * log_lik) / temperature

    theta = jnp.array([0.3, -0.2, 0.1])
    expected = theta + eps * jax.grad(by_hand)(theta)  # ε_0 at t = 0
    np.testing.assert_allclose(np.r_[position(new_state)["w"], position(new_state)["b"]], expected, rtol=1e-5)
    np.testing.assert_allclose(info.log_posterior, by_hand(theta), rtol=1e-5)
    assert int(new_state.num_stored) == 0  # exploration keeps nothing


def test_nonfinite_step_is_skipped_and_counted(tempered_sgld):
    method, init, update = tempered_sgld
    state = init(jax.random.key(0), {"w": jnp.array([0.3, -0.2]), "b": jnp.array(0.1)})
    bad_batch = (BATCH_10[0], BATCH_10[1].at[3].set(jnp.nan))
    new_state, _ = update(state, bad_batch, jax.random.key(1))
    assert int(new_state.inner.num_nonfinite) == 1 and int(new_state.step) == 1
    for new, old in zip(jax.tree.leaves(position(new_state)), jax.tree.leaves(position(state))):
        np.testing.assert_array_equal(new, old)


def test_ring_buffer_returns_the_latest_kept_draws_oldest_first(tempered_sgld):
    method, init, update = tempered_sgld
    state = init(jax.random.key(0), {"w": jnp.array([0.3, -0.2]), "b": jnp.array(0.1)})
    positions, kept = [], []
    for step in range(12):
        stored = int(state.num_stored)
        state, info = update(state, BATCH_10, jax.random.key(step))
        positions.append(np.asarray(position(state)["b"]))
        kept.append(int(state.num_stored) > stored)
    # Eligible from step 2 on; every 2nd eligible step kept: steps 3, 5, 7, 9, 11.
    assert [i for i, k in enumerate(kept) if k] == [3, 5, 7, 9, 11]
    np.testing.assert_array_equal(method.sample(state, None, 3)["b"], [positions[7], positions[9], positions[11]])
    with pytest.raises(ValueError, match="num_kept"):
        method.sample(state, None, 4)


def test_schedules():
    cycle = sgmcmc.cyclical(1.0, num_steps=100, num_cycles=4, exploration_fraction=0.2)
    steps = jnp.arange(100)
    eps = np.asarray(jax.vmap(cycle.step_size)(steps))
    np.testing.assert_allclose(eps[[0, 25, 50, 75]], 1.0)  # every cycle restarts at ε_0
    np.testing.assert_allclose(eps[[12, 37]], (np.cos(np.pi * 12 / 25) + 1) / 2, rtol=1e-6)
    assert np.all(np.diff(eps[:25]) < 0)
    exploring = np.asarray(jax.vmap(cycle.exploring)(steps))
    assert exploring[:5].all() and not exploring[5:25].any() and exploring[25:30].all()
    assert sgmcmc.eligible_steps(cycle, 100, num_burnin=0) == 80
    # Counted in NumPy, so a recipe can be built while traced (batched runs trace their plans).
    assert jax.eval_shape(lambda: jnp.zeros(sgmcmc.eligible_steps(cycle, 100, num_burnin=10))).shape == (75,)
    assert sgmcmc.eligible_steps(sgmcmc.constant(1.0), 100, num_burnin=30) == 70
    decay = sgmcmc.polynomial(1.0, decay_steps=10.0, gamma=0.55)
    np.testing.assert_allclose(decay.step_size(jnp.asarray(30.0)), 4.0 ** -0.55, rtol=1e-6)
    with pytest.raises(ValueError, match="Robbins"):
        sgmcmc.polynomial(1.0, 10.0, gamma=0.4)
    with pytest.raises(ValueError, match="unknown schedule"):
        sgmcmc.make_schedule("linear", 1e-3, 100)


def counting_updates(plan):
    """The plan with its transform's update counting its traces."""
    traces, update = [], plan.transform.update

    def counting(state, batch, key):
        traces.append(1)
        return update(state, batch, key)

    return plan._replace(transform=plan.transform._replace(update=counting)), traces


def test_recipes_through_the_registry_compile_once():
    problem = recipes.Problem(MODEL, likelihoods.gaussian(NOISE), priors.gaussian(PRIOR_SCALE), X, Y)
    plan, traces = counting_updates(recipes.plan(
        "sghmc", problem, num_chains=2, num_epochs=100, batch_size=20, step_size=5e-3, friction=20.0,
        schedule="cyclical", num_cycles=2, exploration_fraction=0.25, num_samples=10))
    fitted = recipes.execute(plan, jax.random.key(0))
    num_traces = len(traces)  # the runner's compiled calls of several epochs, and of one for the leftover epochs
    assert {leaf.shape[0] for leaf in jax.tree.leaves(fitted.samples)} == {20}
    assert len([record for record in fitted.history if record["split"] == "train"]) == 100
    for key in ("rhat_log_density", "ess_log_density", "rhat_param_norms", "rhat_predictions", "nonfinite_steps",
                "thinning", "warnings"):
        assert key in fitted.diagnostics
    assert fitted.diagnostics["nonfinite_steps"] == fitted.diagnostics["exploded_draws"] == 0
    # The draws lie in the posterior's bulk (it is ~0.1 wide around (1, -0.5, 0.3)).
    assert np.abs(np.asarray(fitted.samples["w"]).mean(0) - EXACT_MEAN[:2]).max() < 0.5
    # A second execution of the plan, as for another split or seed, traces (so compiles) nothing again.
    again = recipes.execute(plan, jax.random.key(1))
    assert len(traces) == num_traces <= 2 and not np.array_equal(again.samples["w"], fitted.samples["w"])
    with pytest.raises(ValueError, match="only .* draws can be kept"):
        recipes.run("sgld", problem, jax.random.key(0), num_epochs=2, batch_size=50, num_samples=50)
    with pytest.raises(ValueError, match="does not take"):
        recipes.run("sgld", problem, jax.random.key(0), learning_rate=1e-3)


def test_exploded_draws_are_counted_and_warned():
    # Finite blow-ups (a step size too large for a sharp mode) escape the non-finite step counter; the draws'
    # parameter norms expose them. Healthy draws of one posterior differ by a few per cent.
    rng = np.random.default_rng(0)
    norms = 3.0 + 0.05 * rng.standard_normal((2, 20, 4))  # (chains, draws, leaves)
    log_density = -1000.0 + rng.standard_normal((2, 20))
    assert diag.exploded_draws({"param_norms": norms, "log_density": log_density}) == 0
    exploded = norms.copy()
    exploded[1, 10:] *= 900.0  # half of one chain, as cSGLD's second cycle on MNIST
    assert diag.exploded_draws({"param_norms": exploded, "log_density": log_density}) == 10
    nonfinite = log_density.copy()
    nonfinite[0, 3] = -np.inf
    assert diag.exploded_draws({"param_norms": exploded, "log_density": nonfinite}) == 11
    with pytest.warns(diag.ConvergenceWarning, match="11 kept draw"):
        problems = diag.check({"exploded_draws": 11}, num_chains=2)
    assert len(problems) == 1
    assert diag.check({"exploded_draws": 0}, num_chains=2, warn=False) == []


@pytest.mark.parametrize("curvature", [5e4, 1.1e5])
def test_sghmc_stays_exact_on_stiff_directions(curvature):
    """SGHMC at ε = 10⁻³, α = 100 on N(0, 1/λ). BlackJAX's forward-Euler order inflated the variance ×2.0 at
    λ = 5·10⁴ (ελ = α/2) and diverged at 1.1·10⁵ (ελ > α) with every value finite; the SGD-momentum order's
    exact stationary variance is within 3 % of 1/λ at both. 256 chains × 40 draws 50 steps apart (the
    position relaxes in ~α/(ελ) ≈ 2 steps, so the draws are independent): the variance ratio's standard
    error is √(2/10240) ≈ 1.4 %, and 0.1 is 7 of them above the discretisation's 3 %."""
    scale = 1.0 / np.sqrt(curvature)
    model_apply = lambda params, x, rng=None, train=False: jnp.zeros((x.shape[0], 1)) + 0.0 * params["theta"]  # noqa: E731
    log_post = posterior.log_posterior(model_apply, likelihoods.gaussian(1.0), priors.gaussian(scale), 1)
    method = wrappers.keep_draws(sgmcmc.sghmc(log_post, sgmcmc.constant(1e-3), friction=100.0), 40, thinning=50,
                                 num_burnin=1000)
    batch = (jnp.zeros((1, 1)), jnp.zeros(1))
    num_chains = 256

    @jax.jit
    def run(key):
        init_key, run_key = jax.random.split(key)
        state = jax.vmap(lambda k: method.init(k, {"theta": jnp.zeros(())}))(jax.random.split(init_key, num_chains))

        def step(state, key):
            keys = jax.random.split(key, num_chains)
            return jax.vmap(lambda s, k: method.update(s, batch, k)[0])(state, keys), None

        state, _ = jax.lax.scan(step, state, jax.random.split(run_key, 3000))
        return state

    state = run(jax.random.key(0))
    draws = np.asarray(state.draws["theta"], np.float64)
    assert draws.shape == (num_chains, 40) and np.all(np.isfinite(draws))
    assert abs(np.mean(draws**2) * curvature - 1.0) < 0.1, np.mean(draws**2) * curvature


def test_a_skipped_step_still_fills_its_buffer_slot_and_is_warned():
    """A non-finite step leaves the chain where it was; that state is kept on schedule (it once left the slot at
    the initialisation, returned as a draw), and the diagnostics check names the skipped steps."""
    method = chain(sgmcmc.sgld, sgmcmc.constant(1e-4), num_burnin=0, thinning=1, num_kept=3)
    state = method.init(jax.random.key(0), {"w": jnp.array([0.3, -0.2]), "b": jnp.array(0.1)})
    bad_batch = (BATCH_10[0], BATCH_10[1].at[3].set(jnp.nan))
    update, positions = jax.jit(method.update), []
    for index, batch in enumerate((BATCH_10, bad_batch, BATCH_10)):
        state, _ = update(state, batch, jax.random.key(index))
        positions.append(np.asarray(position(state)["b"]))
    assert int(state.num_stored) == 3 and wrappers.num_nonfinite(state) == 1
    np.testing.assert_array_equal(np.asarray(method.sample(state, jax.random.key(9), 3)["b"]), positions)
    assert positions[1] == positions[0]  # the skipped step stood still
    problems = diag.check({"nonfinite_steps": 1}, 1, warn=False)
    assert any("non-finite" in problem for problem in problems)
