"""The bandit benchmark (experiments.bandits): environments, exact Bayesian linear regression, agents, the compiled run.

References: hand-worked wheel and mushroom cases; NumPy closed-form Bayesian
linear regression and Bayes' rule checked with scipy.stats densities
(multivariate normal, inverse gamma, multivariate t evidence); Monte Carlo
moments with tolerances from their standard errors, over several fixed seeds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from bdljax.core import priors
from bdljax.core.transform import Transform
from bdljax.data.mushroom import load_mushroom
from bdljax.methods import concrete_dropout, map_estimate
from bdljax.nn import dropout

from experiments.bandits import agents, environments, linear, log_posterior, networks, registry, simulation
from experiments.bandits.settings import AgentSettings

SEEDS = [0, 1, 2]


# ---------------------------------------------------------------------------
# The wheel bandit
# ---------------------------------------------------------------------------


def test_wheel_expected_rewards_and_optimal_arm_hand_worked():
    contexts = jnp.array([
        [0.1, 0.2],     # ‖x‖ = 0.22: inside δ = 0.5 → safe arm 4
        [0.6, 0.6],     # ‖x‖ = 0.85, quadrant (+, +) → arm 0
        [0.6, -0.6],    # (+, −) → arm 1
        [-0.6, 0.6],    # (−, +) → arm 2
        [-0.6, -0.6],   # (−, −) → arm 3
        [0.0, 0.99],    # x₀ = 0 counts as "not right": (−, +) → arm 2
        [0.45, 0.0],    # ‖x‖ = 0.45 < 0.5: inside
        [0.0, -0.51],   # x₀ = 0, x₁ < 0 → arm 3, outside
    ])
    expected = np.asarray(jax.jit(environments.wheel_expected_rewards)(contexts, 0.5))
    safe = [1.0, 1.0, 1.0, 1.0, 1.2]
    table = np.array([safe, [50, 1, 1, 1, 1.2], [1, 50, 1, 1, 1.2], [1, 1, 50, 1, 1.2], [1, 1, 1, 50, 1.2],
                      [1, 1, 50, 1, 1.2], safe, [1, 1, 1, 50, 1.2]])
    np.testing.assert_allclose(expected, table, rtol=1e-6)
    optimal_arm = jax.jit(environments.wheel_optimal_arm)
    np.testing.assert_array_equal(optimal_arm(contexts, 0.5), [4, 0, 1, 2, 3, 2, 4, 3])
    # With δ = 0.95 only the point at radius 0.99 lies outside.
    np.testing.assert_array_equal(optimal_arm(contexts, 0.95), [4, 4, 4, 4, 4, 2, 4, 4])
    assert np.asarray(jax.jit(environments.wheel_expected_rewards)(contexts, 0.95))[1].tolist() == pytest.approx(safe)


@functools.partial(jax.jit, static_argnums=1)
def wheel_draws(key, num):
    data = environments.wheel_bandit(0.7).sample({"delta": jnp.float32(0.7)}, key, num)
    return (environments.wheel_contexts(key, num), data, environments.wheel_quadrant_arm(data.contexts),
            environments.wheel_expected_rewards(data.contexts, 0.7))


@pytest.mark.parametrize("seed", SEEDS)
def test_wheel_contexts_are_uniform_on_the_disc_and_rewards_have_the_stated_noise(seed):
    num = 20000
    contexts, data, quadrant, expected = wheel_draws(jax.random.key(seed), num)
    contexts = np.asarray(contexts)
    radius = np.linalg.norm(contexts, axis=1)
    assert radius.max() <= 1.0 + 1e-6
    for delta in (0.5, 0.9, 0.95):  # P(‖x‖ > δ) = 1 − δ² under the uniform law on the disc
        p = 1 - delta**2
        assert abs(np.mean(radius > delta) - p) < 4 * np.sqrt(p * (1 - p) / num)
    quadrants = np.bincount(np.asarray(quadrant), minlength=4) / num
    assert np.all(np.abs(quadrants - 0.25) < 4 * np.sqrt(0.25 * 0.75 / num))

    noise = np.asarray(data.rewards - data.expected_rewards).ravel()
    # Mean within 4 standard errors of 0; the sample variance of 5N normal draws within 4 of its standard errors.
    assert abs(noise.mean()) < 4 * 0.01 / np.sqrt(noise.size)
    assert abs(noise.var() / 0.01**2 - 1) < 4 * np.sqrt(2 / noise.size)
    np.testing.assert_allclose(data.expected_rewards, expected)


def test_wheel_bandit_rejects_bad_delta():
    with pytest.raises(ValueError, match="delta must lie in"):
        environments.wheel_bandit(1.0)


# ---------------------------------------------------------------------------
# The mushroom bandit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_mushroom_rewards(seed):
    num = 20000
    edible = jnp.arange(num) % 3 == 0
    rewards = np.asarray(jax.jit(environments.mushroom_rewards)(jax.random.key(seed), edible))
    edible = np.asarray(edible)
    assert np.all(rewards[:, 0] == 0.0)  # leaving it pays nothing
    assert np.all(rewards[edible, 1] == 5.0)  # an edible mushroom pays +5
    poison = rewards[~edible, 1]
    assert set(np.unique(poison)) == {5.0, -35.0}  # a poisonous one +5 or −35 ...
    bad = np.mean(poison == -35.0)  # ... with probability ½ each
    assert abs(bad - 0.5) < 4 * np.sqrt(0.25 / poison.size)
    np.testing.assert_array_equal(jax.jit(environments.mushroom_expected_rewards)(jnp.array([True, False])),
                                  [[0, 5], [0, -15]])


def test_mushroom_bandit_samples_rows_of_its_table():
    contexts = np.eye(6, dtype=np.float32)  # row i identifies mushroom i
    edible = np.array([True, False, True, False, False, True])
    bandit = environments.mushroom_bandit(contexts, edible)
    assert (bandit.num_arms, bandit.context_dim) == (2, 6)
    data = jax.jit(bandit.sample, static_argnums=2)(bandit.tables, jax.random.key(0), 500)
    row = np.argmax(np.asarray(data.contexts), axis=1)
    np.testing.assert_array_equal(np.asarray(data.expected_rewards)[:, 1], np.where(edible[row], 5.0, -15.0))
    assert len(np.unique(row)) == 6
    with pytest.raises(ValueError, match="bool"):
        environments.mushroom_bandit(contexts, edible.astype(int))


def test_mushroom_bandit_on_the_real_table(shared_data_dir):
    dataset = load_mushroom(shared_data_dir)
    bandit = environments.mushroom_bandit(dataset.contexts, dataset.edible)
    assert (bandit.num_arms, bandit.context_dim) == (2, 117)
    sample = jax.jit(bandit.sample, static_argnums=2)(bandit.tables, jax.random.key(0), 4000)
    # About 51.8% of the 8124 mushrooms are edible: optimal is eating them, leaving the rest.
    optimal_eat = np.mean(np.asarray(sample.expected_rewards)[:, 1] > 0)
    assert abs(optimal_eat - dataset.edible.mean()) < 4 * np.sqrt(0.25 / 4000)


# ---------------------------------------------------------------------------
# Bayesian linear regression (Normal–Inverse-Gamma)
# ---------------------------------------------------------------------------


def regression_data(seed, num=40, dim=3, num_arms=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, dim)).astype(np.float32)
    arms = rng.integers(0, num_arms, num).astype(np.int32)
    beta = rng.normal(size=(num_arms, dim))
    r = (np.einsum("nd,nd->n", x, beta[arms]) + 0.3 * rng.normal(size=num)).astype(np.float32)
    return x, arms, r


def numpy_nig_posterior(x, r, prior):
    """Closed-form NIG posterior in float64 (Riquelme et al. eqs. 1–2, prior mean 0)."""
    x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
    precision = x.T @ x + prior.precision * np.eye(x.shape[1])
    mean = np.linalg.solve(precision, x.T @ r)
    a = prior.a0 + len(r) / 2
    b = prior.b0 + 0.5 * (r @ r - mean @ precision @ mean)
    return mean, precision, a, b


@pytest.mark.parametrize("seed", SEEDS)
def test_nig_posterior_matches_closed_form_and_bayes_rule(seed):
    prior = linear.NIGPrior(a0=3.0, b0=2.0, precision=0.5)
    x, arms, r = regression_data(seed)
    num_arms = 2
    mask = np.ones(len(r), np.float32)
    mask[-5:] = 0  # the last rows are "not observed yet"
    batch = linear.linear_stats_from_data(jnp.asarray(x), jnp.asarray(arms), jnp.asarray(r), jnp.asarray(mask),
                                          num_arms)

    def add(stats, row):
        return linear.linear_stats_add(stats, row[1], row[0], row[2]), None

    sequential, _ = jax.lax.scan(add, linear.linear_stats_init(num_arms, 3),
                                 (jnp.asarray(x[:-5]), jnp.asarray(arms[:-5]), jnp.asarray(r[:-5])))
    for got in (batch, sequential):
        post = linear.nig_posterior(got, prior)
        for arm in range(num_arms):
            rows = (arms == arm) & (mask > 0)
            mean, precision, a, b = numpy_nig_posterior(x[rows], r[rows], prior)
            np.testing.assert_allclose(post.mean[arm], mean, rtol=2e-4, atol=2e-5)
            chol = np.asarray(post.precision_cholesky[arm], np.float64)
            np.testing.assert_allclose(chol @ chol.T, precision, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(post.a[arm], a, rtol=1e-6)
            np.testing.assert_allclose(post.b[arm], b, rtol=2e-4)

            # Bayes' rule at arbitrary (β, σ²): log posterior = log likelihood + log prior − log evidence, with
            # the evidence of the NIG model the multivariate t St_{2a₀}(0, (b₀/a₀)(I + X Xᵀ/λ)).
            xa, ra = x[rows].astype(np.float64), r[rows].astype(np.float64)
            evidence = scipy.stats.multivariate_t(np.zeros(len(ra)), prior.b0 / prior.a0 * (np.eye(len(ra)) + xa @ xa.T / prior.precision),
                                                  df=2 * prior.a0).logpdf(ra)
            rng = np.random.default_rng(seed + 10 * arm)
            for _ in range(3):
                beta, variance = rng.normal(size=3), rng.uniform(0.2, 2.0)
                log_joint = (scipy.stats.norm(xa @ beta, np.sqrt(variance)).logpdf(ra).sum()
                             + scipy.stats.multivariate_normal(np.zeros(3), variance / prior.precision * np.eye(3)).logpdf(beta)
                             + scipy.stats.invgamma(prior.a0, scale=prior.b0).logpdf(variance))
                post_mean = np.asarray(post.mean[arm], np.float64)
                log_post = (scipy.stats.multivariate_normal(post_mean, variance * np.linalg.inv(chol @ chol.T)).logpdf(beta)
                            + scipy.stats.invgamma(float(post.a[arm]), scale=float(post.b[arm])).logpdf(variance))
                np.testing.assert_allclose(log_post, log_joint - evidence, rtol=1e-4, atol=2e-3)


@jax.jit
def many_nig_samples(keys, post):
    return jax.vmap(linear.nig_sample, in_axes=(0, None))(keys, post)


@pytest.mark.parametrize("seed", SEEDS)
def test_nig_sample_moments(seed):
    """Draws of (β, σ²): E σ² = b/(a−1); β is multivariate t with mean μ_n and covariance b/(a−1) Λ_n⁻¹."""
    prior = linear.NIGPrior()
    x, arms, r = regression_data(seed, num=30)
    stats = linear.linear_stats_from_data(jnp.asarray(x), jnp.asarray(arms), jnp.asarray(r), jnp.ones(len(r)), 2)
    post = linear.nig_posterior(stats, prior)
    num = 40000
    beta, variance = many_nig_samples(jax.random.split(jax.random.key(seed), num), post)
    beta, variance = np.asarray(beta, np.float64), np.asarray(variance, np.float64)
    for arm in range(2):
        a, b = float(post.a[arm]), float(post.b[arm])
        chol = np.asarray(post.precision_cholesky[arm], np.float64)
        covariance = b / (a - 1) * np.linalg.inv(chol @ chol.T)
        var_sd = np.sqrt(b**2 / ((a - 1) ** 2 * (a - 2)))  # sd of InvGamma(a, b)
        assert abs(variance[:, arm].mean() - b / (a - 1)) < 5 * var_sd / np.sqrt(num)
        stderr = np.sqrt(np.diag(covariance) / num)
        assert np.all(np.abs(beta[:, arm].mean(0) - np.asarray(post.mean[arm])) < 5 * stderr)
        # Sample variances of a t with 2a > 8 degrees of freedom: relative error ~ sqrt((2 + κ)/num), κ = 6/(2a − 4).
        kurtosis = 6 / (2 * a - 4)
        np.testing.assert_allclose(np.var(beta[:, arm], axis=0), np.diag(covariance), rtol=5 * np.sqrt((2 + kurtosis) / num))


def test_lints_agent_updates_match_closed_form():
    prior = linear.NIGPrior()
    agent = agents.linear_thompson_agent(3, 2, prior)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (25, 2)).astype(np.float32)
    arms = rng.integers(0, 3, 25).astype(np.int32)
    r = rng.normal(size=25).astype(np.float32)

    @jax.jit
    def observe_all(x, arms, r):
        def step(state, row):
            i, xi, ai, ri = row
            return agent.observe(state, i, xi, ai, ri, jax.random.key(0)), None

        return jax.lax.scan(step, agent.init(jax.random.key(0)), (jnp.arange(25), x, arms, r))[0]

    post = linear.nig_posterior(observe_all(x, arms, r), prior)
    features = np.concatenate([x, np.ones((25, 1), np.float32)], axis=1)  # LinTS regresses on [x, 1]
    for arm in range(3):
        mean, precision, a, b = numpy_nig_posterior(features[arms == arm], r[arms == arm], prior)
        np.testing.assert_allclose(post.mean[arm], mean, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(post.b[arm], b, rtol=2e-4)
        np.testing.assert_allclose(post.a[arm], a)


def test_neural_linear_posterior_is_closed_form_blr_on_the_last_hidden_layer():
    """After retraining, each arm's NIG posterior is the closed form on [φ(x), 1] of the observed rows only;
    a later observation is a rank-one update with the same features."""
    horizon, num_filled = 30, 22
    bandit = environments.wheel_bandit(0.5)
    settings = AgentSettings(hidden=(6, 5), train_steps=3, batch_size=8)
    agent = registry.make_agent("neural_linear", bandit, horizon, settings)
    rng = np.random.default_rng(3)
    buffer = agents.Buffer(jnp.asarray(rng.uniform(-1, 1, (horizon, 2)), jnp.float32),
                            jnp.asarray(rng.integers(0, 5, horizon), jnp.int32),
                            jnp.asarray(rng.normal(size=horizon), jnp.float32))

    @functools.partial(jax.jit, compiler_options=simulation.FAST_COMPILE_OPTIONS)
    def retrain_then_observe(buffer):
        state = agent.init(jax.random.key(0))
        state = agent.retrain(state, buffer, jnp.int32(num_filled), jax.random.key(1))
        after = agent.observe(state, num_filled, buffer.contexts[num_filled], buffer.actions[num_filled],
                              buffer.rewards[num_filled], jax.random.key(2))
        return state, after

    state, after = retrain_then_observe(buffer)
    params = jax.tree.map(np.asarray, state.method.inner.params["params"])
    h = np.asarray(buffer.contexts, np.float64)
    for layer in ("Dense_0", "Dense_1"):  # the network's last hidden layer, recomputed in NumPy
        h = np.maximum(h @ params[layer]["kernel"] + params[layer]["bias"], 0.0)
    features = np.concatenate([h, np.ones((horizon, 1))], axis=1)
    actions, rewards = np.asarray(buffer.actions), np.asarray(buffer.rewards)
    for stats, filled in ((state.stats, num_filled), (after.stats, num_filled + 1)):
        post = linear.nig_posterior(stats, settings.nig)
        for arm in range(5):
            rows = (actions == arm) & (np.arange(horizon) < filled)
            mean, precision, a, b = numpy_nig_posterior(features[rows], rewards[rows], settings.nig)
            np.testing.assert_allclose(post.mean[arm], mean, rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(post.a[arm], a)
            np.testing.assert_allclose(post.b[arm], b, rtol=1e-3)
            chol = np.asarray(post.precision_cholesky[arm], np.float64)
            np.testing.assert_allclose(chol @ chol.T, precision, rtol=1e-4, atol=1e-4)


def test_bandit_log_likelihood_counts_the_points_seen_so_far():
    """(N/|B|) Σ_B w log N(r | f_a(x), σ²) with w = n/N is (n/|B|) Σ_B log N(...): the data seen, not the capacity."""
    model = networks.bandit_model(2, 3, (4,))
    log_post = log_posterior.bandit_log_posterior(model, 2, 0.7, priors.gaussian(1.0), capacity=100)
    params = jax.jit(model.init)(jax.random.key(0))
    rng = np.random.default_rng(0)
    contexts = rng.normal(size=(8, 2)).astype(np.float32)
    arms = rng.integers(0, 3, 8)
    rewards = rng.normal(size=8).astype(np.float32)
    seen = 30
    x = jnp.concatenate([jnp.asarray(contexts), jax.nn.one_hot(arms, 3)], axis=1)
    y = jnp.stack([jnp.asarray(rewards), jnp.full(8, seen / 100)], axis=1)
    outputs = np.asarray(jax.jit(model.apply)(params, contexts))[np.arange(8), arms]
    expected = seen / 8 * scipy.stats.norm(outputs, 0.7).logpdf(rewards).sum()
    np.testing.assert_allclose(jax.jit(log_post.log_likelihood)(params, (x, y)), expected, rtol=1e-5)


# ---------------------------------------------------------------------------
# The compiled run
# ---------------------------------------------------------------------------


def schedule_agent(num_arms):
    """A deterministic agent that records when it is retrained and on how many rows (to test the schedule)."""

    def init(key):
        del key
        return jnp.zeros(4, jnp.int32)  # [retrains, Σ num_filled, observations, Σ rows the buffer holds]

    def act(state, context, key):
        del context, key
        return state[0] % num_arms

    def observe(state, index, context, action, reward, key):
        return state.at[2].add(1)

    def retrain(state, buffer, num_filled, key):
        filled = jnp.sum(jnp.arange(buffer.actions.shape[0]) < num_filled)
        return state.at[0].add(1).at[1].add(num_filled).at[3].add(filled)

    return agents.Agent("schedule", init, act, observe, retrain)


def test_schedule_retrains_every_k_steps_on_the_filled_rows():
    horizon, every = 60, 20
    bandit = environments.wheel_bandit(0.5)
    agent = schedule_agent(5)
    for simulate in (simulation.simulate, simulation.simulate_python_loop):
        trajectory = simulate(bandit, agent, jax.random.split(jax.random.key(0), 2), horizon=horizon,
                              retrain_every=every, initial_pulls=1, fast_compile=True)
        actions = np.asarray(trajectory.actions[0])
        # Round robin for the first A·initial_pulls = 5 steps, then arm = number of retrainings so far:
        # retrainings happen before steps 20 and 40 (none before step 0, none after the last step).
        expected = np.concatenate([np.arange(5), np.zeros(15), np.ones(20), 2 * np.ones(20)]).astype(int)
        np.testing.assert_array_equal(actions, expected)


def counting(agent):
    traces = {"act": 0}

    def act(state, context, key):
        traces["act"] += 1
        return agent.act(state, context, key)

    return agent._replace(act=act), traces


def test_run_compiles_once_and_matches_the_python_loop():
    horizon, every = 40, 20
    agent, traces = counting(agents.uniform_agent(5))
    keys = jax.random.split(jax.random.key(0), 3)
    run = functools.partial(simulation.simulate, agent=agent, horizon=horizon, retrain_every=every, fast_compile=True)
    first = run(environments.wheel_bandit(0.5), keys=keys)
    second = run(environments.wheel_bandit(0.9), keys=jax.random.split(jax.random.key(1), 3))  # new δ, new keys
    assert traces["act"] == 1, "the run must be traced (and compiled) once per configuration"
    assert not np.array_equal(np.asarray(first.actions), np.asarray(second.actions))
    looped = simulation.simulate_python_loop(environments.wheel_bandit(0.5), agent, keys, horizon=horizon,
                                             retrain_every=every, fast_compile=True)
    np.testing.assert_array_equal(np.asarray(looped.actions), np.asarray(first.actions))
    np.testing.assert_allclose(np.asarray(looped.regret), np.asarray(first.regret), rtol=1e-6)
    # Regret bookkeeping: non-negative, zero exactly when the arm was optimal, uniform's is positive.
    regret = np.asarray(first.regret)
    assert np.all(regret >= 0) and np.all((regret == 0) == np.asarray(first.optimal))
    assert np.all(np.asarray(first.uniform_regret) > 0)


def test_bad_configurations_fail_early():
    bandit = environments.wheel_bandit(0.5)
    agent = agents.uniform_agent(5)
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="multiple of retrain_every"):
        simulation.simulate(bandit, agent, keys, horizon=50, retrain_every=20)
    with pytest.raises(ValueError, match="typed PRNG keys"):
        simulation.simulate(bandit, agent, np.zeros((2, 2), np.uint32), horizon=40, retrain_every=20)
    with pytest.raises(ValueError, match="unknown bandit agent"):
        registry.make_agent("thompson", bandit, 40)
    with pytest.raises(ValueError, match="needs an ensemble"):
        agents.transform_agent("x", _map_method(bandit, 40), networks.bandit_model(2, 5), agents.Retraining(5, 40),
                               bootstrap_probability=0.9)


def test_settings_that_would_run_silently_wrong_are_refused():
    """Each of these once ran to the end with a meaningless regret: tables of the wrong horizon (later rows
    dropped, reads clamped), a non-positive prior scale or clipping norm, no training steps, a NaN NIG prior
    (argmax of NaN plays arm 0 forever), a fractional horizon truncated."""
    bandit = environments.wheel_bandit(0.5)
    keys = jax.random.split(jax.random.key(0), 2)
    agent = registry.make_agent("bootstrap", bandit, 40, AgentSettings(hidden=(4,), train_steps=2))
    assert agent.capacity == 40
    with pytest.raises(ValueError, match="built for horizon 40"):
        simulation.simulate(bandit, agent, keys, horizon=80, retrain_every=20)
    with pytest.raises(ValueError, match="built for horizon 40"):
        simulation.simulate_python_loop(bandit, agent, keys, horizon=80, retrain_every=20)
    with pytest.raises(ValueError, match="must be integers"):
        simulation.simulate(bandit, agents.uniform_agent(5), keys, horizon=40.9, retrain_every=20)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="prior_scale"):
            registry.make_agent("greedy", bandit, 40, AgentSettings(prior_scale=bad))
    for bad in (0.0, -5.0):
        with pytest.raises(ValueError, match="max_grad_norm"):
            registry.make_agent("greedy", bandit, 40, AgentSettings(max_grad_norm=bad))
    with pytest.raises(ValueError, match="train_steps"):
        registry.make_agent("sgld", bandit, 40, AgentSettings(train_steps=0))
    with pytest.raises(ValueError, match="batch_size"):
        registry.make_agent("mfvi", bandit, 40, AgentSettings(batch_size=0))
    for name in ("lints", "neural_linear"):
        for bad in (linear.NIGPrior(b0=float("nan")), linear.NIGPrior(a0=-1.0), linear.NIGPrior(precision=0.0)):
            with pytest.raises(ValueError, match="NIGPrior"):
                registry.make_agent(name, bandit, 40, AgentSettings(nig=bad))


def test_skipped_training_steps_are_counted_per_seed():
    """A divergent retraining is reported, not averaged into the regret unseen: Adam with η = 10³⁰ moves the
    weights to ~10³⁰ in its first step, after which every loss is infinite and every step is skipped."""
    bandit = environments.wheel_bandit(0.5)
    keys = jax.random.split(jax.random.key(0), 2)
    run = functools.partial(simulation.simulate, bandit, keys=keys, horizon=60, retrain_every=20, fast_compile=True)
    settings = AgentSettings(hidden=(4,), train_steps=10)
    healthy = run(registry.make_agent("greedy", bandit, 60, settings))
    diverged = run(registry.make_agent("greedy", bandit, 60, settings._replace(learning_rate=1e30)))
    assert np.asarray(healthy.skipped_steps).tolist() == [0, 0]
    skipped = np.asarray(diverged.skipped_steps)
    assert skipped.shape == (2,) and np.all(skipped > 0) and np.all(skipped <= 2 * 10)  # two retrainings of 10 steps
    assert np.asarray(run(agents.uniform_agent(5)).skipped_steps).tolist() == [0, 0]  # nothing to train


def _map_method(bandit, horizon):
    model = networks.bandit_model(2, 5)
    return map_estimate.build(log_posterior.bandit_log_posterior(model, 2, 1.0, priors.gaussian(1.0), horizon),
                              optax.adam(1e-3))


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.AGENTS)
def test_every_agent_runs_on_the_easy_wheel(name):
    """Every agent on the wheel with δ = 0.5 (three quarters of the disc pay 50).

    All must run and stay finite; the exact-posterior agents (LinTS, NeuralLinear) must beat uniform by far.
    Point-estimate-like agents may not: greedy, MC dropout and SGLD each missed the outer ring for a whole
    run on one of these three seeds (regret ≈ 124 = (1 − δ²)·48.8 / uniform's 29.4 per step, the cost of
    always playing the safe arm).
    """
    bandit = environments.wheel_bandit(0.5)
    horizon = 600
    agent = registry.make_agent(name, bandit, horizon, AgentSettings(hidden=(32,), train_steps=50))
    trajectory = simulation.simulate(bandit, agent, jax.random.split(jax.random.key(0), 3), horizon=horizon,
                                  retrain_every=50, fast_compile=True)
    regret = simulation.normalised_regret(trajectory)
    actions = np.asarray(trajectory.actions)
    assert np.all(np.isfinite(regret)) and actions.min() >= 0 and actions.max() < 5
    if name == "uniform":
        assert abs(regret.mean() - 100) < 10
    if name in ("lints", "neural_linear"):
        assert regret.mean() < 60, f"{name}: regret {regret} (uniform = 100)"


# ---------------------------------------------------------------------------
# Riquelme et al.'s training recipe: uniform initialisation, per-retraining learning-rate decay
# ---------------------------------------------------------------------------


def test_uniform_init_model_draws_kernels_uniformly_and_zero_biases():
    scale = 0.3
    model = networks.uniform_init_model(networks.bandit_model(2, 5, hidden=(200,)), scale)
    params = jax.jit(model.init)(jax.random.key(0))["params"]
    first, last = np.asarray(params["Dense_0"]["kernel"]), np.asarray(params["Dense_1"]["kernel"])
    assert np.all(np.abs(first) <= scale) and np.all(np.abs(last) <= scale)
    # U(−s, s) has variance s²/3: the 400 + 1000 draws' sample variance is within 4 standard errors of it.
    for kernel in (first, last):
        draws = kernel.ravel()
        fourth_moment = scale ** 4 / 5
        stderr = np.sqrt((fourth_moment - (scale ** 2 / 3) ** 2) / draws.size)
        assert abs(np.mean(draws ** 2) - scale ** 2 / 3) < 4 * stderr
    assert not np.allclose(first[:, :2], last[:2, :2])  # each leaf has its own key
    assert all(np.all(np.asarray(layer["bias"]) == 0) for layer in params.values())
    # Rebuilding with dropout (MC dropout) keeps the initialisation.
    dropped = jax.jit(model.with_dropout(0.2).init)(jax.random.key(0))["params"]
    assert np.all(np.abs(np.asarray(dropped["Dense_0"]["kernel"])) <= scale)
    with pytest.raises(ValueError, match="scale must be positive"):
        networks.uniform_init_model(networks.bandit_model(2, 5), 0.0)


def test_learning_rate_decay_restarts_at_every_retraining():
    """Adam's first step on a constant gradient moves every coordinate by −η; with a constant gradient every
    later step does too (m̂ = g, v̂ = g²), so the updates read off the schedule η₀/(1 + decay·(s mod steps))."""
    train_steps, lr, decay = 4, 0.1, 0.5
    optimizer = registry.bandit_optimizer("adam", lr, train_steps=train_steps, lr_decay=decay)
    params = jnp.zeros(3)
    state = optimizer.init(params)
    steps = []
    for _ in range(3 * train_steps):
        updates, state = optimizer.update(jnp.ones(3), state, params)
        steps.append(-float(updates[0]))
    expected = [lr / (1 + decay * (s % train_steps)) for s in range(3 * train_steps)]
    np.testing.assert_allclose(steps, expected, rtol=1e-4)
    clipped = registry.bandit_optimizer("rmsprop", lr, train_steps=train_steps, max_grad_norm=5.0)
    assert clipped.update(jnp.full(3, 1e6), clipped.init(params), params)[0].shape == (3,)
    with pytest.raises(ValueError, match="'adam' or 'rmsprop'"):
        registry.bandit_optimizer("sgd", lr, train_steps=train_steps)


def test_reward_perturbation_draws_per_member_noise_and_each_member_fits_its_own_copy():
    """Ensemble sampling's plumbing: observe() draws z_ik ~ N(0, s²) per observation and member, and a
    retraining hands member k the rewards r_i + z_ik of the rows it samples (never another member's)."""
    horizon, members, scale = 2000, 5, 0.7

    def update(state, batch, key):
        x, y = batch  # (K, B, d + A), (K, B, 2)
        return state + jnp.sum(y[..., 0], axis=-1), ()  # per-member sum of the targets it was given

    recorder = Transform(lambda key, params: jnp.zeros(members), update, lambda state, key, n: state,
                         batch_streams=members)
    retraining = agents.Retraining(5, horizon, batch_size=16, train_steps=3)
    agent = agents.transform_agent("perturbed", recorder, networks.bandit_model(2, 5), retraining,
                                   reward_perturbation=scale)
    state = agent.init(jax.random.key(0))

    def step(state, inputs):
        index, key = inputs
        return agent.observe(state, index, jnp.zeros(2), jnp.int32(0), jnp.float32(1.0), key), None

    state, _ = jax.jit(lambda s: jax.lax.scan(step, s, (jnp.arange(horizon), jax.random.split(jax.random.key(1), horizon))))(state)
    noise = np.asarray(state.perturbation)
    # Sample standard deviation of 10000 N(0, s²) draws: standard error ≈ s/√(2·10000).
    assert abs(noise.std() - scale) < 4 * scale / np.sqrt(2 * noise.size)
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 4 / np.sqrt(horizon)
    # Make each member's noise constant over rows so the recorded sums are exact: member k sees 1 + c_k.
    constants = jnp.arange(members, dtype=jnp.float32)
    state = state._replace(perturbation=jnp.broadcast_to(constants, (horizon, members)))
    buffer = agents.Buffer(jnp.zeros((horizon, 2)), jnp.zeros(horizon, jnp.int32), jnp.ones(horizon))
    sums = agent.retrain(state, buffer, jnp.int32(100), jax.random.key(2)).method
    np.testing.assert_allclose(np.asarray(sums), 3 * 16 * (1.0 + np.asarray(constants)), rtol=1e-6)
    with pytest.raises(ValueError, match="needs an ensemble"):
        agents.transform_agent("x", _map_method(environments.wheel_bandit(0.5), 40), networks.bandit_model(2, 5),
                               agents.Retraining(5, 40), reward_perturbation=1.0)


def test_point_prior_flat_applies_to_the_point_agents_only():
    """``point_prior="flat"`` makes greedy/ensembles/neural_linear/mcdropout maximum likelihood (log p(θ) = 0, as
    Riquelme et al.'s reference networks); the sampling agents keep N(0, s²/fan_in); a bad name fails."""
    model = networks.bandit_model(2, 5, (6,))
    params = jax.jit(model.init)(jax.random.key(3))
    kernel, bias = params["params"]["Dense_0"]["kernel"], params["params"]["Dense_0"]["bias"]
    out_kernel, out_bias = params["params"]["Dense_1"]["kernel"], params["params"]["Dense_1"]["bias"]
    s = 1.5
    expected = sum(scipy.stats.norm(0, scale).logpdf(np.asarray(leaf)).sum() for leaf, scale in
                   [(kernel, s / np.sqrt(2)), (bias, s), (out_kernel, s / np.sqrt(6)), (out_bias, s)])
    flat = AgentSettings(point_prior="flat", prior_scale=s)
    for name in registry.POINT_AGENTS:
        assert float(registry.agent_prior(name, flat).log_prob(params)) == 0.0
        np.testing.assert_allclose(registry.agent_prior(name, flat._replace(point_prior="gaussian")).log_prob(params),
                                   expected, rtol=1e-5)
    for name in ("mfvi", "sgld", "sghmc", "rp_ensemble"):
        np.testing.assert_allclose(registry.agent_prior(name, flat).log_prob(params), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="point_prior must be one of"):
        registry.agent_prior("greedy", flat._replace(point_prior="laplace"))


def test_sgmcmc_scale_must_be_positive():
    with pytest.raises(ValueError, match="sgmcmc_scale must be positive"):
        registry.make_agent("sghmc", environments.wheel_bandit(0.5), 40, AgentSettings(sgmcmc_scale=0.0))


@pytest.mark.slow
def test_sgmcmc_scale_is_the_same_as_scaling_sigma_and_the_prior():
    """sgmcmc_scale c samples with σ·c and prior scale s·c (the posterior at temperature c²): the same run, key for
    key, as setting noise_scale and prior_scale to c·σ and c·s (slow: three compilations, ≈ 2 min under load)."""
    bandit = environments.wheel_bandit(0.5)
    keys = jax.random.split(jax.random.key(5), 2)
    base = AgentSettings(hidden=(6,), batch_size=8, train_steps=3, sgld_step_size=1e-2)
    scaled = registry.make_agent("sgld", bandit, 40, base._replace(sgmcmc_scale=3.0))
    explicit = registry.make_agent("sgld", bandit, 40, base._replace(noise_scale=3.0, prior_scale=3.0))
    plain = registry.make_agent("sgld", bandit, 40, base)
    run = functools.partial(simulation.simulate, bandit, keys=keys, horizon=40, retrain_every=20, fast_compile=True)
    a, b, c = run(scaled), run(explicit), run(plain)
    np.testing.assert_array_equal(np.asarray(a.actions), np.asarray(b.actions))
    assert not np.array_equal(np.asarray(a.actions), np.asarray(c.actions))


# ---------------------------------------------------------------------------
# Learned reward noise (session 4)
# ---------------------------------------------------------------------------


def test_learned_noise_log_likelihood_is_the_gaussian_density_at_sigma_e_rho():
    """With learned_noise the likelihood is (n/|B|) Σ_B log N(r | f_a(x), (c·e^ρ)²), against scipy, for two ρ and c."""
    model = networks.learned_noise_model(networks.bandit_model(2, 3, (4,)), initial_scale=2.5)
    params = jax.jit(model.init)(jax.random.key(0))
    np.testing.assert_allclose(float(networks.learned_noise_scale(params)), 2.5, rtol=1e-6)
    assert "log_noise" not in jax.jit(networks.bandit_model(2, 3, (4,)).init)(jax.random.key(0))
    rng = np.random.default_rng(1)
    contexts = rng.normal(size=(8, 2)).astype(np.float32)
    arms = rng.integers(0, 3, 8)
    rewards = (3.0 * rng.normal(size=8)).astype(np.float32)
    seen = 30
    x = jnp.concatenate([jnp.asarray(contexts), jax.nn.one_hot(arms, 3)], axis=1)
    y = jnp.stack([jnp.asarray(rewards), jnp.full(8, seen / 100)], axis=1)
    outputs = np.asarray(jax.jit(model.apply)(params, contexts))[np.arange(8), arms]
    for rho, multiplier in ((float(np.log(2.5)), 1.0), (-0.7, 3.0)):
        log_post = log_posterior.bandit_log_posterior(model, 2, multiplier, priors.flat(), capacity=100,
                                                      learned_noise=True)
        p = dict(params, log_noise=jnp.asarray(rho, jnp.float32))
        expected = seen / 8 * scipy.stats.norm(outputs, multiplier * np.exp(rho)).logpdf(rewards).sum()
        np.testing.assert_allclose(jax.jit(log_post.log_likelihood)(p, (x, y)), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="log_noise"):
        networks.learned_noise_scale(jax.jit(networks.bandit_model(2, 3, (4,)).init)(jax.random.key(0)))
    with pytest.raises(ValueError, match="positive"):
        networks.learned_noise_model(networks.bandit_model(2, 3, (4,)), initial_scale=0.0)


@pytest.mark.parametrize("true_sigma", [0.3, 4.0])
def test_learned_noise_fit_recovers_a_known_sigma(true_sigma):
    """A greedy (maximum-likelihood) bandit network with learned_noise, trained on buffer data whose rewards are
    arm means plus N(0, σ²) noise, ends with e^ρ within 10 % of σ (it started at 1). The means are constant per
    arm, so the fitted σ should be the residual standard deviation (≈ σ for n = 1000)."""
    horizon, arms = 1000, 3
    settings = AgentSettings(hidden=(8,), learned_noise=True, point_prior="flat", learning_rate=0.05,
                                     train_steps=400, batch_size=128)
    model = networks.learned_noise_model(networks.bandit_model(2, arms, settings.hidden), 1.0)
    log_post = log_posterior.bandit_log_posterior(model, 2, 1.0, priors.flat(), horizon, learned_noise=True)
    method = map_estimate.build(log_post, registry.bandit_optimizer("adam", 0.05, train_steps=400))
    rng = np.random.default_rng(0)
    contexts = rng.uniform(-1, 1, size=(horizon, 2)).astype(np.float32)
    actions = rng.integers(0, arms, horizon).astype(np.int32)
    rewards = (np.array([1.0, -2.0, 5.0])[actions] + true_sigma * rng.normal(size=horizon)).astype(np.float32)
    buffer = agents.Buffer(jnp.asarray(contexts), jnp.asarray(actions), jnp.asarray(rewards))

    @jax.jit
    def fit(key):
        state = method.init(key, model.init)
        retraining = agents.Retraining(arms, horizon, batch_size=128, train_steps=400)
        state = agents.train_on_buffer(method, state, buffer, jnp.asarray(horizon), jax.random.fold_in(key, 1),
                                       retraining)
        return networks.learned_noise_scale(state.params)

    fitted = float(fit(jax.random.key(0)))
    assert abs(fitted / true_sigma - 1) < 0.1, f"learned σ {fitted:.3f}, true {true_sigma}"


def test_every_network_agent_builds_with_learned_noise_and_fixed_noise_agents_have_no_rho():
    """make_agent(..., learned_noise=True) gives every network agent a ρ leaf in its state; off, none has one."""
    bandit = environments.wheel_bandit(0.5)
    for learned in (False, True):
        settings = AgentSettings(hidden=(4,), learned_noise=learned)
        for name in ("greedy", "mcdropout", "mfvi", "ensemble", "rp_ensemble", "neural_linear", "sgld", "sghmc"):
            state = jax.eval_shape(registry.make_agent(name, bandit, 100, settings).init, jax.random.key(0))
            paths = [priors.leaf_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
            has_rho = any(path.endswith("log_noise") for path in paths)
            assert has_rho == learned, f"{name}: learned_noise={learned} but ρ leaf present={has_rho}"


def test_neural_linear_prior_overrides_point_prior_for_neural_linear_only():
    """neural_linear_prior="flat" with point_prior="gaussian": NeuralLinear's network is fitted by maximum likelihood
    (log-prior exactly 0), every other point agent keeps the Gaussian prior; None follows point_prior; bad names fail."""
    params = {"params": {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}}}
    mixed = AgentSettings(point_prior="gaussian", neural_linear_prior="flat")
    assert float(registry.agent_prior("neural_linear", mixed).log_prob(params)) == 0.0
    for name in ("greedy", "ensemble", "bootstrap", "mcdropout"):
        assert float(registry.agent_prior(name, mixed).log_prob(params)) < 0.0, name
    follow = AgentSettings(point_prior="gaussian")
    assert float(registry.agent_prior("neural_linear", follow).log_prob(params)) < 0.0
    assert float(registry.agent_prior("neural_linear", follow._replace(point_prior="flat")).log_prob(params)) == 0.0
    with pytest.raises(ValueError, match="neural_linear_prior"):
        registry.agent_prior("greedy", AgentSettings(neural_linear_prior="laplace"))


def test_ensemble_reward_perturbation_reaches_the_plain_and_bootstrapped_ensembles_only():
    """``ensemble_reward_perturbation`` c gives the ensemble and bootstrap agents per-member reward noise of
    standard deviation c·σ (ensemble sampling); 0 or None leaves them unperturbed; no other agent carries it."""
    horizon, sigma, c = 1000, 2.0, 0.5
    wheel = environments.wheel_bandit(0.5)
    settings = AgentSettings(noise_scale=sigma, ensemble_reward_perturbation=c)
    for name in ("ensemble", "bootstrap"):
        agent = registry.make_agent(name, wheel, horizon, settings)

        def observe_all(state, agent=agent):
            def step(state, inputs):
                index, key = inputs
                return agent.observe(state, index, jnp.zeros(2), jnp.int32(4), jnp.float32(1.2), key), None
            return jax.lax.scan(step, state, (jnp.arange(horizon), jax.random.split(jax.random.key(1), horizon)))[0]

        noise = np.asarray(jax.jit(observe_all)(agent.init(jax.random.key(0))).perturbation)
        assert noise.shape == (horizon, settings.num_members), name
        # Sample standard deviation of 5000 N(0, (cσ)²) draws: standard error ≈ cσ/√(2·5000).
        assert abs(noise.std() - c * sigma) < 4 * c * sigma / np.sqrt(2 * noise.size), name
        for off in (0.0, None):
            plain = registry.make_agent(name, wheel, horizon, settings._replace(ensemble_reward_perturbation=off))
            assert plain.init(jax.random.key(0)).perturbation is None, (name, off)
    for name in ("greedy", "rp_ensemble", "mfvi"):
        state = registry.make_agent(name, wheel, horizon, settings).init(jax.random.key(0))
        assert getattr(state, "perturbation", None) is None, name


def test_dropout_input_adds_a_mask_on_the_context():
    """``dropout_input``: the MC dropout agent's network masks the raw context as well as the hidden layer
    (two Dropout calls, the first of shape (context_dim,)); without it only the hidden layer (one call)."""
    example = jnp.zeros((2, 2))
    for dropout_input, expected_shapes in ((False, [(6,)]), (True, [(2,), (6,)])):
        net = dropout.dropout_model(networks.bandit_model(2, 5, (6,), dropout_input=dropout_input), 0.3)
        structure = dropout.dropout_structure(net.apply, net.init(jax.random.key(0)), example)
        assert [tuple(shape) for shape in structure.mask_shapes] == expected_shapes
        assert list(structure.rates) == [0.3] * len(expected_shapes)


def test_episode_is_the_one_simulate_runs():
    """simulation.episode(key) rebuilds the episode a run with that seed key faces: the regrets of the actions a
    run took, recomputed from the rebuilt expected rewards, are the run's own."""
    wheel = environments.wheel_bandit(0.9)
    keys = jax.random.split(jax.random.key(4), 3)
    trajectory = simulation.simulate(wheel, registry.make_agent("uniform", wheel, 60), keys, horizon=60,
                                     retrain_every=20)
    episodes = jax.vmap(lambda key: simulation.episode(wheel, wheel.tables, key, 60))(keys)
    expected = np.asarray(episodes.expected_rewards)
    chosen = np.take_along_axis(expected, np.asarray(trajectory.actions)[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(expected.max(-1) - chosen, np.asarray(trajectory.regret), atol=1e-6)
    np.testing.assert_allclose(np.asarray(trajectory.rewards),
                               np.take_along_axis(np.asarray(episodes.rewards),
                                                  np.asarray(trajectory.actions)[..., None], axis=-1)[..., 0])


def test_concrete_dropout_agent_learns_a_rate_that_falls_as_the_data_grow():
    """``concrete_dropout``: the MC dropout agent carries one learned drop-rate logit per dropout layer, starts at
    ``dropout_rate``, and after one retraining on n = 20 observations keeps a higher rate than after one on
    n = 2000 of the same kind (the entropy term of the KL outweighs 20 points, not 2000: Gal, Hron & Kendall's
    Figure 2). It acts after training, and refuses learned_noise, whose ρ would collide with the logits in the
    parameter pytree."""
    horizon, arms = 2000, 5
    wheel = environments.wheel_bandit(0.5)
    settings = AgentSettings(hidden=(16,), concrete_dropout=True, dropout_rate=0.2, train_steps=300)
    agent = registry.make_agent("mcdropout", wheel, horizon, settings)
    state = agent.init(jax.random.key(0))
    np.testing.assert_allclose(np.asarray(concrete_dropout.dropout_rates(state.method.inner.params)), [0.2], rtol=1e-5)

    rng = np.random.default_rng(0)
    contexts = rng.uniform(-0.7, 0.7, size=(horizon, 2)).astype(np.float32)
    actions = rng.integers(0, arms, horizon).astype(np.int32)
    rewards = (np.array([1.0, 1.0, 1.0, 1.0, 1.2])[actions] + rng.normal(size=horizon)).astype(np.float32)
    buffer = agents.Buffer(jnp.asarray(contexts), jnp.asarray(actions), jnp.asarray(rewards))
    retrain = jax.jit(agent.retrain)
    rates = {n: float(concrete_dropout.dropout_rates(
                 retrain(state, buffer, jnp.int32(n), jax.random.key(1)).method.inner.params)[0])
             for n in (20, horizon)}
    assert rates[20] > rates[horizon] + 0.05, rates

    trained = retrain(state, buffer, jnp.int32(horizon), jax.random.key(1))
    chosen = np.asarray(jax.vmap(lambda k: agent.act(trained, jnp.zeros(2), k))(jax.random.split(jax.random.key(2), 8)))
    assert chosen.min() >= 0 and chosen.max() < arms
    with pytest.raises(ValueError, match="learned_noise"):
        registry.make_agent("mcdropout", wheel, horizon, settings._replace(learned_noise=True))


def test_per_arm_masks_keep_each_arms_dropout_marginal_and_decorrelate_the_arms():
    """``per_arm_weight_sample``: every arm's sampled value has MC dropout's marginal — mean the unmasked output and
    variance p/(1 − p)·Σ_j K_ja² h_j² (inverted Bernoulli masks on the last hidden layer h), checked for both mask
    forms within 4 Monte Carlo s.e. — while two arms with identical output kernels move together under the shared
    mask (their difference never varies) and independently under per-arm masks (correlation within 4/√S of 0)."""
    rate, draws = 0.3, 20000
    model = networks.bandit_model(2, 3, (8,))
    net = dropout.dropout_model(model, rate)
    params = net.init(jax.random.key(0))
    structure = dropout.dropout_structure(net.apply, params, jnp.zeros((2, 2)))
    kernel = params["params"]["Dense_1"]["kernel"]
    params["params"]["Dense_1"]["kernel"] = kernel.at[:, 1].set(kernel[:, 0])  # arms 0 and 1: the same weights
    x = jnp.array([[0.4, -0.7]])
    hidden = networks.mlp_features(params, x, 1)[0]
    mean = np.asarray(net.apply(params, x))[0]
    variance = rate / (1 - rate) * np.asarray((params["params"]["Dense_1"]["kernel"] ** 2 * hidden[:, None] ** 2).sum(0))
    keys = jax.random.split(jax.random.key(1), draws)
    samplers = {"shared": lambda k: dropout.weight_sample(params, k, structure),
                "per_arm": lambda k: networks.per_arm_weight_sample(params, k, structure, 3)}
    outputs = {name: np.asarray(jax.vmap(lambda k, s=s: net.apply(s(k), x)[0])(keys), np.float64)
               for name, s in samplers.items()}
    for name, out in outputs.items():
        np.testing.assert_array_less(np.abs(out.mean(0) - mean), 4 * np.sqrt(variance / draws) + 1e-6)
        # Var of the sample variance ≈ (m4 − σ⁴)/S; use the sample's own fourth moment.
        m4 = ((out - out.mean(0)) ** 4).mean(0)
        np.testing.assert_array_less(np.abs(out.var(0) - variance), 4 * np.sqrt((m4 - variance**2) / draws) + 1e-6)
    assert np.ptp(outputs["shared"][:, 0] - outputs["shared"][:, 1]) < 1e-5
    assert abs(np.corrcoef(outputs["per_arm"][:, 0], outputs["per_arm"][:, 1])[0, 1]) < 4 / np.sqrt(draws)
    with pytest.raises(ValueError, match="output kernel"):
        networks.per_arm_weight_sample(params, jax.random.key(0), structure, 5)


def test_mcdropout_agent_takes_per_arm_masks_and_rejects_unknown_forms():
    wheel = environments.wheel_bandit(0.5)
    settings = AgentSettings(hidden=(8,), dropout_masks="per_arm")
    agent = registry.make_agent("mcdropout", wheel, 100, settings)
    state = agent.init(jax.random.key(0))
    arms = np.asarray(jax.vmap(lambda k: agent.act(state, jnp.array([0.3, 0.1]), k))(jax.random.split(jax.random.key(1), 32)))
    assert arms.min() >= 0 and arms.max() < 5 and len(np.unique(arms)) > 1  # an untrained net's draws disagree
    with pytest.raises(ValueError, match="dropout_masks"):
        registry.make_agent("mcdropout", wheel, 100, settings._replace(dropout_masks="per_unit"))
    with pytest.raises(ValueError, match="concrete_dropout"):
        registry.make_agent("mcdropout", wheel, 100, settings._replace(concrete_dropout=True))
