"""Deep-ensemble members in turn (``Execution(members="sequential")``), in the chunked steps a CNN on CPU trains by.

Member k must be exactly the ``map`` recipe's fit with key ``split(key, K)[k]``, the members must differ, the result
must have the vmapped ensemble's layout, and all K members must share one compiled training program.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bdljax import recipes
from bdljax.core import likelihoods, priors
from bdljax.nn import models
from bdljax.run import training
from bdljax.run.execution import Execution
from bdljax.run.options import RunOptions

NUM_MEMBERS = 2
STEPS_PER_CALL = 2  # unrolled chunks (training.build_chunked_epoch), as the runner trains a conv net on CPU
IN_TURN = RunOptions(execution=Execution(steps_per_call=STEPS_PER_CALL, members="sequential"))
CONFIG = dict(num_epochs=2, batch_size=16, learning_rate=1e-2)


def counting_problem():
    """A two-class problem on a 4-16-2 tanh MLP whose ``apply`` counts the times it is traced (or called)."""
    calls = {"apply": 0}

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (4, 16)) * 0.5, "b1": jnp.zeros(16),
                "w2": jax.random.normal(k2, (16, 2)) * 0.5, "b2": jnp.zeros(2)}

    def apply(params, x):
        calls["apply"] += 1  # runs only while tracing inside jit: counts compilations of code that uses the model
        return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    problem = recipes.Problem(models.from_functions(init, apply), likelihoods.categorical(), priors.gaussian(1.0), x, y)
    return problem, calls


def test_sequential_members_equal_map_fits_with_one_compilation():
    problem, calls = counting_problem()
    key = jax.random.key(3)
    hits_before = training.build_chunked_epoch.cache_info().hits
    fitted = recipes.run("ensemble", problem, key, IN_TURN, num_members=NUM_MEMBERS, **CONFIG)
    sequential_traces = calls["apply"]
    # One compilation for all members: the member's epoch is built once (the later members hit the cache) ...
    assert training.build_chunked_epoch.cache_info().hits - hits_before == NUM_MEMBERS - 1

    for index, member_key in enumerate(jax.random.split(key, NUM_MEMBERS)):
        calls["apply"] = 0
        alone = recipes.run("map", problem, member_key, IN_TURN, **CONFIG)
        # ... and K members trace the model exactly as often as one fresh MAP fit does.
        assert calls["apply"] == sequential_traces > 0
        for got, want in zip(jax.tree.leaves(fitted.samples), jax.tree.leaves(alone.samples)):
            np.testing.assert_allclose(np.asarray(got[index]), np.asarray(want[0]), rtol=1e-6, atol=1e-7)

    # Members differ (own initialisation and data order).
    w1 = np.asarray(fitted.samples["w1"])
    assert np.max(np.abs(w1[0] - w1[1])) > 1e-2
    members = [r["member"] for r in fitted.history if r["split"] == "train"]
    assert members == [m for m in range(NUM_MEMBERS) for _ in range(CONFIG["num_epochs"])]
    assert fitted.diagnostics == {"execution": {"steps_per_call": STEPS_PER_CALL, "members": "sequential"},
                                  "nonfinite_steps": 0}

    # The vmapped ensemble's layout: every leaf stacked on a leading member axis, one sample per member.
    vmapped = recipes.run("ensemble", problem, key, RunOptions(execution=Execution(STEPS_PER_CALL, "vmap")),
                          num_members=NUM_MEMBERS, **CONFIG)
    assert jax.tree.map(jnp.shape, fitted.samples) == jax.tree.map(jnp.shape, vmapped.samples)
    assert jax.tree.map(jnp.shape, fitted.state) == jax.tree.map(jnp.shape, vmapped.state)


def test_sequential_rejects_bad_options():
    problem, _ = counting_problem()
    with pytest.raises(ValueError, match="members"):
        recipes.run("ensemble", problem, jax.random.key(0), RunOptions(execution=Execution(members="parallel")),
                    **CONFIG)
    with pytest.raises(ValueError, match="periodic evaluation needs every member at once"):
        recipes.run("ensemble", problem, jax.random.key(0),
                    IN_TURN._replace(eval_every=1, eval_data=(problem.x_train, problem.y_train)), **CONFIG)
