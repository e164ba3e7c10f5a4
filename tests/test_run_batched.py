"""Runs batched by the runner give each run's own numbers, compile once, and refuse what cannot be batched."""

import chex
import jax
import numpy as np
import pytest

from bdljax import recipes
from bdljax.core import likelihoods, priors
from bdljax.nn import models
from bdljax.run import batched
from bdljax.run.runner import execute

MODEL = models.mlp(input_shape=(3,), hidden=(16,), output_dim=1)


def split_data(seed, num_points=48):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_points, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -0.5, 0.3]) + 0.1 * rng.normal(size=num_points)).astype(np.float32)
    return x, y


def make_plan(name, **fixed):
    def plan(values, data):
        problem = recipes.Problem(MODEL, likelihoods.gaussian(0.3), priors.gaussian(values["prior_scale"]), *data)
        return recipes.get(name)(problem, **fixed, **{k: v for k, v in values.items() if k != "prior_scale"})

    return plan


@pytest.mark.parametrize("name,fixed", [("map", {"num_epochs": 3, "batch_size": 16}),
                                        ("ensemble", {"num_epochs": 2, "batch_size": 16, "num_members": 2}),
                                        pytest.param("mfvi", {"num_epochs": 2, "batch_size": 16, "num_samples": 3,
                                                              "pretrain_epochs": 2}, marks=pytest.mark.slow)])
def test_batched_runs_equal_runs_alone(name, fixed):
    """Two splits × two prior scales (traced) and learning rates (traced): each equals execute() alone."""
    data = [split_data(0), split_data(1), split_data(0), split_data(1)]
    values = {"prior_scale": [0.5, 0.5, 2.0, 2.0], "learning_rate": [1e-2, 1e-2, 3e-3, 3e-3]}
    keys = jax.random.split(jax.random.key(3), 4)
    plan = make_plan(name, **fixed)
    together = batched.execute_batched(plan, values, data, keys)
    for r in range(4):
        alone = execute(plan({k: v[r] for k, v in values.items()}, data[r]), keys[r])
        chex.assert_trees_all_close(together[r].samples, alone.samples, rtol=2e-5, atol=2e-6)
        assert together[r].diagnostics["nonfinite_steps"] == alone.diagnostics["nonfinite_steps"] == 0
        assert [h["epoch"] for h in together[r].history] == [h["epoch"] for h in alone.history]


def test_batched_program_compiles_once_per_structure():
    data = [split_data(s) for s in range(3)]
    traces = []

    def plan(values, data):
        result = make_plan("map", num_epochs=3, batch_size=16)(values, data)
        update = result.transform.update

        def counted(state, batch, key):
            traces.append(1)
            return update(state, batch, key)

        return result._replace(transform=result.transform._replace(update=counted))

    batched.execute_batched(plan, {"prior_scale": [0.5, 1.0, 2.0]}, data, jax.random.split(jax.random.key(0), 3))
    assert len(traces) == 1


def test_chains_are_not_batched():
    data = [split_data(0), split_data(1)]

    def plan(values, data):
        problem = recipes.Problem(MODEL, likelihoods.gaussian(0.3), priors.gaussian(1.0), *data)
        return recipes.get("nuts")(problem, num_chains=1, num_warmup=4, num_samples=4)

    assert not batched.batchable(plan({}, data[0]))
    with pytest.raises(ValueError, match="only plans trained by epochs"):
        batched.execute_batched(plan, {}, data, jax.random.split(jax.random.key(0), 2))


def test_batched_runs_need_one_data_shape():
    data = [split_data(0, 48), split_data(1, 40)]
    with pytest.raises(ValueError, match="one shape"):
        batched.execute_batched(make_plan("map", num_epochs=1), {"prior_scale": [1.0, 1.0]}, data,
                                jax.random.split(jax.random.key(0), 2))
