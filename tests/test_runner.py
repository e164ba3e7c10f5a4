"""The runner: compile once per configuration, members in turn equal independent fits, execution recorded."""

import chex
import jax
import numpy as np
import pytest

from bdljax import recipes
from bdljax.core import likelihoods, priors
from bdljax.nn import models
from bdljax.run import execution
from bdljax.run.runner import RunOptions, execute

MODEL = models.mlp(input_shape=(2,), hidden=(8,), output_dim=1)


def problem(seed=0, num_points=40):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_points, 2)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] + 0.1 * rng.normal(size=num_points)).astype(np.float32)
    return recipes.Problem(MODEL, likelihoods.gaussian(0.3), priors.gaussian(1.0), x, y)


def counted(plan):
    """The plan with its update counting its traces."""
    traces = []
    update = plan.transform.update

    def counting(state, batch, key):
        traces.append(1)
        return update(state, batch, key)

    return plan._replace(transform=plan.transform._replace(update=counting)), traces


TINY = {"map": {}, "ensemble": {"num_members": 2}, "mfvi": {"num_samples": 2, "pretrain_epochs": 1},
        "sgld": {"num_chains": 2, "num_samples": 4, "thinning": 1}, "sghmc": {"num_samples": 4, "thinning": 1}}


@pytest.mark.parametrize("name", sorted(TINY))
def test_update_compiles_once_across_executions(name):
    plan, traces = counted(recipes.plan(name, problem(), num_epochs=3, batch_size=8, **TINY[name]))
    execute(plan, jax.random.key(0))
    execute(plan, jax.random.key(1))
    assert len(traces) == 1


def test_members_in_turn_equal_independent_member_fits():
    """Sequential members: member k is an independent fit of the member plan with key split(key, K)[k]."""
    plan = recipes.plan("ensemble", problem(), num_members=3, num_epochs=2, batch_size=8)
    in_turn = execute(plan, jax.random.key(4), RunOptions(execution=execution.Execution(members="sequential")))
    member_plan = plan._replace(transform=plan.transform.member, num_samples=1)
    for k, key in enumerate(jax.random.split(jax.random.key(4), 3)):
        alone = execute(member_plan, key, RunOptions(execution=execution.Execution()))
        chex.assert_trees_all_close(jax.tree.map(lambda leaf: leaf[k:k + 1], in_turn.samples), alone.samples)
    assert in_turn.diagnostics["execution"]["members"] == "sequential"
    assert sorted({record["member"] for record in in_turn.history}) == [0, 1, 2]


def test_execution_is_chosen_by_network_and_recorded():
    fitted = recipes.run("map", problem(), jax.random.key(0), num_epochs=1)
    assert fitted.diagnostics["execution"] == {"steps_per_call": None, "members": "vmap"}
    cnn = models.cnn(num_classes=3, features=(2,), hidden=4)
    params = jax.eval_shape(cnn.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), np.float32)
    assert execution.choose(cnn.apply, params, x, backend="cpu") == execution.Execution(1, "sequential")
    assert execution.choose(cnn.apply, params, x, backend="gpu") == execution.Execution()


def test_unknown_hyperparameters_and_bad_counts_fail_before_training():
    with pytest.raises(ValueError, match="does not take"):
        recipes.plan("map", problem(), num_epoch=3)
    with pytest.raises(ValueError, match="num_epochs must be a positive int"):
        recipes.plan("map", problem(), num_epochs=2.5)
    with pytest.raises(ValueError, match="members"):
        execution.Execution(members="parallel").check()
