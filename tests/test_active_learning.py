"""The active-learning script: its log posterior, compile-once programs and a tiny end-to-end run on real MNIST."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments.active_learning as active_learning
from bdljax.core import likelihoods, priors
from bdljax.core.posterior import log_posterior
from bdljax.nn import models
from bdljax.run.rundir import read_jsonl


def test_labelled_set_log_posterior_matches_the_shared_one_with_num_data_n():
    model = models.mlp((3,), [4], 3)
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = jnp.arange(8) % 3
    prior, likelihood = priors.gaussian(0.5), likelihoods.categorical()
    dynamic = active_learning.LabelledSetLogPosterior(log_posterior(model.apply, likelihood, prior, 8, temperature=2.0))
    for n in (8, 137):
        shared = log_posterior(model.apply, likelihood, prior, n, temperature=2.0)
        value, terms = dynamic.evaluate(params, (x, y, jnp.float32(n)))
        expected, expected_terms = shared.evaluate(params, (x, y))
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        np.testing.assert_allclose(terms.log_likelihood, expected_terms.log_likelihood, rtol=1e-5)
        np.testing.assert_allclose(terms.log_prior, expected_terms.log_prior, rtol=1e-6)


def test_images_to_reach():
    errors = [0.5, 0.2, 0.09, 0.12, 0.04]
    assert active_learning.images_to_reach(errors, 0.10, 10) == 20
    assert active_learning.images_to_reach(errors, 0.05, 10) == 40
    assert active_learning.images_to_reach(errors, 0.01, 10) is None


def test_balanced_initial_set():
    labels = np.repeat(np.arange(10), 7)
    chosen = active_learning.balanced_initial_set(labels, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(np.bincount(labels[chosen], minlength=10), np.full(10, 2))
    with pytest.raises(ValueError, match="class 3 has 1"):
        active_learning.balanced_initial_set(np.concatenate([labels[labels != 3], [3]]), 2, np.random.default_rng(0))


def test_bad_flags_fail_early():
    with pytest.raises(ValueError, match="--pool-size 50 is too small"):
        active_learning.main(["--pool-size", "50", "--pool-subset", "40", "--steps", "2"])
    with pytest.raises(ValueError, match="unknown name"):
        active_learning.main(["--acquisition", "entropy"])
    with pytest.raises(ValueError, match="divide --train-steps"):
        active_learning.main(["--train-steps", "10", "--steps-per-call", "3"])


def test_automatic_steps_per_call_unrolls_only_conv_nets_on_cpu():
    parser = active_learning.build_parser()
    for model, expected_on_cpu in (("mlp", 40), ("cnn", 1)):
        args = parser.parse_args(["--model", model, "--train-steps", "40"])
        active_learning.check_args(args)
        assert args.steps_per_call == (expected_on_cpu if jax.default_backend() == "cpu" else 40)


def test_end_to_end_compiles_each_program_once(shared_data_dir, shared_path, tmp_path):
    shared_path("mnist")
    out = tmp_path / "run"
    summary = active_learning.main([
        "--method", "mcdropout", "--acquisition", "bald,random", "--steps", "2", "--repeats", "1",
        "--train-steps", "6", "--steps-per-call", "3", "--batch-size", "16", "--pool-size", "300",
        "--pool-subset", "60", "--test-size", "100", "--num-members", "2", "--mc-samples", "3",
        "--model", "mlp", "--hidden", "8", "--data-dir", str(shared_data_dir), "--out", str(out),
    ])
    # Three retrainings (0, 10, 20 acquired), two calls each, at growing labelled-set sizes: one compilation.
    assert summary["compilations"]["mcdropout"] == {"train": 1, "test_error": 1, "acquire_bald": 1, "acquire_random": 1}
    records = [r for r in read_jsonl(out / "metrics.jsonl") if "test_error" in r]
    assert len(records) == 2 * 3
    for r in records:
        assert 0.0 <= r["test_error"] <= 1.0 and np.isfinite(r["final_loss"])
        if r["step"] < 2:
            assert sum(r["acquired_labels"]) == 10  # ten new, distinct labelled images per step
    assert [r["labelled"] for r in records[:3]] == [20, 30, 40]
    assert {(row["method"], row["acquisition"]) for row in summary["table"]} == {
        ("mcdropout", "bald"), ("mcdropout", "random")}
    assert (out / "error.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["table"][0]["mean_error_curve"].__len__() == 3


def test_ensemble_programs_compile_once_and_acquired_images_leave_the_pool():
    """Drive the ensemble's programs on synthetic data: training at growing n compiles once; chosen indices
    are available pool points, never acquired twice."""
    parser = active_learning.build_parser()
    args = parser.parse_args(["--method", "ensemble", "--steps", "3", "--pool-subset", "30", "--batch-size", "4",
                              "--train-steps", "1", "--num-members", "2", "--model", "mlp", "--hidden", "8"])
    active_learning.check_args(args)
    model = active_learning.build_model(args)
    x_all = jax.random.uniform(jax.random.key(0), (60, 28, 28, 1))
    y_all = jnp.arange(60) % 10
    learner = active_learning.build_learner("ensemble", args, model, x_all[:2])
    programs = active_learning.build_programs(learner, args, ["max_entropy"])
    state = programs.init(jax.random.key(1))
    labelled = jnp.zeros(50, jnp.int32).at[:20].set(jnp.arange(20))
    num_labelled, available = jnp.int32(20), jnp.arange(60) >= 20
    for n in (20, 35):
        trained, losses = programs.train(state, jax.random.split(jax.random.key(n), 1), x_all, y_all, labelled, jnp.int32(n))
        assert losses.shape == (1,) and bool(jnp.isfinite(losses[0]))
    assert programs.train._cache_size() == 1
    seen = set(range(20))
    for step in range(3):
        labelled, num_labelled, available, chosen = programs.acquire["max_entropy"](
            state, jax.random.key(step), x_all, labelled, num_labelled, available)
        chosen = set(np.asarray(chosen).tolist())
        assert len(chosen) == 10 and not chosen & seen
        seen |= chosen
    assert int(num_labelled) == 50 and set(np.asarray(labelled).tolist()) == seen
    assert int(jnp.sum(available)) == 10
    assert programs.acquire["max_entropy"]._cache_size() == 1
